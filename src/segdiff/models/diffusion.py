"""Segmentation-guided diffusion: MONAI's ``DiffusionModelUNet`` conditioned on an organ mask.

The mask reaches the denoiser in one of the two ways of the study:

- ``concat``: the one-hot mask (background + K organs) is concatenated to the noisy image as
  extra input channels (Konz et al. 2024);
- ``add``: a learned embedding of the one-hot mask (a 1x1 convolution, i.e. one vector per class)
  is added to the first feature map of the UNet.

Images live in [0, 1] on disk and in [-1, 1] inside the diffusion process.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from monai.networks.nets import DiffusionModelUNet
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler
from torch import nn

from segdiff.core.checkpoints import MODEL_FORMAT, load_file, save_file
from segdiff.core.distributed import Rank, current_rank, launch, local_batch_size, should_launch
from segdiff.core.errors import InputError
from segdiff.data.loader import LoaderSettings, Slices, step_loader
from segdiff.models.training import TrainResult, TrainSettings, train

__all__ = [
    "DenoiserConfig", "SchedulerConfig", "SegGuidedDenoiser", "one_hot", "ablate_masks", "make_scheduler",
    "diffusion_loss", "min_snr_weights", "to_model_range", "from_model_range", "fit_diffusion", "save_diffusion", "load_diffusion",
]

Conditioning = Literal["concat", "add"]
PredictionType = Literal["epsilon", "sample", "v_prediction"]


@dataclass
class DenoiserConfig:
    """Everything needed to rebuild the network (saved in the model file)."""

    num_classes: int  # including background
    conditioning: Conditioning = "concat"
    channels: tuple[int, ...] = (32, 64, 64)
    num_res_blocks: int = 1
    attention_levels: tuple[bool, ...] = (False, False, True)
    norm_num_groups: int = 16
    num_head_channels: int = 16
    use_flash_attention: bool = True  # torch scaled_dot_product_attention: O(tokens) memory (flash kernels on CUDA)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"], d["attention_levels"] = list(self.channels), list(self.attention_levels)
        return d


@dataclass
class SchedulerConfig:
    num_train_timesteps: int = 1000
    schedule: str = "linear_beta"
    beta_start: float = 0.0001
    beta_end: float = 0.02
    prediction_type: PredictionType = "sample"
    min_snr_gamma: float = 0.0  # > 0: min-SNR-gamma loss weighting (Hang et al. 2023); 0: plain MSE
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


class _AddedMaskEmbedding(nn.Module):
    """Replaces ``conv_in``: features of the image channel plus a learned per-class embedding."""

    def __init__(self, conv_in: nn.Module, num_classes: int, features: int):
        super().__init__()
        self.conv_in = conv_in
        self.embed = nn.Conv2d(num_classes, features, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_in(x[:, :1]) + self.embed(x[:, 1:])


class SegGuidedDenoiser(nn.Module):
    """``forward(noisy (B,1,H,W), timesteps (B,), mask_onehot (B,C,H,W)) -> prediction (B,1,H,W)``."""

    def __init__(self, config: DenoiserConfig):
        super().__init__()
        self.config = config
        concat = config.conditioning == "concat"
        if config.conditioning not in ("concat", "add"):
            raise ValueError(f"conditioning must be 'concat' or 'add', got {config.conditioning!r}")
        self.unet = DiffusionModelUNet(
            spatial_dims=2,
            in_channels=1 + config.num_classes if concat else 1,
            out_channels=1,
            num_res_blocks=config.num_res_blocks,
            channels=tuple(config.channels),
            attention_levels=tuple(config.attention_levels),
            norm_num_groups=config.norm_num_groups,
            num_head_channels=config.num_head_channels,
            use_flash_attention=config.use_flash_attention,
        )
        if not concat:
            self.unet.conv_in = _AddedMaskEmbedding(self.unet.conv_in, config.num_classes, config.channels[0])

    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor, mask_onehot: torch.Tensor) -> torch.Tensor:
        """The network's prediction for noisy images conditioned on their masks.

        Args:
            noisy: (B, 1, H, W) noisy images in the model range [-1, 1].
            timesteps: (B,) diffusion timesteps.
            mask_onehot: (B, num_classes, H, W) one-hot masks (:func:`one_hot`).

        Returns:
            (B, 1, H, W): noise, sample or velocity, per the scheduler's prediction type.
        """
        return self.unet(torch.cat([noisy, mask_onehot.to(noisy.dtype)], dim=1), timesteps)


def one_hot(mask: torch.Tensor, num_classes: int) -> torch.Tensor:
    """One-hot encoding of integer masks.

    Args:
        mask: (B, H, W) integer label ids below ``num_classes``.
        num_classes: the number of channels C (background included).

    Returns:
        (B, C, H, W) float one-hot.
    """
    return F.one_hot(mask.long(), num_classes).permute(0, 3, 1, 2).float()


def ablate_masks(mask: torch.Tensor, p: float, generator: torch.Generator, rank: Rank | None = None) -> torch.Tensor:
    """Drop each organ class of each sample's mask (set to background) with probability ``p``.

    Training only: sampling never ablates. Draws from ``generator`` even when ``p == 0`` is not
    needed, so it returns ``mask`` untouched then.

    Args:
        mask: (B, H, W) integer label ids.
        p: the probability of dropping each class of each sample.
        generator: the training's random generator.
        rank: with a rank of a data-parallel job, ``mask`` is its share of the global batch: the draws
            are those of the global batch (its highest label included), of which the rank keeps its rows.

    Returns:
        The ablated mask (``mask`` itself when ``p`` <= 0).
    """
    if p <= 0:
        return mask
    rank = rank or Rank()
    b = mask.shape[0]
    n_classes = int(rank.max(mask.max())) + 1
    drop = torch.rand((b * rank.world_size, n_classes), generator=generator, device=mask.device)[rank.rows(b)] < p
    drop[:, 0] = False
    return torch.where(torch.gather(drop, 1, mask.long().flatten(1)).view_as(mask), torch.zeros_like(mask), mask)


def make_scheduler(config: SchedulerConfig, sampler: Literal["ddpm", "ddim"] = "ddpm"):
    """MONAI scheduler of the given kind with the model's noise schedule and prediction type.

    Args:
        config: the model's scheduler config.
        sampler: ``ddpm`` or ``ddim``.

    Returns:
        A :class:`DDPMScheduler` or :class:`DDIMScheduler`.

    Raises:
        ValueError: an unknown sampler.
    """
    kwargs = dict(num_train_timesteps=config.num_train_timesteps, schedule=config.schedule,
                  prediction_type=config.prediction_type, **config.extra)
    if config.schedule in ("linear_beta", "scaled_linear_beta"):
        kwargs.update(beta_start=config.beta_start, beta_end=config.beta_end)
    if sampler == "ddim":
        return DDIMScheduler(**kwargs)
    if sampler == "ddpm":
        return DDPMScheduler(**kwargs)
    raise ValueError(f"unknown sampler {sampler!r} (expected 'ddpm' or 'ddim')")


def to_model_range(image: torch.Tensor) -> torch.Tensor:
    return image * 2.0 - 1.0


def from_model_range(x: torch.Tensor) -> torch.Tensor:
    return ((x + 1.0) * 0.5).clamp(0.0, 1.0)


def min_snr_weights(scheduler: DDPMScheduler, t: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-sample loss weights of min-SNR-gamma (Hang et al. 2023) for the scheduler's prediction type.

    With SNR(t) = alpha_bar / (1 - alpha_bar): ``min(SNR, gamma) / SNR`` for epsilon,
    ``min(SNR, gamma) / (SNR + 1)`` for v and ``min(SNR, gamma)`` for sample prediction: the
    x0-space weight min(SNR, gamma) expressed in the loss of each target. Low-noise steps, which
    dominate a plain epsilon/v loss without teaching much, are down-weighted.

    Args:
        scheduler: the training scheduler (its ``alphas_cumprod`` and prediction type).
        t: (B,) timesteps.
        gamma: the SNR clip.

    Returns:
        (B,) float weights.
    """
    alpha_bar = scheduler.alphas_cumprod.to(t.device)[t].double()
    snr = (alpha_bar / (1 - alpha_bar)).clamp(min=1e-12)
    clipped = snr.clamp(max=gamma)
    if scheduler.prediction_type == "epsilon":
        weight = clipped / snr
    elif scheduler.prediction_type == "v_prediction":
        weight = clipped / (snr + 1)
    else:
        weight = clipped
    return weight.float()


def diffusion_loss(
    model: nn.Module,
    scheduler: DDPMScheduler,
    images: torch.Tensor,
    masks: torch.Tensor,
    num_classes: int,
    generator: torch.Generator,
    ablation_p: float = 0.0,
    min_snr_gamma: float = 0.0,
    rank: Rank | None = None,
) -> torch.Tensor:
    """MSE between the network output and the target of the scheduler's prediction type,
    weighted per sample by min-SNR-gamma when ``min_snr_gamma > 0``.

    With a ``rank`` of a data-parallel job, ``images`` and ``masks`` are its B rows of a global batch
    of ``B * world_size``: noise, timesteps and ablation are drawn for the global batch (the same on
    every rank) and the rank keeps its rows, so the job computes what one process computes on the
    global batch.

    Args:
        model: the denoiser.
        scheduler: the training (DDPM) scheduler.
        images: (B, 1, H, W) images in [0, 1].
        masks: (B, H, W) integer label ids.
        num_classes: the one-hot width.
        generator: draws the noise, timesteps and ablation.
        ablation_p: the class-ablation probability (:func:`ablate_masks`).
        min_snr_gamma: the min-SNR clip (0 = unweighted).
        rank: this process's rank of a data-parallel job (None: a single process).

    Returns:
        The scalar loss.
    """
    rank = rank or Rank()
    x0 = to_model_range(images)
    b, rows = x0.shape[0], rank.rows(x0.shape[0])
    noise = torch.randn((b * rank.world_size, *x0.shape[1:]), generator=generator, device=x0.device, dtype=x0.dtype)[rows]
    t = torch.randint(0, scheduler.num_train_timesteps, (b * rank.world_size,), generator=generator, device=x0.device)[rows]
    noisy = scheduler.add_noise(x0, noise, t)
    cond = one_hot(ablate_masks(masks, ablation_p, generator, rank), num_classes)
    prediction = model(noisy, t, cond)
    if scheduler.prediction_type == "epsilon":
        target = noise
    elif scheduler.prediction_type == "sample":
        target = x0
    else:
        target = scheduler.get_velocity(x0, noise, t)
    if min_snr_gamma <= 0:
        return F.mse_loss(prediction.float(), target.float())
    per_sample = (prediction.float() - target.float()).pow(2).mean(dim=(1, 2, 3))
    return (per_sample * min_snr_weights(scheduler, t, min_snr_gamma)).mean()


def fit_diffusion(
    slices: Slices,
    denoiser: DenoiserConfig,
    scheduler_config: SchedulerConfig,
    settings: TrainSettings,
    batch_size: int,
    checkpoint,
    device: torch.device,
    ablation_p: float = 0.0,
    desc: str = "diffusion",
    loader: LoaderSettings = LoaderSettings(),
    world_size: int = 1,
    resume_key: dict | None = None,
) -> TrainResult:
    """Train a :class:`SegGuidedDenoiser` on ``slices`` (a
    :class:`~segdiff.data.store.SliceStore` on disk or an in-memory :class:`~segdiff.data.dataset.SliceSet`), read
    batch by batch through :func:`~segdiff.data.loader.step_loader`.

    ``world_size > 1``: data parallel over that many processes (one per GPU on CUDA, see
    :func:`~segdiff.core.distributed.launch`), ``batch_size`` being the global batch; the result is rank 0's.

    A checkpoint is resumed only when it was trained with the same settings, network, scheduler,
    batch size, ``ablation_p``, data (:meth:`~segdiff.data.store.SliceStore.fingerprint`), number of ranks and
    ``resume_key``.

    Args:
        slices: the training slices.
        denoiser: the network.
        scheduler_config: the noise schedule and prediction type.
        settings: steps, learning rate, checkpointing, seed, EMA, precision.
        batch_size: the global batch size.
        checkpoint: the training checkpoint file (resumed when it matches).
        device: where to train.
        ablation_p: the class-ablation probability (:func:`ablate_masks`).
        desc: the progress bar's label.
        loader: worker processes and prefetching of the batches.
        world_size: data-parallel processes (one per GPU on CUDA).
        resume_key: what else shapes the weights that the caller knows (e.g. the label map).

    Returns:
        The :class:`~segdiff.models.training.TrainResult` (EMA model, loss history).
    """
    if should_launch(world_size):
        local_batch_size(batch_size, world_size)  # refuse a batch the ranks cannot share before starting them
        return launch(fit_diffusion, world_size, device, slices, denoiser, scheduler_config, settings, batch_size,
                      checkpoint, device, ablation_p, desc, loader, world_size=world_size, resume_key=resume_key)
    rank = current_rank(device)
    torch.manual_seed(settings.seed)  # weight initialisation
    model = SegGuidedDenoiser(denoiser)
    scheduler = make_scheduler(scheduler_config, "ddpm")

    def loss_fn(net, batch, generator):
        images, masks = batch
        loss = diffusion_loss(net, scheduler, images, masks.long(), denoiser.num_classes, generator, ablation_p,
                              scheduler_config.min_snr_gamma, rank)
        return loss, len(images)

    def batches(start):
        return step_loader(slices, batch_size, settings.seed, start, settings.steps, loader, rank.rank, rank.world_size)

    recipe = {"denoiser": asdict(denoiser), "scheduler": asdict(scheduler_config), "batch_size": batch_size,
              "ablation_p": ablation_p, "data": slices.fingerprint(), **(resume_key or {})}
    return train(model, loss_fn, batches, settings, checkpoint, rank.device, kind="diffusion", desc=desc, rank=rank,
                 recipe=recipe)


def save_diffusion(path, model: SegGuidedDenoiser, scheduler_config: SchedulerConfig, meta: dict) -> None:
    """Write the final model file (EMA weights + what is needed to rebuild and sample) atomically.

    Args:
        path: the model file (``.pt``).
        model: the (EMA) denoiser.
        scheduler_config: its noise schedule and prediction type.
        meta: modality, view, label map, classes seen, ... (plain values).
    """
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(path, {"state_dict": state, "denoiser": model.config.to_dict(),
                     "scheduler": scheduler_config.to_dict(), "meta": meta}, MODEL_FORMAT, "diffusion")


def load_diffusion(path, device: torch.device | str = "cpu") -> tuple[SegGuidedDenoiser, SchedulerConfig, dict]:
    """Rebuild a model saved by :func:`save_diffusion` (``weights_only`` loading).

    Args:
        path: the model file.
        device: where to put the model.

    Returns:
        The model in eval mode, its scheduler config and its meta.

    Raises:
        InputError: a foreign, corrupt or incompatible file.
    """
    payload = load_file(path, MODEL_FORMAT, "diffusion")
    try:
        config = DenoiserConfig(**payload["denoiser"])
        config.channels, config.attention_levels = tuple(config.channels), tuple(config.attention_levels)
        model = SegGuidedDenoiser(config)
        model.load_state_dict(payload["state_dict"])
        scheduler_config = SchedulerConfig(**payload["scheduler"])
    except (KeyError, TypeError, RuntimeError) as err:
        raise InputError(path, f"diffusion model file does not match this version of segdiff ({str(err).splitlines()[0]})") from err
    return model.to(device).eval(), scheduler_config, payload["meta"]
