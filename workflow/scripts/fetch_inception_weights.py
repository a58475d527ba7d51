from segdiff.metrics import fetch_inception_weights
from segdiff.runtime import run_script

run_script(snakemake, lambda: fetch_inception_weights(snakemake.output[0]))
