"""The PGD trajectory recorder (math spec §2)."""

import pytest
import torch

from advsimplex import pgd_trajectory
from advsimplex.evaluation import margin_loss, pgd_attack
from helpers import micro_clip, unit_rows


@pytest.fixture(scope="module")
def setup():
    model = micro_clip(seed=1, dtype=torch.float32)
    text = unit_rows(4, 8, dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 8, 8, generator=g)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    logits_fn = lambda px: 30.0 * torch.nn.functional.normalize(model.visual(px), dim=-1) @ text.t()
    return model, text, x, y, logits_fn


@pytest.mark.parametrize("eps", [0.0, 1 / 255, 8 / 255])
def test_vertices_stay_in_ball_and_box(setup, eps):
    _, _, x, y, logits_fn = setup
    traj = pgd_trajectory(logits_fn, x, y, eps=eps, alpha=eps / 2 + 1e-4, steps=5)
    assert traj.deltas.shape == (6, 5, 3, 8, 8) and traj.probs.shape == (6, 5)
    assert traj.deltas.abs().max() <= eps + 1e-7
    adv = x.unsqueeze(1) + traj.deltas
    assert adv.min() >= 0 and adv.max() <= 1


def test_recorded_probabilities_are_those_of_the_vertices(setup):
    _model, _text, x, y, logits_fn = setup
    traj = pgd_trajectory(logits_fn, x, y, eps=4 / 255, alpha=1 / 255, steps=4)
    with torch.no_grad():
        for k in range(4):
            p = torch.softmax(logits_fn(x + traj.deltas[:, k]), dim=-1).gather(1, y[:, None]).squeeze(1)
            torch.testing.assert_close(traj.probs[:, k], p, rtol=1e-5, atol=1e-6)


def test_attack_lowers_true_class_probability_and_leaves_parameter_grads_alone(setup):
    model, _text, x, y, logits_fn = setup
    for p in model.parameters():
        p.grad = None
    with torch.no_grad():
        clean = torch.softmax(logits_fn(x), -1).gather(1, y[:, None]).squeeze(1)
    traj = pgd_trajectory(logits_fn, x, y, eps=8 / 255, alpha=2 / 255, steps=6)
    assert (traj.probs[:, -1] < clean).float().mean() >= 0.8
    assert all(p.grad is None for p in model.parameters())


def test_seeded_start_is_reproducible(setup):
    _, _, x, y, logits_fn = setup
    run = lambda: pgd_trajectory(logits_fn, x, y, steps=3, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(run().deltas, run().deltas, rtol=0, atol=0)


def test_first_step_is_a_signed_gradient_step(setup):
    _, _text, x, y, logits_fn = setup
    gen = torch.Generator().manual_seed(9)
    traj = pgd_trajectory(logits_fn, x, y, eps=1.0, alpha=0.01, steps=1, init_std=0.0, generator=gen)
    xr = x.clone().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(logits_fn(xr), y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, xr)
    expected = (x + 0.01 * grad.sign()).clamp(0, 1) - x
    torch.testing.assert_close(traj.deltas[:, 0], expected)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"eps": -0.1}, "eps must lie in"), ({"eps": 2.0}, "eps must lie in"), ({"alpha": 0.0}, "alpha"),
     ({"steps": 0}, "steps")],
)  # fmt: skip
def test_bad_budget(setup, kwargs, match):
    _, _, x, y, logits_fn = setup
    with pytest.raises(ValueError, match=match):
        pgd_trajectory(logits_fn, x, y, **kwargs)


def test_bad_labels(setup):
    _, _, x, y, logits_fn = setup
    with pytest.raises(ValueError, match=r"y must have shape \(B,\)"):
        pgd_trajectory(logits_fn, x, y[:3])
    with pytest.raises(TypeError, match="integer"):
        pgd_trajectory(logits_fn, x, y.float())


@pytest.mark.parametrize("loss", ["ce", "cw"])
def test_pgd_attack_stays_in_ball_and_beats_clean(setup, loss):
    _, _, x, y, logits_fn = setup
    eps = 8 / 255
    adv = pgd_attack(
        logits_fn, x, y, eps=eps, alpha=2 / 255, steps=10, loss=loss, generator=torch.Generator().manual_seed(0)
    )
    assert (adv - x).abs().max() <= eps + 1e-7 and adv.min() >= 0 and adv.max() <= 1
    with torch.no_grad():
        clean = torch.nn.functional.cross_entropy(logits_fn(x), y, reduction="none")
        attacked = torch.nn.functional.cross_entropy(logits_fn(adv), y, reduction="none")
        if loss == "cw":
            assert (margin_loss(logits_fn(adv), y) >= margin_loss(logits_fn(x), y) - 1e-6).all()
        else:
            assert (attacked >= clean - 1e-6).all()


def test_pgd_attack_eps_zero_is_identity(setup):
    _, _, x, y, logits_fn = setup
    assert torch.equal(pgd_attack(logits_fn, x, y, eps=0.0), x)


def test_pgd_attack_bad_loss(setup):
    _, _, x, y, logits_fn = setup
    with pytest.raises(ValueError, match="loss must be one of"):
        pgd_attack(logits_fn, x, y, eps=1 / 255, loss="dlr")
