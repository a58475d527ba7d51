from segdiff.core.provenance import write_provenance
from segdiff.pipeline.runtime import run_script

run_script(snakemake, lambda: write_provenance(snakemake.output[0], snakemake.params.config, snakemake.params.repo))
