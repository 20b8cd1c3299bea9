"""The training objectives on the library's zero-shot model and attack loop: AGFT's formula and attack, the one
attack loop's contract, and an AGFT training step through advsimplex-train's machinery."""

from __future__ import annotations

import copy

import pytest
import torch
from test_train_support import tiny_config, write_cifar_slice

from advsimplex import LinfBall, ZeroShotModel, sign_gradient_ascent
from advsimplex.train import train
from advsimplex.train.methods import AGFTObjective, FAREObjective
from advsimplex.train.presets import load_config
from helpers import micro_clip, unit_rows


def models(seed: int = 0):
    clip = micro_clip(seed=seed, dtype=torch.float32)
    text = unit_rows(4, 8, dtype=torch.float32)
    model = ZeroShotModel.from_clip(clip, text, 20.0)
    original = ZeroShotModel.from_clip(copy.deepcopy(clip).eval(), text, 20.0)
    return model, original


def batch(n: int = 5):
    g = torch.Generator().manual_seed(3)
    return torch.rand(n, 3, 8, 8, generator=g), torch.tensor([0, 1, 2, 3, 0])[:n]


def test_sign_gradient_ascent_observes_every_iterate_and_stays_in_the_ball():
    x, _ = batch()
    w = torch.randn(3 * 8 * 8, generator=torch.Generator().manual_seed(0))
    objective = lambda z: ((z.flatten(1) @ w) ** 2, None)
    ball = LinfBall.around(x, 4 / 255)
    seen = []
    out = sign_gradient_ascent(objective, ball.uniform(x, 4 / 255, torch.Generator().manual_seed(1)), ball,
                               alpha=1 / 255, steps=5, observe=lambda i, z, v, aux: seen.append((i, v)))  # fmt: skip
    assert [i for i, _ in seen] == list(range(6))
    assert (out - x).abs().max() <= 4 / 255 + 1e-7 and out.min() >= 0 and out.max() <= 1
    assert (seen[-1][1] > seen[0][1]).all()  # a quadratic form along its gradient's sign grows


def test_agft_loss_is_the_soft_cross_entropy_against_the_original():
    model, original = models()
    cfg = load_config(None, {"method": "agft", "model": "advsimplex-micro-vit", "attack_steps": 3, "eps": 4 / 255})
    objective = AGFTObjective(model, original, cfg)
    x, y = batch()
    loss, metrics = objective(x, y, torch.Generator().manual_seed(0))
    # truth written out: q = softmax(γ s_t cos(f_0(x), T)); the attacked image from the same generator
    scale, gamma, text = 180.0, 0.4, model.text_features

    def cos(zs, px):
        e = zs.embed(px)
        return (e / e.norm(dim=-1, keepdim=True)) @ text.t()

    q = torch.softmax(gamma * scale * cos(original, x), -1)
    soft_ce = lambda px: -(q * torch.log_softmax(scale * cos(model, px), -1)).sum(-1)
    delta = objective.attack.perturb(lambda z: objective.soft_ce(z, q), x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(loss, soft_ce(x + delta).mean())
    assert (delta.abs().max() <= 4 / 255 + 1e-7) and ((x + delta).min() >= 0)
    assert soft_ce(x + delta).mean() > soft_ce(x).mean()  # the inner attack increases the same loss
    assert set(metrics) == {"soft_ce_adv", "target_max"}


def test_agft_and_fare_attacks_leave_parameter_gradients_alone():
    model, original = models()
    cfg = load_config(None, {"method": "fare", "model": "advsimplex-micro-vit", "attack_steps": 2})
    x, _ = batch()
    for objective in (FAREObjective(model, original, cfg), AGFTObjective(model, original, cfg)):
        model.zero_grad()
        objective.attack.perturb(lambda z, o=objective: model.embed(z).square().sum(-1), x,
                                 torch.Generator().manual_seed(0))  # fmt: skip
        assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("extra", [{}, {"agft_gamma": 1.0, "agft_scale": 100.0}])
def test_agft_trains(tmp_path, extra):
    npz = write_cifar_slice(tmp_path / "c10.npz", "train", 24)
    cfg = tiny_config(npz, tmp_path / "run", method="agft", steps=2, **extra)
    result = train(cfg)
    assert result.finished and result.metrics["soft_ce_adv"] > 0


@pytest.mark.parametrize(("key", "value"), [("agft_scale", 0.0), ("agft_gamma", -1.0)])
def test_agft_settings_are_validated(key, value):
    from advsimplex.train import ConfigError

    with pytest.raises(ConfigError, match=key):
        load_config(None, {"method": "agft", key: value})
