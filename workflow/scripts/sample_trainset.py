from segdiff.pipeline import jobs
from segdiff.pipeline.runtime import run_script
from segdiff.usefulness.trainset import sample_trainset

run_script(snakemake, lambda: sample_trainset(jobs.trainset_job(snakemake)))
