"""Evaluation of one run: PSNR, SSIM, FID, FD_seg, Dice_orig, Dice_gen, diversity.

Definitions (also in the README):

- PSNR / SSIM: generated vs the original slice the mask came from (data range 1.0, Gaussian
  window sigma 1.5), averaged over slices; ``n/a`` for multi-modal runs (no paired original).
- Dice: per organ over the pooled slices, then the mean over organs present in the reference
  masks. Dice_orig = the target modality's segmentor on that modality's real test slices (upper
  bound); Dice_gen = the segmentor on the generated slices vs the masks they came from.
- FID: pytorch-fid InceptionV3 pool features (2048-d), generated vs real test slices of the
  target modality; ``n/a`` with the reason when the Inception weights are absent.
- FD_seg: Fréchet distance in the segmentor's bottleneck feature space (pooled), same sets;
  always available offline, not comparable to FID.
- Diversity: mean per-pixel std over the k multi-inference generations, inside / outside organs.

Everything is recomputable from ``arrays.npz`` (see :func:`recompute_metrics`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from segdiff.atomic import atomic_path
from segdiff.dataset import SliceSet
from segdiff.generation import read_generation
from segdiff.labels import LabelMap
from segdiff.fid_inception import InceptionFeatures
from segdiff.metrics import DiceAccumulator, GaussianStats, dice_per_slice, diversity, frechet_distance, psnr, ssim
from segdiff.segmentor import load_segmentor, predict
from segdiff.weights import WeightsUnavailable

__all__ = ["evaluate_run", "recompute_metrics", "fid_between"]

log = logging.getLogger(__name__)


def _stats(features: np.ndarray) -> GaussianStats:
    stats = GaussianStats(features.shape[1])
    for start in range(0, len(features), 256):
        stats.update(features[start : start + 256])
    return stats


def fid_between(generated: np.ndarray, real: np.ndarray, weights: str | None, device: torch.device,
                batch_size: int = 32) -> tuple[float | None, str]:
    """FID with pytorch-fid's InceptionV3, streamed batch by batch; (None, reason) without weights."""
    try:
        inception = InceptionFeatures(weights=weights or None, device=device, batch_size=batch_size)
    except WeightsUnavailable as err:
        return None, str(err)
    stats = []
    for images in (generated, real):
        s = GaussianStats(2048)
        for start in range(0, len(images), batch_size):
            s.update(inception(images[start : start + batch_size]))
        stats.append(s)
    if min(s.n for s in stats) < 2:
        return None, "fewer than 2 slices"
    return frechet_distance(*stats), "pytorch-fid InceptionV3, 2048-d pool features"


def recompute_metrics(arrays: dict, class_ids: list[int]) -> dict:
    """The headline numbers from the saved arrays alone (no model needed)."""
    paired = bool(arrays["paired"])
    dice_gen, dice_orig = DiceAccumulator(class_ids), DiceAccumulator(class_ids)
    dice_gen.update(arrays["pred_generated"], arrays["mask"])
    dice_orig.update(arrays["pred_reference"], arrays["reference_mask"])
    out = {
        "dice_gen": dice_gen.mean(), "dice_orig": dice_orig.mean(),
        "fd_seg": frechet_distance(_stats(arrays["features_generated"]), _stats(arrays["features_reference"])),
        "psnr": float(np.mean(psnr(arrays["generated"], arrays["original"]))) if paired else None,
        "ssim": float(np.mean(ssim(arrays["generated"], arrays["original"]))) if paired else None,
        "dice_gen_per_class": dice_gen.per_class(), "dice_orig_per_class": dice_orig.per_class(),
    }
    return out


def evaluate_run(
    label: str,
    generation: str | Path,
    segmentor: str | Path,
    reference: SliceSet,
    labels: LabelMap,
    device: torch.device,
    out_dir: str | Path,
    multi_inference: str | Path | None = None,
    inception_weights: str | None = None,
) -> dict:
    """Evaluate one run and write ``arrays.npz``, ``per_slice.csv`` and ``metrics.json`` into ``out_dir``.

    ``generation`` is a reconstruction or multi-modal ``.npz``; ``reference`` the real test slices
    of the target modality (same views); ``multi_inference`` (optional) feeds the diversity.
    """
    out_dir = Path(out_dir)
    gen = read_generation(generation)
    mode = gen["info"]["mode"]
    paired = mode != "multimodal"
    generated = gen["generated"][:, 0]
    model, _, _ = load_segmentor(segmentor, device)
    pred_gen, feat_gen = predict(model, generated, device, features=True)
    pred_ref, feat_ref = predict(model, reference.image, device, features=True)
    # paired runs: the originals are the reference slices (same manifests, same order), read once
    if paired and np.array_equal(gen["original"], reference.image):
        pred_orig = pred_ref
    elif paired:
        pred_orig = predict(model, gen["original"], device)[0]
    class_ids = labels.ids
    arrays = {
        "generated": generated, "original": gen["original"], "mask": gen["mask"], "case": gen["case"],
        "slice": gen["slice"], "view": gen["view"], "pred_generated": pred_gen, "features_generated": feat_gen,
        "reference_image": reference.image, "reference_mask": reference.mask, "pred_reference": pred_ref,
        "features_reference": feat_ref, "paired": np.bool_(paired),
    }
    metrics = recompute_metrics(arrays, class_ids)
    fid, fid_note = fid_between(generated, reference.image, inception_weights, device)
    if fid is None:
        log.warning("%s: FID n/a: %s", label, fid_note)
    div = diversity(read_generation(multi_inference)["generated"], gen["mask"]) if multi_inference else None
    per_slice = pd.DataFrame({
        "case": gen["case"], "view": gen["view"], "slice": gen["slice"],
        "psnr": psnr(generated, gen["original"]) if paired else np.nan,
        "ssim": ssim(generated, gen["original"]) if paired else np.nan,
        "dice_gen": dice_per_slice(pred_gen, gen["mask"], class_ids),
        "dice_orig": dice_per_slice(pred_orig, gen["mask"], class_ids) if paired else np.nan,
    })
    summary = {
        "label": label, "mode": mode, "n_slices": int(len(generated)), "n_reference": int(len(reference)),
        "psnr": metrics["psnr"], "ssim": metrics["ssim"], "fid": fid, "fid_note": fid_note,
        "dice_orig": metrics["dice_orig"], "dice_gen": metrics["dice_gen"], "fd_seg": metrics["fd_seg"],
        "diversity_inside": div["inside"] if div else None, "diversity_outside": div["outside"] if div else None,
        "per_organ": {labels.names[c]: {"dice_orig": metrics["dice_orig_per_class"].get(c),
                                        "dice_gen": metrics["dice_gen_per_class"].get(c)} for c in class_ids
                      if c in metrics["dice_orig_per_class"] or c in metrics["dice_gen_per_class"]},
        "generation": str(generation), "segmentor": str(segmentor),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "arrays.npz") as tmp:
        np.savez_compressed(tmp, **arrays)
    with atomic_path(out_dir / "per_slice.csv") as tmp:
        per_slice.to_csv(tmp, index=False)
    with atomic_path(out_dir / "metrics.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=float) + "\n")
    return summary
