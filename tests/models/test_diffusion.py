"""Segmentation-guided diffusion: conditioning, ablation, kill-safe training, reproducible sampling, model files."""

import pickle

import numpy as np
import pandas as pd
import pytest
import torch

import segdiff.models.diffusion as diffusion
import segdiff.models.training as training
from segdiff.core.checkpoints import MODEL_FORMAT, save_file
from segdiff.data.dataset import SliceSet
from segdiff.models.diffusion import (DenoiserConfig, SchedulerConfig, SegGuidedDenoiser, ablate_masks, make_scheduler, min_snr_weights, fit_diffusion,
                               load_diffusion, one_hot, save_diffusion)
from segdiff.core.errors import InputError
from segdiff.core.labels import LabelMap
from segdiff.data.loader import LoaderSettings
from segdiff.data.store import SliceStore
from segdiff.models.jobs import DiffusionTrainJob, train_diffusion
from segdiff.sampling.samplers import SamplerSettings, generate, initial_noise, sample_seed, stochastic_step
from segdiff.models.training import TrainSettings, warmup_cosine
from tiny import TINY, SCHED, make_subset, perturbed_model, tiny_slices

@pytest.mark.parametrize("conditioning", ["concat", "add"])
def test_both_conditioning_modes_use_the_mask(conditioning):
    torch.manual_seed(0)
    model = SegGuidedDenoiser(DenoiserConfig(conditioning=conditioning, **TINY)).eval()
    with torch.no_grad():
        for p in model.parameters():  # MONAI zero-initialises the output convolution
            p.normal_(0, 0.2)
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([10, 20])
    masks = torch.as_tensor(tiny_slices(2).mask)
    with torch.no_grad():
        out = model(x, t, one_hot(masks, 4))
        other = model(x, t, one_hot(torch.zeros_like(masks), 4))
    assert out.shape == (2, 1, 16, 16)
    assert not torch.allclose(out, other)  # the mask changes the prediction
    first = model.unet.conv_in
    if conditioning == "concat":
        assert first.conv.in_channels == 1 + 4
    else:
        assert first.conv_in.conv.in_channels == 1 and first.embed.in_channels == 4


def test_mask_ablation_drops_whole_classes_per_sample():
    masks = torch.as_tensor(np.repeat(tiny_slices(1).mask, 64, axis=0))
    g = torch.Generator().manual_seed(0)
    assert torch.equal(ablate_masks(masks, 0.0, g), masks)
    assert not ablate_masks(masks, 1.0, g).any()
    out = ablate_masks(masks, 0.5, g)
    for original, ablated in zip(masks, out):
        for c in (1, 2, 3):
            kept = ablated[original == c]
            assert (kept == c).all() or (kept == 0).all()  # a class is kept whole or dropped whole
        assert (ablated[original == 0] == 0).all()
    dropped = [(out[i][masks[i] == 2] == 0).all().item() for i in range(64)]
    assert 16 < sum(dropped) < 48  # about half of the samples lost class 2


def test_sampling_never_ablates(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("ablate_masks called during sampling")

    monkeypatch.setattr(diffusion, "ablate_masks", forbidden)
    seen = []

    class Spy(torch.nn.Module):
        def forward(self, x, t, cond):
            seen.append(cond.clone())
            return torch.zeros_like(x)

    masks = tiny_slices(3).mask
    generate(Spy(), SCHED, masks, [1, 2, 3], 4, SamplerSettings(steps=2), torch.device("cpu"))
    assert all(torch.equal(c, one_hot(torch.as_tensor(masks), 4)) for c in seen)


#: every sampler setting the schema allows (DDIM with and without step noise, DDPM, DPM-Solver++ ODE and SDE on
#: both grids)
SAMPLERS = [SamplerSettings(steps=4), SamplerSettings(steps=4, eta=0.5), SamplerSettings(steps=4, eta=1.0),
            SamplerSettings(sampler="ddpm", steps=0)] + [
            SamplerSettings(sampler=name, steps=4, spacing=spacing)
            for name in ("dpmpp_2m", "dpmpp_2m_sde") for spacing in ("lambda", "linear")]


@pytest.mark.parametrize("settings", SAMPLERS, ids=lambda s: f"{s.sampler}-eta{s.eta}-{s.spacing}")
def test_sampling_does_not_depend_on_batch_size_order_or_neighbours(settings):
    model = perturbed_model()
    masks = tiny_slices(5).mask
    seeds = [sample_seed(7, "case", i, 0) for i in range(5)]
    results = []
    for batch_size in (1, 2, 5):
        settings.batch_size = batch_size
        results.append(generate(model, SCHED, masks, seeds, 4, settings, torch.device("cpu")))
    np.testing.assert_allclose(results[0], results[1], atol=1e-5)
    np.testing.assert_allclose(results[0], results[2], atol=1e-5)
    # a slice alone, reordered, or among other slices gives the same image
    order = [3, 1, 4, 0, 2]
    reordered = generate(model, SCHED, masks[order], [seeds[i] for i in order], 4, settings, torch.device("cpu"))
    np.testing.assert_allclose(reordered, results[2][order], atol=1e-5)
    alone = generate(model, SCHED, masks[2:3], seeds[2:3], 4, settings, torch.device("cpu"))
    np.testing.assert_allclose(alone[0], results[2][2], atol=1e-5)
    # k generations of one mask (different seeds) differ
    same_mask = np.repeat(masks[:1], 3, axis=0)
    k_seeds = [sample_seed(7, "case", 0, j) for j in range(3)]
    k = generate(model, SCHED, same_mask, k_seeds, 4, settings, torch.device("cpu"))
    assert np.abs(k[0] - k[1]).mean() > 1e-3 and np.abs(k[1] - k[2]).mean() > 1e-3
    # the noise of a slice is its own: the same whatever other slices are in the batch
    assert torch.equal(initial_noise(seeds[:3], (16, 16))[2], initial_noise(seeds[2:3], (16, 16))[0])
    assert sample_seed(7, "case", 1, 0) != sample_seed(7, "case", 1, 1) != sample_seed(8, "case", 1, 1)


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("sampler,eta", [("ddpm", 0.0), ("ddim", 0.5), ("ddim", 1.0)])
def test_batched_stochastic_step_equals_monai_step_per_slice(sampler, eta, prediction_type):
    config = SchedulerConfig(num_train_timesteps=50, prediction_type=prediction_type)
    scheduler = make_scheduler(config, sampler)
    scheduler.set_timesteps(50 if sampler == "ddpm" else 10)
    torch.manual_seed(1)
    x, prediction = torch.randn(3, 1, 8, 8), torch.randn(3, 1, 8, 8)
    for t in [int(scheduler.timesteps[0]), int(scheduler.timesteps[len(scheduler.timesteps) // 2]), 0]:
        seeds = [11, 12, 13]
        noise = torch.cat([torch.randn((1, 1, 8, 8), generator=torch.Generator().manual_seed(s)) for s in seeds])
        ours = stochastic_step(scheduler, prediction, t, x, noise, eta)
        kwargs = {"eta": eta} if sampler == "ddim" else {}
        theirs = torch.cat([scheduler.step(prediction[i : i + 1], t, x[i : i + 1], generator=torch.Generator().manual_seed(s),
                                           **kwargs)[0] for i, s in enumerate(seeds)])
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_strided_ddpm_is_refused():
    with pytest.raises(ValueError, match="DDPM samples every one of the model's 50 timesteps"):
        generate(perturbed_model(), SCHED, tiny_slices(1).mask, [1], 4, SamplerSettings(sampler="ddpm", steps=10),
                 torch.device("cpu"))


def test_min_snr_weights_follow_the_prediction_type():
    t = torch.tensor([0, 25, 49])
    weights = {}
    for prediction_type in ("epsilon", "v_prediction", "sample"):
        scheduler = make_scheduler(SchedulerConfig(num_train_timesteps=50, schedule="cosine", prediction_type=prediction_type))
        alpha = scheduler.alphas_cumprod[t].double()
        snr = alpha / (1 - alpha)
        weights[prediction_type] = min_snr_weights(scheduler, t, 5.0).double()
    x0_space = torch.minimum(snr, torch.tensor(5.0))  # every parametrisation weights the x0 error by min(SNR, 5)
    torch.testing.assert_close(weights["sample"], x0_space, rtol=1e-5, atol=0)
    torch.testing.assert_close(weights["epsilon"] * snr, x0_space, rtol=1e-5, atol=0)
    torch.testing.assert_close(weights["v_prediction"] * (snr + 1), x0_space, rtol=1e-5, atol=0)


def test_warmup_cosine_schedule():
    f = warmup_cosine(10, 110)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.5) and f(110) == pytest.approx(0.0)


def _fit(tmp_path, steps=6, name="run"):
    settings = TrainSettings(steps=steps, lr=1e-3, warmup_steps=2, checkpoint_every=2, seed=3, ema_decay=0.9)
    return fit_diffusion(tiny_slices(), DenoiserConfig(**TINY), SCHED, settings, 4, tmp_path / f"{name}.ckpt",
                         torch.device("cpu"), ablation_p=0.3)


def test_kill_and_resume_equals_uninterrupted_run(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    reference = _fit(tmp_path, name="reference")

    def kill_at_5(step):
        if step == 5:
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(training, "_after_step", kill_at_5)
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path, name="killed")
    assert (tmp_path / "killed.ckpt").exists()
    monkeypatch.setattr(training, "_after_step", lambda step: None)
    resumed = _fit(tmp_path, name="killed")
    assert resumed.resumed_from == 4  # the last checkpoint before the kill
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in reference.history]
    for (name, a), (_, b) in zip(reference.ema.state_dict().items(), resumed.ema.state_dict().items()):
        assert torch.equal(a, b), name


def test_model_file_roundtrip_and_refusals(tmp_path):
    result = _fit(tmp_path, steps=2)
    path = tmp_path / "model.pt"
    save_diffusion(path, result.ema, SCHED, {"modality": "ct"})
    model, sched, meta = load_diffusion(path)
    assert sched == SCHED and meta == {"modality": "ct"}
    for a, b in zip(result.ema.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a.cpu(), b)

    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(path.read_bytes()[:300])
    with pytest.raises(InputError, match="corrupt.pt: not a readable diffusion file"):
        load_diffusion(corrupt)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(InputError, match="foreign.pt: not a segdiff diffusion file"):
        load_diffusion(foreign)
    other_kind = tmp_path / "segmentor.pt"
    save_file(other_kind, {"state_dict": {}}, MODEL_FORMAT, "segmentor")
    with pytest.raises(InputError, match="holds a 'segmentor' model, expected 'diffusion'"):
        load_diffusion(other_kind)

    class Evil:
        def __reduce__(self):
            return (print, ("arbitrary code",))

    unsafe = tmp_path / "unsafe.pt"
    unsafe.write_bytes(b"")
    torch.save({"format": MODEL_FORMAT, "kind": "diffusion", "payload": Evil()}, unsafe, pickle_module=pickle)
    with pytest.raises(InputError, match="unsafe.pt: not a readable diffusion file"):
        load_diffusion(unsafe)


def test_training_job_writes_the_model_its_loss_and_curve(tmp_path):
    """The workflow's training job (:func:`train_diffusion`): the model fit_diffusion trains, with the job's meta."""
    torch.set_num_threads(1)
    _, store = make_subset(tmp_path)
    labels = LabelMap({1: "liver", 2: "spleen", 3: "kidney"})
    settings = TrainSettings(steps=2, lr=1e-3, checkpoint_every=10, seed=3, ema_decay=0.9, bf16=False)
    job = DiffusionTrainJob(modality="ct", view="axial", stores=(str(store),), labels=labels,
                            denoiser=DenoiserConfig(**TINY), scheduler=SCHED, train=settings, batch_size=4, ablation_p=0.3,
                            checkpoint=tmp_path / "job.ckpt", device=torch.device("cpu"), loader=LoaderSettings(),
                            world_size=1, model=tmp_path / "model.pt", loss=tmp_path / "loss.csv", figure=tmp_path / "loss.png")
    train_diffusion(job)
    slices = SliceStore([store], ["train"])
    direct = fit_diffusion(slices, DenoiserConfig(**TINY), SCHED, settings, 4, tmp_path / "direct.ckpt", torch.device("cpu"),
                           ablation_p=0.3)
    model, sched, meta = load_diffusion(job.model)
    assert sched == SCHED
    assert meta == {"modality": "ct", "view": "axial", "train_slices": len(slices), "labels": labels.names, "seed": 3,
                    "classes_seen": slices.classes, "body_id": None}
    for (name, a), b in zip(direct.ema.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a.cpu(), b), name
    assert len(pd.read_csv(job.loss)) == 2 and job.figure.stat().st_size > 1000
