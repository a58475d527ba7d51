from segdiff.pipeline.runtime import run_script
from segdiff.usefulness.report import write_usefulness_report


def main():
    o = snakemake.output
    write_usefulness_report(snakemake.input.metrics, o.csv, o.md, o.long, o.figure, notes=snakemake.params.notes)


run_script(snakemake, main)
