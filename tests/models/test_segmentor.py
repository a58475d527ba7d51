"""The auxiliary segmentor: learns real masks, round-trips its model file, exposes bottleneck features."""

import numpy as np
import pandas as pd
import pytest
import torch
from tiny import make_subset, tiny_slices

from segdiff.core.errors import InputError
from segdiff.core.labels import LabelMap
from segdiff.data.dataset import SliceSet
from segdiff.data.loader import LoaderSettings
from segdiff.data.store import SliceStore
from segdiff.models.jobs import SegmentorTrainJob, train_segmentor
from segdiff.models.diffusion import load_diffusion
from segdiff.evaluation.metrics import DiceAccumulator
from segdiff.models.segmentor import SegmentorConfig, fit_segmentor, load_segmentor, organ_targets, predict, save_segmentor
from segdiff.models.training import TrainSettings

CONFIG = SegmentorConfig(num_classes=4, channels=(8, 16, 32), strides=(2, 2), num_res_units=1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    settings = TrainSettings(steps=60, lr=0.01, warmup_steps=5, ema_decay=0.5, checkpoint_every=100, seed=1)
    return fit_segmentor(tiny_slices(8), CONFIG, settings, 8, tmp_path_factory.mktemp("seg") / "ckpt", torch.device("cpu"))


def test_segmentor_learns_the_masks(trained):
    slices = tiny_slices(4, seed=5)
    labels, feats = predict(trained.ema, slices.image, torch.device("cpu"), features=True)
    dice = DiceAccumulator([1, 2, 3])
    dice.update(labels, slices.mask)
    assert dice.mean() > 0.7, dice.per_class()
    assert trained.history[-1]["loss"] < trained.history[0]["loss"]
    assert feats.shape == (4, 32) and np.isfinite(feats).all()



def test_segmentor_targets_are_the_organs_without_the_body_envelope(tmp_path):
    """A mask with the body envelope (id = largest organ id + 1 = the segmentor's class count) trains exactly
    as the organs alone: the envelope is background to the segmentor (its Dice scores organs only)."""
    masks = torch.tensor([[0, 1, 4], [3, 4, 0]])
    assert organ_targets(masks, 4).tolist() == [[0, 1, 0], [3, 0, 0]]
    organs = tiny_slices(8)
    with_body = SliceSet(organs.image, np.where(organs.mask == 0, 4, organs.mask).astype(np.uint8), organs.case,
                         organs.slice, organs.view)
    settings = TrainSettings(steps=3, lr=0.01, warmup_steps=1, ema_decay=0.5, checkpoint_every=100, seed=1)
    runs = [fit_segmentor(slices, CONFIG, settings, 4, tmp_path / f"{i}.ckpt", torch.device("cpu"))
            for i, slices in enumerate((organs, with_body))]
    assert [h["loss"] for h in runs[0].history] == [h["loss"] for h in runs[1].history]


def test_segmentor_file_roundtrip_and_kind_check(trained, tmp_path):
    path = tmp_path / "seg.pt"
    save_segmentor(path, trained.ema, CONFIG, {"modality": "ct"})
    model, config, meta = load_segmentor(path)
    assert config == CONFIG and meta["modality"] == "ct"
    images = tiny_slices(2).image
    np.testing.assert_array_equal(predict(model, images, torch.device("cpu"))[0], predict(trained.ema, images, torch.device("cpu"))[0])
    with pytest.raises(InputError, match="holds a 'segmentor' model, expected 'diffusion'"):
        load_diffusion(path)


def test_training_job_writes_the_model_and_its_loss(tmp_path):
    """The workflow's training job (:func:`train_segmentor`): the model fit_segmentor trains, with the job's meta."""
    torch.set_num_threads(1)
    _, store = make_subset(tmp_path)
    settings = TrainSettings(steps=2, lr=0.01, checkpoint_every=10, seed=1, ema_decay=0.5, bf16=False)
    job = SegmentorTrainJob(modality="ct", stores=(str(store),), splits=["train", "val"],
                            labels=LabelMap({1: "liver", 2: "spleen", 3: "kidney"}), config=CONFIG, train=settings,
                            batch_size=4, augmentation=True, checkpoint=tmp_path / "job.ckpt", device=torch.device("cpu"),
                            loader=LoaderSettings(), world_size=1, model=tmp_path / "seg.pt", loss=tmp_path / "loss.csv")
    train_segmentor(job)
    slices = SliceStore([store], ["train", "val"])
    direct = fit_segmentor(slices, CONFIG, settings, 4, tmp_path / "direct.ckpt", torch.device("cpu"), augmentation=True)
    model, config, meta = load_segmentor(job.model)
    assert config == CONFIG and meta == {"modality": "ct", "train_slices": len(slices), "splits": ["train", "val"]}
    for (name, a), b in zip(direct.ema.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a.cpu(), b), name
    assert len(pd.read_csv(job.loss)) == 2
