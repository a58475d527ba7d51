from segdiff.evaluation.run import evaluation_job
from segdiff.pipeline import jobs
from segdiff.pipeline.runtime import run_script

run_script(snakemake, lambda: evaluation_job(jobs.evaluation_job(snakemake)))
