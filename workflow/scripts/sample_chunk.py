from segdiff.sampling.chunks import scatter_item
from segdiff.sampling.experiments import sample_chunk
from segdiff.pipeline.job_params import speed_settings
from segdiff.pipeline.runtime import run_script


def main():
    p, compute = snakemake.params, snakemake.config["compute"]
    # the scatter item "i-of-n" (Snakemake's scattergather; n follows --set-scatter sample=N too)
    chunk, chunks = scatter_item(snakemake.wildcards.scatteritem)
    sampling = {**p.sampling, **speed_settings(snakemake.config, "sampling")}  # + the batch (speed only)
    sample_chunk(snakemake.input.model, snakemake.input.stores, p.mode, sampling, p.max_slices, p.seed, compute["device"],
                 snakemake.output.part, chunk - 1, chunks, compute["precision"])


run_script(snakemake, main)
