from segdiff.report.figures import oracle_figure_from_evaluation
from segdiff.core.labels import load_label_map
from segdiff.pipeline.runtime import run_script


def main():
    oracle_figure_from_evaluation(snakemake.input.arrays, load_label_map(snakemake.params.labels), snakemake.output[0],
                                  snakemake.params.title)


run_script(snakemake, main)
