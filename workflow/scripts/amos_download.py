from pathlib import Path

from segdiff.pipeline.runtime import run_script
from segdiff.sources.download import fetch_amos

p = snakemake.params
run_script(snakemake, lambda: fetch_amos(Path(snakemake.output[0]).parent, p.record, p.file, p.md5 or None, p.keep_zip))
