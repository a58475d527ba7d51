"""The usefulness stage: training-set vocabulary, generated and oracle-free training stores, Dice from saved counts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tiny import SCHED, make_subset, perturbed_model

from segdiff.core.labels import LabelMap
from segdiff.data.store import SliceStore
from segdiff.evaluation.metrics import DiceAccumulator, dice_counts
from segdiff.models.diffusion import save_diffusion
from segdiff.models.segmentor import SegmentorConfig, build_segmentor, save_segmentor
from segdiff.sampling.samplers import SamplerSettings
from segdiff.usefulness import (ScoreJob, TrainsetJob, few_real_cases, sample_trainset, score_segmentor,
                                usefulness_metrics, write_usefulness_report)

LABELS = LabelMap({1: "liver", 2: "spleen", 3: "kidney"})


def test_few_real_cases_are_seeded_order_free_and_never_empty():
    cases = [f"c{i}" for i in range(10)]
    few = few_real_cases(cases, 0.25, seed=1)
    assert len(few) == 3 and set(few) <= set(cases) and few == sorted(few)
    assert few_real_cases(cases[::-1], 0.25, seed=1) == few  # the sheet's order does not matter
    assert few_real_cases(cases, 0.25, seed=2) != few or few_real_cases(cases, 0.25, seed=3) != few
    assert len(few_real_cases(["a", "b"], 0.01, seed=1)) == 1
    with pytest.raises(ValueError):
        few_real_cases(cases, 0.0, seed=1)


def _trainset(tmp_path, store, chunk, chunks, batch_size):
    out = tmp_path / f"gen_{chunk}_of_{chunks}_b{batch_size}"
    sample_trainset(TrainsetJob(model=tmp_path / "model.pt", store=store, splits=["train", "val"],
                                sampler=SamplerSettings(sampler="ddim", steps=3, eta=1.0, batch_size=batch_size),
                                seed=5, device=torch.device("cpu"), out=out, chunk=chunk, chunks=chunks))
    return out


def test_generated_training_store_keeps_the_real_rows_and_does_not_depend_on_chunks_or_batch(tmp_path):
    _, store = make_subset(tmp_path)
    save_diffusion(tmp_path / "model.pt", perturbed_model(), SCHED, {"classes_seen": [0, 1, 2, 3]})
    whole = SliceStore([_trainset(tmp_path, store, 0, 1, batch_size=4)], ["train", "val"])
    real = SliceStore([store], ["train", "val"])
    assert len(whole) == len(real) == 8
    assert (whole.case == real.case).all() and (whole.slice == real.slice).all() and (whole.split == real.split).all()
    assert set(whole.view) == {"axial"}  # from the store's own view column
    images, masks = whole.read(np.arange(len(whole)))
    real_images, real_masks = real.read(np.arange(len(real)))
    assert np.array_equal(masks, real_masks) and not np.allclose(images, real_images)
    assert images.min() >= 0 and images.max() <= 1 and images.std() > 0.01
    parts = [_trainset(tmp_path, store, i, 3, batch_size=3) for i in range(3)]
    split = SliceStore(parts, ["train", "val"])
    assert np.array_equal(split.read(np.arange(len(split)))[0], images)  # per-slice seeds: same images
    few = SliceStore([store, *parts], ["train", "val"], cases=[["c0"], None, None, None])
    assert sorted(set(few.case[:5])) == ["c0"] and len(few) == 5 + 8
    assert few.fingerprint() != SliceStore([store, *parts], ["train", "val"]).fingerprint()


def test_dice_from_counts_is_the_tables_dice():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 4, (12, 8, 8)).astype(np.uint8)
    target[target == 3] = 0  # kidney absent from every target: left out
    prediction = np.where(rng.random(target.shape) < 0.7, target, rng.integers(0, 4, target.shape)).astype(np.uint8)
    counts = dice_counts(prediction, target, LABELS.ids)
    acc = DiceAccumulator(LABELS.ids)
    acc.update(prediction, target)
    from_counts = DiceAccumulator(LABELS.ids)
    from_counts.add_counts(counts)
    expected = {c: 2 * np.sum((prediction == c) & (target == c)) / (np.sum(prediction == c) + np.sum(target == c))
                for c in (1, 2)}  # kidney, absent from every target, is left out
    assert from_counts.per_class() == pytest.approx(expected) and acc.per_class() == pytest.approx(expected)
    assert counts.shape == (12, 3, 3) and (counts[:, 2, 2] == 0).all()
    metrics = usefulness_metrics(counts, np.array(["axial"] * 6 + ["coronal"] * 6), LABELS.ids, LABELS)
    assert metrics["dice"] == pytest.approx(acc.mean()) and set(metrics["dice_per_organ"]) == {"liver", "spleen"}
    assert set(metrics["dice_per_view"]) == {"axial", "coronal"}


def test_score_writes_counts_that_recompute_its_metrics_and_the_table_gives_ratios(tmp_path):
    _, store = make_subset(tmp_path)
    config = SegmentorConfig(num_classes=4, channels=(4, 8), strides=(2,), num_res_units=0)
    torch.manual_seed(0)
    save_segmentor(tmp_path / "seg.pt", build_segmentor(config), config, {"train_slices": 8})
    files = []
    for trainset in ("real", "generated"):
        out = tmp_path / "ct" / trainset
        summary = score_segmentor(ScoreJob(trainset=trainset, modality="ct", segmentor=tmp_path / "seg.pt", stores=[store],
                                           labels=LABELS, device=torch.device("cpu"), out_dir=out))
        with np.load(out / "counts.npz") as z:
            again = usefulness_metrics(z["counts"], z["view"], list(z["class_ids"]), LABELS)
        assert summary["n_test_slices"] == 10 and again["dice"] == pytest.approx(summary["dice"])
        assert json.loads((out / "metrics.json").read_text())["dice_per_organ"] == again["dice_per_organ"]
        files.append(out / "metrics.json")
    wide = write_usefulness_report(files, tmp_path / "t.csv", tmp_path / "t.md", tmp_path / "long.csv",
                                   tmp_path / "fig.png", notes=["a note"])
    assert wide.loc["generated only (TSTR)", "CT / real"] == "1.000"  # the same segmentor: ratio 1
    assert "a note" in (tmp_path / "t.md").read_text() and (tmp_path / "fig.png").stat().st_size > 1000
