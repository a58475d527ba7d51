"""Tiny models, slice sets, stores and weights that unit tests across the stages build on."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytorch_fid.inception as fid_inception
import torch
import torchvision

from segdiff.data.dataset import SliceSet
from segdiff.data.shards import build_manifest
from segdiff.data.slicing import Shard
from segdiff.data.store import write_store
from segdiff.models.diffusion import DenoiserConfig, SchedulerConfig, SegGuidedDenoiser

TINY = dict(num_classes=4, channels=(8, 8), attention_levels=(False, False), norm_num_groups=4, num_head_channels=8)
SCHED = SchedulerConfig(num_train_timesteps=50, prediction_type="sample")


def tiny_slices(n=6, size=16, seed=0):
    rng = np.random.default_rng(seed)
    mask = np.zeros((n, size, size), np.uint8)
    mask[:, 3:8, 3:10] = 1
    mask[:, 9:14, 6:12] = 2
    mask[::2, 2:5, 11:15] = 3
    image = (0.2 * (mask == 1) + 0.6 * (mask == 2) + 0.9 * (mask == 3) + rng.normal(0, 0.02, mask.shape)).clip(0, 1)
    return SliceSet(image.astype(np.float32), mask, np.array([f"c{i % 2}" for i in range(n)]),
                    np.arange(n, dtype=np.int32), np.array(["axial"] * n))


def perturbed_model():
    """MONAI zero-initialises the UNet's output layer: an untrained model returns the same image for
    any noise, which would hide seeding bugs. Random weights make every input count."""
    torch.manual_seed(0)
    model = SegGuidedDenoiser(DenoiserConfig(**TINY)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model


SPLITS = {"c0": "train", "c1": "train", "c2": "val", "c3": "test", "c4": "test"}


def make_subset(root, view="axial", sizes=(5, 0, 3, 4, 6), size=16, seed=0):
    """Shards of five cases (one without slices) and their manifest, written as the workflow does."""
    rng = np.random.default_rng(seed)
    paths = {}
    for i, (case, n) in enumerate(zip(SPLITS, sizes)):
        mask = rng.integers(0, 4, (n, size, size)).astype(np.uint8)
        shard = Shard(image=rng.random((n, size, size), dtype=np.float32), mask=mask,
                      slice=np.arange(10, 10 + n, dtype=np.int32), pixel_mm=2.0)
        paths[case] = root / view / f"{case}.npz"
        paths[case].parent.mkdir(parents=True, exist_ok=True)
        shard.save(paths[case])
    rows = pd.DataFrame({"case": list(SPLITS), "modality": "ct", "split": list(SPLITS.values())})
    manifest = build_manifest(rows, paths, view)
    write_store(manifest, root / view / "store")
    return manifest, root / view / "store"


def fid_inception_state_dict():
    """pytorch-fid's FID Inception architecture, randomly initialised, built the way pytorch-fid does."""
    torch.manual_seed(0)
    net = torchvision.models.inception_v3(weights=None, num_classes=1008, aux_logits=False, init_weights=False)
    net.Mixed_5b = fid_inception.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = fid_inception.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = fid_inception.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = fid_inception.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = fid_inception.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = fid_inception.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = fid_inception.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = fid_inception.FIDInceptionE_1(1280)
    net.Mixed_7c = fid_inception.FIDInceptionE_2(2048)
    state = net.state_dict()
    state["Mixed_7c.branch_pool.bn.running_mean"].uniform_(-1, 1)  # a buffer that differs from its default
    return state
