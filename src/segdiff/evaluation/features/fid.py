"""pytorch-fid's FID InceptionV3 with weights from a local file: 2048-d pool3 features for FID.

The network is :class:`pytorch_fid.inception.InceptionV3` (the TF-ported Inception of the
original FID code). Its weights file ``pt_inception-2015-12-05-6726825d.pth`` is looked up by
:func:`segdiff.sources.weights.find_weights` (``evaluation.inception_weights`` or the torch hub cache)
and never downloaded implicitly; fetch it with ``segdiff weights fetch fid-inception``.
Feed the features to :class:`segdiff.evaluation.metrics.GaussianStats` and
:func:`segdiff.evaluation.metrics.frechet_distance` to get the FID. Lookup, loading, placement and
batching are those of :class:`segdiff.evaluation.features.inception.InceptionFeatureExtractor`.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytorch_fid.inception as fid_inception
import torch
from pytorch_fid.inception import FID_WEIGHTS_URL, InceptionV3

from segdiff.evaluation.features.inception import InceptionFeatureExtractor, gray_slices
from segdiff.sources.weights import KNOWN_WEIGHTS

__all__ = [
    "FID_WEIGHTS_URL",
    "FID_WEIGHTS_NAME",
    "FID_DIMS",
    "find_inception_weights",
    "load_inception",
    "InceptionFeatures",
]

FID_DIMS = 2048
"""Dimensionality of the InceptionV3 pool3 features used for FID."""

FID_WEIGHTS_NAME = KNOWN_WEIGHTS["fid-inception"].file_name
"""File name of pytorch-fid's Inception weights (``pt_inception-2015-12-05-6726825d.pth``)."""

_PATCH_LOCK = threading.Lock()


class InceptionFeatures(InceptionFeatureExtractor):
    """Callable turning gray slices in ``[0, 1]`` into 2048-d Inception pool3 features.

    The network is built by :class:`pytorch_fid.inception.InceptionV3` (``resize_input=True``,
    ``normalize_input=True``: it resizes to 299x299 and scales ``[0, 1]`` RGB itself).
    pytorch-fid fetches its weights through ``load_state_dict_from_url``; while the network is
    built that hook is replaced (under a lock) by one returning the state dict read from the local
    file with ``weights_only=True``, so nothing is ever downloaded and the strict
    ``load_state_dict`` of pytorch-fid guarantees that every parameter comes from the file.

    Args:
        weights: Weights file (see :func:`find_inception_weights`); ignored when ``model`` is given.
        device: Device to run the network on.
        batch_size: Slices per forward pass.
        model: An already loaded network from :func:`load_inception`.

    Raises:
        ValueError: If ``batch_size`` is not positive.
        WeightsUnavailable: If ``model`` is not given and the weights file is missing.
        InputError: If ``model`` is not given and the file is corrupt or not the FID Inception weights.
    """

    dims = FID_DIMS
    weights_name = FID_WEIGHTS_NAME
    weights_what = "FID Inception weights"
    weights_mismatch = "not the FID Inception weights"

    @classmethod
    def build(cls, state: Mapping[str, torch.Tensor]) -> torch.nn.Module:
        """pytorch-fid's InceptionV3 (pool3 block only) with ``state`` as its weights.

        Args:
            state: The state dict of ``pt_inception-2015-12-05-6726825d.pth``.

        Returns:
            The network; its forward returns a list holding the ``(B, 2048, 1, 1)`` pool3 output.

        Raises:
            RuntimeError: If ``state`` does not fit the network.
            ImportError: If the installed pytorch-fid has no ``load_state_dict_from_url`` hook.
        """

        def local_weights(url, *args, **kwargs):
            if url != FID_WEIGHTS_URL:  # pragma: no cover - guards against a changed pytorch-fid
                raise RuntimeError(f"pytorch-fid asked for unexpected weights {url}")
            return state

        if not hasattr(fid_inception, "load_state_dict_from_url"):  # pragma: no cover - not a weights problem
            raise ImportError("pytorch-fid has no load_state_dict_from_url hook any more; update segdiff.evaluation.features.fid")
        with _PATCH_LOCK:
            original = fid_inception.load_state_dict_from_url
            fid_inception.load_state_dict_from_url = local_weights
            try:
                return InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[FID_DIMS]], resize_input=True, normalize_input=True)
            finally:
                fid_inception.load_state_dict_from_url = original

    def prepare(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Check that the slices are in ``[0, 1]``.

        Values outside ``[0, 1]`` by more than 1e-3 are refused (a sign of a wrong intensity
        scale); smaller excursions are clipped by :meth:`preprocess`.

        Args:
            images: ``(B, H, W)`` or ``(B, 1, H, W)`` slices.

        Returns:
            ``(B, H, W)`` float32 tensor.

        Raises:
            ValueError: If the shape is wrong or a value is not finite or out of ``[0, 1]``.
        """
        x = gray_slices(torch.as_tensor(images).detach().to(dtype=torch.float32))
        if x.numel() and (not torch.isfinite(x).all() or x.min() < -1e-3 or x.max() > 1 + 1e-3):
            raise ValueError(
                f"slices must be in [0, 1] for Inception, got range [{x.min().item():.4g}, {x.max().item():.4g}]"
            )
        return x

    def preprocess(self, batch: torch.Tensor) -> torch.Tensor:
        """Clip to ``[0, 1]`` and repeat the gray value to three channels (the network resizes).

        Args:
            batch: ``(b, H, W)`` slices from :meth:`prepare`.

        Returns:
            ``(b, 3, H, W)`` on the extractor's device and precision.
        """
        return self.place(batch).clamp(0, 1)[:, None].expand(-1, 3, -1, -1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pool3 output of the network.

        Args:
            x: ``(b, 3, H, W)`` RGB in ``[0, 1]``.

        Returns:
            ``(b, 2048, 1, 1)`` features.
        """
        return self.model(x)[0]


def find_inception_weights(path: str | Path | None = None) -> Path:
    """Locate the FID Inception weights file without downloading anything.

    :func:`segdiff.sources.weights.find_weights` for :data:`FID_WEIGHTS_NAME`.

    Args:
        path: The configured file (it must exist), or None for the torch hub cache.

    Returns:
        The path of the weights file.

    Raises:
        WeightsUnavailable: If the file is not there (the message names both places, the fetch
            command and the URL).
    """
    return InceptionFeatures.find_weights(path)


def load_inception(path: str | Path | None = None, device: str | torch.device = "cpu") -> torch.nn.Module:
    """pytorch-fid's FID InceptionV3 (2048-d pool3 output) with the weights from a local file.

    See :class:`InceptionFeatures` for how the weights reach pytorch-fid's network.

    Args:
        path: Weights file, see :func:`find_inception_weights`.
        device: Where to put the network.

    Returns:
        The network in eval mode, parameters frozen.

    Raises:
        WeightsUnavailable: If the weights file is missing.
        InputError: If the file is corrupt or not the FID Inception weights.
    """
    return InceptionFeatures.load(path, device)
