import json
from pathlib import Path

from segdiff.figures import dice_per_organ_figure, generations_panel_figure, loss_curve_figure, metrics_by_run_figure
from segdiff.generation import read_generation
from segdiff.labels import load_label_map
from segdiff.runtime import run_script

ROW_NAMES = {"reconstruction": "Reconstruction", "multi_inference": "Multi-inference", "multimodal": "Multi-modal"}


def main():
    i, o = snakemake.input, snakemake.output
    labels = load_label_map(snakemake.params.labels)
    metrics = [json.loads(Path(m).read_text()) for m in i.metrics]
    panels = [(ROW_NAMES[Path(f).stem], read_generation(f)) for f in i.panel]
    generations_panel_figure(panels, labels, o.panel)
    dice_per_organ_figure(metrics, o.dice)
    metrics_by_run_figure(metrics, o.metrics)
    loss_curve_figure({Path(f).stem.removesuffix("_loss"): f for f in i.losses}, o.losses, "training loss")


run_script(snakemake, main)
