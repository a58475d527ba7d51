from segdiff.pipeline import jobs
from segdiff.pipeline.runtime import run_script
from segdiff.usefulness.score import score_segmentor

run_script(snakemake, lambda: score_segmentor(jobs.score_job(snakemake)))
