from segdiff.models.jobs import train_diffusion
from segdiff.pipeline import jobs
from segdiff.pipeline.runtime import run_script

run_script(snakemake, lambda: train_diffusion(jobs.diffusion_train_job(snakemake)))
