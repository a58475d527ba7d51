"""Batched, reproducible sampling from a segmentation-guided diffusion model.

Every generated slice starts from noise drawn from its own generator, seeded from
``(seed, case, slice, k)``; stochastic samplers (DDPM, DDIM with eta > 0) also draw each step's
noise from per-slice generators. Results therefore do not depend on the batch size, on the order
of jobs, or on which other slices are sampled alongside.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from segdiff.diffusion import from_model_range, make_scheduler, one_hot
from segdiff.training import native_bf16

__all__ = ["SamplerSettings", "sample_seed", "initial_noise", "generate"]


@dataclass
class SamplerSettings:
    sampler: str = "ddim"  # ddim | ddpm
    steps: int = 50  # inference steps (DDPM: the model's number of training timesteps is used when 0)
    eta: float = 0.0  # DDIM stochasticity
    batch_size: int = 64
    bf16: bool | None = None  # bf16 autocast; None = where the device computes bf16 natively


def sample_seed(seed: int, case: str, slice_index: int, k: int) -> int:
    """A 63-bit seed for one generation, from the run seed, case id, slice index and sample number."""
    state = np.random.SeedSequence([seed, zlib.crc32(case.encode()), int(slice_index), int(k)]).generate_state(2, np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1


def initial_noise(seeds: Sequence[int], shape: tuple[int, int]) -> torch.Tensor:
    """(N, 1, H, W) standard normal noise, drawn on the CPU (the same on every device) per seed."""
    g = torch.Generator()
    out = torch.empty((len(seeds), 1, *shape))
    for i, s in enumerate(seeds):
        g.manual_seed(s)
        out[i] = torch.randn((1, *shape), generator=g)
    return out


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    scheduler_config,
    masks: np.ndarray,
    seeds: Sequence[int],
    num_classes: int,
    settings: SamplerSettings,
    device: torch.device,
    desc: str = "sample",
) -> np.ndarray:
    """Generate one image per mask: ``masks`` (N, H, W) ints, ``seeds`` (N,) -> (N, H, W) float32 in [0, 1]."""
    if len(masks) != len(seeds):
        raise ValueError(f"{len(masks)} masks but {len(seeds)} seeds")
    scheduler = make_scheduler(scheduler_config, settings.sampler)
    steps = settings.steps or scheduler_config.num_train_timesteps
    if settings.sampler == "ddpm" and steps != scheduler_config.num_train_timesteps:
        # MONAI's DDPMScheduler.step always goes from t to t - 1: strided DDPM returns noise
        raise ValueError(f"DDPM samples every one of the model's {scheduler_config.num_train_timesteps} timesteps "
                         f"(got steps={steps}); use steps 0 or {scheduler_config.num_train_timesteps}, or DDIM with eta 1")
    scheduler.set_timesteps(steps, device=device)
    stochastic = settings.sampler == "ddpm" or settings.eta > 0
    model.eval().to(device)
    bf16 = native_bf16(device) if settings.bf16 is None else settings.bf16
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    out = np.empty(masks.shape, np.float32)
    batches = range(0, len(masks), settings.batch_size)
    bar = tqdm(total=len(batches) * len(scheduler.timesteps), desc=desc, unit="step", mininterval=2.0, dynamic_ncols=True)
    for start in batches:
        batch_seeds = seeds[start : start + settings.batch_size]
        cond = one_hot(torch.as_tensor(masks[start : start + settings.batch_size], device=device), num_classes)
        x = initial_noise(batch_seeds, masks.shape[1:]).to(device)
        step_generators = []
        if stochastic:
            for s in batch_seeds:
                g = torch.Generator(device=device)
                g.manual_seed(s ^ 0x5DEECE66D)
                step_generators.append(g)
        for t in scheduler.timesteps:
            timesteps = torch.full((len(x),), int(t), device=device, dtype=torch.long)
            with autocast:
                prediction = model(x, timesteps, cond).float()
            if not stochastic:  # DDIM with eta 0: no noise, the whole batch in one step
                x, _ = scheduler.step(prediction, int(t), x)
            else:
                kwargs = {"eta": settings.eta} if settings.sampler == "ddim" else {}
                x = torch.cat([
                    scheduler.step(prediction[i : i + 1], int(t), x[i : i + 1], generator=g, **kwargs)[0]
                    for i, g in enumerate(step_generators)
                ])
            bar.update()
        out[start : start + len(x)] = from_model_range(x)[:, 0].float().cpu().numpy()
    bar.close()
    return out
