"""The file contract of the slicing stage: NPZ shards, PNG previews and per-subset manifests.

``results/slices/{modality}/{view}/{case}.npz`` holds ``image`` (float32 N x H x W in [0, 1]),
``mask`` (uint8 N x H x W label ids: the organs', and with ``preprocess.body`` the body envelope's
:attr:`~segdiff.core.labels.LabelMap.body_id` where a pixel is body and no organ), ``slice`` (int32 N,
index along the view axis of the canonical RAS volume) and ``pixel_mm`` (scalar, isotropic pixel size in mm).
Previews: ``{case}/slice_{index:04d}_image.png`` (8-bit gray) and ``..._mask.png`` (8-bit label ids).
Manifest ``manifest.tsv``: one row per case with ``case, modality, view, split, n_slices, shard``.
"""

from __future__ import annotations

import contextlib
import shutil
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from segdiff.core.atomic import atomic_dir, atomic_path
from segdiff.core.errors import InputError
from segdiff.data.body import BodySettings, normalise_with_body
from segdiff.data.slicing import Shard, ViewSlices, select_slices
from segdiff.sources.volumes import Volume

__all__ = ["write_case_shards", "read_shard", "preview_indices", "build_manifest", "MANIFEST_COLUMNS"]

MANIFEST_COLUMNS = ["case", "modality", "view", "split", "n_slices", "shard"]


def preview_indices(n: int, count: int) -> list[int]:
    """Positions spread evenly over a view's slices, for the previews.

    Args:
        n: the number of slices.
        count: how many positions.

    Returns:
        Sorted positions (the middle one when ``count`` is 1); empty without slices.
    """
    if n == 0 or count <= 0:
        return []
    return sorted({int(round(q)) for q in np.linspace(0, n - 1, count + 2)[1:-1]}) or [n // 2]


def _write_previews(shown: Mapping[int, tuple[np.ndarray, np.ndarray]], folder: Path) -> None:
    for index, (image, mask) in shown.items():
        stem = f"slice_{index:04d}"
        Image.fromarray(np.rint(image * 255).astype(np.uint8)).save(folder / f"{stem}_image.png")
        Image.fromarray(mask).save(folder / f"{stem}_mask.png")


def _stream_npy(zf: zipfile.ZipFile, name: str, blocks: Iterable[np.ndarray], shape: tuple[int, ...], dtype,
                rows: Sequence[int]) -> dict[int, np.ndarray]:
    """Write consecutive ``blocks`` of one array as member ``name.npy`` of an open npz; return its ``rows``."""
    picked, start = {}, 0
    with zf.open(f"{name}.npy", "w", force_zip64=True) as f:  # what np.savez does, one block at a time
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(f, header)
        for block in blocks:
            f.write(np.ascontiguousarray(block, dtype))
            picked.update((i, block[i - start].copy()) for i in rows if start <= i < start + len(block))
            start += len(block)
    if start != shape[0]:
        raise RuntimeError(f"{name}: wrote {start} slices, announced {shape[0]}")
    return picked


def _write_shard(cut: ViewSlices, path: Path, preview_count: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Write the shard of ``cut`` (the layout :meth:`Shard.save` writes) with one chunk of slices in memory
    at a time; return the (image, mask) of the preview slices by slice index."""
    shape, rows = (len(cut.slice), cut.size, cut.size), preview_indices(len(cut.slice), preview_count)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        images = _stream_npy(zf, "image", cut.images(), shape, np.float32, rows)
        masks = _stream_npy(zf, "mask", cut.masks(), shape, np.uint8, rows)
        for name, value in (("slice", cut.slice), ("pixel_mm", np.float32(cut.pixel_mm))):
            with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(value))
    return {int(cut.slice[i]): (images[i], masks[i]) for i in rows}


def _remove_on_failure(paths: Iterable[str | Path]):
    """ExitStack exit callback: if the block failed, remove ``paths`` (files or folders) if they exist."""

    def remove(exc_type, exc, tb) -> bool:
        """Remove ``paths`` if the block raised.

        Args:
            exc_type: the exception's type; None when the block succeeded.
            exc: the exception.
            tb: its traceback.

        Returns:
            False: an exception goes on propagating.
        """
        if exc_type is not None:
            for path in map(Path, paths):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        return False

    return remove


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
    body: BodySettings = BodySettings(),
    body_id: int | None = None,
) -> dict[str, int]:
    """Slice ``volume`` in each view of ``shards`` (view -> .npz path) and write its preview folder.

    With ``body`` on, the body envelope (:mod:`segdiff.data.body`) is written into ``volume.label`` as
    ``body_id`` first; ``min_foreground`` still counts organ pixels only.

    Memory: ``volume.image`` is normalised in place (a copy would cost one more volume), and each
    view's slices are resized a chunk at a time and streamed into its shard, so beyond the volume
    only a few chunks are held, however many slices a view has.

    All outputs are written to temporary names, renamed once everything is written. If anything
    fails, a rename included, the outputs renamed so far are removed: no output of the case is left
    (nor one of an earlier run, so that views of two runs never mix).

    Args:
        volume: the case's image and label volume (its image is normalised in place, its label gets the envelope).
        modality: ``ct`` or ``mri`` (the normalisation).
        shards: view -> the ``.npz`` shard to write.
        previews: view -> the preview folder to write.
        image_size: the side of the square slices.
        min_foreground: slices with fewer organ pixels are left out.
        ct_window: the CT intensity window (HU).
        mri_percentiles: the MRI normalisation percentiles.
        previews_per_case: preview images per view.
        body: the body envelope's settings (``preprocess.body``; off by default).
        body_id: the envelope's id (:attr:`~segdiff.core.labels.LabelMap.body_id`); needed when ``body`` is on.

    Returns:
        The number of slices written per view.

    Raises:
        ValueError: ``body`` on without a ``body_id``.
    """
    if body.on and body_id is None:
        raise ValueError("a body envelope needs its body_id")
    normalised = normalise_with_body(volume, modality, body, body_id or 0, ct_window, mri_percentiles)
    body_id = body_id if body.on else None
    counts = {}
    with contextlib.ExitStack() as pending:  # exits in reverse: all renames, then the rollback if one failed
        pending.push(_remove_on_failure([*shards.values(), *previews.values()]))
        for view, path in shards.items():
            cut = select_slices(volume, normalised, view, image_size, min_foreground, body_id)
            shown = _write_shard(cut, pending.enter_context(atomic_path(path)), previews_per_case)
            _write_previews(shown, pending.enter_context(atomic_dir(previews[view])))
            counts[view] = len(cut.slice)
    return counts


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
    """Manifest of one subset (modality x view).

    Args:
        rows: one row per case, columns case, modality, split.
        shard_paths: case -> its shard of this view.
        view: the subset's view.

    Returns:
        The manifest, columns :data:`MANIFEST_COLUMNS`, one row per case.

    Raises:
        ValueError: a case listed twice.
    """
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
