from segdiff.data.oracle import case_oracle
from segdiff.pipeline import jobs
from segdiff.pipeline.runtime import run_script

run_script(snakemake, lambda: case_oracle(jobs.oracle_job(snakemake)))
