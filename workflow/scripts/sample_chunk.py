from segdiff.pipeline import jobs
from segdiff.pipeline.runtime import run_script
from segdiff.sampling.experiments import sample_chunk

run_script(snakemake, lambda: sample_chunk(jobs.sample_job(snakemake)))
