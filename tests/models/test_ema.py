"""The EMA of the trained weights, with the warm-up ramp of diffusers' EMAModel."""

import pytest
import torch
from torch import nn

import segdiff.models.training as training
from segdiff.models.training import TrainSettings, ema_decay_at, train


def test_decay_ramps_up_to_the_configured_decay():
    assert ema_decay_at(1, 0.9999) == pytest.approx(2 / 11)
    assert ema_decay_at(90, 0.9999) == pytest.approx(91 / 100)
    assert ema_decay_at(10**6, 0.9999) == 0.9999
    assert ema_decay_at(1, 0.9999, warmup=False) == 0.9999
    # an EMA of 0.9999 after 1,500 steps: 86 % initial weights without the ramp, under 1 % with it
    kept = 1.0
    for n in range(1, 1500):
        kept *= ema_decay_at(n, 0.9999)
    assert 0.9999**1500 > 0.86 and kept < 0.01


@pytest.mark.parametrize("warmup", [True, False])
def test_ema_weights_follow_the_ramp_step_by_step(tmp_path, monkeypatch, warmup):
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    weights = []
    monkeypatch.setattr(training, "_after_step", lambda step: weights.append(model.weight.detach().clone()))
    data = [(torch.randn(4, 3), torch.randn(4, 1)) for _ in range(12)]

    def loss_fn(net, batch, generator):
        x, y = batch
        return ((net(x) - y) ** 2).mean(), len(x)

    settings = TrainSettings(steps=12, lr=0.05, ema_decay=0.95, ema_warmup=warmup, checkpoint_every=100, bf16=False)
    result = train(model, loss_fn, lambda start: data[start:], settings, tmp_path / "ckpt", torch.device("cpu"), kind="test")
    expected = weights[0]  # the first update copies the weights
    for n, w in enumerate(weights[1:], start=1):
        decay = ema_decay_at(n, 0.95, warmup)
        expected = decay * expected + (1 - decay) * w
    torch.testing.assert_close(result.ema.weight, expected, rtol=1e-6, atol=1e-7)
    assert not torch.allclose(result.ema.weight, weights[-1])
