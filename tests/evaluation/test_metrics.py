"""Metric formulas against independent computations: numpy formulas, scipy filters, closed forms."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.metrics import structural_similarity

import segdiff.evaluation.metrics as metrics
from segdiff.evaluation.metrics import (
    DiceAccumulator,
    GaussianStats,
    dice_per_slice,
    diversity,
    diversity_ratio,
    frechet_distance,
    psnr,
    ssim,
)

# --------------------------------------------------------------------------- PSNR / SSIM


def image_pair(n=3, size=24, noise=0.05, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    reference = np.stack([0.5 + 0.4 * np.sin(2 * np.pi * (xx * (i + 1) + yy)) for i in range(n)])
    generated = np.clip(reference + rng.normal(0, noise, reference.shape), 0, 1)
    return generated, reference


def test_psnr_matches_the_mse_formula_and_caps_identical_slices():
    generated, reference = image_pair()
    mse = ((generated - reference) ** 2).reshape(len(generated), -1).mean(axis=1)
    np.testing.assert_allclose(psnr(generated, reference), 10 * np.log10(1.0 / mse), rtol=1e-12)
    # data_range scales the peak: images and range doubled give the same value
    np.testing.assert_allclose(psnr(2 * generated, 2 * reference, data_range=2.0), psnr(generated, reference))

    generated[1] = reference[1]
    values = psnr(generated, reference)
    assert values[1] == metrics.PSNR_CAP_DB == 100.0
    assert np.isfinite(values).all() and (values[[0, 2]] < 100).all()
    assert np.isinf(psnr(generated, reference, cap=None)[1])


def ssim_wang(x, y, data_range=1.0):
    """SSIM written out from Wang et al. (2004): Gaussian window sigma 1.5, borders cropped."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    f = functools.partial(ndimage.gaussian_filter, sigma=1.5, truncate=3.5, mode="reflect")
    mx, my = f(x), f(y)
    vx, vy, cxy = f(x * x) - mx * mx, f(y * y) - my * my, f(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s[5:-5, 5:-5].mean()


def test_ssim_is_wang_et_al_per_slice():
    generated, reference = image_pair(noise=0.1)
    values = ssim(generated, reference)
    assert values.shape == (3,) and (values < 0.99).all()
    np.testing.assert_allclose(values, [ssim_wang(g, r) for g, r in zip(generated, reference)], rtol=1e-9)
    direct = [
        structural_similarity(r, g, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        for g, r in zip(generated, reference)
    ]
    np.testing.assert_allclose(values, direct, rtol=1e-12)
    np.testing.assert_allclose(ssim(reference, reference), 1.0, rtol=1e-12)
    # float32 input is evaluated in float64, so the values do not depend on the storage type
    np.testing.assert_allclose(ssim(generated.astype(np.float32), reference.astype(np.float32)), values, rtol=1e-5)


def test_image_metrics_refuse_mismatched_shapes():
    generated, reference = image_pair()
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(generated, reference[:2])
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        ssim(generated[0], reference[0])


# --------------------------------------------------------------------------- Dice


def confusion_dice(prediction, target, class_ids):
    """Pooled Dice from a confusion matrix (rows: target, columns: prediction)."""
    k = int(max(prediction.max(), target.max(), *class_ids)) + 1
    cm = np.bincount(target.ravel() * k + prediction.ravel(), minlength=k * k).reshape(k, k)
    return {c: 2 * cm[c, c] / (cm[:, c].sum() + cm[c, :].sum()) for c in class_ids if cm[c, :].sum() > 0}


def label_maps(n=6, size=12, seed=0):
    rng = np.random.default_rng(seed)
    target = rng.integers(0, 4, (n, size, size))
    prediction = np.where(rng.random(target.shape) < 0.7, target, rng.integers(0, 4, target.shape))
    return prediction, target


def test_dice_is_pooled_over_slices_and_streaming_equals_one_shot():
    prediction, target = label_maps()
    expected = confusion_dice(prediction, target, [1, 2, 3])
    one = DiceAccumulator([1, 2, 3])
    one.update(prediction, target)
    streamed = DiceAccumulator([1, 2, 3])
    for lo, hi in [(0, 1), (1, 4), (4, 6)]:
        streamed.update(prediction[lo:hi], target[lo:hi])
    for acc in (one, streamed):
        assert acc.per_class().keys() == expected.keys()
        for c, v in expected.items():
            assert acc.per_class()[c] == pytest.approx(v, rel=1e-12)
        assert acc.mean() == pytest.approx(np.mean(list(expected.values())), rel=1e-12)
    # pooled, not the mean of per-slice values
    assert one.mean() != pytest.approx(np.nanmean(dice_per_slice(prediction, target, [1, 2, 3])), rel=1e-6)


def test_dice_absent_classes_and_perfect_prediction():
    target = np.zeros((2, 8, 8), np.uint8)
    target[0, 1:4, 1:4] = 1  # 9 pixels
    target[1, 4:6, 4:6] = 3  # 4 pixels, never predicted
    prediction = np.zeros_like(target)
    prediction[0, 1:4, 1:3] = 1  # 6 pixels, all inside
    prediction[1, 0, :3] = 2  # class 2 is absent from the targets
    acc = DiceAccumulator([1, 2, 3])
    acc.update(prediction, target)
    assert acc.per_class() == {1: pytest.approx(2 * 6 / (6 + 9)), 3: 0.0}
    assert acc.mean() == pytest.approx((0.8 + 0.0) / 2)

    perfect = DiceAccumulator([1, 2, 3])
    perfect.update(target, target)
    assert perfect.per_class() == {1: 1.0, 3: 1.0} and perfect.mean() == 1.0

    empty = DiceAccumulator([1])
    empty.update(np.ones((2, 2), np.int64), np.zeros((2, 2), np.int64))
    assert empty.per_class() == {} and np.isnan(empty.mean())

    with pytest.raises(ValueError, match="integer"):
        acc.update(prediction.astype(float), target)
    with pytest.raises(ValueError, match="shape"):
        acc.update(prediction[:1], target)


def test_dice_per_slice_averages_the_classes_present_in_each_slice():
    prediction, target = label_maps(n=4)
    target[2] = 0  # no foreground: NaN
    target[3][target[3] == 2] = 0  # class 2 absent from slice 3 (ignored there even if predicted)
    values = dice_per_slice(prediction, target, [1, 2, 3])
    assert values.shape == (4,) and np.isnan(values[2])
    for i in (0, 1, 3):
        expected = confusion_dice(prediction[i], target[i], [1, 2, 3])
        assert values[i] == pytest.approx(np.mean(list(expected.values())), rel=1e-12)
    assert len(confusion_dice(prediction[3], target[3], [1, 2, 3])) == 2


# --------------------------------------------------------------------------- Gaussian statistics


def test_gaussian_stats_stream_equals_numpy_over_all_rows():
    rng = np.random.default_rng(1)
    x = 1e3 + rng.normal(size=(257, 7)) @ rng.normal(size=(7, 7))  # large offset: tests stability
    stats = GaussianStats(7)
    start = 0
    for size in (1, 50, 0, 100, 106):
        batch = x[start : start + size]
        stats.update(torch.from_numpy(batch) if size == 100 else batch)
        start += size
    assert stats.n == 257
    np.testing.assert_allclose(stats.mean, x.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(stats.cov, np.cov(x, rowvar=False), rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="at least 2"):
        one = GaussianStats(7)
        one.update(x[:1])
        one.cov  # noqa: B018
    with pytest.raises(ValueError, match=r"\(B, 7\)"):
        stats.update(x[:, :3])


def stats_with_diagonal_cov(mu, variances):
    """2d samples mu ± c_i e_i: sample mean exactly mu, unbiased covariance exactly diag(variances)."""
    d = len(mu)
    c = np.sqrt(np.asarray(variances) * (2 * d - 1) / 2)
    rows = np.concatenate([mu + np.diag(c), mu - np.diag(c)])
    stats = GaussianStats(d)
    stats.update(rows)
    np.testing.assert_allclose(stats.cov, np.diag(variances), atol=1e-12)
    return stats


def test_frechet_distance_matches_closed_forms():
    mu1, mu2 = np.array([0.0, 1.0, -2.0, 0.5]), np.array([1.0, 1.0, 0.0, 0.0])
    s1, s2 = np.array([1.0, 4.0, 0.25, 2.0]), np.array([2.0, 1.0, 1.0, 2.0])
    a, b = stats_with_diagonal_cov(mu1, s1), stats_with_diagonal_cov(mu2, s2)
    closed = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert frechet_distance(a, b) == pytest.approx(closed, rel=1e-9)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)

    # full covariances: Tr(C1 + C2 - 2 (C1^1/2 C2 C1^1/2)^1/2) via eigendecompositions
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(40, 5)) @ rng.normal(size=(5, 5)), 1 + rng.normal(size=(60, 5)) @ rng.normal(size=(5, 5))
    a, b = GaussianStats(5), GaussianStats(5)
    a.update(x)
    b.update(y)

    def sqrtm_psd(m):
        w, v = np.linalg.eigh(m)
        return (v * np.sqrt(np.clip(w, 0, None))) @ v.T

    c1, c2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    r1 = sqrtm_psd(c1)
    closed = np.sum((x.mean(0) - y.mean(0)) ** 2) + np.trace(c1 + c2 - 2 * sqrtm_psd(r1 @ c2 @ r1))
    assert frechet_distance(a, b) == pytest.approx(closed, rel=1e-8)
    with pytest.raises(ValueError, match="dimensions differ"):
        frechet_distance(a, GaussianStats(4))


# --------------------------------------------------------------------------- diversity


def test_diversity_of_identical_generations_is_zero():
    rng = np.random.default_rng(5)
    one = rng.random((2, 1, 8, 8))
    mask = (rng.random((2, 8, 8)) > 0.5).astype(np.uint8)
    assert diversity(np.repeat(one, 4, axis=1), mask) == {"inside": 0.0, "outside": 0.0}


def test_diversity_constructed_example():
    generated = np.full((2, 3, 4, 4), 0.2)
    mask = np.zeros((2, 4, 4), np.uint8)
    mask[0, :2, :2] = 1
    mask[1, 3, :] = 5
    inside = mask > 0
    generated[:, 0][inside], generated[:, 1][inside], generated[:, 2][inside] = 0.0, 0.5, 1.0
    generated[0, 1, 3, 3] = 0.5  # one outside pixel with values (0.2, 0.5, 0.2)
    outside_std = np.sqrt(((0.1) ** 2 * 2 + 0.2**2) / 3)  # mean 0.3
    n_outside = 32 - 8
    result = diversity(generated, mask)
    assert result["inside"] == pytest.approx(np.sqrt(1 / 6), rel=1e-12)
    assert result["outside"] == pytest.approx(outside_std / n_outside, rel=1e-12)
    assert diversity(generated, mask, ddof=1)["inside"] == pytest.approx(0.5, rel=1e-12)
    assert np.isnan(diversity(generated, np.zeros_like(mask))["inside"])
    with pytest.raises(ValueError, match="mask shape"):
        diversity(generated, mask[:1])


def test_diversity_ratio_is_zero_for_identical_generations():
    rng = np.random.default_rng(6)
    mask = np.zeros((3, 16, 16), np.uint8)
    mask[:, 4:12, 4:12] = 2
    one = rng.random((3, 1, 16, 16))
    oracle = rng.random((3, 5, 16, 16))
    assert diversity_ratio(np.repeat(one, 4, axis=1), oracle, mask) == 0.0


def per_class_renders(mask, k, rng, noise=0.1):
    """k draws of one noise process around fixed per-class means (the same means for every draw)."""
    means = np.array([0.2, 0.5, 0.8])
    return np.clip(means[mask][:, None] + rng.normal(0, noise, (mask.shape[0], k, *mask.shape[1:])), 0, 1)


def test_diversity_ratio_of_two_draws_of_the_same_process_is_one():
    rng = np.random.default_rng(7)
    mask = np.zeros((4, 32, 32), np.int64)
    mask[:, 4:20, 6:26] = 1
    mask[:, 20:28, 10:20] = 2
    generated, oracle = per_class_renders(mask, 4, rng), per_class_renders(mask, 4, rng)
    assert not np.array_equal(generated, oracle)
    assert diversity_ratio(generated, oracle, mask) == pytest.approx(1.0, abs=0.1)
    # half the noise, half the diversity; a different k' for the oracle is allowed
    half = per_class_renders(mask, 4, rng, noise=0.05)
    assert diversity_ratio(half, per_class_renders(mask, 6, rng), mask) == pytest.approx(0.5, abs=0.1)


def test_diversity_ratio_nan_cases_and_shape_checks():
    rng = np.random.default_rng(8)
    generated = rng.random((2, 3, 8, 8))
    mask = np.ones((2, 8, 8), np.uint8)
    constant_oracle = np.full((2, 3, 8, 8), 0.5)
    assert np.isnan(diversity_ratio(generated, constant_oracle, mask))  # oracle spread 0
    assert np.isnan(diversity_ratio(generated, rng.random((2, 3, 8, 8)), np.zeros_like(mask)))  # no inside pixel
    with pytest.raises(ValueError, match="same"):
        diversity_ratio(generated, rng.random((3, 3, 8, 8)), mask)
    with pytest.raises(ValueError, match=r"\(N, k, H, W\)"):
        diversity_ratio(generated[:, 0], rng.random((2, 3, 8, 8)), mask)
    with pytest.raises(ValueError, match="at least 2"):
        diversity_ratio(generated, rng.random((2, 1, 8, 8)), mask)
