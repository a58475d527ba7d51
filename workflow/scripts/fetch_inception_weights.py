from segdiff.pipeline.runtime import run_script
from segdiff.sources.weights import fetch_known_weights

run_script(snakemake, lambda: fetch_known_weights(snakemake.params.weights, snakemake.output[0]))
