from segdiff.evaluation.run import evaluation_job
from segdiff.pipeline.runtime import run_script


def main():
    p, i = snakemake.params, snakemake.input
    evaluation_job(p.label, i.generation, i.segmentor, i.reference, i.oracle, p.labels, snakemake.config["compute"]["device"],
                   p.max_slices, p.seed, snakemake.output.metrics.rsplit("/", 1)[0], p.inception_weights,
                   p.poster_inception_weights)


run_script(snakemake, main)
