from segdiff.data.oracle import case_oracle
from segdiff.pipeline.runtime import run_script


def main():
    p, w = snakemake.params, snakemake.wildcards
    case_oracle(w.case, w.contrast, snakemake.input.label, p.phantom, p.seed, p.k, p.labels, p.preprocess,
                snakemake.output.renders)


run_script(snakemake, main)
