"""pytorch-fid's FID InceptionV3 with weights from a local file: 2048-d pool3 features for FID.

The network is :class:`pytorch_fid.inception.InceptionV3` (the TF-ported Inception of the
original FID code). Its weights file ``pt_inception-2015-12-05-6726825d.pth`` is looked up by
:func:`segdiff.sources.weights.find_weights` (``evaluation.inception_weights`` or the torch hub cache)
and never downloaded implicitly; fetch it with ``python -m segdiff.sources.weights fetch fid-inception``.
Feed the features to :class:`segdiff.evaluation.metrics.GaussianStats` and
:func:`segdiff.evaluation.metrics.frechet_distance` to get the FID.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytorch_fid.inception as fid_inception
import torch
from pytorch_fid.inception import FID_WEIGHTS_URL, InceptionV3

from segdiff.core.errors import InputError
from segdiff.sources.weights import KNOWN_WEIGHTS, find_weights, read_state_dict

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


def find_inception_weights(path: str | Path | None = None) -> Path:
    """Locate the FID Inception weights file without downloading anything.

    :func:`segdiff.sources.weights.find_weights` for :data:`FID_WEIGHTS_NAME`: ``path`` if given (it must
    exist), else the torch hub cache.

    Raises
    ------
    WeightsUnavailable
        If the file is not there (the message names both places, the fetch command and the URL).
    """
    return find_weights(FID_WEIGHTS_NAME, path)


def load_inception(path: str | Path | None = None, device: str | torch.device = "cpu") -> torch.nn.Module:
    """pytorch-fid's FID InceptionV3 (2048-d pool3 output) with the weights from a local file.

    The network is built by :class:`pytorch_fid.inception.InceptionV3` (``resize_input=True``,
    ``normalize_input=True``: it expects ``[0, 1]`` RGB). pytorch-fid fetches its weights through
    ``load_state_dict_from_url``; while the network is built that hook is replaced (under a lock)
    by one returning the state dict read here with ``weights_only=True``, so nothing is ever
    downloaded and the strict ``load_state_dict`` of pytorch-fid guarantees that every parameter
    comes from the file (never random weights).

    Parameters
    ----------
    path : str, Path or None
        Weights file, see :func:`find_inception_weights`.
    device : str or torch.device
        Where to put the network.

    Returns
    -------
    torch.nn.Module
        The network in eval mode, parameters frozen.

    Raises
    ------
    WeightsUnavailable
        If the weights file is missing.
    InputError
        If the file is corrupt or not the FID Inception weights.
    """
    found = find_inception_weights(path)
    state = read_state_dict(found, "FID Inception weights")

    def local_weights(url, *args, **kwargs):
        if url != FID_WEIGHTS_URL:  # pragma: no cover - guards against a changed pytorch-fid
            raise RuntimeError(f"pytorch-fid asked for unexpected weights {url}")
        return state

    if not hasattr(fid_inception, "load_state_dict_from_url"):  # pragma: no cover
        raise RuntimeError("pytorch-fid has no load_state_dict_from_url hook any more; update segdiff.evaluation.features.fid")
    with _PATCH_LOCK:
        original = fid_inception.load_state_dict_from_url
        fid_inception.load_state_dict_from_url = local_weights
        try:
            model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[FID_DIMS]], resize_input=True, normalize_input=True)
        except RuntimeError as err:  # missing/unexpected keys, shape mismatches
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise InputError(found, f"not the FID Inception weights ({reason})") from err
        finally:
            fid_inception.load_state_dict_from_url = original
    return model.to(device).eval()


class InceptionFeatures:
    """Callable turning gray slices into 2048-d Inception pool3 features.

    Parameters
    ----------
    weights : str, Path or None
        Weights file (see :func:`find_inception_weights`); ignored when ``model`` is given.
    device : str or torch.device
        Device to run the network on.
    batch_size : int
        Slices per forward pass.
    model : torch.nn.Module, optional
        An already loaded network from :func:`load_inception`.
    """

    dims = FID_DIMS

    def __init__(
        self,
        weights: str | Path | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 32,
        model: torch.nn.Module | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.model = (model if model is not None else load_inception(weights, self.device)).to(self.device).eval()

    @torch.no_grad()
    def __call__(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        """Features of ``(B, H, W)`` or ``(B, 1, H, W)`` slices in ``[0, 1]``.

        Gray values are repeated to three channels. Values outside ``[0, 1]`` by more than
        1e-3 are refused (a sign of a wrong intensity scale); smaller excursions are clipped.

        Returns
        -------
        np.ndarray
            ``(B, 2048)`` float64.
        """
        x = torch.as_tensor(images).detach().to(dtype=torch.float32)
        if x.ndim == 4 and x.shape[1] == 1:
            x = x[:, 0]
        if x.ndim != 3:
            raise ValueError(f"expected (B, H, W) or (B, 1, H, W) slices, got shape {tuple(x.shape)}")
        if x.numel() and (not torch.isfinite(x).all() or x.min() < -1e-3 or x.max() > 1 + 1e-3):
            raise ValueError(
                f"slices must be in [0, 1] for Inception, got range [{x.min().item():.4g}, {x.max().item():.4g}]"
            )
        x = x.clamp(0, 1)
        out = np.empty((x.shape[0], self.dims), dtype=np.float64)
        for start in range(0, x.shape[0], self.batch_size):
            batch = x[start : start + self.batch_size].to(self.device)
            rgb = batch[:, None].expand(-1, 3, -1, -1)
            feats = self.model(rgb)[0]
            out[start : start + len(batch)] = feats.reshape(len(batch), -1).double().cpu().numpy()
        return out
