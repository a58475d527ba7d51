from segdiff.figures import slice_preview_figure
from segdiff.labels import load_label_map
from segdiff.runtime import run_script

run_script(snakemake, lambda: slice_preview_figure(snakemake.input.manifests, snakemake.output[0], load_label_map(snakemake.params.labels)))
