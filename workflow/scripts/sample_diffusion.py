from segdiff.generation import sample_run
from segdiff.runtime import run_script


def main():
    p, o = snakemake.params, snakemake.output
    sample_run(snakemake.input.model, snakemake.input.stores, p.mode, p.sampling, p.max_slices, p.seed, p.device,
               p.labels, o.samples, o.grid, p.precision, o.get("reconstruction", None), o.get("reconstruction_grid", None),
               title=f"{snakemake.wildcards.get('source', snakemake.wildcards.modality)} masks -> "
                     f"{snakemake.wildcards.modality} model ({snakemake.wildcards.view})")


run_script(snakemake, main)
