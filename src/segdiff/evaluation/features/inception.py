"""The common base of the two Inception feature extractors (FID and the poster's FID).

:class:`InceptionFeatureExtractor` holds what :class:`segdiff.evaluation.features.fid.InceptionFeatures`
(pytorch-fid's TF-ported InceptionV3) and
:class:`segdiff.evaluation.features.poster.PosterInceptionFeatures` (torchvision's ImageNet
InceptionV3) share: the offline weights lookup through :func:`segdiff.sources.weights.find_weights`,
the strict loading of the state dict read by :func:`segdiff.sources.weights.read_state_dict` (a
file that does not fit is an :class:`~segdiff.core.errors.InputError`, never random weights), the
frozen eval-mode network and the inputs placed on one device at one precision, and the batching
over slices: the network sees ``batch_size`` slices at a time, so memory beyond the inputs and the
``(B, dims)`` output grows with the batch, not with the number of slices. A subclass states only
what differs: the weights file, how the network is built from the state dict, how the slices are
checked (:meth:`~InceptionFeatureExtractor.prepare`), resized and normalised
(:meth:`~InceptionFeatureExtractor.preprocess`), and which output of the network is the feature
(:meth:`~InceptionFeatureExtractor.features`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from segdiff.core.errors import InputError
from segdiff.sources.weights import find_weights, read_state_dict

__all__ = ["InceptionFeatureExtractor", "gray_slices"]


def gray_slices(images: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Gray slices as ``(B, H, W)``: a ``(B, 1, H, W)`` stack loses its channel axis.

    Args:
        images: ``(B, H, W)`` or ``(B, 1, H, W)`` slices, a NumPy array or a tensor.

    Returns:
        The slices as ``(B, H, W)``, of the same type as ``images`` (a view, no copy).

    Raises:
        ValueError: If ``images`` has another shape.
    """
    if images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.ndim != 3:
        raise ValueError(f"expected (B, H, W) or (B, 1, H, W) slices, got shape {tuple(images.shape)}")
    return images


class InceptionFeatureExtractor(ABC):
    """Callable turning gray slices into Inception features, ``batch_size`` slices at a time.

    Subclasses set :attr:`weights_name`, :attr:`weights_what` and :attr:`weights_mismatch` and
    implement :meth:`build`, :meth:`prepare` and :meth:`preprocess`; :meth:`features` picks the
    network's output (the whole output by default).

    Args:
        weights: Weights file (see :meth:`find_weights`); ignored when ``model`` is given.
        device: Device to run the network on.
        batch_size: Slices per forward pass (the features do not depend on it).
        model: An already loaded network (from :meth:`load`).

    Raises:
        ValueError: If ``batch_size`` is not positive.
        WeightsUnavailable: If ``model`` is not given and the weights file is missing.
        InputError: If ``model`` is not given and the file is corrupt or not the expected weights.
    """

    dims: ClassVar[int] = 2048
    """Dimensionality of the features."""

    dtype: ClassVar[torch.dtype] = torch.float32
    """Precision of the network and of its inputs."""

    weights_name: ClassVar[str]
    """File name of the weights, looked up by :func:`segdiff.sources.weights.find_weights`."""

    weights_what: ClassVar[str]
    """What the weights file holds, for the messages of :func:`segdiff.sources.weights.read_state_dict`."""

    weights_mismatch: ClassVar[str]
    """Start of the :class:`~segdiff.core.errors.InputError` for a state dict the network refuses."""

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
        model = model if model is not None else self.load(weights, self.device)
        self.model = self._place_model(model, self.device)

    @classmethod
    def find_weights(cls, path: str | Path | None = None) -> Path:
        """Locate the weights file without downloading anything.

        Args:
            path: The configured file (it must exist), or None for the torch hub cache.

        Returns:
            The path of the weights file.

        Raises:
            WeightsUnavailable: If the file is not there (the message names where it looked and
                the fetch command).
        """
        return find_weights(cls.weights_name, path)

    @classmethod
    def load(cls, path: str | Path | None = None, device: str | torch.device = "cpu") -> torch.nn.Module:
        """The network with the weights from a local file, frozen and in eval mode.

        Args:
            path: Weights file, see :meth:`find_weights`.
            device: Where to put the network.

        Returns:
            The network built by :meth:`build`, parameters frozen, in eval mode on ``device``.

        Raises:
            WeightsUnavailable: If the weights file is missing.
            InputError: If the file is corrupt or not the expected weights (strict loading: every
                parameter and buffer must come from the file).
        """
        found = cls.find_weights(path)
        state = read_state_dict(found, cls.weights_what)
        try:
            model = cls.build(state)
        except RuntimeError as err:  # missing/unexpected keys, shape mismatches
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise InputError(found, f"{cls.weights_mismatch} ({reason})") from err
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        return cls._place_model(model, device)

    @classmethod
    def _place_model(cls, model: torch.nn.Module, device: str | torch.device) -> torch.nn.Module:
        return model.to(device=device, dtype=cls.dtype).eval()

    @classmethod
    @abstractmethod
    def build(cls, state: Mapping[str, torch.Tensor]) -> torch.nn.Module:
        """Build the network and load ``state`` into it strictly.

        Args:
            state: The state dict read from the weights file.

        Returns:
            The network whose forward gives the features (see :meth:`features`).

        Raises:
            RuntimeError: If ``state`` does not fit the network (turned into an
                :class:`~segdiff.core.errors.InputError` by :meth:`load`).
        """

    @abstractmethod
    def prepare(self, images: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Check all slices at once before any forward pass and bring them to one form.

        Args:
            images: The slices as given to :meth:`__call__`.

        Returns:
            A ``(B, ...)`` array or tensor that :meth:`preprocess` takes in slices of
            ``batch_size``.

        Raises:
            ValueError: If the slices have the wrong shape or values.
        """

    @abstractmethod
    def preprocess(self, batch: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Resize and normalise a batch of prepared slices into the network's input.

        Args:
            batch: Up to ``batch_size`` slices of :meth:`prepare`'s output.

        Returns:
            The network's input, placed by :meth:`place`.
        """

    def place(self, x: torch.Tensor) -> torch.Tensor:
        """Move a tensor to the extractor's device and precision.

        Args:
            x: A tensor (the network's input).

        Returns:
            ``x`` on :attr:`device` as :attr:`dtype`.
        """
        return x.to(device=self.device, dtype=self.dtype)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The network's features of a preprocessed batch.

        Args:
            x: The network's input from :meth:`preprocess`.

        Returns:
            A tensor with ``len(x) * dims`` values (reshaped to ``(len(x), dims)`` by the caller).
        """
        return self.model(x)

    @torch.no_grad()
    def __call__(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        """Features of gray slices, ``batch_size`` slices per forward pass.

        Args:
            images: ``(B, H, W)`` or ``(B, 1, H, W)`` slices (what a subclass accepts).

        Returns:
            ``(B, dims)`` float64 features.

        Raises:
            ValueError: If :meth:`prepare` refuses the slices.
        """
        slices = self.prepare(images)
        out = np.empty((len(slices), self.dims), dtype=np.float64)
        for start in range(0, len(slices), self.batch_size):
            batch = self.preprocess(slices[start : start + self.batch_size])
            feats = self.features(batch)
            out[start : start + len(batch)] = feats.reshape(len(batch), -1).double().cpu().numpy()
        return out
