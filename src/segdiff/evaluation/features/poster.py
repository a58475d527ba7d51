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
with ``python -m segdiff.sources.weights fetch torchvision-inception``.

The FID itself is :func:`segdiff.evaluation.metrics.frechet_distance` of two
:class:`segdiff.evaluation.metrics.GaussianStats` fed with these features (eval.py's ``np.cov`` /
``scipy.linalg.sqrtm`` formula).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import transforms
from torchvision.models import Inception3, inception_v3

from segdiff.core.errors import InputError
from segdiff.evaluation.poster import to_uint8_generated
from segdiff.sources.weights import KNOWN_WEIGHTS, find_weights, read_state_dict

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


def find_poster_inception_weights(path: str | Path | None = None) -> Path:
    """Locate ``inception_v3_google-0cc3c7bd.pth`` (``path`` if given, else the torch hub cache).

    Raises
    ------
    WeightsUnavailable
        If the file is not there; the message names where it looked and the fetch command.
    """
    return find_weights(POSTER_WEIGHTS_NAME, path)


def load_poster_inception(path: str | Path | None = None, device: str | torch.device = "cpu") -> Inception3:
    """torchvision's InceptionV3 with the IMAGENET1K_V1 weights from a local file, ``fc`` removed.

    Parameters
    ----------
    path : str, Path or None
        Weights file, see :func:`find_poster_inception_weights`.
    device : str or torch.device
        Where to put the network.

    Returns
    -------
    Inception3
        In eval mode (its forward returns the ``(B, 2048)`` pooled features), parameters frozen.

    Raises
    ------
    WeightsUnavailable
        If the weights file is missing.
    InputError
        If the file is corrupt or not torchvision's InceptionV3 state dict (strict loading: every
        parameter and buffer must come from the file).
    """
    found = find_poster_inception_weights(path)
    state = read_state_dict(found, "torchvision InceptionV3 weights")
    model = inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=False)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:  # missing/unexpected keys, shape mismatches
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(found, f"not torchvision's InceptionV3 weights ({reason})") from err
    model.fc = torch.nn.Identity()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model.to(device).eval()


def _uint8_slices(images: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.ndim != 3:
        raise ValueError(f"expected (B, H, W) or (B, 1, H, W) slices, got shape {images.shape}")
    return images if images.dtype == np.uint8 else to_uint8_generated(images)


def poster_preprocess(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """eval.py's input pipeline: 8-bit gray -> RGB -> 299x299 (PIL bilinear) -> [0, 1] -> ImageNet norm.

    Parameters
    ----------
    images : np.ndarray or torch.Tensor
        ``(B, H, W)`` or ``(B, 1, H, W)`` slices: uint8 (used as they are), or float in ``[0, 1]``
        quantised by :func:`segdiff.evaluation.poster.to_uint8_generated`.

    Returns
    -------
    torch.Tensor
        ``(B, 3, 299, 299)`` float32.
    """
    slices = _uint8_slices(images)
    out = torch.empty((len(slices), 3, POSTER_INPUT_SIZE, POSTER_INPUT_SIZE), dtype=torch.float32)
    for i, img in enumerate(slices):
        rgb = Image.fromarray(np.stack([img, img, img], axis=-1)).convert("RGB")
        out[i] = POSTER_TRANSFORM(rgb)
    return out


class PosterInceptionFeatures:
    """Callable turning gray slices into the poster's 2048-d FID features.

    Parameters
    ----------
    weights : str, Path or None
        Weights file (see :func:`find_poster_inception_weights`); ignored when ``model`` is given.
    device : str or torch.device
        Device to run the network on.
    batch_size : int
        Slices per forward pass (eval.py used 50; the features do not depend on it).
    model : torch.nn.Module, optional
        An already loaded network from :func:`load_poster_inception`.
    """

    dims = POSTER_FEATURE_DIMS

    def __init__(
        self,
        weights: str | Path | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 32,
        model: torch.nn.Module | None = None,
    ):
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        model = model if model is not None else load_poster_inception(weights, self.device)
        self.model = model.to(self.device).eval()

    @torch.no_grad()
    def __call__(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        """Features of ``(B, H, W)`` or ``(B, 1, H, W)`` slices (uint8, or float in ``[0, 1]``).

        Returns
        -------
        np.ndarray
            ``(B, 2048)`` float64.
        """
        slices = _uint8_slices(images)
        out = np.empty((len(slices), self.dims), dtype=np.float64)
        for start in range(0, len(slices), self.batch_size):
            batch = poster_preprocess(slices[start : start + self.batch_size]).to(self.device)
            feats = self.model(batch)
            out[start : start + len(batch)] = feats.reshape(len(batch), -1).double().cpu().numpy()
        return out
