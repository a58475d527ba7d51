"""A training checkpoint is resumed only by the run that wrote it: change any one field of the resume
key (a training setting, the network, the scheduler, the batch, the conditioning, ``ablation_p``, the
label map, the training data) and training starts afresh, naming the field. Speed settings
(checkpoint interval, compile) do not count. The number of ranks is tested in test_ddp.py."""

from __future__ import annotations

import dataclasses
import logging
import shutil

import numpy as np
import pytest
import torch
from tiny import make_subset

from segdiff.models.diffusion import DenoiserConfig, SchedulerConfig, fit_diffusion
from segdiff.models.segmentor import SegmentorConfig, fit_segmentor
from segdiff.data.store import SliceStore
from segdiff.models.training import TrainSettings, key_differences, resume_key

CPU = torch.device("cpu")
DENOISER = DenoiserConfig(num_classes=4, channels=(8, 8), attention_levels=(False, False), norm_num_groups=4,
                          num_head_channels=8, use_flash_attention=False)
SCHED = SchedulerConfig(num_train_timesteps=50, prediction_type="sample")
SEGMENTOR = SegmentorConfig(num_classes=4, channels=(8, 16), strides=(2,), num_res_units=1)
SETTINGS = TrainSettings(steps=2, lr=1e-3, warmup_steps=1, checkpoint_every=1, seed=3, ema_decay=0.9, bf16=False)
LABELS = {"labels": {"1": "spleen", "2": "kidney", "3": "liver"}}

#: one other value of every training setting (the resume key holds all but the speed settings)
OTHER_SETTINGS = {"steps": 3, "lr": 5e-4, "warmup_steps": 0, "weight_decay": 0.01, "grad_clip": 0.5, "ema_decay": 0.5,
                  "ema_warmup": False, "seed": 4, "bf16": True}
SPEED = {"checkpoint_every": 7, "compile": True}
#: one other value of every network and scheduler field
OTHER_DENOISER = {"num_classes": 5, "conditioning": "add", "channels": (8, 16), "num_res_blocks": 2,
                  "attention_levels": (False, True), "norm_num_groups": 8, "num_head_channels": 4, "use_flash_attention": True}
OTHER_SCHEDULER = {"num_train_timesteps": 40, "schedule": "cosine", "beta_start": 0.0002, "beta_end": 0.03,
                   "prediction_type": "v_prediction", "min_snr_gamma": 5.0, "extra": {"clip_sample": False}}
OTHER_SEGMENTOR = {"num_classes": 5, "channels": (8, 8), "strides": (1,), "num_res_units": 2}


def test_every_field_has_another_value_here():
    """A field added to a config without a case here fails: the tests below cover every field."""
    assert set(OTHER_SETTINGS) | set(SPEED) == {f.name for f in dataclasses.fields(TrainSettings)}
    assert set(OTHER_DENOISER) == {f.name for f in dataclasses.fields(DenoiserConfig)}
    assert set(OTHER_SCHEDULER) == {f.name for f in dataclasses.fields(SchedulerConfig)}
    assert set(OTHER_SEGMENTOR) == {f.name for f in dataclasses.fields(SegmentorConfig)}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A store, and the final checkpoints (step 2) of a diffusion model and a segmentor trained on it."""
    root = tmp_path_factory.mktemp("resume")
    _, store_dir = make_subset(root)
    torch.set_num_threads(1)
    store = SliceStore([store_dir], ["train", "val"])
    fit_diffusion(store, DENOISER, SCHED, SETTINGS, 4, root / "diffusion.ckpt", CPU, ablation_p=0.2, resume_key=LABELS)
    fit_segmentor(store, SEGMENTOR, SETTINGS, 4, root / "segmentor.ckpt", CPU, augmentation=True, resume_key=LABELS)
    return root, store_dir


def _diffusion(trained, tmp_path, store=None, denoiser=DENOISER, scheduler=SCHED, settings=SETTINGS, batch_size=4,
               ablation_p=0.2, key=LABELS):
    root, store_dir = trained
    checkpoint = tmp_path / "diffusion.ckpt"
    tmp_path.mkdir(parents=True, exist_ok=True)
    shutil.copy(root / "diffusion.ckpt", checkpoint)
    store = store or SliceStore([store_dir], ["train", "val"])
    return fit_diffusion(store, denoiser, scheduler, settings, batch_size, checkpoint, CPU, ablation_p=ablation_p, resume_key=key)


def _segmentor(trained, tmp_path, store=None, config=SEGMENTOR, settings=SETTINGS, batch_size=4, augmentation=True, key=LABELS):
    root, store_dir = trained
    checkpoint = tmp_path / "segmentor.ckpt"
    tmp_path.mkdir(parents=True, exist_ok=True)
    shutil.copy(root / "segmentor.ckpt", checkpoint)
    store = store or SliceStore([store_dir], ["train", "val"])
    return fit_segmentor(store, config, settings, batch_size, checkpoint, CPU, augmentation=augmentation, resume_key=key)


def _afresh(result, caplog, field):
    assert result.resumed_from == 0 and result.history[0]["step"] == 1
    warning = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning and "training afresh" in warning[-1] and field in warning[-1], warning


@pytest.mark.parametrize("speed", [{}, SPEED], ids=["same", "speed-settings-only"])
def test_the_same_recipe_resumes(trained, tmp_path, speed):
    settings = dataclasses.replace(SETTINGS, **speed)
    assert _diffusion(trained, tmp_path, settings=settings).resumed_from == 2
    assert _segmentor(trained, tmp_path, settings=settings).resumed_from == 2


@pytest.mark.parametrize("field", sorted(OTHER_SETTINGS))
def test_another_training_setting_trains_afresh(trained, tmp_path, caplog, field):
    settings = dataclasses.replace(SETTINGS, **{field: OTHER_SETTINGS[field]})
    _afresh(_diffusion(trained, tmp_path / "d", settings=settings), caplog, f"settings.{field}")
    _afresh(_segmentor(trained, tmp_path / "s", settings=settings), caplog, f"settings.{field}")


@pytest.mark.parametrize("field", sorted(OTHER_DENOISER))
def test_another_network_trains_afresh(trained, tmp_path, caplog, field):
    _afresh(_diffusion(trained, tmp_path, denoiser=dataclasses.replace(DENOISER, **{field: OTHER_DENOISER[field]})), caplog,
            f"recipe.denoiser.{field}")


@pytest.mark.parametrize("field", sorted(OTHER_SCHEDULER))
def test_another_scheduler_trains_afresh(trained, tmp_path, caplog, field):
    _afresh(_diffusion(trained, tmp_path, scheduler=dataclasses.replace(SCHED, **{field: OTHER_SCHEDULER[field]})), caplog,
            f"recipe.scheduler.{field}")


@pytest.mark.parametrize("field", sorted(OTHER_SEGMENTOR))
def test_another_segmentor_network_trains_afresh(trained, tmp_path, caplog, field):
    _afresh(_segmentor(trained, tmp_path, config=dataclasses.replace(SEGMENTOR, **{field: OTHER_SEGMENTOR[field]})), caplog,
            f"recipe.segmentor.{field}")


def test_another_batch_ablation_augmentation_or_label_map_trains_afresh(trained, tmp_path, caplog):
    _afresh(_diffusion(trained, tmp_path / "1", batch_size=2), caplog, "recipe.batch_size")
    _afresh(_diffusion(trained, tmp_path / "2", ablation_p=0.5), caplog, "recipe.ablation_p")
    _afresh(_segmentor(trained, tmp_path / "3", batch_size=2), caplog, "recipe.batch_size")
    _afresh(_segmentor(trained, tmp_path / "4", augmentation=False), caplog, "recipe.augmentation")
    relabelled = {"labels": {**LABELS["labels"], "3": "stomach"}}
    _afresh(_diffusion(trained, tmp_path / "5", key=relabelled), caplog, "recipe.labels.3")
    _afresh(_segmentor(trained, tmp_path / "6", key=relabelled), caplog, "recipe.labels.3")


def test_other_training_data_trains_afresh(trained, tmp_path, caplog):
    _, store_dir = trained
    # other splits of the same store
    _afresh(_diffusion(trained, tmp_path / "1", store=SliceStore([store_dir], ["train"])), caplog, "recipe.data")
    _afresh(_segmentor(trained, tmp_path / "2", store=SliceStore([store_dir], ["train"])), caplog, "recipe.data")
    # the same cases and sizes, re-sliced with other intensities (e.g. another CT window): same index, other bytes
    other = tmp_path / "other" / "axial" / "store"
    shutil.copytree(store_dir, other)
    images = np.load(other / "image.npy", mmap_mode="r+")
    images[:] = images * 0.5
    images.flush()
    del images
    assert (other / "index.tsv").read_bytes() == (store_dir / "index.tsv").read_bytes()
    _afresh(_diffusion(trained, tmp_path / "3", store=SliceStore([other], ["train", "val"])), caplog, "recipe.data")
    # a copy of the same store elsewhere is the same data: resumed
    same = tmp_path / "copy" / "axial" / "store"
    shutil.copytree(store_dir, same)
    assert _diffusion(trained, tmp_path / "4", store=SliceStore([same], ["train", "val"])).resumed_from == 2


def test_key_differences_name_the_fields():
    key = resume_key(SETTINGS, {"denoiser": dataclasses.asdict(DENOISER), "data": "abc"}, world_size=1)
    assert key_differences(key, key) == []
    assert key["recipe"]["denoiser"]["channels"] == [8, 8]  # tuples as the checkpoint stores them
    other = resume_key(dataclasses.replace(SETTINGS, lr=1.0), {"denoiser": dataclasses.asdict(DENOISER), "data": "abd"}, 2)
    assert key_differences(key, other) == ["recipe.data", "settings.lr", "world_size"]
    assert key_differences(None, key) == ["<key>"]  # a checkpoint of an older format: afresh
    assert key_differences({"settings": key["settings"]}, key) == ["recipe", "world_size"]
