from segdiff.sampling.experiments import gather_run
from segdiff.pipeline.runtime import run_script


def main():
    o, w = snakemake.output, snakemake.wildcards
    gather_run(snakemake.input.parts, snakemake.params.labels, o.samples, o.grid, o.get("reconstruction", None),
               o.get("reconstruction_grid", None),
               title=f"{w.get('source', w.modality)} masks -> {w.modality} model ({w.view})")


run_script(snakemake, main)
