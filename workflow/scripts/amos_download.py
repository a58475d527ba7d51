from pathlib import Path

from segdiff.sources.download import fetch_amos
from segdiff.pipeline.runtime import run_script


def main():
    p = snakemake.params
    fetch_amos(Path(snakemake.output[0]).parent, p.record, p.file, p.md5 or None, p.keep_zip)


run_script(snakemake, main)
