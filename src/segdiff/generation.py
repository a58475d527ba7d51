"""The three generation experiments of the study, and their output files.

- ``reconstruction``: one generation per test mask of the model's own modality;
- ``multi_inference``: ``k`` generations per test mask. Generation 1 of every mask has the seed
  a reconstruction would use, so the workflow samples once and writes the reconstruction file
  from it (``reconstruction=`` of :func:`run_generation`) instead of sampling the same thing twice;
- ``multimodal``: ``k`` generations for each test mask of another modality (e.g. CT) through
  this model (e.g. MRI); organs the model never saw in training (``meta["classes_seen"]``)
  become background first.

Output ``.npz`` (one per run and mode): ``generated`` float32 (N, k, H, W) in [0, 1],
``original`` float32 (N, H, W) (the real slice the mask belongs to; for multi-modal it is of the
*source* modality), ``mask`` uint8 (N, H, W), ``case`` (N,) str, ``slice`` (N,) int32,
``view`` (N,) str, ``seed`` int, and ``info`` (a JSON string: mode, model, sampler settings).
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import asdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from segdiff.atomic import atomic_path
from segdiff.dataset import SliceSet
from segdiff.diffusion import load_diffusion
from segdiff.errors import InputError
from segdiff.figures import generation_grid_figure
from segdiff.labels import load_label_map
from segdiff.sampling import SamplerSettings, generate, sample_seed
from segdiff.store import SliceStore
from segdiff.training import pick_device, use_bf16

__all__ = ["MODES", "run_generation", "read_generation", "sample_run"]

log = logging.getLogger(__name__)

MODES = ("reconstruction", "multi_inference", "multimodal")


def run_generation(
    model_path: str | Path,
    test: SliceSet,
    mode: str,
    settings: SamplerSettings,
    seed: int,
    device: torch.device,
    out: str | Path,
    k: int = 1,
    reconstruction: str | Path | None = None,
) -> dict:
    """Sample ``mode`` for every slice of ``test`` and write ``out`` (.npz) atomically; returns the arrays.

    With ``reconstruction`` (multi-inference only), generation 1 of every mask is also written
    there as the reconstruction experiment's file.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r} (expected one of {MODES})")
    model, scheduler_config, meta = load_diffusion(model_path, device)
    num_classes = model.config.num_classes
    if len(test) and int(test.mask.max()) >= num_classes:
        raise InputError(model_path, f"model knows {num_classes - 1} organ classes, masks hold id {int(test.mask.max())}")
    dropped = []
    if mode == "multimodal" and meta.get("classes_seen"):
        # the target model never saw these organs (e.g. bladder in AMOS MRI): they become background
        unseen = ~np.isin(test.mask, meta["classes_seen"])
        dropped = sorted(int(c) for c in np.unique(test.mask[unseen]))
        if dropped:
            log.info("%s: organ ids %s absent from the model's training masks set to background (%d pixels)",
                     model_path, dropped, int(unseen.sum()))
            test = SliceSet(test.image, np.where(unseen, 0, test.mask).astype(np.uint8), test.case, test.slice, test.view)
    if reconstruction is not None and mode != "multi_inference":
        raise ValueError("a reconstruction file can only be taken from a multi-inference run")
    k = 1 if mode == "reconstruction" else k
    # one seed per (case, view, slice, k): independent of batch size and job order
    seeds = [sample_seed(seed, f"{c}/{v}", s, j) for c, v, s in zip(test.case, test.view, test.slice) for j in range(k)]
    masks = np.repeat(test.mask, k, axis=0)
    generated = generate(model, scheduler_config, masks, seeds, num_classes, settings, device, desc=f"{mode} {Path(model_path).stem}")
    arrays = {
        "generated": generated.reshape(len(test), k, *test.mask.shape[1:]),
        "original": test.image, "mask": test.mask, "case": test.case, "slice": test.slice, "view": test.view,
        "seed": np.int64(seed),
        "info": json.dumps({"mode": mode, "model": str(model_path), "model_meta": meta, "k": k, "sampler": asdict(settings),
                            "classes_set_to_background": dropped}),
    }
    with contextlib.ExitStack() as pending:  # both files appear together, or neither
        np.savez(pending.enter_context(atomic_path(out)), **arrays)
        if reconstruction is not None:
            info = {**json.loads(arrays["info"]), "mode": "reconstruction", "k": 1, "taken_from": str(out)}
            np.savez(pending.enter_context(atomic_path(reconstruction)),
                     **{**arrays, "generated": arrays["generated"][:, :1], "info": json.dumps(info)})
    return arrays


def read_generation(path: str | Path) -> dict:
    """Load a generation file written by :func:`run_generation`."""
    try:
        with np.load(path) as z:
            arrays = {key: z[key] for key in z.files}
    except (OSError, ValueError) as err:
        raise InputError(path, f"not a generation file ({err})") from err
    missing = {"generated", "original", "mask", "case", "slice"} - set(arrays)
    if missing:
        raise InputError(path, f"not a generation file (missing {sorted(missing)})")
    arrays["info"] = json.loads(str(arrays["info"]))
    return arrays


def sample_run(
    model_path: str | Path,
    stores: Sequence[str | Path],
    mode: str,
    sampling: Mapping,
    max_slices: int,
    seed: int,
    device: str,
    labels: str,
    out: str | Path,
    grid: str | Path,
    precision: str = "auto",
    reconstruction: str | Path | None = None,
    reconstruction_grid: str | Path | None = None,
    title: str = "",
) -> None:
    """The workflow's sampling job: the (seeded, stratified) test subset of the slice ``stores`` through
    the model in ``mode``, its ``.npz`` file(s) and their PNG grids."""
    device = pick_device(device)
    settings = SamplerSettings(sampler=sampling["sampler"], steps=sampling["steps"], eta=sampling["eta"],
                               batch_size=sampling["batch_size"], bf16=use_bf16(precision, device))
    test = SliceStore(stores, ["test"]).subset(max_slices, seed)
    arrays = run_generation(model_path, test, mode, settings, seed, device, out, k=sampling["k"],
                            reconstruction=reconstruction)
    label_map = load_label_map(labels)
    original = None if mode == "multimodal" else arrays["original"]
    generation_grid_figure(original, arrays["mask"], arrays["generated"], label_map, grid,
                           f"{mode.replace('_', '-')}: {title}")
    if reconstruction_grid is not None:
        generation_grid_figure(original, arrays["mask"], arrays["generated"][:, :1], label_map, reconstruction_grid,
                               f"reconstruction: {title}")
