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

from dataclasses import dataclass
from typing import Literal

import numpy as np

from segdiff.volumes import Volume

__all__ = ["VIEWS", "Shard", "normalise_ct", "normalise_mri", "normalise", "view_stack", "resize_stack", "slice_volume"]

View = Literal["axial", "coronal", "sagittal"]
VIEWS: tuple[View, ...] = ("axial", "coronal", "sagittal")

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
    """Window Hounsfield units to [0, 1] (into ``out`` when given, e.g. ``out=image`` to save memory)."""
    lo, hi = window
    out = np.clip(image, lo, hi, out=out, dtype=np.float32)
    out -= np.float32(lo)
    out *= np.float32(1.0 / (hi - lo))
    return out


def normalise_mri(image: np.ndarray, percentiles: tuple[float, float] = (0.5, 99.5), out: np.ndarray | None = None) -> np.ndarray:
    """Clip to the volume's own intensity percentiles and scale to [0, 1]."""
    lo, hi = np.percentile(image, percentiles)
    if hi <= lo:
        out = np.zeros(image.shape, np.float32) if out is None else out
        out[...] = 0
        return out
    return normalise_ct(image, (float(lo), float(hi)), out)


def normalise(image: np.ndarray, modality: str, ct_window=(-175.0, 250.0), mri_percentiles=(0.5, 99.5),
              out: np.ndarray | None = None) -> np.ndarray:
    """Modality-specific intensity normalisation to [0, 1]."""
    if modality == "ct":
        return normalise_ct(image, tuple(ct_window), out)
    if modality == "mri":
        return normalise_mri(image, tuple(mri_percentiles), out)
    raise ValueError(f"unknown modality {modality!r} (expected 'ct' or 'mri')")


def view_stack(volume: np.ndarray, spacing: tuple[float, float, float], view: str) -> tuple[np.ndarray, tuple[float, float]]:
    """The volume as a stack of 2D slices (N, rows, cols) in display orientation, and the (row, col) pixel size."""
    axis, row_axis, col_axis = _VIEW_AXES[view]
    stack = np.transpose(volume, (axis, row_axis, col_axis))[:, ::-1, ::-1]
    return stack, (spacing[row_axis], spacing[col_axis])


def fitted_shape(shape: tuple[int, int], pixel: tuple[float, float], size: int) -> tuple[tuple[int, int], float]:
    """In-plane shape that fits ``size`` along the longer physical side, and the resulting isotropic pixel size."""
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


def resize_stack(stack: np.ndarray, pixel: tuple[float, float], size: int, *, labels: bool,
                 index: np.ndarray | None = None, chunk: int = 16) -> tuple[np.ndarray, float]:
    """Resize slices of ``stack`` to ``size`` x ``size`` keeping the physical aspect ratio.

    The longer physical side fills ``size`` pixels; the other is centred and padded with 0.
    Images use antialiased bilinear interpolation, label masks nearest neighbour. ``index``
    selects the slices to resize (all by default); they are processed ``chunk`` at a time so
    that no full-size copy of the stack is made. Returns the resized slices and the isotropic
    output pixel size in mm.
    """
    _, rows, cols = stack.shape
    index = np.arange(len(stack)) if index is None else np.asarray(index)
    (h, w), out_pixel = fitted_shape((rows, cols), pixel, size)
    out = np.zeros((len(index), size, size), dtype=np.uint8 if labels else np.float32)
    top, left = (size - h) // 2, (size - w) // 2
    if labels:
        r, c = _nearest_index(rows, h), _nearest_index(cols, w)
    else:
        wr, wc = _bilinear_weights(rows, h), _bilinear_weights(cols, w).T
    for start in range(0, len(index), chunk):
        block = stack[index[start : start + chunk]]
        n = len(block)
        if labels:
            resized = block[:, r][:, :, c]
        else:  # two large matrix products (columns, then rows) instead of n small ones
            cols_done = (np.ascontiguousarray(block, dtype=np.float32).reshape(n * rows, cols) @ wc).reshape(n, rows, w)
            resized = (wr @ cols_done.transpose(1, 0, 2).reshape(rows, n * w)).reshape(h, n, w).transpose(1, 0, 2)
        out[start : start + n, top : top + h, left : left + w] = resized
    return out, out_pixel


def slice_volume(
    volume: Volume,
    modality: str,
    view: str,
    image_size: int,
    min_foreground: int = 1,
    ct_window=(-175.0, 250.0),
    mri_percentiles=(0.5, 99.5),
    normalised: np.ndarray | None = None,
) -> Shard:
    """Cut one view of ``volume`` into normalised, resized slices with at least ``min_foreground`` mask pixels.

    ``normalised`` may pass the already normalised image to share that work between views.
    """
    image = normalise(volume.image, modality, ct_window, mri_percentiles) if normalised is None else normalised
    mask_stack, pixel = view_stack(volume.label, volume.spacing, view)
    masks, out_pixel = resize_stack(mask_stack, pixel, image_size, labels=True)
    keep = np.flatnonzero(np.count_nonzero(masks.reshape(len(masks), -1), axis=1) >= min_foreground)
    image_stack, _ = view_stack(image, volume.spacing, view)
    images, _ = resize_stack(image_stack, pixel, image_size, labels=False, index=keep)
    np.clip(images, 0.0, 1.0, out=images)
    return Shard(image=images, mask=masks[keep], slice=keep.astype(np.int32), pixel_mm=out_pixel)
