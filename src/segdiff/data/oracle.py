"""Oracle renders: k "second scans" of a phantom test case, sliced exactly like the real data.

The phantom knows what no real dataset does: the true conditional distribution of an image given
its anatomy. :func:`segdiff.sources.phantom.generate_case` with ``render = r >= 1`` keeps the anatomy (and
so the label volume, bit for bit) and redraws everything else: contrast phase, tissue intensity
jitter, texture, blur, noise, MRI gain and bias field. Each render goes through the same NIfTI
writing, loading (:func:`segdiff.sources.volumes.load_case`), normalisation and slicing
(:func:`segdiff.data.slicing.slice_volume`) as the case itself, so render r of a slice is what a
perfect generator could have produced for that slice's mask.

Oracle file ``results/oracle/{modality}/{view}/{case}.npz``: ``image`` float32 (N, k, H, W) in
[0, 1], ``mask`` uint8 (N, H, W), ``slice`` int32 (N,) — the same slices, in the same order, as
the case's shard of that view. With the body envelope on (``preprocess.body``), the renders are sliced with the
case's own mask, envelope included: the envelope is derived once from the case's own image, in its own
modality, with the settings of its slicing job, so the oracle masks equal the shard's.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from segdiff.core.atomic import atomic_path
from segdiff.core.errors import InputError
from segdiff.core.labels import LabelMap
from segdiff.sources.phantom import generate_case
from segdiff.data.body import BodySettings, normalise_with_body
from segdiff.data.slicing import normalise, slice_volume
from segdiff.sources.volumes import load_case

__all__ = ["OracleJob", "render_oracle", "write_oracle", "read_oracle", "gather_oracle", "case_oracle"]


@dataclass(frozen=True)
class OracleJob:
    """The workflow's oracle job of one phantom test case (rule ``oracle_case``, :func:`case_oracle`).

    Attributes:
        case: the phantom case id.
        contrast: the modality the renders are drawn in (``ct`` or ``mri``; may differ from the case's).
        label_path: the case's label volume (the renders are sliced exactly like its shards).
        phantom: the config's ``phantom`` section (``shape`` and ``spacing`` are used).
        seed: the study seed the phantom was drawn with.
        k: renders per case.
        labels: the label map.
        image_size: slice size in pixels (``preprocess.image_size``).
        min_foreground: organ pixels a slice needs to be kept (``preprocess.min_foreground``).
        ct_window: the CT intensity window (``preprocess.ct_window``; None when ``contrast`` is MRI).
        mri_percentiles: the MRI normalisation percentiles (None when ``contrast`` is CT).
        outputs: the oracle files to write, ``.../{view}/{case}.npz``, one per view.
        body: the body envelope of the case's slices (``preprocess.body`` of the case's modality; off by default).
        case_image: the case's own image (where the envelope is derived from; needed when ``body`` is on).
        case_modality: the case's own modality (``ct`` or ``mri``; needed when ``body`` is on).
    """

    case: str
    contrast: str
    label_path: str | Path
    phantom: Mapping
    seed: int
    k: int
    labels: LabelMap
    image_size: int
    min_foreground: int
    ct_window: Sequence[float] | None
    mri_percentiles: Sequence[float] | None
    outputs: Sequence[str | Path]
    body: BodySettings = BodySettings()
    case_image: str | Path | None = None
    case_modality: str | None = None


def render_oracle(
    case: str,
    contrast: str,
    label_path: str | Path,
    phantom: Mapping,
    seed: int,
    k: int,
    labels: LabelMap,
    views: Sequence[str],
    *,
    image_size: int,
    min_foreground: int,
    ct_window: Sequence[float],
    mri_percentiles: Sequence[float],
    body: BodySettings = BodySettings(),
    case_image: str | Path | None = None,
    case_modality: str | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """``k`` oracle renders of one phantom case in ``contrast``, sliced in each of ``views``.

    Each render (``render = 1..k`` of :func:`segdiff.sources.phantom.generate_case`) is written as NIfTI
    and read back with the case's own label file ``label_path`` through
    :func:`segdiff.sources.volumes.load_case`, so slice selection and resizing are those of the case's
    shards.

    Args:
        case: the phantom case id.
        contrast: the modality the renders are drawn in (``ct`` or ``mri``). It may differ from the case's
            modality: an MRI render of a CT case is the ground truth of the multi-modal experiment
            (CT mask -> MRI image).
        label_path: the case's own label volume; every render is loaded with it.
        phantom: the config's ``phantom`` section (``shape`` and ``spacing`` are used).
        seed: the study seed the phantom was drawn with.
        k: renders per case (at least 1).
        labels: the label map.
        views: the views to slice (``axial``, ``coronal``, ``sagittal``).
        image_size: slice size in pixels (``preprocess.image_size``).
        min_foreground: organ pixels a slice needs to be kept (``preprocess.min_foreground``).
        ct_window: the CT intensity window in HU (used when ``contrast`` is CT).
        mri_percentiles: the MRI normalisation percentiles (used when ``contrast`` is MRI).
        body: the body envelope of the case's shards (``threshold`` or ``off``: the phantom has no body mask files).
        case_image: the case's own image, which the envelope is derived from (``body`` on).
        case_modality: the case's own modality (``body`` on).

    Returns:
        ``{view: {"image": (N, k, H, W), "mask": (N, H, W), "slice": (N,)}}``: render r of slice n is
        ``image[n, r - 1]``; mask and slice indices are those of the case's shard of that view.

    Raises:
        ValueError: ``k`` below 1; ``body`` on without ``case_image`` and ``case_modality``, or in mode ``sheet``.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    case_label, body_id = None, None
    if body.on:
        if body.mode != "threshold" or case_image is None or case_modality is None:
            raise ValueError(f"oracle renders take the envelope of mode threshold from the case's own image "
                             f"(mode {body.mode!r}, image {case_image!r}, modality {case_modality!r})")
        own = load_case(case_image, label_path, labels)
        normalise_with_body(own, case_modality, body, labels.body_id, mri_percentiles=body.mri_percentiles)
        case_label, body_id = own.label, labels.body_id
        del own
    shape, spacing = tuple(phantom["shape"]), tuple(phantom["spacing"])
    per_view: dict[str, list] = {view: [] for view in views}
    with tempfile.TemporaryDirectory(prefix="segdiff-oracle-") as tmp:
        for r in range(1, k + 1):
            image, _ = generate_case(case, contrast, shape, spacing, seed, render=r)
            path = Path(tmp) / f"{case}_{r}.nii.gz"
            nib.save(image, path)
            volume = load_case(path, label_path, labels)
            if case_label is not None:
                volume.label = case_label  # the case's mask with its envelope (the render's own outline is the same body)
            normalised = normalise(volume.image, contrast, ct_window, mri_percentiles, out=volume.image)
            for view in views:
                per_view[view].append(slice_volume(volume, contrast, view, image_size, min_foreground, normalised=normalised,
                                                   body_id=body_id))
            path.unlink()
    out = {}
    for view, shards in per_view.items():
        out[view] = {"image": np.stack([s.image for s in shards], axis=1), "mask": shards[0].mask, "slice": shards[0].slice}
    return out


def write_oracle(renders: Mapping[str, Mapping[str, np.ndarray]], paths: Mapping[str, str | Path]) -> None:
    """Write each view's renders (:func:`render_oracle`) to its ``.npz``; all files appear together.

    Args:
        renders: view -> that view's arrays (``image``, ``mask``, ``slice``), as :func:`render_oracle` returns them.
        paths: view -> the oracle file to write (``.../{view}/{case}.npz``); every view of ``renders`` needs one.
    """
    with contextlib.ExitStack() as pending:
        for view, arrays in renders.items():
            np.savez(pending.enter_context(atomic_path(paths[view])), **arrays)


def read_oracle(path: str | Path) -> dict[str, np.ndarray]:
    """Load an oracle file, checking its contract."""
    try:
        with np.load(path) as z:
            arrays = {key: z[key] for key in ("image", "mask", "slice")}
    except (OSError, KeyError, ValueError) as err:
        raise InputError(path, f"not an oracle file ({err})") from err
    n, _, h, w = arrays["image"].shape
    if arrays["mask"].shape != (n, h, w) or arrays["slice"].shape != (n,):
        raise InputError(path, f"inconsistent shapes image {arrays['image'].shape}, mask {arrays['mask'].shape}")
    return arrays


def gather_oracle(files: Sequence[str | Path], case: np.ndarray, view: np.ndarray, slice_: np.ndarray,
                  mask: np.ndarray | None = None, ignore: Sequence[int] = ()) -> np.ndarray:
    """Oracle renders (N, k, H, W) for the slices identified by ``case``, ``view``, ``slice_`` (N,).

    Args:
        files: oracle files ``.../{view}/{case}.npz`` (:func:`write_oracle`); files of a case and view
            that no slice asks for are not read.
        case: (N,) case id of each slice.
        view: (N,) view of each slice.
        slice_: (N,) slice index of each slice (the ``slice`` of its shard).
        mask: (N, H, W) the slices' masks, or None for no check. With ``mask``, each slice's oracle mask
            must equal it once the ids in ``ignore`` are set to background (the renders and the
            generations must share their anatomy).
        ignore: label ids set to background in the oracle masks before that comparison (multi-modal runs
            drop organs the model never saw).

    Returns:
        float32 (N, k, H, W): the oracle renders of each slice, in the order of ``case``.

    Raises:
        InputError: an unreadable oracle file, a slice its file has no render of, an oracle mask that
            differs from ``mask``, or a slice whose case and view have no file.
    """
    files = {(Path(f).stem, Path(f).parent.name): f for f in files}
    out = None
    covered = np.zeros(len(case), bool)
    for (c, v), path in files.items():
        rows = np.flatnonzero((case == c) & (view == v))
        if not len(rows):
            continue
        oracle = read_oracle(path)
        index = {int(s): i for i, s in enumerate(oracle["slice"])}
        missing = [int(s) for s in slice_[rows] if int(s) not in index]
        if missing:
            raise InputError(path, f"no oracle render of slice(s) {missing[:5]} of {c} ({v})")
        take = np.array([index[int(s)] for s in slice_[rows]])
        oracle_mask = oracle["mask"][take]
        if len(ignore):
            oracle_mask = np.where(np.isin(oracle_mask, list(ignore)), 0, oracle_mask)
        if mask is not None and not np.array_equal(oracle_mask, mask[rows]):
            raise InputError(path, f"oracle masks of {c} ({v}) differ from the generations' masks")
        if out is None:
            out = np.zeros((len(case), *oracle["image"].shape[1:]), np.float32)
        out[rows] = oracle["image"][take]
        covered[rows] = True
    if out is None or not covered.all():
        first = np.flatnonzero(~covered)[0] if len(case) else 0
        raise InputError(", ".join(map(str, files.values())) or "oracle",
                         f"no oracle file for {case[first] if len(case) else '?'} ({view[first] if len(case) else '?'})")
    return out


def case_oracle(job: OracleJob) -> None:
    """The workflow's oracle job: renders of one case written to ``job.outputs`` (``.../{view}/{case}.npz``).

    Args:
        job: the case, its renders and the files.
    """
    paths = {Path(p).parent.name: p for p in job.outputs}
    renders = render_oracle(job.case, job.contrast, job.label_path, job.phantom, job.seed, job.k, job.labels, list(paths),
                            image_size=job.image_size, min_foreground=job.min_foreground, ct_window=job.ct_window,
                            mri_percentiles=job.mri_percentiles, body=job.body, case_image=job.case_image,
                            case_modality=job.case_modality)
    write_oracle(renders, paths)
