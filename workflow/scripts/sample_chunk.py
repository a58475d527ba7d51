from segdiff.chunks import scatter_item
from segdiff.generation import sample_chunk
from segdiff.runtime import run_script


def main():
    p = snakemake.params
    # the scatter item "i-of-n" (Snakemake's scattergather; n follows --set-scatter sample=N too)
    chunk, chunks = scatter_item(snakemake.wildcards.scatteritem)
    sample_chunk(snakemake.input.model, snakemake.input.stores, p.mode, p.sampling, p.max_slices, p.seed, p.device,
                 snakemake.output.part, chunk - 1, chunks, p.precision)


run_script(snakemake, main)
