from segdiff.data.jobs import slice_case
from segdiff.pipeline import jobs
from segdiff.pipeline.runtime import run_script

run_script(snakemake, lambda: slice_case(jobs.slice_case_job(snakemake)))
