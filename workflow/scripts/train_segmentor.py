from segdiff.models.jobs import train_segmentor
from segdiff.pipeline import jobs
from segdiff.pipeline.runtime import run_script

run_script(snakemake, lambda: train_segmentor(jobs.segmentor_train_job(snakemake)))
