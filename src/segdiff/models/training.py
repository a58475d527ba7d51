"""A generic, kill-safe training loop shared by the diffusion model and the segmentor.

AdamW, linear warm-up then cosine decay, gradient clipping, EMA weights, one seeded RNG for all
randomness (batches, timesteps, noise, ablation), periodic checkpoints from which a rerun resumes
exactly (on CPU the resumed run ends with the same weights as an uninterrupted one), a tqdm bar
with loss and images/s, and the loss history. bf16 autocast where bf16
pays (CUDA; CPUs with AMX, not AVX512-BF16 alone); on CUDA also channels_last, fused AdamW and optional
``torch.compile``.

Data parallel (a :class:`segdiff.core.distributed.Rank` of a job of ``world_size`` processes): the
model is wrapped in :class:`~torch.nn.parallel.DistributedDataParallel`, every rank holds the same
seeded RNG and draws the randomness of the whole global batch (keeping its rows, see the loss
functions), steps are global optimizer steps (the LR schedule is unchanged), the logged loss is the
mean over the ranks and images/s counts the global batch. Rank 0 alone writes checkpoints; every
rank resumes from the same one and ends with the same weights.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel
from tqdm.auto import tqdm

from segdiff.core.atomic import atomic_path
from segdiff.core.checkpoints import CHECKPOINT_FORMAT, load_file, save_file
from segdiff.core.device import native_bf16
from segdiff.core.distributed import Rank, current_rank

__all__ = ["TrainSettings", "TrainResult", "train", "resume_key", "key_differences", "warmup_cosine",
           "ema_decay_at", "write_history"]

log = logging.getLogger(__name__)

#: ``loss_fn(model, batch, generator) -> (loss, images in the batch)``: ``batch`` comes from the
#: ``batches`` iterable of :func:`train`, on the training device (this rank's share of the global
#: batch); ``generator`` draws its noise (for the global batch: every rank's generator is the same).
LossFn = Callable[[nn.Module, Any, torch.Generator], tuple[torch.Tensor, int]]

#: ``batches(start_step)``: the batches of steps ``start_step .. steps - 1``, in order (e.g. a
#: :func:`segdiff.data.loader.step_loader`; this rank's share of each), so that a resumed run reads the same batches.
Batches = Callable[[int], Iterable]


@dataclass
class TrainSettings:
    steps: int
    lr: float
    warmup_steps: int = 0
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    ema_warmup: bool = True  # decay min(ema_decay, (1 + n) / (10 + n)) after n updates (ema_decay_at)
    checkpoint_every: int = 100
    seed: int = 0
    compile: bool = False
    bf16: bool | None = None  # bf16 autocast; None = where the device computes bf16 natively (see native_bf16)


@dataclass
class TrainResult:
    ema: nn.Module  # the EMA copy of the model (used for inference)
    history: list[dict]  # one row per step: step, loss, lr, images_per_s
    resumed_from: int  # step the run resumed from (0 = fresh)


def warmup_cosine(warmup: int, total: int) -> Callable[[int], float]:
    """The learning-rate multiplier of a step.

    Args:
        warmup: steps of linear warm-up.
        total: the step at which the cosine decay reaches 0.

    Returns:
        step -> multiplier: linear warm-up, then cosine decay to 0.
    """

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def ema_decay_at(updates: int, decay: float, warmup: bool = True) -> float:
    """The EMA decay of an update, with the warm-up of diffusers' ``EMAModel`` (decay ramp).

    Without a warm-up an EMA of decay 0.9999 still holds 0.9999^1500 = 86 % of the initial weights
    after 1,500 steps (issue 11's short GPU run); with it the EMA follows the weights early on and
    reaches ``decay`` after about 10 / (1 - decay) updates.

    Args:
        updates: updates already averaged in (1 at the first blend after the initial copy).
        decay: the configured decay.
        warmup: ramp the decay as ``(1 + n) / (10 + n)``; False: always ``decay``.

    Returns:
        The decay of this update: ``min(decay, (1 + n) / (10 + n))`` with the warm-up.
    """
    return min(decay, (1 + updates) / (10 + updates)) if warmup else decay


def _ema_avg_fn(decay: float, warmup: bool, updates: Callable[[], int]):
    """``AveragedModel``'s ``multi_avg_fn``: one fused lerp of every tensor by the decay of the update.

    ``updates()`` counts the updates on the host (the training step, which equals ``n_averaged``):
    reading ``n_averaged`` itself would synchronise a GPU at every step.
    """

    def update(ema: list[torch.Tensor], current: list[torch.Tensor], _n_averaged: torch.Tensor) -> None:
        weight = 1 - ema_decay_at(updates(), decay, warmup)
        if torch.is_floating_point(ema[0]):
            torch._foreach_lerp_(ema, current, weight)
        else:
            for e, c in zip(ema, current):
                e.copy_(e * (1 - weight) + c * weight)

    return update


def resume_key(settings: TrainSettings, recipe: dict | None = None, world_size: int = 1) -> dict:
    """What a checkpoint must have been trained with to be resumed: every training setting but how
    often it is saved and whether it is compiled (bf16 included), the ``recipe`` (the network, its
    scheduler, the batch size, the conditioning and ``ablation_p``, a fingerprint of the training
    data, the label map: what the caller knows shapes the weights) and the number of ranks.

    Args:
        settings: the training settings.
        recipe: JSON-like values; tuples and lists compare alike (a checkpoint stores lists).
        world_size: processes of the data-parallel job.
    """
    key = {"settings": {k: v for k, v in asdict(settings).items() if k not in ("checkpoint_every", "compile")},
           "recipe": recipe or {}, "world_size": world_size}
    return _plain(key)


def _plain(value: Any) -> Any:
    """``value`` with tuples as lists, the form it has after a round trip through a checkpoint."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def key_differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Where two resume keys differ.

    Args:
        old: the checkpoint's key (anything a foreign checkpoint holds).
        new: this run's :func:`resume_key`.
        prefix: dotted prefix of the names (for the recursion).

    Returns:
        Dotted names of the differing fields (``<key>`` when the keys differ as a whole).
    """
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in sorted(set(old) | set(new), key=str)
                for d in key_differences(old.get(k, "<absent>"), new.get(k, "<absent>"), f"{prefix}{k}.")]
    return [] if old == new else [prefix.rstrip(".") or "<key>"]


def _after_step(step: int) -> None:
    """Hook called after every completed step (tests use it to simulate a kill)."""


def train(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Batches,
    settings: TrainSettings,
    checkpoint: str | Path,
    device: torch.device,
    kind: str,
    desc: str = "train",
    rank: Rank | None = None,
    recipe: dict | None = None,
) -> TrainResult:
    """Train ``model`` for ``settings.steps`` steps, resuming from ``checkpoint`` when it exists.

    The checkpoint is written every ``checkpoint_every`` steps (atomically) and left in place at
    the end, so that a job killed after its last step (e.g. at its time limit, while writing its
    files) resumes at ``steps`` and only writes them again; :func:`segdiff.core.checkpoints.remove_finished`
    deletes it once the model file exists. A checkpoint of another :func:`resume_key` (other
    training settings, ``recipe`` or number of ranks) is not resumed: training starts afresh, with a
    warning naming the fields that differ.

    In a data-parallel job, rank 0 alone reads the checkpoint, decides whether to resume and hands
    its state to the other ranks (which need not see the file); rank 0 alone writes it, the others
    wait for it.

    Args:
        model: the network (moved to ``device``).
        loss_fn: ``(net, batch, generator) -> (loss, images in the batch)``.
        batches: ``start step -> iterable of batches`` of the steps ``start .. settings.steps - 1``.
        settings: steps, learning rate, warm-up, checkpointing, seed, EMA, precision.
        checkpoint: the checkpoint file.
        device: this process's device.
        kind: what is trained (``diffusion``, ``segmentor``), stored in and checked against the checkpoint.
        desc: the progress bar's and log's label.
        rank: this process's place in a data-parallel job (default:
            :func:`~segdiff.core.distributed.current_rank`, the single process unless a process group
            is initialised).
        recipe: what else shapes the weights (see :func:`resume_key`).

    Returns:
        The EMA model, the loss history and the step resumed from.

    Raises:
        RuntimeError: the batches ran out before ``settings.steps``.
    """
    rank = current_rank(device) if rank is None else rank
    checkpoint = Path(checkpoint)
    model.to(device)
    cuda = device.type == "cuda"
    if cuda:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay,
                                  fused=cuda or None)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(settings.warmup_steps, settings.steps))
    # the EMA's n-th blend happens at step n (0-based; step 0 copies the weights): the host counter is ``step``
    ema = AveragedModel(model, multi_avg_fn=_ema_avg_fn(settings.ema_decay, settings.ema_warmup, lambda: step),
                        use_buffers=True)
    generator = torch.Generator(device=device)
    generator.manual_seed(settings.seed)
    history: list[dict] = []
    step = 0
    key = resume_key(settings, recipe, rank.world_size)
    state = None
    if rank.is_main and checkpoint.exists():  # rank 0 decides and hands its state to the others
        state = load_file(checkpoint, CHECKPOINT_FORMAT, kind, map_location="cpu")
        differences = key_differences(state.get("key"), key)
        if differences:
            log.warning("%s: %s was trained with other settings or data (%s differ): training afresh", desc, checkpoint,
                        ", ".join(differences))
            state = None
    state = rank.object_from_main(state)
    if state is not None:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        generator.set_state(state["generator"].cpu())  # RNG states are CPU byte tensors on any device
        history, step = list(state["history"]), int(state["step"])
        log.info("%s: resumed from %s at step %d", desc, checkpoint, step)
    resumed_from = step
    net = model
    if rank.distributed:  # after the resume: the replicas start equal (DDP also broadcasts rank 0's weights)
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
    forward = torch.compile(net) if settings.compile and cuda else net  # CPU: compiling costs more than it saves
    bf16 = native_bf16(device) if settings.bf16 is None else settings.bf16
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def save_checkpoint() -> None:
        if rank.is_main:
            save_file(checkpoint, {
                "model": model.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(), "generator": generator.get_state(), "history": history, "step": step,
                "key": key,
            }, CHECKPOINT_FORMAT, kind)
        rank.barrier()  # no rank runs ahead of (or reads) a checkpoint being written

    model.train()
    bar = tqdm(total=settings.steps, initial=step, desc=desc, unit="step", mininterval=2.0, dynamic_ncols=True,
               disable=not rank.is_main)
    tick = time.perf_counter()
    for batch in batches(step):
        if step >= settings.steps:
            break
        batch = [t.to(device, non_blocking=True) for t in batch]
        with autocast:
            loss, n_images = loss_fn(forward, batch, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if settings.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        optimizer.step()
        schedule.step()
        ema.update_parameters(model)
        step += 1
        now = time.perf_counter()
        row = {"step": step, "loss": float(rank.mean(loss.detach())), "lr": schedule.get_last_lr()[0],
               "images_per_s": n_images * rank.world_size / max(now - tick, 1e-9)}
        tick = now
        history.append(row)
        bar.set_postfix(loss=f"{row['loss']:.4f}", img_s=f"{row['images_per_s']:.0f}", refresh=False)
        bar.update()
        if step % settings.checkpoint_every == 0 and step < settings.steps:
            save_checkpoint()
        _after_step(step)
    bar.close()
    if step < settings.steps:
        raise RuntimeError(f"{desc}: the batches ran out at step {step} of {settings.steps}")
    save_checkpoint()
    ema.module.eval()
    return TrainResult(ema=ema.module, history=history, resumed_from=resumed_from)


def write_history(history: list[dict], path: str | Path) -> None:
    """Write the loss log as CSV, atomically.

    Args:
        history: one row per step (:attr:`TrainResult.history`).
        path: the CSV file (columns step, loss, lr, images_per_s).
    """
    with atomic_path(path) as tmp:
        pd.DataFrame(history, columns=["step", "loss", "lr", "images_per_s"]).to_csv(tmp, index=False)
