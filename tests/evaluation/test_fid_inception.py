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
from segdiff.sources.weights import WeightsUnavailable
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
    assert str(hub_file) in message and "python -m segdiff.sources.weights fetch fid-inception" in message and fid_inception.FID_WEIGHTS_URL in message
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
