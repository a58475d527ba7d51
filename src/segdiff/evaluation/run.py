"""Evaluation of one run: the strict metrics, their oracle floors and the poster's protocol.

Definitions (also in the README):

- PSNR / SSIM: generation 1 of each mask vs the original slice the mask came from (data range
  1.0, Gaussian window sigma 1.5), averaged over slices; ``n/a`` for multi-modal runs.
- Dice: per organ over the pooled slices, then the mean over organs present in the reference
  masks. Dice_orig = the target modality's segmentor on that modality's real test slices (upper
  bound); Dice_gen = the segmentor on the generations vs the masks they came from;
  Dice_oracle = the segmentor on oracle renders of the same masks (what a perfect generator
  scores). Dice_gen / Dice_orig should lie in [0.8, 1.05]: above 1.05 the generations are
  *easier* than real scans, a sign of regression to the mean.
- FID (pytorch-fid InceptionV3), FRD (radiomics, frd-score) and FD_seg (segmentor bottleneck):
  Fréchet distances of generated vs real test slices of the target modality; each next to its
  *oracle floor*, the same distance for oracle renders vs the real slices.
- Diversity ratio: per-pixel std across the k generations of each mask divided by the per-pixel
  std across k oracle renders of the same masks, inside organs (goal 0.5-1.5; 0 for a model that
  returns one image per mask); ``diversity_outside_*`` the same outside the organs.
- Quality gate (:mod:`segdiff.evaluation.quality`, no oracle needed): texture ratio (high-frequency
  energy of the generations vs the real slices inside eroded organs), k-spread (per-pixel std across
  the k generations vs the real slices' fine-texture std) and ``quality_flags``, one line per failed
  check (texture, k-spread, Dice ratio), each saying why.
- "Inside organs" is always the label map's ids (``class_ids``): a non-organ id in the masks (a body
  envelope) counts as outside, and Dice, poster Dice included, scores it as background.
- Poster protocol (:mod:`segdiff.evaluation.poster`): the poster authors' eval.py definitions, for a
  number-for-number comparison with the poster's table.

Oracle quantities need oracle renders, which only the phantom has; elsewhere they are ``n/a``.
Everything is recomputable from ``arrays.npz`` (:func:`recompute_metrics`); memory is
O(``evaluation.max_slices`` x k).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from segdiff.core.atomic import atomic_path
from segdiff.data.dataset import SliceSet
from segdiff.evaluation.features.fid import InceptionFeatures
from segdiff.evaluation.features.radiomics import dominant_feature, frd_from_features, radiomics_features
from segdiff.sampling.files import read_generation
from segdiff.core.labels import LabelMap
from segdiff.evaluation.metrics import DiceAccumulator, GaussianStats, dice_per_slice, diversity, frechet_distance, psnr, ssim
from segdiff.data.oracle import gather_oracle
from segdiff.evaluation.features.poster import PosterInceptionFeatures
from segdiff.evaluation.poster import poster_dice, poster_psnr, poster_ssim
from segdiff.evaluation.quality import quality_flags, quality_numbers
from segdiff.models.segmentor import load_segmentor, predict
from segdiff.data.store import SliceStore
from segdiff.sources.weights import WeightsUnavailable

__all__ = ["EvaluationJob", "evaluate_run", "recompute_metrics", "evaluation_job", "METRIC_KEYS"]

log = logging.getLogger(__name__)

#: every number :func:`recompute_metrics` returns (None where it cannot exist)
METRIC_KEYS = (
    "psnr", "ssim", "fid", "frd", "fd_seg", "dice_orig", "dice_gen", "dice_ratio", "diversity_ratio", "diversity_gen",
    "diversity_oracle", "psnr_oracle", "ssim_oracle", "fid_oracle", "frd_oracle", "fd_seg_oracle", "dice_oracle",
    "psnr_poster", "ssim_poster", "fid_poster", "dice_orig_poster", "dice_gen_poster", "texture_ratio", "k_spread",
    "diversity_outside_gen", "diversity_outside_oracle", "diversity_outside_ratio",
)

#: feature sets saved in the arrays: name -> extractor factory (weights path, device) -> callable
_FEATURES: dict[str, Callable] = {
    "fid": lambda weights, device: InceptionFeatures(weights=weights or None, device=device),
    "fid_poster": lambda weights, device: PosterInceptionFeatures(weights=weights or None, device=device),
}


def _stats(features: np.ndarray) -> GaussianStats:
    stats = GaussianStats(features.shape[1])
    for start in range(0, len(features), 256):
        stats.update(features[start : start + 256])
    return stats


def _fd(arrays: dict, name: str, which: str) -> float | None:
    """Fréchet distance of ``{name}_{which}`` vs ``{name}_reference`` features, None if absent."""
    a, b = arrays.get(f"{name}_{which}"), arrays.get(f"{name}_reference")
    if a is None or b is None or min(len(a), len(b)) < 2:
        return None
    if name == "radiomics":
        return frd_from_features(b, a)  # the real slices are FRD's normalisation reference
    return frechet_distance(_stats(a), _stats(b))


def _dice(prediction: np.ndarray, target: np.ndarray, class_ids: list[int]) -> DiceAccumulator:
    acc = DiceAccumulator(class_ids)
    acc.update(prediction, target)
    return acc


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or not b else float(a / b)


def _organs_only(labels: np.ndarray, class_ids: Sequence[int]) -> np.ndarray:
    """``labels`` with every id that is not an organ (e.g. a body envelope) set to background 0."""
    labels = np.asarray(labels)
    return np.where(np.isin(labels, list(class_ids)), labels, 0).astype(labels.dtype, copy=False)


def _diversity(images: np.ndarray | None, mask: np.ndarray, class_ids: Sequence[int]) -> dict[str, float | None]:
    """Per-pixel std across k inside and outside the organs; None for both without k >= 2 images."""
    if images is None or images.shape[1] < 2:
        return {"inside": None, "outside": None}
    return {key: (None if np.isnan(v) else v) for key, v in diversity(images, mask, organs=class_ids).items()}


def recompute_metrics(arrays: dict, class_ids: list[int], num_classes: int) -> dict:
    """Every number of the table from the saved arrays alone (no model needed).

    Args:
        arrays: the contents of a run's ``arrays.npz`` (:func:`evaluate_run`): the generations (N, k, H, W),
            originals, masks, the segmentor's predictions, the feature sets and, with oracle renders,
            ``oracle`` and what was computed from it.
        class_ids: the organ ids the Dice scores average over (the label map's ids).
        num_classes: the label map's largest id + 1 (background included), for the poster's Dice. Mask or
            prediction ids that are not in ``class_ids`` (a body envelope) count as background.

    Returns:
        Every key of :data:`METRIC_KEYS` (None where the number cannot exist: PSNR/SSIM of a multi-modal
        run, oracle numbers without oracle renders, diversity and k-spread with k = 1, a Fréchet distance
        without its features, a quality number without organ pixels), plus the per-organ Dice
        ``dice_gen_per_class``, ``dice_orig_per_class`` and ``dice_oracle_per_class`` and ``quality_flags``
        (:func:`segdiff.evaluation.quality.quality_flags`: one line per failed check, empty when it passes).
    """
    paired = bool(arrays["paired"])
    generated, mask = arrays["generated"], arrays["mask"]
    oracle = arrays.get("oracle")
    first = generated[:, 0]
    # Dice scores organs only: a non-organ id (body envelope) is background, in masks and predictions alike
    organ_mask, reference_mask = _organs_only(mask, class_ids), _organs_only(arrays["reference_mask"], class_ids)
    pred_gen, pred_ref = _organs_only(arrays["pred_generated"], class_ids), _organs_only(arrays["pred_reference"], class_ids)
    dice_gen = _dice(pred_gen, organ_mask, class_ids)
    dice_orig = _dice(pred_ref, reference_mask, class_ids)
    dice_oracle = _dice(arrays["pred_oracle"], organ_mask, class_ids) if oracle is not None else None
    div_gen, div_oracle = _diversity(generated, mask, class_ids), _diversity(oracle, mask, class_ids)
    reference = (arrays["reference_image"], arrays["reference_mask"], class_ids)
    out = {
        "psnr": float(np.mean(psnr(first, arrays["original"]))) if paired else None,
        "ssim": float(np.mean(ssim(first, arrays["original"]))) if paired else None,
        "fid": _fd(arrays, "fid", "generated"), "frd": _fd(arrays, "radiomics", "generated"),
        "fd_seg": _fd(arrays, "features", "generated"),
        "dice_orig": dice_orig.mean(), "dice_gen": dice_gen.mean(),
        "diversity_gen": div_gen["inside"], "diversity_oracle": div_oracle["inside"],
        "diversity_ratio": _ratio(div_gen["inside"], div_oracle["inside"]),
        "diversity_outside_gen": div_gen["outside"], "diversity_outside_oracle": div_oracle["outside"],
        "diversity_outside_ratio": _ratio(div_gen["outside"], div_oracle["outside"]),
        "psnr_oracle": float(np.mean(psnr(oracle[:, 0], arrays["original"]))) if paired and oracle is not None else None,
        "ssim_oracle": float(np.mean(ssim(oracle[:, 0], arrays["original"]))) if paired and oracle is not None else None,
        "fid_oracle": _fd(arrays, "fid", "oracle"), "frd_oracle": _fd(arrays, "radiomics", "oracle"),
        "fd_seg_oracle": _fd(arrays, "features", "oracle"),
        "dice_oracle": dice_oracle.mean() if dice_oracle is not None else None,
        "psnr_poster": float(np.nanmean(poster_psnr(first, arrays["original"]))) if paired else None,
        "ssim_poster": float(np.nanmean(poster_ssim(first, arrays["original"]))) if paired else None,
        "fid_poster": _fd(arrays, "fid_poster", "generated"),
        "dice_orig_poster": float(np.mean(poster_dice(pred_ref, reference_mask, num_classes))),
        "dice_gen_poster": float(np.mean(poster_dice(pred_gen, organ_mask, num_classes))),
        **quality_numbers(generated, mask, *reference),
        "dice_gen_per_class": dice_gen.per_class(), "dice_orig_per_class": dice_orig.per_class(),
        "dice_oracle_per_class": dice_oracle.per_class() if dice_oracle is not None else {},
    }
    out["dice_ratio"] = _ratio(out["dice_gen"], out["dice_orig"])
    out["quality_flags"] = quality_flags(out["texture_ratio"], out["k_spread"], out["dice_ratio"])
    return out


def _inception_features(arrays: dict, sets: dict[str, np.ndarray], weights: dict[str, str | None],
                        device: torch.device) -> dict[str, str]:
    """Add ``{name}_{set}`` features of every extractor whose weights exist; returns name -> why it is
    n/a (None when it is there)."""
    notes = {}
    for name, factory in _FEATURES.items():
        try:
            extractor = factory(weights.get(name), device)
        except WeightsUnavailable as err:
            notes[name] = str(err)
            continue
        for which, images in sets.items():
            arrays[f"{name}_{which}"] = extractor(images)  # the extractor batches on its own
        notes[name] = None
    return notes


def evaluate_run(
    label: str,
    generation: str | Path,
    segmentor: str | Path,
    reference: SliceSet,
    labels: LabelMap,
    device: torch.device,
    out_dir: str | Path,
    oracle: Sequence[str | Path] = (),
    inception_weights: str | None = None,
    poster_inception_weights: str | None = None,
) -> dict:
    """Evaluate one run and write ``arrays.npz``, ``per_slice.csv`` and ``metrics.json`` into ``out_dir``.

    Args:
        label: the run's label in the table (e.g. ``CT axial``); it also prefixes the run's warnings.
        generation: a multi-inference or multi-modal ``.npz`` (k generations per mask; the first one is
            the reconstruction).
        segmentor: the target modality's auxiliary segmentor file.
        reference: the real test slices of the target modality (for paired runs, the same slices as the
            generation's originals).
        labels: the label map.
        device: where the segmentor and the feature extractors run.
        out_dir: the folder to write the three files into (created if missing).
        oracle: the oracle files of the masks' cases (phantom only; empty elsewhere).
        inception_weights: pytorch-fid InceptionV3 weights (None: the torch hub cache); FID is n/a, with a
            warning, when no weights are found.
        poster_inception_weights: torchvision's ImageNet InceptionV3 weights for the poster's FID (None: the
            torch hub cache).

    Returns:
        The summary written to ``metrics.json``.

    Raises:
        ValueError: a paired run whose originals are not the reference slices (different subsets).
    """
    out_dir = Path(out_dir)
    gen = read_generation(generation)
    mode = gen["info"]["mode"]
    paired = mode != "multimodal"
    generated = gen["generated"]
    if paired and not np.array_equal(gen["original"], reference.image):
        raise ValueError(f"{generation}: its originals are not the reference slices (different subsets?)")
    model, _, _ = load_segmentor(segmentor, device)
    arrays = {
        "generated": generated, "original": gen["original"], "mask": gen["mask"], "case": gen["case"],
        "slice": gen["slice"], "view": gen["view"], "reference_image": reference.image,
        "reference_mask": reference.mask, "paired": np.bool_(paired),
    }
    sets = {"generated": generated[:, 0], "reference": reference.image}
    if len(oracle):
        arrays["oracle"] = gather_oracle(oracle, gen["case"], gen["view"], gen["slice"], gen["mask"],
                                         ignore=gen["info"].get("classes_set_to_background", []))
        sets["oracle"] = arrays["oracle"][:, 0]
    for which, images in sets.items():
        arrays[f"pred_{which}"], arrays[f"features_{which}"] = predict(model, images, device, features=True)
        arrays[f"radiomics_{which}"] = radiomics_features(images)
    notes = _inception_features(arrays, sets, {"fid": inception_weights, "fid_poster": poster_inception_weights}, device)
    for name, note in notes.items():
        if note:
            log.warning("%s: %s n/a: %s", label, name, note)
    class_ids = labels.ids
    metrics = recompute_metrics(arrays, class_ids, labels.max_id + 1)
    for flag in metrics["quality_flags"]:
        log.warning("%s: quality flag: %s", label, flag)
    index, share, sd, z = dominant_feature(arrays["radiomics_reference"], arrays["radiomics_generated"])
    frd_note = (f"{label}: one radiomic feature (#{index}, std {sd:.2g} across the real slices) is {z:.0f} standard "
                f"deviations off and makes {share:.0%} of the FRD mean term (FRDv1 z-scores by the real set)"
                ) if share > 0.5 or z > 100 else None
    per_slice = pd.DataFrame({
        "case": gen["case"], "view": gen["view"], "slice": gen["slice"],
        "psnr": psnr(generated[:, 0], gen["original"]) if paired else np.nan,
        "ssim": ssim(generated[:, 0], gen["original"]) if paired else np.nan,
        "dice_gen": dice_per_slice(arrays["pred_generated"], gen["mask"], class_ids),
        "dice_orig": dice_per_slice(arrays["pred_reference"], gen["mask"], class_ids) if paired else np.nan,
        "dice_oracle": dice_per_slice(arrays["pred_oracle"], gen["mask"], class_ids) if len(oracle) else np.nan,
    })
    summary = {
        "label": label, "mode": mode, "n_slices": int(len(generated)), "k": int(generated.shape[1]),
        "n_reference": int(len(reference)), "oracle": bool(len(oracle)),
        **{key: metrics[key] for key in METRIC_KEYS}, "quality_flags": metrics["quality_flags"],
        # multi-modal: source slices whose mask had too few organ pixels left once the model's unseen organs were
        # set to background (not sampled, not evaluated)
        "n_dropped_empty": int(gen["info"].get("dropped_empty", 0)),
        "fid_note": notes["fid"], "fid_poster_note": notes["fid_poster"], "frd_note": frd_note,
        "per_organ": {labels.names[c]: {kind: metrics[f"{kind}_per_class"].get(c) for kind in ("dice_orig", "dice_gen", "dice_oracle")}
                      for c in class_ids if c in metrics["dice_orig_per_class"] or c in metrics["dice_gen_per_class"]},
        "generation": str(generation), "segmentor": str(segmentor), "oracle_files": [str(f) for f in oracle],
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "arrays.npz") as tmp:
        np.savez_compressed(tmp, **arrays)
    with atomic_path(out_dir / "per_slice.csv") as tmp:
        per_slice.to_csv(tmp, index=False)
    with atomic_path(out_dir / "metrics.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=float) + "\n")
    return summary


@dataclass(frozen=True)
class EvaluationJob:
    """The workflow's evaluation of one run (rule ``evaluate``, :func:`evaluation_job`).

    Attributes:
        label: the run's label in the table (e.g. ``CT axial``).
        generation: the run's multi-inference or multi-modal generation file.
        segmentor: the target modality's auxiliary segmentor.
        reference: slice stores of the target modality; the same seeded test subset as the sampling
            job's (``max_slices``, ``seed``) is taken from their ``test`` split.
        oracle: oracle files of the masks' cases (phantom only; empty elsewhere).
        labels: the label map.
        device: where the segmentor and the feature extractors run.
        max_slices: size of the test subset (0: every test slice).
        seed: the run seed (it picks the subset).
        out_dir: the folder of ``arrays.npz``, ``per_slice.csv`` and ``metrics.json``.
        inception_weights: pytorch-fid InceptionV3 weights (empty: the torch hub cache).
        poster_inception_weights: torchvision's ImageNet InceptionV3 weights (empty: the torch hub cache).
    """

    label: str
    generation: str | Path
    segmentor: str | Path
    reference: Sequence[str | Path]
    oracle: Sequence[str | Path]
    labels: LabelMap
    device: torch.device
    max_slices: int
    seed: int
    out_dir: str | Path
    inception_weights: str = ""
    poster_inception_weights: str = ""


def evaluation_job(job: EvaluationJob) -> dict:
    """The workflow's evaluation job: the real test subset the samplers used, then :func:`evaluate_run`.

    Args:
        job: the run to evaluate.

    Returns:
        The summary written to ``metrics.json``.
    """
    reference = SliceStore(job.reference, ["test"]).subset(job.max_slices, job.seed)
    return evaluate_run(job.label, job.generation, job.segmentor, reference, job.labels, job.device, job.out_dir,
                        oracle=job.oracle, inception_weights=job.inception_weights or None,
                        poster_inception_weights=job.poster_inception_weights or None)
