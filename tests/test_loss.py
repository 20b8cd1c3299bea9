"""AdvSimplexLoss (math spec §6) and the simplex weights (paper Eq. 16)."""

import pytest
import torch
import torch.nn.functional as F

from advsimplex import AdvSimplexLoss, ZeroShotModel, pgd_trajectory, simplex_alignment, simplex_weights
from advsimplex.zeroshot import preprocess_stats
from helpers import micro_clip, unit_rows


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.rand(4, 3, 8, 8, generator=g, dtype=torch.float64), torch.tensor([0, 1, 2, 1])


def test_defaults_reproduce_the_paper():
    loss = AdvSimplexLoss()
    assert (loss.alignment.variant, loss.alignment.kappa, loss.alignment.order, loss.steps) == ("paper", 1.0, 3, 10)
    assert loss.eps == pytest.approx(2 / 255) and loss.alpha == pytest.approx(1 / 255)
    assert (loss.lam, loss.weighting) == (0.6, "impact")


def test_loss_equals_clean_ce_plus_weighted_alignment(batch):
    """The loss of an open_clip tower (fast jets, normalisation inside) equals the formula evaluated
    with the generic jets of the explicitly normalised tower."""
    x, y = batch
    enc = micro_clip(seed=2).visual
    mean, std = (torch.tensor(v, dtype=torch.float64).view(1, 3, 1, 1) for v in preprocess_stats(enc))
    pixel_enc = lambda px: enc((px - mean) / std)
    text = unit_rows(3, 8)
    fn = AdvSimplexLoss(steps=4, eps=4 / 255, alpha=2 / 255, lam=0.7, kappa=1.5)
    model = ZeroShotModel.from_tower(enc, text, 20.0)
    loss, details = fn(model, x, y, generator=torch.Generator().manual_seed(5), return_details=True)
    logits_fn = lambda px: 20.0 * F.normalize(pixel_enc(px), dim=-1) @ text.t()
    traj = pgd_trajectory(
        logits_fn, x, y, eps=4 / 255, alpha=2 / 255, steps=4, generator=torch.Generator().manual_seed(5)
    )
    torch.testing.assert_close(details.vertex_probs, traj.probs)
    generic = ZeroShotModel.from_encoder(pixel_enc, text, 20.0)
    omega = simplex_alignment(generic, x, traj.deltas, variant="paper", kappa=1.5)
    clean = torch.softmax(logits_fn(x), -1).gather(1, y[:, None]).squeeze(1)
    weights = simplex_weights(clean, traj.probs, scheme="impact", order=3)
    expected = (F.cross_entropy(logits_fn(x), y, reduction="none") + 0.7 * (weights * omega).sum(-1)).mean()
    # the loss derives its (detached) weights from float32 clean probabilities: ~1e-7 relative on ω·Ω
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(details.omega, omega.detach(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    ("variant", "order", "weighting", "kappa"),
    [("paper", 3, "impact", 1.0), ("paper-cross", 4, "uniform", 2.0), ("taylor2", 3, "linear", 1.0),
     ("sampled", 3, "impact", 3)],
)  # fmt: skip
def test_every_option_trains_the_tower(batch, variant, order, weighting, kappa):
    x, y = batch
    model = micro_clip(seed=3)
    options = {"samples": kappa} if variant == "sampled" else {"kappa": kappa}
    fn = AdvSimplexLoss(steps=3, variant=variant, order=order, weighting=weighting, **options)
    loss = fn(ZeroShotModel.from_tower(model.visual, unit_rows(3, 8), 20.0), x, y,
              generator=torch.Generator().manual_seed(0))  # fmt: skip
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.visual.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0


def test_impact_weights_formula():
    clean = torch.tensor([0.9, 0.8, 0.5])
    vertex = torch.tensor([[0.7, 0.3, 0.1], [0.7, 0.4, 0.2], [0.6, 0.5, 0.1]])
    w = simplex_weights(clean, vertex, scheme="impact", order=3)  # S = 2: vertices 1 and 2
    gaps = torch.tensor([[0.2, 0.6], [0.1, 0.4], [0.0, 0.0]])  # third row: negative gaps clipped
    torch.testing.assert_close(w, gaps / gaps.amax(0))
    assert not w.requires_grad


def test_impact_weights_zero_when_no_gap_and_other_schemes():
    clean = torch.tensor([0.1, 0.2])
    vertex = torch.tensor([[0.5, 0.6, 0.7], [0.3, 0.3, 0.3]])
    assert torch.equal(simplex_weights(clean, vertex, order=3), torch.zeros(2, 2))
    assert torch.equal(simplex_weights(clean, vertex, scheme="uniform", order=3), torch.ones(2, 2))
    torch.testing.assert_close(simplex_weights(clean, vertex, scheme="linear", order=4), torch.full((2, 1), 1 / 3))
    with pytest.raises(ValueError, match="weighting must be one of"):
        simplex_weights(clean, vertex, scheme="cosine")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"variant": "bound"}, ValueError, "variant must be one of"),
        ({"weighting": "cosine"}, ValueError, "weighting"),
        ({"eps": 1.5}, ValueError, "eps must lie in"),
        ({"steps": 1, "order": 3}, ValueError, "need m >= order - 1"),
        ({"variant": "sampled", "samples": 2.5}, TypeError, "samples must be an int"),
        ({"backend": "fpga"}, ValueError, "backend must be one of"),
    ],
)
def test_bad_configuration(kwargs, error, match):
    with pytest.raises(error, match=match):
        AdvSimplexLoss(**kwargs)


def test_model_arguments_are_checked_once_at_construction():
    with pytest.raises(ValueError, match="unit-norm"):
        ZeroShotModel.from_tower(micro_clip().visual, 2 * unit_rows(3, 8), 20.0)
    with pytest.raises(ValueError, match="logit_scale must be a positive number"):
        ZeroShotModel.from_tower(micro_clip().visual, unit_rows(3, 8), -1.0)
