"""Metrics against independent computations: numpy formulas, scipy filters, closed forms, a loopback server."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading

import numpy as np
import pytest
import pytorch_fid.inception as fid_inception
import torch
import torchvision
from scipy import ndimage
from skimage.metrics import structural_similarity

import segdiff.metrics as metrics
from segdiff.errors import InputError
from segdiff.metrics import (
    FID_WEIGHTS_NAME,
    DiceAccumulator,
    GaussianStats,
    InceptionFeatures,
    WeightsUnavailable,
    dice_per_slice,
    diversity,
    fetch_inception_weights,
    find_inception_weights,
    frechet_distance,
    load_inception,
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


# --------------------------------------------------------------------------- Inception weights


def fid_inception_state_dict():
    """pytorch-fid's FID Inception architecture, randomly initialised, built the way pytorch-fid does."""
    torch.manual_seed(0)
    net = torchvision.models.inception_v3(weights=None, num_classes=1008, aux_logits=False, init_weights=False)
    net.Mixed_5b = fid_inception.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = fid_inception.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = fid_inception.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = fid_inception.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = fid_inception.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = fid_inception.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = fid_inception.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = fid_inception.FIDInceptionE_1(1280)
    net.Mixed_7c = fid_inception.FIDInceptionE_2(2048)
    state = net.state_dict()
    state["Mixed_7c.branch_pool.bn.running_mean"].uniform_(-1, 1)  # a buffer that differs from its default
    return state


@pytest.fixture(scope="module")
def fid_weights(tmp_path_factory):
    state = fid_inception_state_dict()
    path = tmp_path_factory.mktemp("fid") / FID_WEIGHTS_NAME
    torch.save(state, path)
    return path, state


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """torch.hub pointed at an empty directory, and any download attempt turned into a failure."""
    hub = tmp_path / "hub"
    hub.mkdir()
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))

    def no_download(*args, **kwargs):
        raise AssertionError("attempted a download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    return hub


@pytest.fixture
def one_thread():
    """Inception on one intra-op thread: on a shared 2-core machine two spinning threads are ~20x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_weights_name_is_pytorch_fids():
    assert FID_WEIGHTS_NAME == "pt_inception-2015-12-05-6726825d.pth"


def test_missing_weights_name_where_they_were_looked_for(empty_hub, tmp_path):
    hub_file = empty_hub / "checkpoints" / FID_WEIGHTS_NAME
    with pytest.raises(WeightsUnavailable) as err:
        find_inception_weights()
    message = str(err.value)
    assert str(hub_file) in message and "fetch-inception-weights" in message and fid_inception.FID_WEIGHTS_URL in message
    configured = tmp_path / "elsewhere" / "inception.pth"
    with pytest.raises(WeightsUnavailable) as err:
        load_inception(configured)
    assert str(configured) in str(err.value) and str(hub_file) in str(err.value)
    assert not configured.exists() and not (empty_hub / "checkpoints").exists()  # nothing created or fetched


def test_weights_are_found_in_the_hub_cache(empty_hub):
    cached = empty_hub / "checkpoints" / FID_WEIGHTS_NAME
    cached.parent.mkdir()
    cached.write_bytes(b"x")
    assert find_inception_weights() == cached


def test_load_inception_uses_the_file_and_features_are_2048d(fid_weights, empty_hub, one_thread):
    path, state = fid_weights
    hook = fid_inception.load_state_dict_from_url
    model = load_inception(path)
    assert fid_inception.load_state_dict_from_url is hook  # pytorch-fid's hook restored
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    torch.testing.assert_close(model.blocks[0][0].conv.weight, state["Conv2d_1a_3x3.conv.weight"], rtol=0, atol=0)
    mixed_7c = model.blocks[3][2]
    torch.testing.assert_close(mixed_7c.branch_pool.conv.weight, state["Mixed_7c.branch_pool.conv.weight"], rtol=0, atol=0)
    torch.testing.assert_close(mixed_7c.branch_pool.bn.running_mean, state["Mixed_7c.branch_pool.bn.running_mean"])

    slices = np.random.default_rng(3).random((3, 32, 32)).astype(np.float32)
    features = InceptionFeatures(model=model, batch_size=2)(slices[:, None])  # (B, 1, H, W), two batches
    assert features.shape == (3, 2048) and features.dtype == np.float64 and np.isfinite(features).all()
    with torch.no_grad():
        direct = model(torch.from_numpy(slices)[:, None].repeat(1, 3, 1, 1))[0].reshape(3, -1).double().numpy()
    np.testing.assert_allclose(features, direct, rtol=1e-4, atol=1e-6 * np.abs(direct).max())
    assert np.abs(features[0] - features[1]).max() > 0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        InceptionFeatures(model=model)(slices * 255)


def test_corrupt_or_foreign_weights_are_input_errors(tmp_path, empty_hub):
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a torch file at all")
    foreign = tmp_path / "foreign.pth"
    torch.save(torch.nn.Linear(2, 2).state_dict(), foreign)
    not_a_dict = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), not_a_dict)
    for path in (corrupt, foreign, not_a_dict):
        with pytest.raises(InputError) as err:
            load_inception(path)
        assert str(err.value).startswith(f"{path}: ")


# --------------------------------------------------------------------------- fetching


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A loopback HTTP server for a directory; yields (directory, base URL); shut down afterwards."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    root = tmp_path / "served"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_fetch_writes_identical_bytes_atomically(served, tmp_path):
    root, base = served
    payload = np.random.default_rng(4).bytes(3 * 2**20 + 17)  # several read chunks
    (root / "weights.bin").write_bytes(payload)
    dest = tmp_path / "out" / FID_WEIGHTS_NAME
    assert fetch_inception_weights(dest, url=f"{base}/weights.bin", timeout=10) == dest
    assert dest.read_bytes() == payload and dest.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in dest.parent.iterdir()] == [FID_WEIGHTS_NAME]  # no temp file left


def test_fetch_defaults_to_the_hub_cache_and_verifies_hub_hash_names(served, empty_hub, tmp_path):
    root, base = served
    payload = b"inception weights stand-in"
    good = f"w-{hashlib.sha256(payload).hexdigest()[:8]}.pth"
    (root / good).write_bytes(payload)
    (root / "w-deadbeef.pth").write_bytes(payload)
    path = fetch_inception_weights(url=f"{base}/{good}", timeout=10)
    assert path == empty_hub / "checkpoints" / FID_WEIGHTS_NAME and path.read_bytes() == payload
    dest = tmp_path / "bad" / "w.pth"
    with pytest.raises(WeightsUnavailable, match="SHA-256"):
        fetch_inception_weights(dest, url=f"{base}/w-deadbeef.pth", timeout=10)
    assert list(dest.parent.iterdir()) == []


def test_fetch_http_error_is_clear_and_leaves_nothing(served, tmp_path):
    _, base = served
    dest = tmp_path / "out" / FID_WEIGHTS_NAME
    with pytest.raises(WeightsUnavailable) as err:
        fetch_inception_weights(dest, url=f"{base}/missing.pth", timeout=10)
    message = str(err.value)
    assert "404" in message and f"{base}/missing.pth" in message and str(dest) in message
    assert not dest.exists() and list(dest.parent.iterdir()) == []


def test_fetch_command_line(served, tmp_path, capsys):
    root, base = served
    (root / "weights.bin").write_bytes(b"abc")
    dest = tmp_path / "cli.pth"
    assert metrics.main(["fetch-inception-weights", "--dest", str(dest), "--url", f"{base}/weights.bin"]) == 0
    assert dest.read_bytes() == b"abc" and str(dest) in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        metrics.main(["fetch-inception-weights", "--dest", str(tmp_path / "x.pth"), "--url", f"{base}/nope"])
    assert exit_.value.code == 1 and "404" in capsys.readouterr().err


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
