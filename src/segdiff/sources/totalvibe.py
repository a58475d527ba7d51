"""TotalVibeSegmentator masks: the released nnU-Net v2 model (dataset 100) run through TPTBox on an image volume.

TotalVibeSegmentator (Graf et al. 2024, arXiv:2406.00125) segments 71 torso structures (label map
``totalvibe``; ``totalvibe_to_amos`` keeps AMOS's 15 organs). It is the mask source of the poster's
study (``dataset.mask_source: totalvibe``): :func:`segment_volume` replaces a case's label volume by
the model's prediction on its image, on the image's grid.

Weights are never downloaded here. :func:`find_model` looks on disk only, in this order:

1. ``$TOTALVIBE_WEIGHTS_PATH``: a folder holding ``Dataset100*/`` (or ``nnUNet_results/Dataset100*/``);
2. TPTBox's own cache: ``$VIBESEG_WEIGHTS_PATH``, else ``TPTBox/segmentation/nnUNet/nnUNet_results``.

and raises :class:`~segdiff.core.errors.WeightsUnavailable` with one line naming the variable and the
command that fetches the weights where a network exists (:data:`FETCH_HINT`).

The inference itself is TPTBox's (``TPTBox.segmentation.run_inference_on_file``, what its
``run_vibeseg`` calls for dataset 100): reorientation and resampling to the model's grid, nnU-Net's
sliding window, and resampling of the labels back onto the image's grid.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from segdiff.core.atomic import atomic_path
from segdiff.core.errors import InputError, WeightsUnavailable
from segdiff.core.labels import LabelMap, load_label_map
from segdiff.sources.volumes import load_nifti

log = logging.getLogger(__name__)

__all__ = ["WEIGHTS_ENV", "DATASET_ID", "FETCH_HINT", "find_model", "model_labels", "label_disagreements",
           "segment_volume", "MaskInfo"]

WEIGHTS_ENV = "TOTALVIBE_WEIGHTS_PATH"
PACKAGE_ENV = "VIBESEG_WEIGHTS_PATH"  # TPTBox's variable for its weights cache
DATASET_ID = 100  # TotalVibeSegmentator in TPTBox's (and VibeSegmentator's) numbering
FETCH_HINT = (f"where a network exists, {PACKAGE_ENV}=DIR python -c 'from TPTBox.segmentation.VibeSeg.auto_download "
              f"import download_weights; download_weights({DATASET_ID})' fetches them into DIR (TPTBox's release "
              f"download), then export {WEIGHTS_ENV}=DIR")


def _candidate_roots() -> list[tuple[str, Path]]:
    """(what, folder) to search, in order: our variable, else TPTBox's cache (its variable or its package folder)."""
    if os.environ.get(WEIGHTS_ENV):
        return [(WEIGHTS_ENV, Path(os.environ[WEIGHTS_ENV]))]
    if os.environ.get(PACKAGE_ENV):
        return [(f"TPTBox's cache {PACKAGE_ENV}", Path(os.environ[PACKAGE_ENV]))]
    spec = importlib.util.find_spec("TPTBox")  # no import: TPTBox pulls in torch and nnU-Net
    if spec is None or not spec.submodule_search_locations:
        return []
    return [("TPTBox's cache", Path(next(iter(spec.submodule_search_locations))) / "segmentation/nnUNet/nnUNet_results")]


def _is_model(folder: Path) -> bool:
    checkpoints = [*folder.glob("fold_*/checkpoint_final.pth"), *folder.glob("fold_*/checkpoint_best.pth")]
    return (folder / "plans.json").is_file() and (folder / "dataset.json").is_file() and bool(checkpoints)


def _models_under(root: Path, dataset_id: int) -> list[Path]:
    """nnU-Net result folders ``Dataset<id>*/<trainer>__<plans>__<configuration>`` under ``root`` (or
    ``root/nnUNet_results``); residual-encoder plans first, as TPTBox picks them."""
    found = []
    for base in (root, root / "nnUNet_results"):
        for dataset in sorted(base.glob(f"Dataset{dataset_id:03d}*")):
            trainers = sorted(dataset.glob("*__nnUNet*"), key=lambda p: ("ResEnc" not in p.name, p.name))
            found += [t for t in trainers if t.is_dir() and _is_model(t)]
    return found


def find_model(dataset_id: int = DATASET_ID) -> Path:
    """The TotalVibeSegmentator model folder (``plans.json``, ``dataset.json``, ``fold_*/checkpoint_*.pth``).

    Args:
        dataset_id: TPTBox's number of the model (100, TotalVibeSegmentator).

    Returns:
        The first nnU-Net result folder found, residual-encoder plans first.

    Raises:
        WeightsUnavailable: One line: where it looked, which variable to set and how to get the weights.
    """
    roots = _candidate_roots()
    for _, root in roots:
        models = _models_under(root, dataset_id)
        if models:
            return models[0]
    looked = "; ".join(f"{what} = {root}" for what, root in roots) or "TPTBox is not installed (pip install -e '.[totalvibe]')"
    raise WeightsUnavailable(
        f"TotalVibeSegmentator weights not found: set {WEIGHTS_ENV} to the folder that holds them (Dataset{dataset_id:03d}*/"
        f"<trainer>__nnUNetPlans*/ with plans.json, dataset.json and fold_*/checkpoint_final.pth; looked in: {looked}); "
        f"{FETCH_HINT}")


def model_labels(model: Path) -> dict[int, str]:
    """Foreground id -> name from the model's ``dataset.json`` (nnU-Net v2: ``labels`` maps name -> id)."""
    path = Path(model) / "dataset.json"
    try:
        labels = json.loads(path.read_text())["labels"]
        return {int(i): str(name) for name, i in labels.items() if int(i) != 0}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InputError(path, f"not an nnU-Net v2 dataset.json with a 'labels' table ({type(err).__name__}: {err})") from err


def label_disagreements(shipped: dict[int, str], labels: LabelMap) -> list[str]:
    """Where the model's own label list and a label map differ (ids, then names), one line each.

    Args:
        shipped: the model's foreground id -> name (:func:`model_labels`); ids the model names
            ``unused...`` (TotalVibeSegmentator's 20) are not structures and are skipped.
        labels: the label map to compare with.

    Returns:
        One line per difference: ids only the model predicts, ids only the label map has, then shared
        ids whose names differ (ignoring case); empty when they agree.
    """
    shipped = {i: name for i, name in shipped.items() if not name.lower().startswith("unused")}
    lines = [f"id {i} ({shipped[i]}) is predicted by the model but not in the label map" for i in sorted(set(shipped) - set(labels.ids))]
    lines += [f"id {i} ({labels.names[i]}) of the label map is not in the model's label list" for i in sorted(set(labels.ids) - set(shipped))]
    lines += [f"id {i}: model says {shipped[i]!r}, label map says {labels.names[i]!r}"
              for i in sorted(set(shipped) & set(labels.ids)) if shipped[i].lower() != labels.names[i].lower()]
    return lines


@dataclass(frozen=True)
class MaskInfo:
    """What one inference produced: the model folder, the label ids found, the wall time."""

    model: Path
    ids: list[int]
    seconds: float


def segment_volume(image: str | Path, out: str | Path, device: str = "auto", model: str | Path | None = None) -> MaskInfo:
    """Run TotalVibeSegmentator on ``image`` and write its label volume (uint8) to ``out``, atomically.

    Args:
        image: A 3D NIfTI image volume (CT or MRI).
        out: Output NIfTI: the labels on the image's voxel grid, with the image's affine.
        device: ``auto`` (CUDA when torch sees a GPU), ``cuda`` or ``cpu``.
        model: An nnU-Net v2 result folder; default :func:`find_model`.

    Returns:
        The model folder used, the label ids found and the inference wall time.

    Raises:
        InputError: For a missing or corrupt image, a prediction that comes back empty or on another
            grid, or label ids outside 0..255.
        WeightsUnavailable: When ``model`` is not given and :func:`find_model` finds none.
    """
    from TPTBox import to_nii  # TPTBox, torch and nnU-Net only here: the workflow imports this module at parse time
    from TPTBox.segmentation import run_inference_on_file
    from TPTBox.segmentation.VibeSeg.vibeseg import defaults as vibeseg_defaults

    from segdiff.core.device import pick_device

    image = Path(image)
    data, _ = load_nifti(image)  # a clear InputError for a missing or corrupt volume before the model loads
    del data
    model = Path(model) if model is not None else find_model()
    for line in label_disagreements(model_labels(model), load_label_map("totalvibe")):
        log.warning("%s disagrees with the label map totalvibe: %s", model / "dataset.json", line)
    reference = nib.load(image)
    t0 = time.perf_counter()
    # run_vibeseg(dataset_id=100) is this call with the model folder looked up in TPTBox's cache only
    seg, _ = run_inference_on_file(model, [to_nii(image)], out_file=None, override=True, ddevice=pick_device(device).type,
                                   padd=5, keep_size=False, verbose=False, **vibeseg_defaults.get(DATASET_ID, {}))
    seconds = time.perf_counter() - t0
    if seg is None:
        raise InputError(image, "TotalVibeSegmentator returned no segmentation (a volume with a single slice along an axis?)")
    labels = np.asarray(seg.get_seg_array())
    if labels.shape != reference.shape[:3] or not np.allclose(seg.affine, reference.affine, atol=1e-3):
        raise InputError(image, f"TotalVibeSegmentator's labels came back on another grid ({labels.shape} vs {reference.shape[:3]})")
    if labels.min(initial=0) < 0 or labels.max(initial=0) > 255:
        raise InputError(model, f"label ids outside 0..255 ({labels.min()}..{labels.max()})")
    labels = labels.astype(np.uint8)
    header = reference.header.copy()
    header.set_data_dtype(np.uint8)
    header.set_slope_inter(1, 0)
    with atomic_path(out) as tmp:
        nib.save(nib.Nifti1Image(labels, reference.affine, header), tmp)
    ids = sorted(int(i) for i in np.unique(labels) if i)
    log.info("%s -> %s: %d structures in %.1f s (model %s)", image, out, len(ids), seconds, model)
    return MaskInfo(model, ids, seconds)
