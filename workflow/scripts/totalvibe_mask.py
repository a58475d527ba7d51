from segdiff.runtime import run_script
from segdiff.totalvibe import segment_volume

run_script(snakemake, lambda: segment_volume(snakemake.input.image, snakemake.output[0], snakemake.config["compute"]["device"]))
