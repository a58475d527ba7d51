import pandas as pd

from segdiff.pipeline.runtime import run_script
from segdiff.data.store import write_subset


def main():
    o = snakemake.output
    write_subset(pd.DataFrame(snakemake.params.rows), snakemake.input, snakemake.wildcards.view, o.manifest, o.store)


run_script(snakemake, main)
