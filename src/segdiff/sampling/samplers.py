"""Batched, reproducible sampling from a segmentation-guided diffusion model.

Samplers (:data:`SAMPLERS`): MONAI's DDPM and DDIM, and DPM-Solver++(2M) as an ODE or an SDE
(:mod:`segdiff.sampling.solvers`), the few-step samplers.

Every generated slice starts from noise drawn from its own generator, seeded from
``(seed, case, slice, k)``; stochastic samplers (DDPM, DDIM with eta > 0, the SDE) also draw their
step noise from per-slice generators, and step the whole batch at once (:func:`stochastic_step`;
the SDE draws a slice's noise of all steps in one call, :func:`step_noise`). Results therefore do
not depend on the batch size, on the order of jobs, or on which other slices are sampled alongside.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.networks.schedulers import DDIMScheduler
from tqdm.auto import tqdm

from segdiff.core.device import native_bf16
from segdiff.models.diffusion import from_model_range, make_scheduler, one_hot
from segdiff.sampling.solvers import dpm_solver_pp, timestep_grid

__all__ = ["SAMPLERS", "SamplerSettings", "sample_seed", "initial_noise", "step_noise", "stochastic_step",
           "x0_prediction", "generate"]

#: the samplers: MONAI's (``ddim``, ``ddpm``) and DPM-Solver++(2M) (:mod:`segdiff.sampling.solvers`)
SAMPLERS = ("ddim", "ddpm", "dpmpp_2m", "dpmpp_2m_sde")


@dataclass
class SamplerSettings:
    sampler: str = "ddim"  # one of SAMPLERS
    steps: int = 50  # network calls (DDPM: the model's number of training timesteps is used when 0)
    eta: float = 0.0  # DDIM stochasticity
    batch_size: int = 64
    bf16: bool | None = None  # bf16 autocast; None = where bf16 pays (segdiff.core.device.native_bf16)
    spacing: str = "lambda"  # DPM-Solver++ grid: lambda | linear (segdiff.sampling.solvers.timestep_grid)
    compile: bool = False  # CUDA: torch.compile the denoiser and keep it channels_last


def sample_seed(seed: int, case: str, slice_index: int, k: int) -> int:
    """A 63-bit seed for one generation, from the run seed, case id, slice index and sample number.

    Args:
        seed: the run seed.
        case: the case id (:mod:`segdiff.sampling.experiments` passes ``case/view``, so views differ).
        slice_index: the slice's index along its view axis.
        k: the sample number (which generation of the slice, from 0).

    Returns:
        A seed in ``[0, 2**63)``.
    """
    state = np.random.SeedSequence([seed, zlib.crc32(case.encode()), int(slice_index), int(k)]).generate_state(2, np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1


def initial_noise(seeds: Sequence[int], shape: tuple[int, int]) -> torch.Tensor:
    """(N, 1, H, W) standard normal noise, drawn on the CPU (the same on every device) per seed.

    Args:
        seeds: (N,) one seed per slice (:func:`sample_seed`); slice i's noise comes from a generator
            seeded with ``seeds[i]``.
        shape: the slice size (H, W).

    Returns:
        A CPU tensor (N, 1, H, W).
    """
    g = torch.Generator()
    out = torch.empty((len(seeds), 1, *shape))
    for i, s in enumerate(seeds):
        g.manual_seed(s)
        out[i] = torch.randn((1, *shape), generator=g)
    return out


def step_noise(generators: Sequence[torch.Generator], steps: int, shape: tuple[int, ...],
               device: torch.device) -> torch.Tensor:
    """(N, steps, *shape) standard normal noise: slice i's noise of every step, in one draw from ``generators[i]``.

    Args:
        generators: one per slice, seeded from its seed.
        steps: the steps that add noise.
        shape: one slice's shape, e.g. (1, H, W).
        device: where to draw (the generators' device).

    Returns:
        The noise on ``device``.
    """
    return torch.stack([torch.randn((steps, *shape), generator=g, device=device) for g in generators])


def x0_prediction(prediction: torch.Tensor, x: torch.Tensor, alpha_bar: torch.Tensor | float,
                  kind: str) -> torch.Tensor:
    """The clean image a model's output implies.

    Args:
        prediction: the model's output for ``x``: noise, sample or v, as ``kind`` says.
        x: the noisy batch.
        alpha_bar: ᾱ of the timestep.
        kind: the prediction type (``epsilon``, ``sample``, ``v_prediction``).

    Returns:
        x0, float32 (not clipped).
    """
    a = torch.as_tensor(alpha_bar, dtype=torch.float64)
    alpha, sigma = float(a.sqrt()), float((1 - a).sqrt())
    prediction, x = prediction.float(), x.float()
    if kind == "epsilon":
        return (x - sigma * prediction) / alpha
    if kind == "sample":
        return prediction
    return alpha * x - sigma * prediction


def stochastic_step(scheduler, prediction: torch.Tensor, t: int, x: torch.Tensor, noise: torch.Tensor,
                    eta: float = 1.0) -> torch.Tensor:
    """One DDPM or DDIM (eta > 0) step of a batch with the given ``noise`` (one draw per slice).

    MONAI's ``step`` draws the noise of the whole batch from one generator; this is its update
    (DDPM: Ho et al. eq. 7; DDIM: Song et al. eq. 12 and 16) with the noise passed in, so that each
    slice keeps its own generator while the batch steps together. ``tests/models/test_diffusion.py``
    checks it against MONAI's ``step`` slice by slice.

    Args:
        scheduler: a MONAI ``DDPMScheduler`` or ``DDIMScheduler`` with its timesteps set
            (:func:`segdiff.models.diffusion.make_scheduler`).
        prediction: the model's output for ``x`` at ``t``: noise, sample or v, as ``scheduler.prediction_type``
            says.
        t: the current timestep.
        x: the noisy batch at ``t``, (B, 1, H, W).
        noise: standard normal noise of ``x``'s shape, one draw per slice.
        eta: DDIM's stochasticity (DDPM ignores it).

    Returns:
        The batch at the previous timestep, float32 (DDPM at ``t`` 0: the mean, no noise added).
    """
    prediction, x = prediction.float(), x.float()
    alphas = scheduler.alphas_cumprod.to(x.device)
    kind = scheduler.prediction_type
    a_t = alphas[t]
    if kind == "epsilon":
        x0, eps = (x - (1 - a_t).sqrt() * prediction) / a_t.sqrt(), prediction
    elif kind == "sample":
        x0, eps = prediction, (x - a_t.sqrt() * prediction) / (1 - a_t).sqrt()
    else:  # v_prediction
        x0, eps = a_t.sqrt() * x - (1 - a_t).sqrt() * prediction, a_t.sqrt() * prediction + (1 - a_t).sqrt() * x
    if scheduler.clip_sample:
        x0 = x0.clamp(*scheduler.clip_sample_values)
    if isinstance(scheduler, DDIMScheduler):
        prev = t - scheduler.num_train_timesteps // scheduler.num_inference_steps
        a_prev = alphas[prev] if prev >= 0 else scheduler.final_alpha_cumprod.to(x.device)
        sigma = eta * (scheduler._get_variance(t, prev) ** 0.5)
        # clamp: where sigma^2 = 1 - a_prev exactly (eta 1, a_t = 0: the cosine schedule's last step), rounding
        # can make the difference -1e-8 and MONAI's step NaN
        return a_prev.sqrt() * x0 + (1 - a_prev - sigma**2).clamp(min=0).sqrt() * eps + sigma * noise
    a_prev = alphas[t - 1] if t > 0 else torch.ones((), device=x.device)
    beta, alpha = scheduler.betas.to(x.device)[t], scheduler.alphas.to(x.device)[t]
    mean = (a_prev.sqrt() * beta / (1 - a_t)) * x0 + (alpha.sqrt() * (1 - a_prev) / (1 - a_t)) * x
    if t == 0:
        return mean
    return mean + scheduler._get_variance(t).to(x.device) ** 0.5 * noise


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
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Generate one image per mask: ``masks`` (N, H, W) ints, ``seeds`` (N,) -> (N, H, W) float32 in [0, 1].

    Args:
        model: the segmentation-guided denoiser (set to eval mode and moved to ``device``).
        scheduler_config: the model's scheduler config (noise schedule, prediction type, training timesteps).
        masks: (N, H, W) integer label ids below ``num_classes``.
        seeds: (N,) one seed per mask (:func:`sample_seed`): its initial noise and, for stochastic
            samplers, its noise at every step.
        num_classes: the model's classes, background included (the one-hot condition's channels).
        settings: the sampler, steps, eta, spacing, batch size and bf16.
        device: where the model runs.
        desc: the progress bar's label.
        progress: called as ``progress(done, total)`` after every denoising step of every batch (e.g. a
            progress bar); None: not called.

    Returns:
        (N, H, W) float32 in [0, 1]: image i is generated from ``masks[i]`` and ``seeds[i]``.

    Raises:
        ValueError: unequal numbers of masks and seeds, an unknown sampler, or DDPM with ``steps`` other
            than 0 or the model's number of training timesteps.
    """
    if len(masks) != len(seeds):
        raise ValueError(f"{len(masks)} masks but {len(seeds)} seeds")
    if settings.sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {settings.sampler!r} (expected one of {', '.join(SAMPLERS)})")
    solver = settings.sampler.startswith("dpmpp")
    scheduler = make_scheduler(scheduler_config, "ddpm" if solver else settings.sampler)
    steps = settings.steps or scheduler_config.num_train_timesteps
    if settings.sampler == "ddpm" and steps != scheduler_config.num_train_timesteps:
        # MONAI's DDPMScheduler.step always goes from t to t - 1: strided DDPM returns noise
        raise ValueError(f"DDPM samples every one of the model's {scheduler_config.num_train_timesteps} timesteps "
                         f"(got steps={steps}); use steps 0 or {scheduler_config.num_train_timesteps}, or DDIM with eta 1")
    if solver:
        timesteps = timestep_grid(scheduler.alphas_cumprod, steps, settings.spacing)
    else:
        scheduler.set_timesteps(steps, device=device)
        timesteps = [int(t) for t in scheduler.timesteps]
    stochastic = settings.sampler in ("ddpm", "dpmpp_2m_sde") or (settings.sampler == "ddim" and settings.eta > 0)
    model.eval().to(device)
    net = model
    if settings.compile and device.type == "cuda":  # CPU: compiling costs more than 10 calls save
        net = torch.compile(model.to(memory_format=torch.channels_last))
    bf16 = native_bf16(device) if settings.bf16 is None else settings.bf16
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    def predict(x: torch.Tensor, t: int, cond: torch.Tensor) -> torch.Tensor:
        with autocast:
            return net(x, torch.full((len(x),), t, device=device, dtype=torch.long), cond).float()

    def denoise(x: torch.Tensor, t: int, cond: torch.Tensor) -> torch.Tensor:  # the solvers' x0, clipped as MONAI's
        x0 = x0_prediction(predict(x, t, cond), x, scheduler.alphas_cumprod[t], scheduler.prediction_type)
        return x0.clamp(*scheduler.clip_sample_values) if scheduler.clip_sample else x0

    out = np.empty(masks.shape, np.float32)
    batches = range(0, len(masks), settings.batch_size)
    bar = tqdm(total=len(batches) * len(timesteps), desc=desc, unit="step", mininterval=2.0, dynamic_ncols=True)

    def tick() -> None:
        bar.update()
        if progress is not None:
            progress(bar.n, bar.total)

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
        if solver:
            noise = step_noise(step_generators, len(timesteps) - 1, x.shape[1:], device) if stochastic else None
            x = dpm_solver_pp(lambda x_t, t: denoise(x_t, t, cond), x, timesteps, scheduler.alphas_cumprod, noise, tick)
        else:
            for t in timesteps:
                prediction = predict(x, t, cond)
                if not stochastic:  # DDIM with eta 0: no noise
                    x, _ = scheduler.step(prediction, t, x)
                else:
                    noise = torch.cat([torch.randn((1, *x.shape[1:]), generator=g, device=device)
                                       for g in step_generators])
                    x = stochastic_step(scheduler, prediction, t, x, noise, settings.eta)
                tick()
        out[start : start + len(x)] = from_model_range(x)[:, 0].float().cpu().numpy()
    bar.close()
    return out
