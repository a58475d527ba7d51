"""In-memory slice sets (a test subset, a tiny training set) and the seeded, stratified subset choice.

The whole-dataset view is :class:`segdiff.data.store.SliceStore` (read row by row from disk); both offer ``read``.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass

import numpy as np

__all__ = ["SliceSet", "stratified_subset"]


@dataclass
class SliceSet:
    """Slices with their provenance: ``image`` (N, H, W) float32 [0, 1], ``mask`` (N, H, W) uint8,
    ``case`` (N,) str, ``slice`` (N,) int32, ``view`` (N,) str."""

    image: np.ndarray
    mask: np.ndarray
    case: np.ndarray
    slice: np.ndarray
    view: np.ndarray

    def __len__(self) -> int:
        return len(self.image)

    def read(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Images and masks at ``index`` (the interface of :meth:`segdiff.data.store.SliceStore.read`)."""
        return self.image[index], self.mask[index]

    def fingerprint(self) -> str:
        """A digest of the slices (all of their bytes: an in-memory set is small)."""
        digest = hashlib.sha256()
        for array in (self.image, self.mask, self.case, self.slice, self.view):
            array = np.ascontiguousarray(array)
            digest.update(f"{array.dtype.str}{array.shape}".encode())
            digest.update(array.tobytes())
        return digest.hexdigest()

    def take(self, index: np.ndarray) -> SliceSet:
        return SliceSet(self.image[index], self.mask[index], self.case[index], self.slice[index], self.view[index])



def stratified_subset(case: np.ndarray, view: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded subset of ``n`` slices, stratified by (case, view).

    Each (case, view) group gets a share proportional to its size (largest remainder), and its
    slices are drawn without replacement from ``np.random.default_rng([seed, crc32(case/view)])``:
    the choice of one group does not depend on the other groups, on the job or on the order.

    Args:
        case: (N,) case id of each slice.
        view: (N,) view of each slice.
        n: how many slices to choose (all of them when ``n`` >= N).
        seed: the subset's seed.

    Returns:
        Sorted int indices into the N slices.
    """
    keys = np.char.add(np.char.add(np.asarray(case, dtype=str), "/"), np.asarray(view, dtype=str))
    groups, inverse, sizes = np.unique(keys, return_inverse=True, return_counts=True)
    if n >= len(keys):
        return np.arange(len(keys))
    exact = sizes * n / len(keys)
    quota = np.floor(exact).astype(int)
    quota[np.argsort(-(exact - quota), kind="stable")[: n - quota.sum()]] += 1
    chosen = []
    for g, key in enumerate(groups):
        members = np.flatnonzero(inverse == g)
        rng = np.random.default_rng([int(seed), zlib.crc32(str(key).encode())])
        chosen.append(rng.choice(members, quota[g], replace=False))
    return np.sort(np.concatenate(chosen))
