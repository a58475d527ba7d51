"""Fréchet Radiomics Distance through frd-score: minimum on identical sets, growth with noise, parity."""

from __future__ import annotations

import numpy as np
import pytest
from frd_score import frd as frd_lib
from PIL import Image
from threadpoolctl import threadpool_limits

from segdiff.evaluation.features.radiomics import frd, frd_from_features, radiomics_features

NOISE_LEVELS = (0.02, 0.05, 0.1)


@pytest.fixture(scope="module", autouse=True)
def one_blas_thread():
    """scipy's sqrtm on one BLAS thread: on a shared 2-core machine two spinning threads are ~50x slower."""
    with threadpool_limits(1):
        yield


def phantom_slices(n=12, size=32, seed=0):
    """Bright discs of random place and size on a textured background, mild noise: radiomics that vary."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    out = []
    for i in range(n):
        cx, cy, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.15, 0.3)
        img = 0.2 + 0.5 * (((xx - cx) ** 2 + (yy - cy) ** 2) < r * r) + 0.05 * np.sin(2 * np.pi * xx * (i % 3 + 1))
        out.append(img + rng.normal(0, 0.02, img.shape))
    return np.clip(np.stack(out), 0, 1)


def noisy(images, sigma, seed):
    return np.clip(images + np.random.default_rng(seed).normal(0, sigma, images.shape), 0, 1)


@pytest.fixture(scope="module")
def real():
    images = phantom_slices()
    return images, radiomics_features(images)


@pytest.fixture(scope="module")
def noisy_features(real):
    images, _ = real
    return {sigma: radiomics_features(noisy(images, sigma, seed=i)) for i, sigma in enumerate(NOISE_LEVELS)}


def test_frd_of_a_set_with_itself_is_minimal_and_grows_with_noise(real, noisy_features):
    _, features = real
    assert features.ndim == 2 and features.shape[0] == 12 and features.shape[1] > 100
    self_distance = frd_from_features(features, features, log=False)
    distances = [frd_from_features(features, noisy_features[s], log=False) for s in NOISE_LEVELS]
    assert abs(self_distance) < 1e-6 * distances[0]  # ~0 up to sqrtm's rounding
    assert distances == sorted(distances) and distances[0] > 0  # monotonic in the noise level
    # frd-score's FRD is log(d^2): -inf for identical sets, then increasing with d^2
    logs = [frd_from_features(features, noisy_features[s]) for s in NOISE_LEVELS]
    np.testing.assert_allclose(logs, np.log(distances), rtol=1e-12)
    assert frd_from_features(features, features) < min(logs)


@pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")  # pykwalify, inside frd-score
def test_frd_on_arrays_equals_frd_scores_compute_frd_on_the_pngs(real, tmp_path):
    images, _ = real
    generated = noisy(images, 0.05, seed=1)
    for name, arr in (("real", images), ("gen", generated)):
        (tmp_path / name).mkdir()
        for i, img in enumerate(arr):
            Image.fromarray((img * 255).round().astype(np.uint8)).save(tmp_path / name / f"{i:03d}.png")
    expected = frd_lib.compute_frd([str(tmp_path / "real"), str(tmp_path / "gen")], num_workers=1)
    assert frd(images, generated, tmp_dir=tmp_path) == pytest.approx(expected, rel=1e-9)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gen", "real"]  # temporary PNGs removed


def test_radiomics_features_do_not_depend_on_the_batch(real, tmp_path):
    images, features = real
    batched = radiomics_features(images[:5], batch_size=2, tmp_dir=tmp_path)
    np.testing.assert_array_equal(batched, features[:5])
    assert list(tmp_path.iterdir()) == []
    # frd-score's own process pool gives the same features
    np.testing.assert_array_equal(radiomics_features(images[:3], num_workers=2), features[:3])


def test_frd_validates_its_input(real):
    images, features = real
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        radiomics_features(images[0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        radiomics_features(images * 255)
    with pytest.raises(ValueError, match="16x16"):
        radiomics_features(images[:, :8, :8])
    with pytest.raises(ValueError, match="dtype"):
        radiomics_features((images * 255).astype(np.uint8))
    with pytest.raises(ValueError, match="feature counts differ"):
        frd_from_features(features, features[:, :-1])
    with pytest.raises(ValueError, match="at least 2"):
        frd_from_features(features[:1], features)
    with pytest.raises(ValueError, match=r"\(N, F\)"):
        frd_from_features(features[0], features)


def test_dominant_feature_finds_a_feature_constant_in_the_real_set():
    from segdiff.evaluation.features.radiomics import dominant_feature

    rng = np.random.default_rng(0)
    real, generated = rng.normal(size=(20, 5)), rng.normal(size=(20, 5))
    real[:, 3] = 1.0 + rng.normal(0, 1e-6, 20)  # (nearly) constant across the real slices
    generated[:, 3] = 1.1
    index, share, sd, z = dominant_feature(real, generated)
    assert index == 3 and share > 0.99 and sd < 1e-5 and z > 1e4
    index, share, _, _ = dominant_feature(real[:, :3], real[:, :3] + 0.5 * real[:, :3].std(axis=0))  # an even shift
    assert share == pytest.approx(1 / 3)
