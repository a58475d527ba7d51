"""evaluate_run on tiny arrays: every metric checked against an independent numpy computation."""

import json

import numpy as np
import pandas as pd
import pytest
import scipy.linalg
import torch
from tiny import make_subset, tiny_slices
from tiny import fid_inception_state_dict

from segdiff.data.dataset import SliceSet
from segdiff.data.store import SliceStore
from segdiff.evaluation.run import METRIC_KEYS, EvaluationJob, evaluate_run, evaluation_job, recompute_metrics
from segdiff.evaluation.features.fid import InceptionFeatures
from segdiff.evaluation.features.radiomics import radiomics_features
from segdiff.sampling.files import read_generation
from segdiff.core.labels import LabelMap
from segdiff.data.oracle import write_oracle
from segdiff.models.segmentor import SegmentorConfig, build_segmentor, predict, save_segmentor

LABELS = LabelMap({1: "liver", 2: "spleen", 3: "kidney"})


def frechet(a, b):
    mu_a, mu_b, cov_a, cov_b = a.mean(0), b.mean(0), np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2 * scipy.linalg.sqrtm(cov_a @ cov_b).real))


def pooled_dice(pred, ref, organs=(1, 2, 3)):
    per = {c: 2 * np.sum((pred == c) & (ref == c)) / (np.sum(pred == c) + np.sum(ref == c)) for c in organs if (ref == c).any()}
    return float(np.mean(list(per.values()))), per


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("evaluation")
    real = tiny_slices(8, size=16, seed=3)
    real = SliceSet(real.image, real.mask, np.array(["a"] * 4 + ["b"] * 4), np.tile(np.arange(4, dtype=np.int32), 2),
                    np.array(["axial"] * 8))
    rng = np.random.default_rng(0)
    k = 3
    generated = np.clip(real.image[:, None] + rng.normal(0, 0.05, (8, k, 16, 16)), 0, 1).astype(np.float32)
    oracle = np.clip(real.image[:, None] + rng.normal(0, 0.04, (8, k, 16, 16)), 0, 1).astype(np.float32)
    generation = tmp / "multi_inference.npz"
    np.savez(generation, generated=generated, original=real.image, mask=real.mask, case=real.case, slice=real.slice,
             view=real.view, seed=np.int64(1), info=json.dumps({"mode": "multi_inference", "k": k}))
    oracle_files = []
    for case in ("a", "b"):
        rows = real.case == case
        oracle_files.append(tmp / "oracle" / "axial" / f"{case}.npz")
        write_oracle({"axial": {"image": oracle[rows], "mask": real.mask[rows], "slice": real.slice[rows]}},
                     {"axial": oracle_files[-1]})
    torch.manual_seed(0)
    config = SegmentorConfig(num_classes=4, channels=(8, 16), strides=(2,), num_res_units=1)
    net = build_segmentor(config)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.3)  # predictions that vary from image to image
    save_segmentor(tmp / "segmentor.pt", net, config, {})
    weights = tmp / "fid.pth"
    torch.save(fid_inception_state_dict(), weights)
    summary = evaluate_run("CT axial", generation, tmp / "segmentor.pt", real, LABELS, torch.device("cpu"), tmp / "out",
                           oracle=oracle_files, inception_weights=str(weights), poster_inception_weights=str(tmp / "none.pth"))
    return {"summary": summary, "real": real, "generated": generated, "oracle": oracle, "net": net, "weights": weights,
            "out": tmp / "out"}


def test_every_metric_against_numpy(run):
    s, real, gen, oracle = run["summary"], run["real"], run["generated"], run["oracle"]
    net = run["net"].eval()
    pred_gen, feat_gen = predict(net, gen[:, 0], torch.device("cpu"), features=True)
    pred_ref, feat_ref = predict(net, real.image, torch.device("cpu"), features=True)
    pred_orc, feat_orc = predict(net, oracle[:, 0], torch.device("cpu"), features=True)
    assert s["dice_gen"] == pytest.approx(pooled_dice(pred_gen, real.mask)[0])
    assert s["dice_orig"] == pytest.approx(pooled_dice(pred_ref, real.mask)[0])
    assert s["dice_oracle"] == pytest.approx(pooled_dice(pred_orc, real.mask)[0])
    assert s["dice_ratio"] == pytest.approx(s["dice_gen"] / s["dice_orig"])
    for organ, c in (("liver", 1), ("spleen", 2), ("kidney", 3)):
        if organ in s["per_organ"]:
            assert s["per_organ"][organ]["dice_gen"] == pytest.approx(pooled_dice(pred_gen, real.mask)[1][c])
    mse = ((gen[:, 0].astype(np.float64) - real.image) ** 2).mean(axis=(1, 2))
    assert s["psnr"] == pytest.approx(np.mean(10 * np.log10(1 / mse)), rel=1e-6)
    assert s["fd_seg"] == pytest.approx(frechet(feat_gen, feat_ref), rel=1e-4)
    assert s["fd_seg_oracle"] == pytest.approx(frechet(feat_orc, feat_ref), rel=1e-4)
    # FID for real, with the test-made Inception weights
    inception = InceptionFeatures(weights=run["weights"])
    assert s["fid"] == pytest.approx(frechet(inception(gen[:, 0]), inception(real.image)), rel=1e-4)
    assert s["fid_oracle"] == pytest.approx(frechet(inception(oracle[:, 0]), inception(real.image)), rel=1e-4)
    assert s["fid_poster"] is None and "none.pth" in s["fid_poster_note"]  # no torchvision weights: n/a, with the reason
    # FRD: z-score by the real set, non-finite columns out, log of the Fréchet distance
    rad_real, rad_gen = radiomics_features(real.image), radiomics_features(gen[:, 0])
    mu, sd = rad_real.mean(0), rad_real.std(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        a, b = (rad_real - mu) / sd, (rad_gen - mu) / sd
    keep = np.isfinite(a).all(0) & np.isfinite(b).all(0)
    assert s["frd"] == pytest.approx(np.log(frechet(a[:, keep], b[:, keep])), rel=1e-3)
    inside = real.mask > 0
    assert s["diversity_gen"] == pytest.approx(gen.std(axis=1)[inside].mean(), rel=1e-6)
    assert s["diversity_oracle"] == pytest.approx(oracle.std(axis=1)[inside].mean(), rel=1e-6)
    assert s["diversity_ratio"] == pytest.approx(s["diversity_gen"] / s["diversity_oracle"], rel=1e-9)
    assert 1.0 < s["diversity_ratio"] < 1.6  # noise 0.05 vs 0.04, clipped
    assert s["diversity_outside_gen"] == pytest.approx(gen.std(axis=1)[~inside].mean(), rel=1e-6)
    assert s["diversity_outside_oracle"] == pytest.approx(oracle.std(axis=1)[~inside].mean(), rel=1e-6)
    # the quality gate (tests/evaluation/test_quality.py checks its numbers): noise on the real slices has texture
    assert s["texture_ratio"] > 1 and s["k_spread"] > 1 and isinstance(s["quality_flags"], list)
    assert s["n_dropped_empty"] == 0


def test_files_and_recompute(run):
    out = run["out"]
    arrays = dict(np.load(out / "arrays.npz"))
    metrics = json.loads((out / "metrics.json").read_text())
    again = recompute_metrics(arrays, [1, 2, 3], 4)
    for key in METRIC_KEYS:
        assert (again[key] is None) == (metrics[key] is None), key
        if again[key] is not None:
            assert again[key] == pytest.approx(metrics[key], rel=1e-9), key
    assert again["quality_flags"] == metrics["quality_flags"]
    per_slice = pd.read_csv(out / "per_slice.csv")
    assert list(per_slice.columns) == ["case", "view", "slice", "psnr", "ssim", "dice_gen", "dice_orig", "dice_oracle"]
    assert len(per_slice) == 8
    assert read_generation(out.parent / "multi_inference.npz")["generated"].shape == arrays["generated"].shape


def test_paired_run_refuses_originals_that_are_not_the_reference(run, tmp_path):
    real = run["real"]
    other = SliceSet(real.image[::-1].copy(), real.mask, real.case, real.slice, real.view)
    with pytest.raises(ValueError, match="not the reference slices"):
        evaluate_run("x", run["out"].parent / "multi_inference.npz", run["out"].parent / "segmentor.pt", other, LABELS,
                     torch.device("cpu"), tmp_path)


def test_without_oracle_the_oracle_rows_are_none(run, tmp_path):
    real = run["real"]
    summary = evaluate_run("CT axial", run["out"].parent / "multi_inference.npz", run["out"].parent / "segmentor.pt", real,
                           LABELS, torch.device("cpu"), tmp_path, inception_weights=str(tmp_path / "none.pth"))
    for key in ("diversity_ratio", "diversity_oracle", "psnr_oracle", "frd_oracle", "fd_seg_oracle", "dice_oracle", "fid"):
        assert summary[key] is None, key
    assert summary["oracle"] is False and summary["diversity_gen"] == pytest.approx(run["summary"]["diversity_gen"])
    assert summary["dice_gen"] == pytest.approx(run["summary"]["dice_gen"]) and summary["frd"] == pytest.approx(run["summary"]["frd"])
    assert pd.read_csv(tmp_path / "per_slice.csv")["dice_oracle"].isna().all()


def test_evaluation_job_evaluates_the_seeded_test_subset_of_the_stores(run, tmp_path):
    _, store = make_subset(tmp_path)
    real = SliceStore([store], ["test"]).subset(6, 1)  # the subset the sampling jobs drew
    rng = np.random.default_rng(1)
    generated = np.clip(real.image[:, None] + rng.normal(0, 0.05, (len(real), 2, 16, 16)), 0, 1).astype(np.float32)
    generation = tmp_path / "multi_inference.npz"
    np.savez(generation, generated=generated, original=real.image, mask=real.mask, case=real.case, slice=real.slice,
             view=real.view, seed=np.int64(1), info=json.dumps({"mode": "multi_inference", "k": 2}))
    segmentor, none = run["out"].parent / "segmentor.pt", str(tmp_path / "none.pth")
    summary = evaluation_job(EvaluationJob(
        label="CT axial", generation=str(generation), segmentor=str(segmentor), reference=(str(store),), oracle=(),
        labels=LABELS, device=torch.device("cpu"), max_slices=6, seed=1, out_dir=tmp_path / "job",
        inception_weights=none, poster_inception_weights=none))
    assert summary["n_slices"] == summary["n_reference"] == 6 and summary["oracle"] is False
    evaluate_run("CT axial", str(generation), str(segmentor), real, LABELS, torch.device("cpu"), tmp_path / "direct",
                 inception_weights=none, poster_inception_weights=none)
    assert (tmp_path / "job/metrics.json").read_text() == (tmp_path / "direct/metrics.json").read_text()


def test_multimodal_run_records_the_slices_sampling_dropped(run, tmp_path):
    real = run["real"]
    gen = read_generation(run["out"].parent / "multi_inference.npz")
    generation = tmp_path / "multimodal.npz"
    np.savez(generation, **{**{key: gen[key] for key in ("generated", "original", "mask", "case", "slice", "view")},
                            "seed": np.int64(1), "info": json.dumps({"mode": "multimodal", "k": 3, "dropped_empty": 2})})
    none = str(tmp_path / "none.pth")
    summary = evaluate_run("CT→MRI axial", generation, run["out"].parent / "segmentor.pt", real, LABELS,
                           torch.device("cpu"), tmp_path / "out", inception_weights=none, poster_inception_weights=none)
    assert summary["n_dropped_empty"] == 2 and summary["psnr"] is None and summary["mode"] == "multimodal"
    assert json.loads((tmp_path / "out/metrics.json").read_text())["n_dropped_empty"] == 2
