"""A usefulness segmentor's Dice on the real test split: every test slice of every view, streamed.

Per test slice and organ the job saves the counts Dice is made of (``counts.npz``: intersection,
predicted and true pixels); the pooled Dice of an organ is ``2 sum(I) / (sum(P) + sum(T))`` over the
slices, an organ absent from every test mask is left out, one present but never predicted scores 0, and
the headline is the mean over the organs present: the rule of the study's table,
:class:`segdiff.evaluation.metrics.DiceAccumulator`, fed the counts (``add_counts``).
:func:`usefulness_metrics` recomputes every number from the counts alone. Memory: one batch of slices, plus the counts (a few integers per slice).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from segdiff.core.atomic import atomic_path
from segdiff.core.labels import LabelMap
from segdiff.data.store import SliceStore
from segdiff.evaluation.metrics import DiceAccumulator, dice_counts
from segdiff.models.segmentor import load_segmentor, predict

__all__ = ["ScoreJob", "usefulness_metrics", "score_segmentor"]

_BATCH = 256


def _pooled(counts: np.ndarray, class_ids: Sequence[int]) -> DiceAccumulator:
    accumulator = DiceAccumulator(class_ids)
    accumulator.add_counts(counts)
    return accumulator


def usefulness_metrics(counts: np.ndarray, view: np.ndarray, class_ids: Sequence[int], labels: LabelMap) -> dict:
    """Every number of a usefulness run from its saved counts (the table's pooled Dice,
    :class:`~segdiff.evaluation.metrics.DiceAccumulator`).

    Args:
        counts: (N, C, 3) of the test slices (:func:`~segdiff.evaluation.metrics.dice_counts`).
        view: (N,) each slice's view.
        class_ids: the organ ids of the counts' columns.
        labels: the label map (organ names).

    Returns:
        ``dice`` (mean over the organs present), ``dice_per_organ`` (name -> Dice), ``dice_per_view``
        (view -> mean Dice, None without an organ) and ``n_test_slices``.
    """
    overall = _pooled(counts, class_ids)
    per_view = {}
    for v in sorted(set(view.tolist())):
        mean = _pooled(counts[view == v], class_ids).mean()
        per_view[v] = None if np.isnan(mean) else mean
    return {"dice": overall.mean(), "dice_per_organ": {labels.names[c]: d for c, d in overall.per_class().items()},
            "dice_per_view": per_view, "n_test_slices": int(len(counts))}


@dataclass(frozen=True)
class ScoreJob:
    """One usefulness segmentor scored on the real test split (rule ``score_usefulness``).

    Attributes:
        trainset: the training set's name (:data:`segdiff.usefulness.sets.TRAINSETS`).
        modality: the modality.
        segmentor: the segmentor file.
        stores: the modality's real stores (every slice view); their ``test`` split is scored.
        labels: the label map.
        device: where the segmentor runs.
        out_dir: the folder of ``metrics.json`` and ``counts.npz``.
    """

    trainset: str
    modality: str
    segmentor: str | Path
    stores: Sequence[str | Path]
    labels: LabelMap
    device: torch.device
    out_dir: str | Path


def score_segmentor(job: ScoreJob) -> dict:
    """Segment every real test slice, write ``counts.npz`` and ``metrics.json``; returns the metrics.

    Args:
        job: the segmentor and its test slices.

    Returns:
        The summary written to ``metrics.json``.
    """
    test = SliceStore(job.stores, ["test"])
    model, _, meta = load_segmentor(job.segmentor, job.device)
    class_ids = list(job.labels.ids)
    counts = np.empty((len(test), len(class_ids), 3), np.int64)
    for start in tqdm(range(0, len(test), _BATCH), desc=f"score {job.modality} {job.trainset}", mininterval=5.0):
        index = np.arange(start, min(start + _BATCH, len(test)))
        images, masks = test.read(index)
        counts[index] = dice_counts(predict(model, images, job.device)[0], masks, class_ids)
    metrics = usefulness_metrics(counts, test.view, class_ids, job.labels)
    summary = {"trainset": job.trainset, "modality": job.modality, **metrics,
               "train_slices": meta.get("train_slices"), "segmentor": str(job.segmentor)}
    out = Path(job.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "counts.npz") as tmp:
        np.savez_compressed(tmp, counts=counts, class_ids=np.asarray(class_ids), case=test.case, view=test.view,
                            slice=test.slice)
    with atomic_path(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    return summary
