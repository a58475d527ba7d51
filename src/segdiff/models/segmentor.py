"""The auxiliary 2D segmentor: a MONAI ``UNet`` trained with Dice + cross-entropy on real slices.

It reads generated images the way it reads real ones, so its Dice on generations measures how
well they follow their masks (Dice_gen) against the upper bound on the originals (Dice_orig).
Its bottleneck activations (global-average-pooled) are the feature space of FD_seg.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss
from monai.networks.layers import SkipConnection
from monai.networks.nets import UNet
from torch import nn

from segdiff.core.checkpoints import MODEL_FORMAT, load_file, save_file
from segdiff.core.distributed import Rank, current_rank, launch, local_batch_size, should_launch
from segdiff.core.errors import InputError
from segdiff.data.loader import LoaderSettings, Slices, step_loader
from segdiff.models.training import TrainResult, TrainSettings, train

__all__ = ["SegmentorConfig", "build_segmentor", "organ_targets", "augment", "batch_dice_ce", "fit_segmentor",
           "save_segmentor", "load_segmentor", "predict"]


@dataclass
class SegmentorConfig:
    num_classes: int  # including background
    channels: tuple[int, ...] = (16, 32, 64, 128)
    strides: tuple[int, ...] = (2, 2, 2)
    num_res_units: int = 1

    def to_dict(self) -> dict:
        return {**asdict(self), "channels": list(self.channels), "strides": list(self.strides)}


def build_segmentor(config: SegmentorConfig) -> UNet:
    return UNet(spatial_dims=2, in_channels=1, out_channels=config.num_classes, channels=tuple(config.channels),
                strides=tuple(config.strides), num_res_units=config.num_res_units)


def organ_targets(masks: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Masks as the segmentor's targets: the organs only.

    The segmentor has a class per organ id and background (``num_classes`` = the label map's largest
    id + 1); any id at or above it, i.e. the body envelope (:attr:`~segdiff.core.labels.LabelMap.body_id`,
    ``preprocess.body``), becomes background, so its Dice scores the organs alone.

    Args:
        masks: integer label ids, any shape.
        num_classes: the segmentor's classes, background included.

    Returns:
        A copy of the masks with every id ``>= num_classes`` set to 0 (no device sync: no test first).
    """
    return masks.masked_fill(masks >= num_classes, 0)


def augment(images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator,
            rotate_deg: float = 10.0, scale: float = 0.1, shift: float = 0.05, gamma: float = 0.3,
            contrast: float = 0.1, brightness: float = 0.05, rank: Rank | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Random anatomy and contrast for a batch, drawn from ``generator``: a small affine map
    (rotation, anisotropic scale, shift; bilinear for images, nearest for masks; no flips, since
    left and right organs have their own labels), then gamma, contrast and brightness.

    Args:
        images: (B, 1, H, W) images in [0, 1].
        masks: (B, 1, H, W) integer label ids.
        generator: draws the transforms.
        rotate_deg: the largest rotation, in degrees.
        scale: the largest relative zoom, per axis.
        shift: the largest shift, as a fraction of the half-width.
        gamma: the largest log-gamma.
        contrast: the largest relative contrast change.
        brightness: the largest brightness offset.
        rank: with a rank of a data-parallel job, the inputs are its rows of the global batch: the
            draws are those of the global batch, of which the rank keeps its rows.

    Returns:
        The augmented images (in [0, 1]) and masks (long).
    """
    rank = rank or Rank()
    b, device = images.shape[0], images.device

    def uniform(half_width: float, *shape: int) -> torch.Tensor:
        draw = torch.rand((b * rank.world_size, *shape), generator=generator, device=device)[rank.rows(b)]
        return (draw * 2 - 1) * half_width

    angle = uniform(rotate_deg * torch.pi / 180)
    zoom = 1 + uniform(scale, 2)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos * zoom[:, 0], -sin * zoom[:, 1], uniform(shift)], 1),
                         torch.stack([sin * zoom[:, 0], cos * zoom[:, 1], uniform(shift)], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    masks = F.grid_sample(masks.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False).long()
    g = torch.exp(uniform(gamma))[:, None, None, None]
    a = 1 + uniform(contrast)[:, None, None, None]
    c = uniform(brightness)[:, None, None, None]
    return (images.clamp(0, 1) ** g * a + c).clamp(0, 1), masks


def batch_dice_ce(logits: torch.Tensor, labels: torch.Tensor, rank: Rank | None = None,
                  smooth: float = 1e-5) -> torch.Tensor:
    """MONAI's ``DiceCELoss(to_onehot_y=True, softmax=True, batch=True)`` of a data-parallel job:
    ``logits`` (B, C, H, W) and ``labels`` (B, 1, H, W) are this rank's rows of the global batch.

    The batch Dice is not a mean over samples: its true-positive / false-positive / false-negative
    sums are added over the ranks (an all-reduce that autograd differentiates), so every rank
    holds the Dice of the global batch. With the cross-entropy (a mean over the rank's rows),
    DDP's gradient average is then the gradient of the global batch's loss, and so is the mean of
    the ranks' losses. On one process it equals MONAI's loss up to float rounding.

    Args:
        logits: (B, C, H, W) this rank's rows of the global batch.
        labels: (B, 1, H, W) their integer label ids.
        rank: this process's rank (None: a single process).
        smooth: the Dice smoothing term.

    Returns:
        The scalar Dice + cross-entropy loss.
    """
    rank = rank or Rank()
    probabilities = torch.softmax(logits, dim=1)
    target = F.one_hot(labels[:, 0].long(), logits.shape[1]).permute(0, 3, 1, 2).to(probabilities.dtype)
    axes = [0, 2, 3]
    sums = torch.stack([(probabilities * target).sum(axes), (probabilities * (1 - target)).sum(axes),
                        ((1 - probabilities) * target).sum(axes)])
    tp, fp, fn = rank.sum(sums)
    dice = 1 - (2 * tp + smooth) / (2 * tp + fp + fn + smooth)
    return dice.mean() + F.cross_entropy(logits, labels[:, 0].long())


def fit_segmentor(slices: Slices, config: SegmentorConfig, settings: TrainSettings, batch_size: int, checkpoint,
                  device: torch.device, desc: str = "segmentor", augmentation: bool = True,
                  loader: LoaderSettings = LoaderSettings(), world_size: int = 1,
                  resume_key: dict | None = None) -> TrainResult:
    """Train on ``slices`` (a :class:`~segdiff.data.store.SliceStore` or a :class:`~segdiff.data.dataset.SliceSet`,
    read batch by batch through :func:`~segdiff.data.loader.step_loader`) with DiceCE loss.

    The Dice term is computed over the whole batch (``batch=True``): with a per-image Dice the
    many organs absent from a slice hold the loss on a plateau (near 0.65 here for 1,000 steps).
    ``augmentation`` applies :func:`augment` to every batch: with a few training cases the
    segmentor otherwise learns their anatomy by heart (train loss 0.04, test Dice 0.5).

    ``world_size > 1``: data parallel over that many processes (:func:`~segdiff.core.distributed.launch`),
    ``batch_size`` being the global batch, the batch Dice that of the global batch
    (:func:`batch_dice_ce`); the result is rank 0's.

    A checkpoint is resumed only when it was trained with the same settings, network, batch size,
    augmentation, data (:meth:`~segdiff.data.store.SliceStore.fingerprint`), number of ranks and ``resume_key``.

    Args:
        slices: the training slices.
        config: the network.
        settings: steps, learning rate, checkpointing, seed, EMA, precision.
        batch_size: the global batch size.
        checkpoint: the training checkpoint file (resumed when it matches).
        device: where to train.
        desc: the progress bar's label.
        augmentation: apply :func:`augment` to every batch.
        loader: worker processes and prefetching of the batches.
        world_size: data-parallel processes.
        resume_key: what else shapes the weights that the caller knows (e.g. the label map).

    Returns:
        The :class:`~segdiff.models.training.TrainResult` (EMA model, loss history).
    """
    if should_launch(world_size):
        local_batch_size(batch_size, world_size)  # refuse a batch the ranks cannot share before starting them
        return launch(fit_segmentor, world_size, device, slices, config, settings, batch_size, checkpoint, device, desc,
                      augmentation, loader, world_size=world_size, resume_key=resume_key)
    rank = current_rank(device)
    torch.manual_seed(settings.seed)
    model = build_segmentor(config)
    monai_loss = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)

    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return batch_dice_ce(logits, labels, rank) if rank.distributed else monai_loss(logits, labels)

    def loss_fn(net, batch, generator):
        x, y = batch[0], organ_targets(batch[1].unsqueeze(1), config.num_classes)
        if augmentation:
            x, y = augment(x, y, generator, rank=rank)
        return loss(net(x).float(), y.long()), len(x)

    def batches(start):
        return step_loader(slices, batch_size, settings.seed, start, settings.steps, loader, rank.rank, rank.world_size)

    recipe = {"segmentor": asdict(config), "batch_size": batch_size, "augmentation": augmentation,
              "data": slices.fingerprint(), **(resume_key or {})}
    return train(model, loss_fn, batches, settings, checkpoint, rank.device, kind="segmentor", desc=desc, rank=rank,
                 recipe=recipe)


def save_segmentor(path, model: nn.Module, config: SegmentorConfig, meta: dict) -> None:
    """Write the final segmentor file (weights + network config + meta) atomically.

    Args:
        path: the model file (``.pt``).
        model: the (EMA) segmentor.
        config: its network config.
        meta: modality, view, label map, ... (plain values).
    """
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(path, {"state_dict": state, "segmentor": config.to_dict(), "meta": meta}, MODEL_FORMAT, "segmentor")


def load_segmentor(path, device: torch.device | str = "cpu") -> tuple[UNet, SegmentorConfig, dict]:
    """Rebuild a segmentor saved by :func:`save_segmentor` (``weights_only`` loading).

    Args:
        path: the model file.
        device: where to put the model.

    Returns:
        The model in eval mode, its config and its meta.

    Raises:
        InputError: a foreign, corrupt or incompatible file.
    """
    payload = load_file(path, MODEL_FORMAT, "segmentor")
    try:
        cfg = payload["segmentor"]
        config = SegmentorConfig(num_classes=cfg["num_classes"], channels=tuple(cfg["channels"]),
                                 strides=tuple(cfg["strides"]), num_res_units=cfg["num_res_units"])
        model = build_segmentor(config)
        model.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, RuntimeError) as err:
        raise InputError(path, f"segmentor file does not match this version of segdiff ({str(err).splitlines()[0]})") from err
    return model.to(device).eval(), config, payload["meta"]


def _bottom(unet: UNet) -> nn.Module:
    """The deepest block of MONAI's recursive UNet (down -> SkipConnection(sub) -> up)."""
    block = unet.model
    while isinstance(block, nn.Sequential) and len(block) == 3 and isinstance(block[1], SkipConnection):
        block = block[1].submodule
    return block


@torch.no_grad()
def predict(model: nn.Module, images: np.ndarray, device: torch.device, batch_size: int = 128,
            features: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Segment images, optionally with the bottleneck features of FD_seg.

    Args:
        model: the segmentor.
        images: (N, H, W) images in [0, 1].
        device: where to run it.
        batch_size: images per forward pass.
        features: also return the global-average-pooled bottleneck activations.

    Returns:
        Labels (N, H, W) uint8, and the features (N, C) float64 (None without ``features``).
    """
    model.eval().to(device)
    captured: list[torch.Tensor] = []
    hook = _bottom(model).register_forward_hook(lambda m, i, o: captured.append(o.float().mean(dim=(2, 3)))) if features else None
    labels = np.empty(images.shape, np.uint8)
    try:
        for start in range(0, len(images), batch_size):
            x = torch.as_tensor(images[start : start + batch_size], device=device).unsqueeze(1)
            labels[start : start + len(x)] = model(x).argmax(dim=1).to(torch.uint8).cpu().numpy()
    finally:
        if hook is not None:
            hook.remove()
    feats = torch.cat(captured).double().cpu().numpy() if features else None
    return labels, feats

