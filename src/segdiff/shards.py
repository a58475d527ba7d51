"""The file contract of the slicing stage: NPZ shards, PNG previews and per-subset manifests.

``results/slices/{modality}/{view}/{case}.npz`` holds ``image`` (float32 N x H x W in [0, 1]),
``mask`` (uint8 N x H x W label ids), ``slice`` (int32 N, index along the view axis of the
canonical RAS volume) and ``pixel_mm`` (scalar, isotropic pixel size in mm).
Previews: ``{case}/slice_{index:04d}_image.png`` (8-bit gray) and ``..._mask.png`` (8-bit label ids).
Manifest ``manifest.tsv``: one row per case with ``case, modality, view, split, n_slices, shard``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from segdiff.atomic import atomic_dir, atomic_path
from segdiff.errors import InputError
from segdiff.slicing import Shard, normalise, slice_volume
from segdiff.volumes import Volume

__all__ = ["write_case_shards", "read_shard", "preview_indices", "build_manifest", "MANIFEST_COLUMNS"]

MANIFEST_COLUMNS = ["case", "modality", "view", "split", "n_slices", "shard"]


def preview_indices(n: int, count: int) -> list[int]:
    """``count`` positions spread evenly over ``n`` slices (the middle one first when count == 1)."""
    if n == 0 or count <= 0:
        return []
    return sorted({int(round(q)) for q in np.linspace(0, n - 1, count + 2)[1:-1]}) or [n // 2]


def _write_previews(shard: Shard, folder: Path, count: int) -> None:
    for i in preview_indices(len(shard.slice), count):
        stem = f"slice_{int(shard.slice[i]):04d}"
        Image.fromarray(np.rint(shard.image[i] * 255).astype(np.uint8)).save(folder / f"{stem}_image.png")
        Image.fromarray(shard.mask[i]).save(folder / f"{stem}_mask.png")


def write_case_shards(
    volume: Volume,
    modality: str,
    shards: Mapping[str, str | Path],
    previews: Mapping[str, str | Path],
    *,
    image_size: int,
    min_foreground: int,
    ct_window: Sequence[float],
    mri_percentiles: Sequence[float],
    previews_per_case: int = 2,
) -> dict[str, int]:
    """Slice ``volume`` in each view of ``shards`` (view -> .npz path) and write its preview folder.

    ``volume.image`` is normalised in place (it is the largest array; a copy would cost one
    more volume of memory). All views are computed first and written to temporary names that are renamed only once
    everything is written, so a failure leaves no output at all. Returns the number of slices per view.
    """
    normalised = normalise(volume.image, modality, ct_window, mri_percentiles, out=volume.image)
    cut = {
        view: slice_volume(volume, modality, view, image_size, min_foreground, normalised=normalised)
        for view in shards
    }
    with contextlib.ExitStack() as pending:  # all files appear together, at the end, or none does
        for view, shard in cut.items():
            shard.save(pending.enter_context(atomic_path(shards[view])))
            _write_previews(shard, pending.enter_context(atomic_dir(previews[view])), previews_per_case)
    return {view: len(shard.slice) for view, shard in cut.items()}


def read_shard(path: str | Path) -> Shard:
    """Load a shard written by :func:`write_case_shards`, checking its contract."""
    path = Path(path)
    try:
        with np.load(path) as z:
            shard = Shard(image=z["image"], mask=z["mask"], slice=z["slice"], pixel_mm=float(z["pixel_mm"]))
    except (OSError, KeyError, ValueError) as err:
        raise InputError(path, f"not a slice shard ({err})") from err
    if shard.image.shape != shard.mask.shape or shard.image.shape[0] != shard.slice.shape[0]:
        raise InputError(path, f"inconsistent shapes image {shard.image.shape}, mask {shard.mask.shape}, slice {shard.slice.shape}")
    return shard


def build_manifest(rows: pd.DataFrame, shard_paths: Mapping[str, str | Path], view: str) -> pd.DataFrame:
    """Manifest of one subset (modality x view): ``rows`` has columns case, modality, split."""
    counts = []
    for case in rows["case"]:
        with np.load(shard_paths[case]) as z:
            counts.append(int(z["slice"].shape[0]))
    out = rows[["case", "modality"]].copy()
    out.insert(2, "view", view)
    out["split"] = rows["split"].to_numpy()
    out["n_slices"] = counts
    out["shard"] = [str(shard_paths[c]) for c in rows["case"]]
    if out["case"].duplicated().any():
        raise ValueError(f"case {out['case'][out['case'].duplicated()].iloc[0]} listed twice in one subset")
    return out[MANIFEST_COLUMNS]
