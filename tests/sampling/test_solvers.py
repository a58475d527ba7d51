"""DPM-Solver++(2M), ODE and SDE: its grid, and equality with diffusers' maintained implementation."""

import numpy as np
import pytest
import torch
from diffusers import DPMSolverMultistepScheduler

from segdiff.models.diffusion import SchedulerConfig, make_scheduler
from segdiff.sampling.samplers import x0_prediction
from segdiff.sampling.solvers import LAMBDA_FLOOR, dpm_solver_pp, half_log_snr, timestep_grid

COSINE = make_scheduler(SchedulerConfig(num_train_timesteps=1000, schedule="cosine", prediction_type="sample"))


def fake_prediction(x: torch.Tensor, t: int) -> torch.Tensor:
    """A smooth, nonlinear stand-in for a network's output, bounded like an image in [-1, 1]."""
    return torch.tanh(0.8 * x + 0.3 * torch.sin(torch.arange(x[0].numel()).view(x.shape[1:]) * 0.37) + t / 2000)


@pytest.mark.parametrize("spacing", ["lambda", "linear"])
@pytest.mark.parametrize("steps", [1, 3, 5, 10, 50])
def test_grid_is_distinct_descending_from_the_lambda_floor_to_zero(spacing, steps):
    grid = timestep_grid(COSINE.alphas_cumprod, steps, spacing)
    lam = half_log_snr(COSINE.alphas_cumprod)
    start = int(np.flatnonzero(lam >= LAMBDA_FLOOR).max())
    assert len(grid) == steps and grid[-1] == 0
    assert all(a > b for a, b in zip(grid, grid[1:]))
    if steps > 1:
        assert grid[0] == start and lam[start] >= LAMBDA_FLOOR > lam[start + 1]
    if spacing == "lambda" and 3 <= steps <= 10:  # even in λ, up to rounding to whole timesteps
        gaps = np.diff(lam[grid])
        assert np.ptp(gaps) < 0.1 * gaps.mean()
    if spacing == "linear" and steps >= 3:
        assert np.ptp(np.diff(grid)) <= 1


def test_grid_refuses_unknown_spacing_and_impossible_steps():
    with pytest.raises(ValueError, match="unknown spacing 'karras'"):
        timestep_grid(COSINE.alphas_cumprod, 5, "karras")
    with pytest.raises(ValueError, match=r"steps must be in \[1, 1000\]"):
        timestep_grid(COSINE.alphas_cumprod, 0)
    assert timestep_grid(COSINE.alphas_cumprod, 1000, "lambda") == list(range(999, -1, -1))


@pytest.mark.parametrize("prediction_type", ["sample", "epsilon", "v_prediction"])
@pytest.mark.parametrize("sde", [False, True], ids=["ode", "sde"])
@pytest.mark.parametrize("steps,spacing", [(3, "lambda"), (8, "lambda"), (10, "linear"), (25, "lambda")])
def test_equals_diffusers_dpm_solver_multistep(prediction_type, sde, steps, spacing):
    config = SchedulerConfig(num_train_timesteps=1000, schedule="cosine", prediction_type=prediction_type)
    ours_scheduler = make_scheduler(config)
    grid = timestep_grid(ours_scheduler.alphas_cumprod, steps, spacing)
    theirs = DPMSolverMultistepScheduler(
        num_train_timesteps=1000, trained_betas=ours_scheduler.betas.numpy(), prediction_type=prediction_type,
        algorithm_type="sde-dpmsolver++" if sde else "dpmsolver++", solver_order=2, final_sigmas_type="zero",
        lower_order_final=True)
    np.testing.assert_allclose(theirs.alphas_cumprod.numpy(), ours_scheduler.alphas_cumprod.numpy(), rtol=1e-6)
    theirs.set_timesteps(timesteps=grid)
    assert theirs.timesteps.tolist() == grid

    torch.manual_seed(0)
    start = torch.randn(3, 1, 6, 6)
    noise = torch.randn(3, len(grid) - 1, 1, 6, 6) if sde else None
    alphas = ours_scheduler.alphas_cumprod

    def denoise(x, t):
        return x0_prediction(fake_prediction(x, t), x, alphas[t], prediction_type)

    calls = []
    ours = dpm_solver_pp(denoise, start, grid, alphas, noise, callback=lambda: calls.append(1))
    x = start.clone()
    for i, t in enumerate(theirs.timesteps):
        x = theirs.step(fake_prediction(x, int(t)), t, x,
                        variance_noise=noise[:, i] if sde and i < len(grid) - 1 else None).prev_sample
    assert len(calls) == steps  # one network call per step: NFE = steps
    torch.testing.assert_close(ours, x, rtol=2e-4, atol=2e-4)


def test_the_sde_adds_noise_and_the_ode_does_not():
    alphas = COSINE.alphas_cumprod
    grid = timestep_grid(alphas, 6)
    start = torch.randn(2, 1, 6, 6, generator=torch.Generator().manual_seed(3))
    noises = [torch.randn(2, 5, 1, 6, 6, generator=torch.Generator().manual_seed(s)) for s in (1, 2)]
    ode = dpm_solver_pp(fake_prediction, start, grid, alphas)
    sde = [dpm_solver_pp(fake_prediction, start, grid, alphas, n) for n in noises]
    assert torch.equal(ode, dpm_solver_pp(fake_prediction, start, grid, alphas))
    assert (sde[0] - sde[1]).abs().mean() > 1e-2  # other step noise, other sample
    with pytest.raises(ValueError, match=r"noise must be \(2, 5, 1, 6, 6\)"):
        dpm_solver_pp(fake_prediction, start, grid, alphas, noises[0][:, :4])
    # one call: the x0 of the noisiest timestep
    torch.testing.assert_close(dpm_solver_pp(fake_prediction, start, [0], alphas), fake_prediction(start, 0))
