"""The training sets of the usefulness experiment (train on generated, test on real), by name.

The vocabulary of the stage, torch-free so that the workflow's planning imports it at parse time:

- ``real``: the study's auxiliary segmentor (train + val slices of the real data): the baseline.
- ``generated``: one generation for each train + val mask, no real image (TSTR).
- ``real_generated``: both: each mask with its real slice and one generation (augmentation).
- ``few_real``: the real slices of a seeded fraction of the train + val cases alone: the low-data
  baseline that ``few_real_generated`` is read against.
- ``few_real_generated``: the real slices of those cases, plus the generations of every mask (the
  low-data regime, where generation should help most).
- ``oracle``: one oracle render (a second scan of the same anatomy, phantom only) for each train + val
  mask: what a perfect generator would give, the ceiling of ``generated``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["TRAINSET_GROUP_BATCHES", "TRAINSETS", "TRAINSET_LABELS", "few_real_cases", "uses_real", "uses_generated"]

#: sampler batches generated per step of a generated-training-set job (and held in memory at once): its memory
#: bound (``segdiff.pipeline.plan.StudyPlan.trainset_mem``)
TRAINSET_GROUP_BATCHES = 8

#: every training set, in the order of the table and the figure (``real`` first: the baseline)
TRAINSETS = ("real", "generated", "real_generated", "few_real", "few_real_generated", "oracle")

#: training set -> its row name in the usefulness table
TRAINSET_LABELS = {
    "real": "real (baseline)",
    "generated": "generated only (TSTR)",
    "real_generated": "real + generated",
    "few_real": "few real (low-data baseline)",
    "few_real_generated": "few real + generated",
    "oracle": "oracle renders (ceiling of generated)",
}


def uses_real(trainset: str) -> bool:
    """Whether the training set holds real slices."""
    return trainset in ("real", "real_generated", "few_real", "few_real_generated")


def uses_generated(trainset: str) -> bool:
    """Whether the training set holds generations of the study's diffusion models."""
    return trainset in ("generated", "real_generated", "few_real_generated")


def few_real_cases(cases: Sequence[str], fraction: float, seed: int) -> list[str]:
    """The real cases of ``few_real`` and ``few_real_generated``: a seeded choice of ``ceil(fraction x n)`` cases, at least one.

    Args:
        cases: the modality's train + val case ids.
        fraction: the share of cases kept, in (0, 1].
        seed: the study seed.

    Returns:
        The chosen case ids, sorted; the same for the same cases, fraction and seed in any order.

    Raises:
        ValueError: no cases, or a fraction outside (0, 1].
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    pool = sorted(set(map(str, cases)))
    if not pool:
        raise ValueError("no cases to choose from")
    n = max(1, math.ceil(fraction * len(pool)))
    rng = np.random.default_rng([seed, 0x75736566])  # "usef": a stream of its own
    return sorted(rng.choice(pool, size=n, replace=False).tolist())
