"""The workflow's evaluation figures (rule ``evaluation_figures``): the generations panel, Dice per
organ, metrics by run and the loss curves, as one settings object (:class:`EvaluationFiguresJob`)
built by :func:`segdiff.pipeline.jobs.evaluation_figures_job`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from segdiff.core.labels import LabelMap
from segdiff.report.figures import dice_per_organ_figure, generations_panel_figure, loss_panels_figure, metrics_by_run_figure
from segdiff.report.tables import run_label
from segdiff.sampling.files import first_column_title, read_generation

__all__ = ["PANEL_ROWS", "LOSS_PANELS", "EvaluationFiguresJob", "loss_panels", "evaluation_figures"]

#: generation file stem -> its row in the generations panel
PANEL_ROWS = {"reconstruction": "Reconstruction", "multi_inference": "Multi-inference", "multimodal": "Multi-modal"}
#: model kind (the loss file's folder) -> its loss panel's title
LOSS_PANELS = {"diffusion": "diffusion models (MSE of the prediction target)", "segmentor": "auxiliary segmentors (Dice + CE)"}


@dataclass(frozen=True)
class EvaluationFiguresJob:
    """The figures of the evaluation (:func:`evaluation_figures`).

    Attributes:
        metrics: every run's ``metrics.json``.
        generations: the generation files of the panel's rows (stems in :data:`PANEL_ROWS`), in row order.
        losses: the loss histories, ``.../diffusion/{modality}_{view}_loss.csv`` and
            ``.../segmentor/{modality}_loss.csv``.
        labels: the label map the panel colours the masks with.
        panel_figure: the generations panel PNG to write.
        dice_figure: the Dice-per-organ PNG to write.
        metrics_figure: the metrics-by-run PNG to write.
        loss_figure: the loss curves PNG to write.
    """

    metrics: Sequence[str | Path]
    generations: Sequence[str | Path]
    losses: Sequence[str | Path]
    labels: LabelMap
    panel_figure: str | Path
    dice_figure: str | Path
    metrics_figure: str | Path
    loss_figure: str | Path


def loss_panels(files: Sequence[str | Path]) -> dict[str, dict[str, Path]]:
    """The loss histories by panel and run label.

    Args:
        files: ``.../diffusion/{modality}_{view}_loss.csv`` and ``.../segmentor/{modality}_loss.csv``
            (the segmentor of a modality covers all its views).

    Returns:
        {panel title (:data:`LOSS_PANELS`): {run label: CSV}}.
    """
    panels: dict[str, dict[str, Path]] = {title: {} for title in LOSS_PANELS.values()}
    for f in map(Path, files):
        kind = f.parent.name
        modality, _, view = f.stem.removesuffix("_loss").partition("_")
        panels[LOSS_PANELS[kind]][run_label(modality, view if kind == "diffusion" else "all")] = f
    return panels


def evaluation_figures(job: EvaluationFiguresJob) -> None:
    """Draw the evaluation's four figures.

    Args:
        job: the runs' files and the figures to write.
    """
    metrics = [json.loads(Path(m).read_text()) for m in job.metrics]
    panels = [(PANEL_ROWS[Path(f).stem], read_generation(f)) for f in job.generations]
    generations_panel_figure(panels, job.labels, job.panel_figure,
                             first_titles=[first_column_title(arrays["info"]) for _, arrays in panels])
    dice_per_organ_figure(metrics, job.dice_figure)
    metrics_by_run_figure(metrics, job.metrics_figure)
    loss_panels_figure(loss_panels(job.losses), job.loss_figure)
