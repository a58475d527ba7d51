"""pytorch-fid's FID Inception from a local weights file: lookup, strict loading, features."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_fid.inception as fid_inception
import torch
import torchvision

from segdiff.core.errors import InputError
from segdiff.evaluation.features.fid import (
    FID_WEIGHTS_NAME,
    FID_WEIGHTS_URL,
    InceptionFeatures,
    find_inception_weights,
    load_inception,
)
from segdiff.evaluation.features.inception import InceptionFeatureExtractor
from segdiff.evaluation.features.poster import PosterInceptionFeatures
from segdiff.sources.weights import FETCH_COMMAND, WeightsUnavailable
from tiny import fid_inception_state_dict

# --------------------------------------------------------------------------- Inception weights


@pytest.fixture(scope="module")
def fid_weights(tmp_path_factory):
    state = fid_inception_state_dict()
    path = tmp_path_factory.mktemp("fid") / FID_WEIGHTS_NAME
    torch.save(state, path)
    return path, state


def test_weights_name_is_pytorch_fids():
    assert FID_WEIGHTS_NAME == "pt_inception-2015-12-05-6726825d.pth"
    assert FID_WEIGHTS_URL == fid_inception.FID_WEIGHTS_URL


def test_missing_weights_name_where_they_were_looked_for(empty_hub, tmp_path):
    hub_file = empty_hub / "checkpoints" / FID_WEIGHTS_NAME
    with pytest.raises(WeightsUnavailable) as err:
        find_inception_weights()
    message = str(err.value)
    assert str(hub_file) in message and f"{FETCH_COMMAND} fid-inception" in message and fid_inception.FID_WEIGHTS_URL in message
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


# --------------------------------------------------------------------------- the shared base


class _Doubling(InceptionFeatureExtractor):
    """A stand-in network on the base: each slice's feature is its pixels doubled; records batch sizes."""

    dims = 6
    weights_name = FID_WEIGHTS_NAME
    weights_what = "stand-in weights"
    weights_mismatch = "not the stand-in weights"

    @classmethod
    def build(cls, state):
        net = torch.nn.Linear(1, 1)
        net.load_state_dict(state, strict=True)
        return net

    def prepare(self, images):
        return torch.as_tensor(images, dtype=torch.float32)

    def preprocess(self, batch):
        return self.place(batch)

    def features(self, x):
        self.seen.append(len(x))
        return 2 * x


def test_both_extractors_share_the_base():
    assert issubclass(InceptionFeatures, InceptionFeatureExtractor)
    assert issubclass(PosterInceptionFeatures, InceptionFeatureExtractor)
    assert InceptionFeatures.dims == PosterInceptionFeatures.dims == 2048
    assert InceptionFeatures.find_weights is not PosterInceptionFeatures.find_weights  # bound to each class
    assert InceptionFeatures.__call__ is PosterInceptionFeatures.__call__ is InceptionFeatureExtractor.__call__
    with pytest.raises(TypeError):
        InceptionFeatureExtractor(model=torch.nn.Identity())  # abstract: a subclass states what differs


def test_base_batches_without_changing_features(tmp_path, empty_hub):
    images = np.random.default_rng(0).random((7, 2, 3)).astype(np.float32)
    whole = _Doubling(model=torch.nn.Identity(), batch_size=7)
    whole.seen = []
    expected = whole(images)
    assert whole.seen == [7] and expected.shape == (7, 6) and expected.dtype == np.float64
    np.testing.assert_array_equal(expected, 2 * images.reshape(7, 6).astype(np.float64))
    for batch_size in (1, 3, 100):
        extractor = _Doubling(model=torch.nn.Identity(), batch_size=batch_size)
        extractor.seen = []
        np.testing.assert_array_equal(extractor(images), expected)
        assert max(extractor.seen) == min(batch_size, 7) and sum(extractor.seen) == 7  # O(batch) per pass
    assert _Doubling(model=torch.nn.Identity())(images[:0]).shape == (0, 6)
    # weights lookup, strict loading and freezing come from the base
    path = tmp_path / "stand-in.pth"
    torch.save(torch.nn.Linear(1, 1).state_dict(), path)
    model = _Doubling.load(path)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    torch.save(torch.nn.Linear(2, 2).state_dict(), path)
    with pytest.raises(InputError, match="not the stand-in weights"):
        _Doubling.load(path)
    with pytest.raises(WeightsUnavailable):
        _Doubling()
    with pytest.raises(ValueError, match="batch_size"):
        _Doubling(model=torch.nn.Identity(), batch_size=0)


def test_fid_features_do_not_depend_on_the_batch_size(fid_weights, empty_hub, one_thread):
    path, _ = fid_weights
    model = load_inception(path)
    slices = np.random.default_rng(5).random((3, 24, 24)).astype(np.float32)
    one_batch = InceptionFeatures(model=model, batch_size=3)(slices)
    several = InceptionFeatures(model=model, batch_size=1)(slices)
    np.testing.assert_allclose(several, one_batch, rtol=1e-5, atol=1e-6 * np.abs(one_batch).max())
