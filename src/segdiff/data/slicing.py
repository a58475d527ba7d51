"""From a validated volume to 2D training slices: intensity normalisation, the three views,
aspect-preserving resize and foreground-based slice selection.

Display convention of every 2D slice (radiological, from the canonical RAS array):

============  ===========  ==========================  ==============================
view          slice axis   rows (top -> bottom)        columns (left -> right)
============  ===========  ==========================  ==============================
axial         Z (S)        anterior -> posterior        patient right -> patient left
coronal       Y (A)        superior -> inferior         patient right -> patient left
sagittal      X (R)        superior -> inferior         anterior -> posterior
============  ===========  ==========================  ==============================
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

from segdiff.sources.volumes import Volume

__all__ = ["VIEWS", "slice_views", "Shard", "normalise_ct", "normalise_mri", "normalise", "view_stack", "resize_stack",
           "resize_chunks", "ViewSlices", "organ_pixels", "select_slices", "slice_volume"]

View = Literal["axial", "coronal", "sagittal"]
VIEWS: tuple[View, ...] = ("axial", "coronal", "sagittal")

def slice_views(view: str) -> list[str]:
    """The slice views a model view is trained on: ``all`` is the union of the three."""
    return list(VIEWS) if view == "all" else [view]


# view -> (slice axis, axis shown as rows, axis shown as columns) of the RAS array
_VIEW_AXES: dict[str, tuple[int, int, int]] = {"axial": (2, 1, 0), "coronal": (1, 2, 0), "sagittal": (0, 2, 1)}


@dataclass
class Shard:
    """The slices of one case in one view (the ``.npz`` contract of the slicing stage)."""

    image: np.ndarray  # float32 (N, H, W) in [0, 1]
    mask: np.ndarray  # uint8 (N, H, W), label ids
    slice: np.ndarray  # int32 (N,), index along the view's axis of the canonical RAS volume
    pixel_mm: float  # isotropic pixel size after resize

    def save(self, path) -> None:
        np.savez(path, image=self.image, mask=self.mask, slice=self.slice, pixel_mm=np.float32(self.pixel_mm))


def normalise_ct(image: np.ndarray, window: tuple[float, float] = (-175.0, 250.0), out: np.ndarray | None = None) -> np.ndarray:
    """Window Hounsfield units to [0, 1].

    Args:
        image: the CT volume in HU.
        window: the (low, high) HU window.
        out: float32 array to write into (e.g. ``out=image`` to save memory); a new one when None.

    Returns:
        The normalised float32 image (``out`` when given).
    """
    lo, hi = window
    out = np.clip(image, lo, hi, out=out, dtype=np.float32)
    out -= np.float32(lo)
    out *= np.float32(1.0 / (hi - lo))
    return out


def normalise_mri(image: np.ndarray, percentiles: tuple[float, float] = (0.5, 99.5), out: np.ndarray | None = None) -> np.ndarray:
    """Clip to the volume's own intensity percentiles and scale to [0, 1].

    Args:
        image: the MRI volume.
        percentiles: the (low, high) percentiles that map to 0 and 1.
        out: float32 array to write into; a new one when None.

    Returns:
        The normalised float32 image (all zeros for a constant volume).
    """
    lo, hi = np.percentile(image, percentiles)
    if hi <= lo:
        out = np.zeros(image.shape, np.float32) if out is None else out
        out[...] = 0
        return out
    return normalise_ct(image, (float(lo), float(hi)), out)


def normalise(image: np.ndarray, modality: str, ct_window=(-175.0, 250.0), mri_percentiles=(0.5, 99.5),
              out: np.ndarray | None = None) -> np.ndarray:
    """Modality-specific intensity normalisation to [0, 1].

    Args:
        image: the volume.
        modality: ``ct`` (:func:`normalise_ct`) or ``mri`` (:func:`normalise_mri`).
        ct_window: the CT window in HU.
        mri_percentiles: the MRI percentiles.
        out: float32 array to write into; a new one when None.

    Returns:
        The normalised float32 image.

    Raises:
        ValueError: an unknown modality.
    """
    if modality == "ct":
        return normalise_ct(image, tuple(ct_window), out)
    if modality == "mri":
        return normalise_mri(image, tuple(mri_percentiles), out)
    raise ValueError(f"unknown modality {modality!r} (expected 'ct' or 'mri')")


def view_stack(volume: np.ndarray, spacing: tuple[float, float, float], view: str) -> tuple[np.ndarray, tuple[float, float]]:
    """The volume as a stack of 2D slices in display orientation.

    Args:
        volume: a canonical (RAS) 3D array.
        spacing: its voxel size in mm along each axis.
        view: ``axial``, ``coronal`` or ``sagittal``.

    Returns:
        The stack (N, rows, cols), a view of ``volume`` (no copy), and the (row, col) pixel size in mm.
    """
    axis, row_axis, col_axis = _VIEW_AXES[view]
    stack = np.transpose(volume, (axis, row_axis, col_axis))[:, ::-1, ::-1]
    return stack, (spacing[row_axis], spacing[col_axis])


def fitted_shape(shape: tuple[int, int], pixel: tuple[float, float], size: int) -> tuple[tuple[int, int], float]:
    """In-plane shape that fits ``size`` along the longer physical side.

    Args:
        shape: the (rows, cols) of a slice.
        pixel: its (row, col) pixel size in mm.
        size: the output side in pixels.

    Returns:
        The resized (rows, cols), each at most ``size``, and the resulting isotropic pixel size in mm.
    """
    extent = (shape[0] * pixel[0], shape[1] * pixel[1])
    out_pixel = max(extent) / size
    return (max(1, min(size, round(extent[0] / out_pixel))), max(1, min(size, round(extent[1] / out_pixel)))), out_pixel


def _bilinear_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) matrix of antialiased bilinear interpolation, pixel centres aligned.

    The triangle filter is widened by the reduction factor when downsampling (as PIL's BILINEAR
    resize does), so a stack resizes with two matrix products instead of a loop over slices.
    """
    scale = n_in / n_out
    support = max(scale, 1.0)
    centres = (np.arange(n_out) + 0.5) * scale
    dist = (np.arange(n_in)[None, :] + 0.5 - centres[:, None]) / support
    weights = np.clip(1.0 - np.abs(dist), 0.0, None)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each output pixel for nearest-neighbour resizing, pixel centres aligned."""
    return np.minimum(((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.int64), n_in - 1)


_CHUNK_VOXELS = 2**21  # pixels per chunk, in and out (8 MiB as float32): a few such buffers are all the working memory


def resize_chunks(stack: np.ndarray, pixel: tuple[float, float], size: int, *, labels: bool,
                  index: np.ndarray | None = None, chunk: int | None = None) -> Iterator[np.ndarray]:
    """Slices of a stack resized as by :func:`resize_stack`, a block at a time.

    Args:
        stack: (N, rows, cols) slices.
        pixel: their (row, col) pixel size in mm.
        size: the output side in pixels.
        labels: nearest neighbour (label masks) instead of antialiased bilinear (images).
        index: the slices to resize (all by default).
        chunk: slices per block; by default about ``_CHUNK_VOXELS`` input or output pixels, and at
            most an eighth of the stack, so that the buffers stay small next to the volume.

    Yields:
        Consecutive (n, size, size) blocks, uint8 for labels, float32 for images.
    """
    _, rows, cols = stack.shape
    index = np.arange(len(stack)) if index is None else np.asarray(index)
    chunk = chunk or max(1, min(_CHUNK_VOXELS // max(rows * cols, size * size), len(stack) // 8))
    (h, w), _ = fitted_shape((rows, cols), pixel, size)
    top, left = (size - h) // 2, (size - w) // 2
    if labels:
        r, c = _nearest_index(rows, h), _nearest_index(cols, w)
    else:
        wr, wc = _bilinear_weights(rows, h), _bilinear_weights(cols, w).T
    for start in range(0, len(index), chunk):
        ids = index[start : start + chunk]
        n = len(ids)
        if labels:  # one gather, straight to the output pixels
            resized = stack[ids[:, None, None], r[:, None], c]
        else:  # two large matrix products (columns, then rows) instead of n small ones
            block = np.empty((n, rows, cols), np.float32)
            for j, i in enumerate(ids):  # slice by slice: no strided copy of the whole block first
                block[j] = stack[i]
            cols_done = (block.reshape(n * rows, cols) @ wc).reshape(n, rows, w)
            del block
            resized = (wr @ cols_done.transpose(1, 0, 2).reshape(rows, n * w)).reshape(h, n, w).transpose(1, 0, 2)
        out = np.zeros((n, size, size), dtype=np.uint8 if labels else np.float32)
        out[:, top : top + h, left : left + w] = resized
        yield out


def _gather(blocks: Iterable[np.ndarray], shape: tuple[int, ...], dtype) -> np.ndarray:
    """Consecutive blocks written into one preallocated array (no list of blocks plus a concatenated copy)."""
    out, start = np.empty(shape, dtype), 0
    for block in blocks:
        out[start : start + len(block)] = block
        start += len(block)
    return out


def resize_stack(stack: np.ndarray, pixel: tuple[float, float], size: int, *, labels: bool,
                 index: np.ndarray | None = None, chunk: int | None = None) -> tuple[np.ndarray, float]:
    """Resize slices of ``stack`` to ``size`` x ``size`` keeping the physical aspect ratio.

    The longer physical side fills ``size`` pixels; the other is centred and padded with 0.
    Slices are processed a chunk at a time (see :func:`resize_chunks`) so that no full-size copy
    of the stack is made.

    Args:
        stack: (N, rows, cols) slices.
        pixel: their (row, col) pixel size in mm.
        size: the output side in pixels.
        labels: nearest neighbour (label masks) instead of antialiased bilinear (images).
        index: the slices to resize (all by default).
        chunk: slices per chunk (see :func:`resize_chunks`).

    Returns:
        The resized slices (len(index), size, size) and the isotropic output pixel size in mm.
    """
    index = np.arange(len(stack)) if index is None else np.asarray(index)
    blocks = resize_chunks(stack, pixel, size, labels=labels, index=index, chunk=chunk)
    out = _gather(blocks, (len(index), size, size), np.uint8 if labels else np.float32)
    return out, fitted_shape(stack.shape[1:], pixel, size)[1]


@dataclass
class ViewSlices:
    """The selected slices of one view, resized on demand a chunk at a time (see :func:`select_slices`).

    The stacks are views of the volume, so holding this costs no memory; :meth:`images` and
    :meth:`masks` yield consecutive (n, size, size) blocks of the shard's ``image`` and ``mask``.
    """

    image_stack: np.ndarray  # normalised image in display orientation (a view, no copy)
    mask_stack: np.ndarray
    pixel: tuple[float, float]  # (row, col) pixel size of the stacks in mm
    size: int
    slice: np.ndarray  # int32 (N,), the selected slices
    pixel_mm: float

    def images(self) -> Iterator[np.ndarray]:
        for block in resize_chunks(self.image_stack, self.pixel, self.size, labels=False, index=self.slice):
            yield np.clip(block, 0.0, 1.0, out=block)

    def masks(self) -> Iterator[np.ndarray]:
        return resize_chunks(self.mask_stack, self.pixel, self.size, labels=True, index=self.slice)

    def shard(self) -> Shard:
        """All selected slices in memory."""
        shape = (len(self.slice), self.size, self.size)
        return Shard(image=_gather(self.images(), shape, np.float32), mask=_gather(self.masks(), shape, np.uint8),
                     slice=self.slice, pixel_mm=self.pixel_mm)


def organ_pixels(block: np.ndarray, body_id: int | None) -> np.ndarray:
    """Organ pixels per slice of a (n, H, W) block of masks: neither background nor the body envelope.

    Args:
        block: (n, H, W) label ids.
        body_id: the body envelope's id in the masks (not an organ), or None.

    Returns:
        (n,) int counts.
    """
    flat = block.reshape(len(block), -1)
    if body_id is None:
        return np.count_nonzero(flat, axis=1)
    return np.count_nonzero((flat != 0) & (flat != body_id), axis=1)


def select_slices(volume: Volume, normalised: np.ndarray, view: str, image_size: int, min_foreground: int = 1,
                  body_id: int | None = None) -> ViewSlices:
    """The slices of one view with enough foreground after resizing.

    Only the per-slice foreground counts are computed here; the resized slices are computed when
    :class:`ViewSlices` is iterated.

    Args:
        volume: the case's canonical image and label volume.
        normalised: the normalised image of ``volume``.
        view: ``axial``, ``coronal`` or ``sagittal``.
        image_size: the side of the resized slices.
        min_foreground: the least organ pixels a kept slice has after resizing.
        body_id: the body envelope's id in ``volume.label`` (not an organ: not counted), or None.

    Returns:
        The selected slices, resized on demand.
    """
    mask_stack, pixel = view_stack(volume.label, volume.spacing, view)
    counts = [organ_pixels(b, body_id) for b in resize_chunks(mask_stack, pixel, image_size, labels=True)]
    keep = np.flatnonzero(np.concatenate([np.zeros(0, np.int64), *counts]) >= min_foreground).astype(np.int32)
    image_stack, _ = view_stack(normalised, volume.spacing, view)
    return ViewSlices(image_stack, mask_stack, pixel, image_size, keep, fitted_shape(mask_stack.shape[1:], pixel, image_size)[1])


def slice_volume(
    volume: Volume,
    modality: str,
    view: str,
    image_size: int,
    min_foreground: int = 1,
    ct_window=(-175.0, 250.0),
    mri_percentiles=(0.5, 99.5),
    normalised: np.ndarray | None = None,
    body_id: int | None = None,
) -> Shard:
    """Cut one view of a volume into normalised, resized slices.

    Args:
        volume: the case's canonical image and label volume.
        modality: ``ct`` or ``mri`` (the normalisation).
        view: ``axial``, ``coronal`` or ``sagittal``.
        image_size: the side of the resized slices.
        min_foreground: the least organ pixels a kept slice has after resizing.
        ct_window: the CT window in HU.
        mri_percentiles: the MRI percentiles.
        normalised: the already normalised image, to share that work between views.
        body_id: the body envelope's id in ``volume.label`` (not counted as foreground), or None.

    Returns:
        The kept slices in memory.
    """
    image = normalise(volume.image, modality, ct_window, mri_percentiles) if normalised is None else normalised
    return select_slices(volume, image, view, image_size, min_foreground, body_id).shard()
