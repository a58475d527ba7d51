"""Training batches from a slice store through a ``torch.utils.data.DataLoader``.

Batch ``s`` of a run is a pure function of ``(seed, s)``: the slices of epoch ``e`` are visited in
the order of a permutation drawn from ``default_rng([seed, e])``, and step ``s`` takes positions
``s * batch_size ...`` of that sequence. A run resumed at step ``s`` therefore sees exactly the
batches an uninterrupted run would, whatever the number of workers. Workers read whole batches
(one ``read`` of the index array per batch), pinned memory and prefetching feed the GPU.

Under data parallelism ``batch_size`` is the global batch: rank ``r`` of ``world_size`` reads only
positions ``r * b .. (r + 1) * b - 1`` of every global batch (``b = batch_size / world_size``), so
the ranks together read each global batch exactly once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from segdiff.core.distributed import local_batch_size

__all__ = ["Slices", "LoaderSettings", "loader_settings", "StepBatches", "BatchReader", "step_loader"]


class Slices(Protocol):
    """What training reads: :class:`segdiff.data.store.SliceStore` or an in-memory :class:`segdiff.data.dataset.SliceSet`."""

    def __len__(self) -> int: ...

    def read(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def fingerprint(self) -> str: ...  # what a training checkpoint records of its data (SliceStore.fingerprint)


@dataclass
class LoaderSettings:
    """``workers``: reader processes (0 = in the training process); ``prefetch``: batches each
    worker reads ahead; ``pin_memory``: page-locked batches for asynchronous host-to-GPU copies."""

    workers: int = 0
    prefetch: int = 2
    pin_memory: bool = False

    def __post_init__(self):
        if self.workers < 0 or self.prefetch < 1:
            raise ValueError(f"workers must be >= 0 and prefetch >= 1, got {self.workers}, {self.prefetch}")


def loader_settings(compute: dict, device: torch.device) -> LoaderSettings:
    """Loader settings from the config.

    Args:
        compute: the config's ``compute`` section (``loader_workers``, ``prefetch``).
        device: the training device (pinned memory on CUDA).

    Returns:
        The :class:`LoaderSettings`.
    """
    return LoaderSettings(workers=compute["loader_workers"], prefetch=compute["prefetch"], pin_memory=device.type == "cuda")


class StepBatches(Sampler):
    """Index arrays of the batches of steps ``start .. stop - 1`` (epoch permutations, see module doc):
    of the whole global batch of ``batch_size``, or of rank ``rank``'s share of it.

    Args:
        n: the number of slices.
        batch_size: the global batch size.
        seed: the seed of the epoch permutations.
        start: the first step.
        stop: one past the last step.
        rank: this process's rank.
        world_size: the number of ranks (``batch_size`` must be a multiple of it).

    Raises:
        ValueError: no slices, a non-positive batch size or a rank outside ``0 .. world_size - 1``.
    """

    def __init__(self, n: int, batch_size: int, seed: int, start: int, stop: int, rank: int = 0, world_size: int = 1):
        if n <= 0 or batch_size <= 0:
            raise ValueError(f"need slices and a positive batch size, got n={n}, batch_size={batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in 0 .. world_size - 1, got rank={rank}, world_size={world_size}")
        self.n, self.batch_size, self.seed, self.start, self.stop = n, batch_size, seed, start, stop
        self.rank, self.local_batch_size = rank, local_batch_size(batch_size, world_size)
        self._epoch, self._order = -1, np.empty(0, np.int64)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            self._epoch, self._order = epoch, np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return self._order

    def batch(self, step: int) -> np.ndarray:
        """Slice indices of this rank's share of the global batch of ``step``."""
        positions = step * self.batch_size + self.rank * self.local_batch_size + np.arange(self.local_batch_size)
        return np.array([self._permutation(p // self.n)[p % self.n] for p in positions.tolist()], np.int64)

    def __iter__(self) -> Iterator[np.ndarray]:
        for step in range(self.start, self.stop):
            yield self.batch(step)


class BatchReader(Dataset):
    """``reader[index_array] -> (images (B, 1, H, W) float32, masks (B, H, W) uint8)`` tensors."""

    def __init__(self, slices: Slices):
        self.slices = slices

    def __len__(self) -> int:
        return len(self.slices)

    def __getitem__(self, index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        images, masks = self.slices.read(index)
        return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(masks)


def step_loader(slices: Slices, batch_size: int, seed: int, start: int, stop: int,
                settings: LoaderSettings = LoaderSettings(), rank: int = 0, world_size: int = 1) -> DataLoader:
    """A DataLoader yielding the batches of steps ``start .. stop - 1``.

    Args:
        slices: what to read (a :class:`~segdiff.data.store.SliceStore` or an in-memory slice set).
        batch_size: the global batch size.
        seed: the seed of the epoch permutations.
        start: the first step.
        stop: one past the last step.
        settings: worker processes, prefetching and pinned memory.
        rank: this process's rank.
        world_size: the number of ranks.

    Returns:
        A DataLoader of (images (B, 1, H, W) float32, masks (B, H, W) uint8) tensors, B =
        ``batch_size / world_size``: rank ``rank``'s rows of each global batch.
    """
    sampler = StepBatches(len(slices), batch_size, seed, start, stop, rank, world_size)
    return DataLoader(BatchReader(slices), sampler=sampler,
                      batch_size=None, num_workers=settings.workers, pin_memory=settings.pin_memory,
                      prefetch_factor=settings.prefetch if settings.workers else None,
                      persistent_workers=False)
