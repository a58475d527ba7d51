"""The poster authors' FID feature extractor: torchvision's ImageNet InceptionV3, ``fc`` removed.

``calculate_fid`` of the poster's ``evaluation/eval.py`` (``MrStrenggeheim/adlm-diffusion``)::

    model = models.inception_v3(transform_input=False, weights=models.Inception_V3_Weights.IMAGENET1K_V1)
    model.fc = torch.nn.Identity()
    model.eval()
    fid_transform = transforms.Compose([
        transforms.Resize((299, 299)),
        transforms.ToTensor(),
        transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    ])
    # per 8-bit gray image: np.stack([img, img, img], axis=-1) -> Image.fromarray -> .convert("RGB")
    # -> fid_transform; batches of 50; features = model(batch).view(B, -1)

The order matters and is kept here: the 8-bit image is replicated to RGB, resized to 299x299 by
PIL (bilinear, on 8-bit values, rounded back to 8 bits), only then scaled to ``[0, 1]`` and
normalised with the ImageNet mean/std. The network is built with
``inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=False)`` (the
architecture torchvision builds for those weights) and the ``IMAGENET1K_V1`` state dict is loaded
strictly, with ``weights_only=True``, from the local file ``inception_v3_google-0cc3c7bd.pth``
found by :func:`segdiff.sources.weights.find_weights`: never random weights, never a download. Fetch it
with ``segdiff weights fetch torchvision-inception``.

The FID itself is :func:`segdiff.evaluation.metrics.frechet_distance` of two
:class:`segdiff.evaluation.metrics.GaussianStats` fed with these features (eval.py's ``np.cov`` /
``scipy.linalg.sqrtm`` formula). Lookup, loading, placement and batching are those of
:class:`segdiff.evaluation.features.inception.InceptionFeatureExtractor`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import transforms
from torchvision.models import Inception3, inception_v3

from segdiff.evaluation.features.inception import InceptionFeatureExtractor, gray_slices
from segdiff.evaluation.poster import to_uint8_generated
from segdiff.sources.weights import KNOWN_WEIGHTS

__all__ = [
    "POSTER_WEIGHTS_NAME",
    "POSTER_INPUT_SIZE",
    "POSTER_FEATURE_DIMS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "POSTER_TRANSFORM",
    "find_poster_inception_weights",
    "load_poster_inception",
    "poster_preprocess",
    "PosterInceptionFeatures",
]

POSTER_WEIGHTS_NAME = KNOWN_WEIGHTS["torchvision-inception"].file_name
"""File name of torchvision's ``Inception_V3_Weights.IMAGENET1K_V1`` (``inception_v3_google-0cc3c7bd.pth``)."""

POSTER_INPUT_SIZE = 299
"""Side of the square the images are resized to."""

POSTER_FEATURE_DIMS = 2048
"""Dimensionality of the features (InceptionV3's pooled output before ``fc``)."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
"""ImageNet channel means of eval.py's ``transforms.Normalize``."""

IMAGENET_STD = (0.229, 0.224, 0.225)
"""ImageNet channel standard deviations of eval.py's ``transforms.Normalize``."""

POSTER_TRANSFORM = transforms.Compose(
    [
        transforms.Resize((POSTER_INPUT_SIZE, POSTER_INPUT_SIZE)),
        transforms.ToTensor(),
        transforms.Normalize(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD)),
    ]
)
"""eval.py's ``fid_transform``, applied to an RGB PIL image."""


def _uint8_slices(images: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    images = gray_slices(np.asarray(images))
    return images if images.dtype == np.uint8 else to_uint8_generated(images)


def poster_preprocess(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """eval.py's input pipeline: 8-bit gray -> RGB -> 299x299 (PIL bilinear) -> [0, 1] -> ImageNet norm.

    Args:
        images: ``(B, H, W)`` or ``(B, 1, H, W)`` slices: uint8 (used as they are), or float in
            ``[0, 1]`` quantised by :func:`segdiff.evaluation.poster.to_uint8_generated`.

    Returns:
        ``(B, 3, 299, 299)`` float32 tensor.

    Raises:
        ValueError: If ``images`` has another shape.
    """
    slices = _uint8_slices(images)
    out = torch.empty((len(slices), 3, POSTER_INPUT_SIZE, POSTER_INPUT_SIZE), dtype=torch.float32)
    for i, img in enumerate(slices):
        rgb = Image.fromarray(np.stack([img, img, img], axis=-1)).convert("RGB")
        out[i] = POSTER_TRANSFORM(rgb)
    return out


class PosterInceptionFeatures(InceptionFeatureExtractor):
    """Callable turning gray slices into the poster's 2048-d FID features.

    The network is ``inception_v3(weights=None, aux_logits=True, init_weights=False,
    transform_input=False)`` with the IMAGENET1K_V1 state dict loaded strictly and ``fc``
    replaced by :class:`torch.nn.Identity`; the slices go through :func:`poster_preprocess`.

    Args:
        weights: Weights file (see :func:`find_poster_inception_weights`); ignored when ``model``
            is given.
        device: Device to run the network on.
        batch_size: Slices per forward pass (eval.py used 50; the features do not depend on it).
        model: An already loaded network from :func:`load_poster_inception`.

    Raises:
        ValueError: If ``batch_size`` is not positive.
        WeightsUnavailable: If ``model`` is not given and the weights file is missing.
        InputError: If ``model`` is not given and the file is corrupt or not torchvision's
            InceptionV3 state dict.
    """

    dims = POSTER_FEATURE_DIMS
    weights_name = POSTER_WEIGHTS_NAME
    weights_what = "torchvision InceptionV3 weights"
    weights_mismatch = "not torchvision's InceptionV3 weights"

    @classmethod
    def build(cls, state: Mapping[str, torch.Tensor]) -> Inception3:
        """torchvision's InceptionV3 as built for IMAGENET1K_V1, ``state`` loaded strictly, ``fc`` removed.

        Args:
            state: The state dict of ``inception_v3_google-0cc3c7bd.pth``.

        Returns:
            The network; in eval mode its forward returns the ``(B, 2048)`` pooled features.

        Raises:
            RuntimeError: If ``state`` does not fit the network.
        """
        model = inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=False)
        model.load_state_dict(state, strict=True)
        model.fc = torch.nn.Identity()
        return model

    def prepare(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        """The slices as 8-bit images, as eval.py read them.

        Args:
            images: ``(B, H, W)`` or ``(B, 1, H, W)`` slices: uint8 (used as they are), or float
                in ``[0, 1]`` quantised by :func:`segdiff.evaluation.poster.to_uint8_generated`.

        Returns:
            ``(B, H, W)`` uint8 array.

        Raises:
            ValueError: If ``images`` has another shape.
        """
        return _uint8_slices(images)

    def preprocess(self, batch: np.ndarray) -> torch.Tensor:
        """eval.py's ``fid_transform`` of a batch (see :func:`poster_preprocess`).

        Args:
            batch: ``(b, H, W)`` uint8 slices from :meth:`prepare`.

        Returns:
            ``(b, 3, 299, 299)`` on the extractor's device and precision.
        """
        return self.place(poster_preprocess(batch))


def find_poster_inception_weights(path: str | Path | None = None) -> Path:
    """Locate ``inception_v3_google-0cc3c7bd.pth`` without downloading anything.

    Args:
        path: The configured file (it must exist), or None for the torch hub cache.

    Returns:
        The path of the weights file.

    Raises:
        WeightsUnavailable: If the file is not there; the message names where it looked and the
            fetch command.
    """
    return PosterInceptionFeatures.find_weights(path)


def load_poster_inception(path: str | Path | None = None, device: str | torch.device = "cpu") -> Inception3:
    """torchvision's InceptionV3 with the IMAGENET1K_V1 weights from a local file, ``fc`` removed.

    Args:
        path: Weights file, see :func:`find_poster_inception_weights`.
        device: Where to put the network.

    Returns:
        The network in eval mode (its forward returns the ``(B, 2048)`` pooled features),
        parameters frozen.

    Raises:
        WeightsUnavailable: If the weights file is missing.
        InputError: If the file is corrupt or not torchvision's InceptionV3 state dict (strict
            loading: every parameter and buffer must come from the file).
    """
    return PosterInceptionFeatures.load(path, device)
