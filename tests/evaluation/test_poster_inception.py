"""The poster's FID network from a local torchvision InceptionV3 state dict, against eval.py's code."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
import torchvision.models as models
import torchvision.transforms as transforms
from PIL import Image

from segdiff.core.errors import InputError
from segdiff.evaluation.features.poster import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    POSTER_WEIGHTS_NAME,
    PosterInceptionFeatures,
    load_poster_inception,
    poster_preprocess,
)
from segdiff.evaluation.poster import to_uint8_generated
from segdiff.evaluation.features.inception import InceptionFeatureExtractor
from segdiff.sources.weights import FETCH_COMMAND, WeightsUnavailable


@pytest.fixture(scope="module")
def torchvision_weights(tmp_path_factory):
    """torchvision's InceptionV3 architecture (as built for IMAGENET1K_V1), random init, saved to a file."""
    torch.manual_seed(0)
    net = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    state = net.state_dict()
    state["Mixed_7c.branch_pool.bn.running_mean"].uniform_(-1, 1)  # a buffer that differs from its default
    path = tmp_path_factory.mktemp("tv") / POSTER_WEIGHTS_NAME
    torch.save(state, path)
    return path, state


def eval_py_features(image_list, model):
    """get_features of eval.py's calculate_fid, verbatim but for the device."""
    fid_transform = transforms.Compose(
        [
            transforms.Resize((299, 299)),
            transforms.ToTensor(),
            transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
        ]
    )
    batch_images = []
    for img in image_list:
        if img.ndim == 2:
            img = np.stack([img, img, img], axis=-1)
        batch_images.append(fid_transform(Image.fromarray(img).convert("RGB")))
    with torch.no_grad():
        features = model(torch.stack(batch_images))
    return features.view(features.size(0), -1).numpy()


def test_features_are_eval_pys_from_the_local_file(torchvision_weights, empty_hub, one_thread):
    path, state = torchvision_weights
    model = load_poster_inception(path)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert isinstance(model.fc, torch.nn.Identity) and not model.transform_input
    for key in ("Conv2d_1a_3x3.conv.weight", "Mixed_7c.branch_pool.bn.running_mean", "AuxLogits.fc.weight"):
        torch.testing.assert_close(model.state_dict()[key], state[key], rtol=0, atol=0)

    rng = np.random.default_rng(3)
    slices = rng.random((3, 40, 40)).astype(np.float32)
    features = PosterInceptionFeatures(path, batch_size=2)(slices[:, None])  # (B, 1, H, W), two batches
    assert features.shape == (3, 2048) and features.dtype == np.float64 and np.isfinite(features).all()

    # eval.py built the network with torchvision's own builder; the same weights give the same features
    reference = models.inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=False)
    reference.load_state_dict(state)
    reference.fc = torch.nn.Identity()
    reference.eval()
    expected = eval_py_features(list(to_uint8_generated(slices)), reference)
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    assert np.abs(features[0] - features[1]).max() > 0
    # uint8 slices are used as they are
    np.testing.assert_allclose(PosterInceptionFeatures(model=model)(to_uint8_generated(slices)), features, rtol=1e-6)


def test_preprocessing_order_is_8bit_rgb_resize_then_imagenet_normalisation():
    flat = np.full((1, 20, 30), 51, np.uint8)  # 51 / 255 = 0.2
    x = poster_preprocess(flat)
    assert x.shape == (1, 3, 299, 299) and x.dtype == torch.float32
    for c in range(3):
        torch.testing.assert_close(x[0, c], torch.full((299, 299), (0.2 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]))
    # the resize works on 8-bit values: its output is 8-bit again before scaling
    ramp = np.tile(np.arange(0, 250, 10, dtype=np.uint8), (25, 1))[None]
    gray = poster_preprocess(ramp)[0, 0].numpy() * IMAGENET_STD[0] + IMAGENET_MEAN[0]
    np.testing.assert_allclose(gray * 255, np.round(gray * 255), atol=1e-3)
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        poster_preprocess(flat[0])


def test_missing_or_foreign_weights(empty_hub, tmp_path):
    with pytest.raises(WeightsUnavailable) as err:
        PosterInceptionFeatures()
    message = str(err.value)
    hub_file = empty_hub / "checkpoints" / POSTER_WEIGHTS_NAME
    assert str(hub_file) in message and f"{FETCH_COMMAND} torchvision-inception" in message
    assert models.Inception_V3_Weights.IMAGENET1K_V1.url in message
    configured = tmp_path / "configured.pth"
    with pytest.raises(WeightsUnavailable, match=str(configured)):
        load_poster_inception(configured)
    foreign = tmp_path / "foreign.pth"
    torch.save(torch.nn.Linear(2, 2).state_dict(), foreign)
    with pytest.raises(InputError, match="not torchvision's InceptionV3 weights"):
        load_poster_inception(foreign)
    with pytest.raises(ValueError, match="batch_size"):
        PosterInceptionFeatures(foreign, batch_size=0)


def test_poster_features_are_the_base_batching(torchvision_weights, empty_hub, one_thread):
    path, _ = torchvision_weights
    extractor = PosterInceptionFeatures(path, batch_size=3)
    assert isinstance(extractor, InceptionFeatureExtractor)
    slices = np.random.default_rng(5).integers(0, 256, (3, 24, 24), dtype=np.uint8)
    one_batch = extractor(slices)
    several = PosterInceptionFeatures(model=extractor.model, batch_size=1)(slices[:, None])
    np.testing.assert_allclose(several, one_batch, rtol=1e-5, atol=1e-6 * np.abs(one_batch).max())
    with torch.no_grad():  # the base feeds poster_preprocess's output to the network
        direct = extractor.model(poster_preprocess(slices)).double().numpy()
    np.testing.assert_allclose(one_batch, direct, rtol=1e-6, atol=1e-7 * np.abs(direct).max())
