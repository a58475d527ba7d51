import pandas as pd

from segdiff.atomic import atomic_path
from segdiff.runtime import run_script
from segdiff.shards import build_manifest


def main():
    rows = pd.DataFrame(snakemake.params.rows)
    manifest = build_manifest(rows, dict(zip(rows["case"], snakemake.input)), snakemake.wildcards.view)
    with atomic_path(snakemake.output[0]) as tmp:
        manifest.to_csv(tmp, sep="\t", index=False)


run_script(snakemake, main)
