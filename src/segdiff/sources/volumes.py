"""NIfTI input: load an image/label pair, validate it, reorient it to canonical RAS.

Everything that can be wrong with a volume is checked here, before any output is written, and
reported as an :class:`~segdiff.core.errors.InputError` naming the file.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from segdiff.core.errors import InputError
from segdiff.core.labels import LabelMap, Remap

__all__ = ["Volume", "load_nifti", "load_case"]

_AFFINE_TOL = 1e-3  # mm; image and label grids must agree to this


@dataclass
class Volume:
    """A validated case in canonical RAS voxel order.

    Attributes:
        image: float32 array (X, Y, Z), raw intensities (HU for CT).
        label: uint8 array (X, Y, Z), ids of the target label map.
        spacing: voxel size in mm along X, Y, Z.
        affine: the canonical (RAS) voxel-to-world affine.
        body: bool array (X, Y, Z), the user's body mask (``preprocess.body.mode`` sheet), or None.
    """

    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray
    body: np.ndarray | None = None


def load_nifti(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Load a 3D NIfTI file in canonical RAS voxel order.

    Args:
        path: the ``.nii`` or ``.nii.gz`` file.

    Returns:
        (array in canonical RAS order, canonical affine).

    Raises:
        InputError: a missing, truncated or corrupt file, a non-3D volume (a 4D file with a single
            volume is accepted), non-finite voxels.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        img = nib.load(path)
    except Exception as err:  # nibabel raises several types for unreadable headers
        raise InputError(path, f"not a readable NIfTI file ({type(err).__name__}: {err})") from err
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(path, f"expected a NIfTI image, got {type(img).__name__}")
    if img.ndim == 4 and img.shape[3] == 1:
        img = img.slicer[..., 0]
    if img.ndim != 3:
        raise InputError(path, f"expected a 3D volume, got shape {img.shape}")
    try:
        data = np.asanyarray(img.dataobj)
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile, ValueError) as err:
        raise InputError(path, f"truncated or corrupt data ({type(err).__name__}: {err})") from err
    # canonical RAS by flips and axis swaps only: views of the loaded array, no copy
    # (what nib.as_closest_canonical does, without its extra copy of the data)
    ornt = nib.orientations.io_orientation(img.affine)
    data = nib.orientations.apply_orientation(data, ornt)
    affine = img.affine @ nib.orientations.inv_ornt_aff(ornt, img.shape)
    # min/max propagate NaN and expose inf without allocating a mask of the volume
    if data.dtype.kind == "f" and data.size and not (np.isfinite(data.min()) and np.isfinite(data.max())):
        raise InputError(path, f"{np.count_nonzero(~np.isfinite(data))} voxels are NaN or infinite")
    return data, affine


def _label_ids(data: np.ndarray, path: Path, what: str = "label volume") -> np.ndarray:
    """Integer label array from whatever dtype the file stored."""
    if data.dtype.kind == "f":
        rounded = np.rint(data)
        if not np.array_equal(rounded, data):
            raise InputError(path, f"{what} holds non-integer values")
        data = rounded
    if data.min(initial=0) < 0:
        raise InputError(path, f"{what} holds negative values (min {data.min()})")
    return data.astype(np.int64 if data.max(initial=0) > 255 else np.uint8, copy=False)


def _check_grid(path: Path, shape: tuple[int, ...], affine: np.ndarray, image_path: Path, image_shape: tuple[int, ...],
                image_affine: np.ndarray, what: str) -> None:
    """Refuse a volume at ``path`` whose grid (shape or affine) is not the image's."""
    if shape != image_shape:
        raise InputError(path, f"{what} grid {shape} differs from image grid {image_shape} of {image_path}")
    if not np.allclose(affine, image_affine, atol=_AFFINE_TOL):
        raise InputError(path, f"{what} affine differs from the affine of {image_path} (more than {_AFFINE_TOL} mm)")


def load_case(image_path: str | Path, label_path: str | Path, labels: LabelMap, remap: Remap | None = None,
              body_path: str | Path | None = None) -> Volume:
    """Load and validate one image/label pair (and the case's body mask, when given).

    Args:
        image_path: the image NIfTI.
        label_path: the label NIfTI, on the image's grid.
        labels: the study's label map; every id must be one of its ids after ``remap``.
        remap: an optional source-id -> label-map-id table applied to the labels first.
        body_path: the user's body mask NIfTI (``preprocess.body.mode`` sheet), on the image's grid:
            integer values, nonzero = body; None for none.

    Returns:
        The case in canonical RAS order.

    Raises:
        InputError: naming the offending file: not a readable 3D NIfTI, non-finite voxels, different
            grids (shape or affine), non-integer labels, ids outside ``labels``, no foreground voxel;
            a body mask on another grid, with non-integer or negative values, or without a body voxel.
    """
    image_path, label_path = Path(image_path), Path(label_path)
    label, label_affine = load_nifti(label_path)  # the smaller arrays first: lower peak memory
    body = None
    if body_path is not None:
        body_path = Path(body_path)
        body, body_affine = load_nifti(body_path)
    image, affine = load_nifti(image_path)
    _check_grid(label_path, label.shape, label_affine, image_path, image.shape, affine, "label")
    if body is not None:
        _check_grid(body_path, body.shape, body_affine, image_path, image.shape, affine, "body mask")
        body = _label_ids(body, body_path, "body mask") != 0
        if not body.any():
            raise InputError(body_path, "body mask has no body voxel (nonzero = body)")
    label = _label_ids(label, label_path)
    if remap is not None:
        label = remap.apply(label, label_path)
    labels.check(label, label_path)
    if not label.any():
        raise InputError(label_path, "no foreground voxel (after remap)" if remap else "no foreground voxel")
    spacing = tuple(float(s) for s in nib.affines.voxel_sizes(affine))
    return Volume(image=image.astype(np.float32, copy=False), label=label.astype(np.uint8, copy=False),
                  spacing=spacing, affine=affine, body=body)
