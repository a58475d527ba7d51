from segdiff.pipeline import jobs
from segdiff.pipeline.runtime import run_script
from segdiff.usefulness.trainset import oracle_trainset

run_script(snakemake, lambda: oracle_trainset(jobs.oracle_trainset_job(snakemake)))
