"""The workflow's training jobs: one diffusion model (rule ``train_diffusion``) and one auxiliary
segmentor (rule ``train_segmentor``), each described by one settings object.

:mod:`segdiff.pipeline.jobs` builds the objects from a rule's params (what shapes the model) and the
config (speed and placement); :func:`train_diffusion` and :func:`train_segmentor` train, then write the
model file, the loss history and (diffusion) the loss curve. Under ``torchrun``, or with
``world_size`` > 1, only rank 0 writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from segdiff.core.distributed import is_main_process
from segdiff.core.labels import LabelMap
from segdiff.data.loader import LoaderSettings
from segdiff.data.store import SliceStore
from segdiff.models.diffusion import DenoiserConfig, SchedulerConfig, fit_diffusion, save_diffusion
from segdiff.models.segmentor import SegmentorConfig, fit_segmentor, save_segmentor
from segdiff.models.training import TrainSettings, write_history

__all__ = ["DiffusionTrainJob", "SegmentorTrainJob", "train_diffusion", "train_segmentor"]


@dataclass(frozen=True)
class DiffusionTrainJob:
    """One diffusion model of a modality x view (:func:`train_diffusion`).

    Attributes:
        modality: ``ct`` or ``mri`` (recorded in the model, names the loss curve).
        view: the model view (``axial`` ... or ``all``).
        stores: slice stores whose ``train`` split the model learns from.
        labels: the label map (its names are recorded in the model and key the checkpoint).
        denoiser: the network.
        scheduler: the noise schedule.
        train: the optimisation (seed, and ``bf16`` already decided for ``device``, included).
        batch_size: the global batch (shared among the ``world_size`` processes).
        ablation_p: share of the training masks replaced by empty ones.
        checkpoint: the training checkpoint (resumed when it matches, see :func:`fit_diffusion`).
        device: where it trains.
        loader: the batch readers.
        world_size: data-parallel processes (:func:`segdiff.core.distributed.job_world_size`).
        model: the model file to write.
        loss: the loss history CSV to write.
        figure: the loss curve PNG to write.
        body_id: the body envelope's id when the masks carry it (one more mask channel of ``denoiser``), else None.
    """

    modality: str
    view: str
    stores: Sequence[str | Path]
    labels: LabelMap
    denoiser: DenoiserConfig
    scheduler: SchedulerConfig
    train: TrainSettings
    batch_size: int
    ablation_p: float
    checkpoint: str | Path
    device: torch.device
    loader: LoaderSettings
    world_size: int
    model: str | Path
    loss: str | Path
    figure: str | Path
    body_id: int | None = None


@dataclass(frozen=True)
class SegmentorTrainJob:
    """The auxiliary segmentor of one modality, over all its views (:func:`train_segmentor`).

    Attributes:
        modality: ``ct`` or ``mri`` (recorded in the model).
        stores: slice stores of the modality's views.
        splits: the splits it learns from (e.g. ``["train", "val"]``).
        labels: the label map (its names key the checkpoint).
        config: the network.
        train: the optimisation (seed, and ``bf16`` already decided for ``device``, included).
        batch_size: the global batch (shared among the ``world_size`` processes).
        augmentation: whether every batch is augmented (:func:`segdiff.models.segmentor.augment`).
        checkpoint: the training checkpoint (resumed when it matches, see :func:`fit_segmentor`).
        device: where it trains.
        loader: the batch readers.
        world_size: data-parallel processes (:func:`segdiff.core.distributed.job_world_size`).
        model: the model file to write.
        loss: the loss history CSV to write.
        cases: per store, the cases it learns from (None: all; :class:`~segdiff.data.store.SliceStore`).
    """

    modality: str
    stores: Sequence[str | Path]
    splits: Sequence[str]
    labels: LabelMap
    config: SegmentorConfig
    train: TrainSettings
    batch_size: int
    augmentation: bool
    checkpoint: str | Path
    device: torch.device
    loader: LoaderSettings
    world_size: int
    model: str | Path
    loss: str | Path
    cases: Sequence[Sequence[str] | None] | None = None


def train_diffusion(job: DiffusionTrainJob) -> None:
    """Train the diffusion model of ``job`` and write its model file, loss history and loss curve.

    The model's meta records the modality, view, number of training slices, label names, seed,
    the ids seen in training (``classes_seen``: multi-modal sampling sets the others to background) and
    the body envelope's id (``body_id``, None without the envelope).

    Args:
        job: the model to train and its files.
    """
    from segdiff.report.figures import loss_curve_figure  # matplotlib: only where a figure is drawn

    slices = SliceStore(job.stores, ["train"])
    result = fit_diffusion(slices, job.denoiser, job.scheduler, job.train, job.batch_size, job.checkpoint, job.device,
                           job.ablation_p, desc=f"diffusion {job.modality}/{job.view}", loader=job.loader,
                           world_size=job.world_size, resume_key={"labels": job.labels.names})
    if not is_main_process():  # a rank under torchrun: rank 0 writes the outputs
        return
    meta = {"modality": job.modality, "view": job.view, "train_slices": len(slices), "labels": job.labels.names,
            "seed": job.train.seed, "classes_seen": slices.classes, "body_id": job.body_id}
    save_diffusion(job.model, result.ema, job.scheduler, meta)
    write_history(result.history, job.loss)
    loss_curve_figure({f"{job.modality} {job.view}": job.loss}, job.figure, "diffusion training loss")


def train_segmentor(job: SegmentorTrainJob) -> None:
    """Train the auxiliary segmentor of ``job`` and write its model file and loss history.

    Args:
        job: the model to train and its files.
    """
    slices = SliceStore(job.stores, job.splits, job.cases)
    result = fit_segmentor(slices, job.config, job.train, job.batch_size, job.checkpoint, job.device,
                           desc=f"segmentor {job.modality}", augmentation=job.augmentation, loader=job.loader,
                           world_size=job.world_size, resume_key={"labels": job.labels.names})
    if not is_main_process():  # a rank under torchrun: rank 0 writes the outputs
        return
    save_segmentor(job.model, result.ema, job.config,
                   {"modality": job.modality, "train_slices": len(slices), "splits": job.splits})
    write_history(result.history, job.loss)
