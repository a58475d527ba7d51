from segdiff.pipeline import jobs
from segdiff.pipeline.runtime import run_script
from segdiff.evaluation.figures import evaluation_figures

run_script(snakemake, lambda: evaluation_figures(jobs.evaluation_figures_job(snakemake)))
