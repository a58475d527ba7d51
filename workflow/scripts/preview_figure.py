from segdiff.report.figures import slice_preview_figure
from segdiff.core.labels import load_label_map
from segdiff.pipeline.runtime import run_script

run_script(snakemake, lambda: slice_preview_figure(snakemake.input.manifests, snakemake.output[0], load_label_map(snakemake.params.labels)))
