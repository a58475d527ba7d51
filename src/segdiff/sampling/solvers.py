"""DPM-Solver++ (Lu et al. 2022): few-step sampling of a variance-preserving diffusion model.

The solver steps the model's prediction of the clean image x0 (any prediction type converts to it)
along a grid of timesteps in λ = log(α/σ), the half log-SNR, with α² = ᾱ and σ² = 1 - ᾱ of the
model's own training schedule (``alphas_cumprod``: the betas are the training scheduler's, not a
copy). Two variants:

- ``dpmpp_2m``: the multistep second-order solver of the probability-flow ODE (deterministic given
  the initial noise);
- ``dpmpp_2m_sde``: its SDE variant, which adds fresh noise at every step, so that the k generations
  of a mask stay samples of p(image | mask) rather than k points of one deterministic map.

The grid (:func:`timestep_grid`) ends with a network call at t = 0 and returns that call's x0: the
last call decides the image, and a grid that stops short of t = 0 leaves the last jump to a
prediction made at higher noise. Both variants equal diffusers' ``DPMSolverMultistepScheduler``
(``algorithm_type`` ``dpmsolver++`` or ``sde-dpmsolver++``, ``solver_order`` 2, ``final_sigmas_type``
``zero``) on the same timesteps; ``tests/sampling/test_solvers.py`` checks it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

__all__ = ["SPACINGS", "LAMBDA_FLOOR", "half_log_snr", "timestep_grid", "dpm_solver_pp"]

#: how the grid's timesteps are spread: uniformly in λ (the solver's variable), or in t
SPACINGS = ("lambda", "linear")

#: where the grid starts: the noisiest timestep whose λ is at least this (SNR = e^{2λ} = 3.7e-5, α = 0.006).
#: The cosine schedule's last timesteps reach λ = -9.9; steps spent there only denoise pure noise.
LAMBDA_FLOOR = -5.1


def half_log_snr(alphas_cumprod: torch.Tensor) -> np.ndarray:
    """λ(t) = log(α_t / σ_t) = ½ log(ᾱ_t / (1 - ᾱ_t)), in float64.

    Args:
        alphas_cumprod: (T,) the training schedule's ᾱ.

    Returns:
        (T,) λ, decreasing in t.
    """
    a = alphas_cumprod.detach().double().cpu().numpy()
    return 0.5 * (np.log(a) - np.log1p(-a))


def timestep_grid(alphas_cumprod: torch.Tensor, steps: int, spacing: str = "lambda") -> list[int]:
    """``steps`` distinct integer timesteps, descending, from where λ reaches :data:`LAMBDA_FLOOR` to 0.

    The grid starts higher only when ``steps`` exceeds the timesteps from the floor down.

    Args:
        alphas_cumprod: (T,) the training schedule's ᾱ.
        steps: network calls (NFE), at least 1.
        spacing: ``lambda``: uniform in λ (steps crowd where the image changes, near t = 0);
            ``linear``: uniform in t.

    Returns:
        The timesteps, the last one 0 (each rounded to the nearest integer, then pushed up where
        rounding made two equal, and down where that left the schedule).

    Raises:
        ValueError: an unknown spacing, or ``steps`` outside ``[1, T]``.
    """
    if spacing not in SPACINGS:
        raise ValueError(f"unknown spacing {spacing!r} (expected one of {', '.join(SPACINGS)})")
    lam = half_log_snr(alphas_cumprod)
    n_train = len(lam)
    if not 1 <= steps <= n_train:
        raise ValueError(f"steps must be in [1, {n_train}] (the model's training timesteps), got {steps}")
    # from the floor, or from higher up where more steps than timesteps below it are asked for
    start = max(int(np.flatnonzero(lam >= LAMBDA_FLOOR).max(initial=0)), steps - 1)
    if spacing == "lambda":  # np.interp needs increasing x: -λ increases with t
        t = np.interp(-np.linspace(lam[start], lam[0], steps), -lam[: start + 1], np.arange(start + 1))
    else:
        t = np.linspace(start, 0, steps)
    grid = np.rint(t).astype(int)
    grid[-1] = 0
    for i in range(steps - 2, -1, -1):  # distinct: each at least one above the next
        grid[i] = max(grid[i], grid[i + 1] + 1)
    # and within the schedule (the minimum of two strictly decreasing sequences is one)
    return np.minimum(grid, n_train - 1 - np.arange(steps)).tolist()


def dpm_solver_pp(
    denoise: Callable[[torch.Tensor, int], torch.Tensor],
    x: torch.Tensor,
    timesteps: Sequence[int],
    alphas_cumprod: torch.Tensor,
    noise: torch.Tensor | None = None,
    callback: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Solve from ``x`` at ``timesteps[0]`` to the clean image with DPM-Solver++(2M), ODE or SDE.

    Step i goes from s = ``timesteps[i]`` to t = ``timesteps[i + 1]`` with h = λ_t - λ_s and
    D = x0_i + (h / 2h_prev)(x0_i - x0_{i-1}) (D = x0_i at the first step):

    - ODE: x_t = (σ_t/σ_s) x_s + α_t (1 - e^{-h}) D;
    - SDE: x_t = (σ_t/σ_s) e^{-h} x_s + α_t (1 - e^{-2h}) D + σ_t √(1 - e^{-2h}) z.

    The last call's x0 is the result (the step to σ = 0 is first order).

    Args:
        denoise: ``(x, t) -> x0``: the model's clean-image prediction, float32, in the model range.
        x: (B, ...) the start, standard normal noise.
        timesteps: distinct, descending, the last one 0 (:func:`timestep_grid`).
        alphas_cumprod: (T,) the training schedule's ᾱ.
        noise: SDE: (B, len(timesteps) - 1, ...) standard normal noise, step i's noise in ``[:, i]``
            (one draw per slice keeps each slice independent of its batch); None: the ODE.
        callback: called after every network call (a progress bar).

    Returns:
        (B, ...) the clean images, float32.

    Raises:
        ValueError: SDE noise of the wrong shape.
    """
    if not len(timesteps):
        raise ValueError("timesteps is empty")
    if noise is not None and tuple(noise.shape) != (x.shape[0], len(timesteps) - 1, *x.shape[1:]):
        raise ValueError(f"noise must be {(x.shape[0], len(timesteps) - 1, *x.shape[1:])}, got {tuple(noise.shape)}")
    a = alphas_cumprod.detach().double().cpu()
    alpha, sigma, lam = a.sqrt().tolist(), (1 - a).sqrt().tolist(), half_log_snr(alphas_cumprod).tolist()

    def call(x: torch.Tensor, t: int) -> torch.Tensor:
        x0 = denoise(x, t).float()
        if callback is not None:
            callback()
        return x0

    x = x.float()
    x0_prev, h_prev = None, None
    for i, (s, t) in enumerate(zip(map(int, timesteps[:-1]), map(int, timesteps[1:]))):
        x0 = call(x, s)
        h = lam[t] - lam[s]
        d = x0 if x0_prev is None else x0 + (0.5 * h / h_prev) * (x0 - x0_prev)
        if noise is None:
            x = (sigma[t] / sigma[s]) * x + (alpha[t] * -math.expm1(-h)) * d
        else:
            x = ((sigma[t] / sigma[s]) * math.exp(-h)) * x + (alpha[t] * -math.expm1(-2 * h)) * d \
                + (sigma[t] * math.sqrt(-math.expm1(-2 * h))) * noise[:, i]
        x0_prev, h_prev = x0, h
    return call(x, int(timesteps[-1]))  # the step to sigma 0 is first order: the last call's x0
