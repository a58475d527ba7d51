from segdiff.pipeline import jobs
from segdiff.pipeline.runtime import run_script
from segdiff.sampling.files import gather_run

run_script(snakemake, lambda: gather_run(jobs.gather_job(snakemake)))
