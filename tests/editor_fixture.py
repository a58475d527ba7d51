"""A tiny study output (``results/``) the mask editor server (``segdiff serve``) can serve.

:func:`build_results` writes, with the library itself, what the editor reads from a finished run:

- ``slices/ct/axial/{manifest.tsv,store}``: three phantom CT cases sliced axially at 32 px, the
  first two in split ``train``, the last in ``test`` (the editor's test masks);
- ``models/diffusion/ct_axial.pt``: a tiny diffusion model trained 2 steps on the train slices,
  by the workflow's training job (:func:`segdiff.models.jobs.train_diffusion`, its meta: ``classes_seen`` 0..14, label
  ``UNSEEN`` = 15 being mapped to background in every case, so that painting it triggers the
  editor's unseen-label warning);
- ``provenance.json``: the sampling section of the config (DDIM, 3 steps, k = 2).

About 10 s on 2 CPU cores. Used by tests/editor/test_editor_browser.py and the editor's API tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch

from segdiff.models.diffusion import DenoiserConfig, SchedulerConfig
from segdiff.models.jobs import DiffusionTrainJob, train_diffusion
from segdiff.core.labels import Remap, load_label_map
from segdiff.data.body import BodySettings
from segdiff.data.loader import LoaderSettings
from segdiff.sources.phantom import write_phantom_dataset
from segdiff.data.shards import write_case_shards
from segdiff.data.store import write_subset
from segdiff.models.training import TrainSettings
from segdiff.sources.volumes import load_case

IMAGE_SIZE = 32
SEED = 3
UNSEEN = 15  # prostate/uterus: removed from every case, so not in the model's classes_seen (nor in the test masks)
SAMPLING = {"sampler": "ddim", "steps": 3, "eta": 1.0, "batch_size": 8, "k": 2}
DENOISER = dict(num_classes=16, conditioning="concat", channels=(8, 8), attention_levels=(False, False),
                norm_num_groups=4, num_head_channels=8)
SCHEDULER = dict(num_train_timesteps=20, prediction_type="v_prediction")


def build_results(root: Path, body: bool = False) -> Path:
    """Write a tiny ``results/`` folder under ``root`` (one model: CT axial) and return ``root``; with ``body``,
    its masks carry the body envelope (``preprocess.body`` threshold) and its model that mask channel."""
    root = Path(root)
    labels = load_label_map("amos15")
    remap = Remap({i: i for i in labels.ids if i != UNSEEN})  # the model never sees UNSEEN
    work = root / "work"
    cases = write_phantom_dataset(work / "phantom", n_ct=3, n_mri=0, shape=(48, 40, 24), spacing=(8.0, 8.0, 12.0),
                                  seed=SEED, val_fraction=0.0)
    folder = root / "slices/ct/axial"
    shards = []
    for c in cases:
        shard = folder / f"{c['case']}.npz"
        volume = load_case(work / "phantom" / c["image"], work / "phantom" / c["label"], labels, remap)
        write_case_shards(volume, "ct", {"axial": shard}, {"axial": work / "previews" / c["case"]},
                          image_size=IMAGE_SIZE, min_foreground=16, ct_window=(-175, 250),
                          mri_percentiles=(0.5, 99.5), previews_per_case=0,
                          body=BodySettings(mode="threshold" if body else "off"), body_id=labels.body_id)
        shards.append(shard)
    splits = ["train"] * (len(cases) - 1) + ["test"]
    rows = pd.DataFrame({"case": [c["case"] for c in cases], "modality": "ct", "split": splits})
    write_subset(rows, shards, "axial", folder / "manifest.tsv", folder / "store")

    settings = TrainSettings(steps=2, lr=1e-3, checkpoint_every=10**9, seed=SEED, ema_decay=0.5, bf16=False)
    (root / "models/diffusion").mkdir(parents=True, exist_ok=True)
    denoiser = DenoiserConfig(**{**DENOISER, "num_classes": labels.body_id + 1 if body else DENOISER["num_classes"]})
    train_diffusion(DiffusionTrainJob(
        modality="ct", view="axial", stores=(str(folder / "store"),), labels=labels, denoiser=denoiser,
        scheduler=SchedulerConfig(**SCHEDULER), train=settings, batch_size=4, ablation_p=0.0,
        checkpoint=work / "diffusion.ckpt", device=torch.device("cpu"), loader=LoaderSettings(), world_size=1,
        model=root / "models/diffusion/ct_axial.pt", loss=work / "diffusion_loss.csv", figure=work / "diffusion_loss.png",
        body_id=labels.body_id if body else None))
    (root / "provenance.json").write_text(json.dumps({"config": {"sampling": dict(SAMPLING)}}, indent=2) + "\n")
    return root
