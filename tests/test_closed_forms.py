"""Closed-form simplex expectations and variants (math spec §5) against Monte Carlo and the worked Q = 3 case."""

import math

import pytest
import torch

from advsimplex.reference import (
    closed_form_alignment,
    pair_index,
    simplex_expectations,
    simplex_pairs,
    simplex_vertices,
)

B, C = 2, 3


def random_derivatives(m: int, order: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(B, m, C, generator=g, dtype=torch.float64)
    h = torch.randn(B, pair_index(m, order).shape[0], C, generator=g, dtype=torch.float64)
    return u, h


def taylor_samples(u, h, order, n, seed):
    """Sampled (Jp, pᵀHp) per class for uniform points of every simplex: (B, S, n, C) each."""
    m = u.shape[1]
    g = torch.Generator().manual_seed(seed)
    verts, local = simplex_vertices(m, order), simplex_pairs(m, order)
    e = -torch.rand(n, order, generator=g, dtype=torch.float64).log()
    beta = (e / e.sum(1, keepdim=True))[:, 1:]  # weights of the Q-1 non-origin vertices
    uu = u[:, verts]  # (B, S, Q-1, C)
    hh = h[:, local]  # (B, S, Q-1, Q-1, C)
    jp = torch.einsum("nk,bskc->bsnc", beta, uu)
    q = torch.einsum("nk,nl,bsklc->bsnc", beta, beta, hh)
    return jp, q


def assert_mc(estimate_samples, closed, dims):
    mean = estimate_samples.mean(dim=dims)
    se = estimate_samples.std(dim=dims) / math.sqrt(estimate_samples.shape[dims])
    assert ((mean - closed).abs() <= 5 * se + 1e-12).all(), ((mean - closed).abs() / se).max()


@pytest.mark.parametrize(("m", "order"), [(2, 3), (5, 3), (3, 4), (5, 4)])
def test_expectations_vs_monte_carlo(m, order):
    u, h = random_derivatives(m, order, seed=m + order)
    e = simplex_expectations(u, h, order)
    jp, q = taylor_samples(u, h, order, 300_000, seed=7)
    assert_mc((jp * jp).sum(-1), e.jp2, 2)
    assert_mc(q, e.q, 2)
    assert_mc((jp * q).sum(-1), e.jpq, 2)
    assert_mc((q * q).sum(-1), e.q2, 2)


@pytest.mark.parametrize("order", [3, 4])
def test_taylor2_is_the_exact_mean_of_the_taylor_model(order):
    u, h = random_derivatives(6, order, seed=3)
    jp, q = taylor_samples(u, h, order, 300_000, seed=11)
    model = ((jp + 0.5 * q) ** 2).sum(-1)
    assert_mc(model, closed_form_alignment(u, h, variant="taylor2", order=order), 2)


def test_worked_q3_case():
    """The spec's explicit per-class formulas for the triangle (0, a, b)."""
    u, h = random_derivatives(2, 3, seed=5)  # m = 2: one simplex, pairs (0,0), (0,1), (1,1)
    ua, ub = u[:, 0], u[:, 1]
    haa, hab, hbb = h[:, 0], h[:, 1], h[:, 2]
    e_jp2 = (ua**2 + ub**2) / 6 + ua * ub / 6
    e_q = (haa + hbb) / 6 + hab / 6
    e_jpq = (ua * haa + ub * hbb) / 10 + (ua + ub) * hab / 15 + (ua * hbb + ub * haa) / 30
    e_q2 = (haa**2 + hbb**2) / 15 + 4 * hab**2 / 90 + 2 * haa * hbb / 90 + 4 * hab * (haa + hbb) / 60
    kappa = 1.7
    expected = {
        "paper": 2 * e_jp2.sum(-1) + kappa / 2 * (e_q**2).sum(-1),
        "paper-cross": e_jp2.sum(-1) + kappa / 4 * (e_q**2).sum(-1) + e_jpq.sum(-1),
        "taylor2": (e_jp2 + e_jpq + e_q2 / 4).sum(-1),
    }
    for variant, value in expected.items():
        got = closed_form_alignment(u, h, variant=variant, kappa=kappa, order=3)
        torch.testing.assert_close(got[:, 0], value, rtol=1e-14, atol=1e-14)


def test_variants_are_linear_in_kappa_and_taylor2_ignores_it():
    u, h = random_derivatives(4, 3, seed=9)
    for variant in ("paper", "paper-cross"):
        a0, a1, a2 = (closed_form_alignment(u, h, variant=variant, kappa=k) for k in (0.0, 1.0, 2.0))
        torch.testing.assert_close(a2 - a1, a1 - a0, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        closed_form_alignment(u, h, variant="taylor2", kappa=0.0), closed_form_alignment(u, h, variant="taylor2")
    )


def test_bad_variant_and_shapes():
    u, h = random_derivatives(4, 3)
    with pytest.raises(ValueError, match="variant must be one of"):
        closed_form_alignment(u, h, variant="exact")
    with pytest.raises(ValueError, match="no closed form"):
        closed_form_alignment(u, h, variant="sampled", kappa=4)
    with pytest.raises(ValueError, match=r"h must have shape \(B, P, C\)"):
        closed_form_alignment(u, h[:, :-1])
    with pytest.raises(ValueError, match="kappa must be >= 0"):
        closed_form_alignment(u, h, kappa=-1.0)
