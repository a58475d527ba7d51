from segdiff.pipeline.runtime import run_script
from segdiff.sources.totalvibe import segment_volume

run_script(snakemake, lambda: segment_volume(snakemake.input.image, snakemake.output[0], snakemake.config["compute"]["device"]))
