import json
from pathlib import Path

from segdiff.report.figures import dice_per_organ_figure, generations_panel_figure, loss_panels_figure, metrics_by_run_figure
from segdiff.sampling.experiments import read_generation
from segdiff.core.labels import load_label_map
from segdiff.pipeline.runtime import run_script
from segdiff.report.tables import run_label

ROW_NAMES = {"reconstruction": "Reconstruction", "multi_inference": "Multi-inference", "multimodal": "Multi-modal"}
LOSS_PANELS = {"diffusion": "diffusion models (MSE of the prediction target)", "segmentor": "auxiliary segmentors (Dice + CE)"}


def loss_panels(files):
    """{panel title: {run label: CSV}} from results/models/diffusion/{modality}_{view}_loss.csv and
    results/models/segmentor/{modality}_loss.csv (the segmentor of a modality covers all its views)."""
    panels = {title: {} for title in LOSS_PANELS.values()}
    for f in map(Path, files):
        kind = f.parent.name
        modality, _, view = f.stem.removesuffix("_loss").partition("_")
        panels[LOSS_PANELS[kind]][run_label(modality, view if kind == "diffusion" else "all")] = f
    return panels


def main():
    i, o = snakemake.input, snakemake.output
    labels = load_label_map(snakemake.params.labels)
    metrics = [json.loads(Path(m).read_text()) for m in i.metrics]
    panels = [(ROW_NAMES[Path(f).stem], read_generation(f)) for f in i.panel]
    generations_panel_figure(panels, labels, o.panel)
    dice_per_organ_figure(metrics, o.dice)
    metrics_by_run_figure(metrics, o.metrics)
    loss_panels_figure(loss_panels(i.losses), o.losses)


run_script(snakemake, main)
