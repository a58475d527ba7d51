"""In-memory slice sets assembled from the slicing stage's manifests and shards."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from segdiff.errors import InputError
from segdiff.shards import read_shard

__all__ = ["SliceSet", "load_slices", "stratified_subset"]


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

    def take(self, index: np.ndarray) -> SliceSet:
        return SliceSet(self.image[index], self.mask[index], self.case[index], self.slice[index], self.view[index])

    def subset(self, max_slices: int, seed: int) -> SliceSet:
        """At most ``max_slices`` slices (0 = all), see :func:`stratified_subset`."""
        if max_slices <= 0 or len(self) <= max_slices:
            return self
        return self.take(stratified_subset(self.case, self.view, max_slices, seed))


def stratified_subset(case: np.ndarray, view: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded subset of ``n`` slices, stratified by (case, view).

    Each (case, view) group gets a share proportional to its size (largest remainder), and its
    slices are drawn without replacement from ``np.random.default_rng([seed, crc32(case/view)])``:
    the choice of one group does not depend on the other groups, on the job or on the order.
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


def load_slices(manifests: Sequence[str | Path], splits: Sequence[str], root: str | Path = ".") -> SliceSet:
    """All slices of the cases in ``splits`` listed by ``manifests`` (shard paths relative to ``root``)."""
    images, masks, cases, slices, views = [], [], [], [], []
    for manifest in manifests:
        table = pd.read_csv(manifest, sep="\t", dtype={"case": str})
        for row in table[table["split"].isin(splits)].itertuples():
            shard = read_shard(Path(root) / row.shard)
            images.append(shard.image)
            masks.append(shard.mask)
            cases.append(np.full(len(shard.slice), row.case, dtype=object))
            slices.append(shard.slice)
            views.append(np.full(len(shard.slice), row.view, dtype=object))
    if not images:
        raise InputError(", ".join(map(str, manifests)), f"no slices in split(s) {list(splits)}")
    sizes = {im.shape[1:] for im in images}
    if len(sizes) > 1:
        raise InputError(", ".join(map(str, manifests)), f"shards have different slice sizes {sorted(sizes)}")
    return SliceSet(np.concatenate(images), np.concatenate(masks), np.concatenate(cases).astype(str),
                    np.concatenate(slices).astype(np.int32), np.concatenate(views).astype(str))
