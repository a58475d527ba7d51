from segdiff.pipeline.runtime import run_script
from segdiff.report.tables import table_notes, write_tables


def main():
    o, metrics = snakemake.output, snakemake.input.metrics
    write_tables(metrics, o.csv, o.md, o.tex, o.long, notes=table_notes(metrics, snakemake.params.max_slices))


run_script(snakemake, main)
