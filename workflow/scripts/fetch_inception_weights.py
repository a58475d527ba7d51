from segdiff.pipeline.runtime import run_script
from segdiff.sources.weights import KNOWN_WEIGHTS, fetch_weights

run_script(snakemake, lambda: fetch_weights(KNOWN_WEIGHTS[snakemake.params.weights].url, snakemake.output[0]))
