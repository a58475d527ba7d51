"""Single label masks in and out of the editor page: its JSON form, uploads (PNG, .npy, NIfTI) and downloads.

A mask is an (H, W) uint8 label map (0 = background). On the wire (JSON) it is
``{"height": H, "width": W, "data": base64(H*W bytes, row-major)}``: integer ids, no colours.
Uploads are checked with one-line :class:`~segdiff.core.errors.InputError` messages: a colour or
non-integer image, a wrong size, ids outside the label map (an id in a gap of the map included), a
NIfTI slice index out of range, a ``.nii.gz`` whose header declares more than ``MAX_NIFTI_BYTES`` (refused
before its voxels are decompressed: a gzip bomb costs neither memory nor disk). A NIfTI
label volume goes through the study's own reorientation and resize (:mod:`segdiff.sources.volumes`,
:mod:`segdiff.data.slicing`). Nothing the client sends is used as a path.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import io
import tempfile
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image, UnidentifiedImageError

from segdiff.core.errors import InputError
from segdiff.core.labels import LabelMap
from segdiff.data.slicing import VIEWS, resize_stack, view_stack
from segdiff.sources.volumes import load_nifti

__all__ = ["encode_mask", "decode_mask", "check_mask", "read_upload", "mask_png", "mask_npy", "image_png",
           "images_npy"]

MAX_NIFTI_BYTES = 1 << 30  # a NIfTI upload that decompresses to more is refused (a gzip bomb)


def encode_mask(mask: np.ndarray) -> dict:
    """(H, W) label map -> its JSON form."""
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    return {"height": int(mask.shape[0]), "width": int(mask.shape[1]), "data": base64.b64encode(mask.tobytes()).decode()}


def decode_mask(payload: object, source: str = "mask") -> np.ndarray:
    """A mask's JSON form as an array.

    Args:
        payload: ``{"height", "width", "data"}`` as sent by the page.
        source: what the error names (e.g. ``mask``).

    Returns:
        The (height, width) uint8 label map.

    Raises:
        InputError: a malformed payload, naming ``source``.
    """
    if not isinstance(payload, dict) or not {"height", "width", "data"} <= payload.keys():
        raise InputError(source, "expected {height, width, data}")
    height, width = payload["height"], payload["width"]
    if not (isinstance(height, int) and isinstance(width, int) and 0 < height <= 4096 and 0 < width <= 4096):
        raise InputError(source, f"height and width must be integers in 1..4096, got {height!r} x {width!r}")
    try:
        raw = base64.b64decode(payload["data"], validate=True)
    except (binascii.Error, TypeError, ValueError) as err:
        raise InputError(source, f"data is not base64 ({err})") from err
    if len(raw) != height * width:
        raise InputError(source, f"data holds {len(raw)} bytes, expected height x width = {height * width}")
    return np.frombuffer(raw, np.uint8).reshape(height, width).copy()


def check_mask(mask: np.ndarray, size: int, labels: LabelMap, source: str = "mask") -> np.ndarray:
    """Check a mask against a model's image size and the study's label map.

    Args:
        mask: a label map.
        size: the model's image side; the mask must be ``size`` x ``size``.
        labels: the label map; every id must be one of its ids (gaps in the map included) or 0.
        source: what the error names.

    Returns:
        The mask as uint8.

    Raises:
        InputError: not 2D, the wrong size, or ids outside the label map (named, with the known ids).
    """
    if mask.ndim != 2:
        raise InputError(source, f"expected a 2D label map, got shape {mask.shape}")
    if mask.shape != (size, size):
        raise InputError(source, f"the mask is {mask.shape[0]} x {mask.shape[1]} pixels; this model takes {size} x {size}")
    unknown = sorted(set(np.unique(mask).tolist()) - {0, *labels.ids})
    if unknown:
        raise InputError(source, f"label ids {unknown[:10]} are not in the label map (known ids: {_id_ranges(labels.ids)})")
    return mask.astype(np.uint8)


def _id_ranges(ids: list[int]) -> str:
    """Sorted ids as runs, e.g. ``1..19, 21..72``: a map with gaps shows them."""
    runs: list[list[int]] = []
    for i in ids:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ", ".join(str(a) if a == b else f"{a}..{b}" for a, b in runs)


def _integer_labels(array: np.ndarray, source: str) -> np.ndarray:
    if array.dtype.kind == "b":
        return array.astype(np.uint8)
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
            raise InputError(source, "holds non-integer values: a label map has integer ids (0 = background)")
    elif array.dtype.kind not in "iu":
        raise InputError(source, f"holds {array.dtype} values, not integer label ids")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise InputError(source, f"label ids must be in 0..255, got {array.min()}..{array.max()}")
    return array.astype(np.uint8)


def _from_png(data: bytes, source: str) -> np.ndarray:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise InputError(source, f"not a readable PNG ({err})") from err
    if image.mode not in ("L", "P", "I", "I;16", "1"):
        raise InputError(source, f"a colour PNG (mode {image.mode}) is not a label map: save the mask as an 8-bit grayscale "
                         "or palette PNG whose pixel values are the label ids")
    return _integer_labels(np.asarray(image), source)  # palette PNG: its indices are the ids


def _from_npy(data: bytes, source: str) -> np.ndarray:
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise InputError(source, f"not a readable .npy array ({err})") from err
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise InputError(source, f"expected a 2D label map, got shape {array.shape}")
    return _integer_labels(array, source)


def _nifti_bytes(head: bytes, source: str) -> int | None:
    """Bytes a single-file NIfTI needs (header, extensions, voxels) as its header declares them.

    ``None`` when ``head`` does not start with a NIfTI-1 or NIfTI-2 header (nibabel then names the problem).

    Raises:
        InputError: the declared volume is larger than ``MAX_NIFTI_BYTES`` (a gzip bomb).
    """
    for klass in (nib.Nifti1Header, nib.Nifti2Header):
        n = klass.template_dtype.itemsize  # sizeof_hdr: 348 or 540, in either byte order
        if len(head) < n or n not in (int.from_bytes(head[:4], "little"), int.from_bytes(head[:4], "big")):
            continue
        try:
            header = klass(head[:n], check=False)
            shape = tuple(int(d) for d in header.get_data_shape())
            itemsize = header.get_data_dtype().itemsize
            offset = max(int(header.get_data_offset()), n + 4)
        except Exception:  # a malformed header: nibabel's own reading reports it
            return None
        needed = offset + int(np.prod(shape, dtype=object)) * itemsize
        if needed > MAX_NIFTI_BYTES:
            raise InputError(source, f"the NIfTI header declares a {' x '.join(map(str, shape))} volume of "
                             f"{header.get_data_dtype()}, which decompresses to {needed / (1 << 20):.1f} MiB: more than the "
                             f"{MAX_NIFTI_BYTES >> 20} MiB limit on a decompressed upload")
        return needed
    return None


def _gunzip_nifti(data: bytes, path: Path, source: str) -> None:
    """Decompress a ``.nii.gz`` upload into ``path``, a chunk at a time, never past what its header declares.

    Memory stays O(chunk), and at most ``MAX_NIFTI_BYTES`` are written: the size is checked from the
    header before the voxels are decompressed, and bytes after the declared volume are not read.

    Raises:
        InputError: corrupt gzip data, or a volume larger than ``MAX_NIFTI_BYTES``.
    """
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream, open(path, "wb") as out:
            head = stream.read(540)  # the larger of the NIfTI-1 and NIfTI-2 headers
            out.write(head)
            remaining = (_nifti_bytes(head, source) or 0) - len(head)
            while remaining > 0:
                chunk = stream.read(min(remaining, 1 << 20))
                if not chunk:
                    break  # shorter than declared: nibabel reports the truncation
                out.write(chunk)
                remaining -= len(chunk)
    except (OSError, EOFError, zlib.error) as err:
        raise InputError(source, f"truncated or corrupt gzip data ({err})") from err


def _from_nifti(data: bytes, source: str, view: str, slice_index: int, size: int) -> np.ndarray:
    """One slice of a label volume, cut and resized as the study cuts its masks (RAS, view, nearest neighbour)."""
    if view not in VIEWS:
        raise InputError(source, f"view must be one of {list(VIEWS)}, got {view!r}")
    with tempfile.TemporaryDirectory() as tmp:  # nibabel reads files; the client's file name is never used
        path = Path(tmp) / "upload.nii"
        if data[:2] == b"\x1f\x8b":
            _gunzip_nifti(data, path, source)
        else:
            path.write_bytes(data)
        try:
            volume, affine = load_nifti(path)
        except InputError as err:
            raise InputError(source, err.problem) from err
        volume = _integer_labels(np.asarray(volume), source)
    stack, pixel = view_stack(volume, tuple(float(s) for s in nib.affines.voxel_sizes(affine)), view)
    if not 0 <= slice_index < len(stack):
        raise InputError(source, f"slice {slice_index} is out of range: the {view} view has slices 0..{len(stack) - 1}")
    resized, _ = resize_stack(stack, pixel, size, labels=True, index=np.array([slice_index]))
    return resized[0]


def read_upload(data: bytes, size: int, labels: LabelMap, view: str = "axial", slice_index: int | None = None,
                source: str = "upload") -> np.ndarray:
    """An uploaded mask as a checked ``size`` x ``size`` map.

    The format is told by the bytes, not by the file name.

    Args:
        data: the uploaded bytes: a PNG, a ``.npy`` array, or a NIfTI label volume (``.nii`` or ``.nii.gz``).
        size: the model's image side.
        labels: the study's label map.
        view: the view to cut a NIfTI volume in.
        slice_index: the slice of a NIfTI volume (required for NIfTI).
        source: what the error names.

    Returns:
        The (size, size) uint8 label map.

    Raises:
        InputError: an unknown format, an unreadable file, a gzip bomb, a colour or non-integer image,
            a wrong size, ids outside the label map, or a NIfTI slice index out of range.
    """
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        mask = _from_png(data, source)
    elif data[:6] == b"\x93NUMPY":
        mask = _from_npy(data, source)
    elif data[:2] == b"\x1f\x8b" or data[:4] in (b"\x5c\x01\x00\x00", b"\x00\x00\x01\x5c"):  # gzip, NIfTI-1 sizeof_hdr 348
        if slice_index is None:
            raise InputError(source, "a NIfTI volume needs a slice index (and a view)")
        mask = _from_nifti(data, source, view, int(slice_index), size)
    else:
        raise InputError(source, "not a PNG, .npy or NIfTI (.nii, .nii.gz) file")
    return check_mask(mask, size, labels, source)


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(buffer, format="PNG")  # 2D uint8: mode L
    return buffer.getvalue()


def mask_png(mask: np.ndarray) -> bytes:
    """8-bit grayscale PNG whose pixel values are the label ids."""
    return _png(mask.astype(np.uint8))


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def mask_npy(mask: np.ndarray) -> bytes:
    """(H, W) uint8 ``.npy``."""
    return _npy(mask.astype(np.uint8))


def image_png(image: np.ndarray) -> bytes:
    """A [0, 1] image as an 8-bit grayscale PNG."""
    return _png(np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8))


def images_npy(images: np.ndarray) -> bytes:
    """(k, H, W) float32 ``.npy`` of the generations, values in [0, 1]."""
    return _npy(images.astype(np.float32))
