from segdiff.provenance import write_provenance
from segdiff.runtime import run_script

run_script(snakemake, lambda: write_provenance(snakemake.output[0], snakemake.params.config, snakemake.params.repo))
