"""The reference head's chain rule (math spec §4) against float64 central finite differences."""

import pytest
import torch
import torch.nn.functional as F

from advsimplex.reference import logit_jets, normalized_jets, pair_index, probability_jets, simplex_head_reference
from helpers import fd_jets, rel_err, unit_rows

B, D, d, C, M = 3, 7, 5, 6, 4


def smooth_encoder(seed=0):
    g = torch.Generator().manual_seed(seed)
    w1 = torch.randn(d, D, generator=g, dtype=torch.float64)
    w2 = torch.randn(d, d, generator=g, dtype=torch.float64)
    return lambda x: torch.tanh(x @ w1.t()) @ w2.t() + 0.4


def setup(order, seed=0):
    g = torch.Generator().manual_seed(seed)
    enc = smooth_encoder(seed)
    x = torch.randn(B, D, generator=g, dtype=torch.float64)
    deltas = 0.3 * torch.randn(B, M, D, generator=g, dtype=torch.float64)
    pairs = pair_index(M, order)
    f, first, second = fd_jets(enc, x, deltas, pairs, h=1e-3)
    return enc, x, deltas, pairs, f, first, second


@pytest.mark.parametrize("order", [3, 4])
def test_normalized_jets_vs_fd(order):
    enc, x, deltas, pairs, f, first, second = setup(order)
    n, n1, n2 = normalized_jets(f, first, second, pairs)
    normed = lambda y: F.normalize(enc(y), dim=-1)
    _, t1, t2 = fd_jets(normed, x, deltas, pairs, h=1e-3)
    assert rel_err(n, normed(x)) < 1e-14
    assert rel_err(n1, t1) < 1e-8
    assert rel_err(n2, t2) < 1e-8


@pytest.mark.parametrize("order", [3, 4])
@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_probability_jets_vs_fd(order, scale):
    enc, x, deltas, pairs, f, first, second = setup(order, seed=1)
    text = unit_rows(C, d)
    probs = lambda y: torch.softmax(scale * F.normalize(enc(y), dim=-1) @ text.t(), dim=-1)
    z, z1, z2 = logit_jets(f, first, second, text, scale, pairs)
    g, u, h = probability_jets(z, z1, z2, pairs)
    _, u_fd, h_fd = fd_jets(probs, x, deltas, pairs, h=1e-3 / scale**0.5)
    assert rel_err(g, probs(x)) < 1e-14
    assert rel_err(u, u_fd) < 1e-7
    assert rel_err(h, h_fd) < 1e-6


def test_head_loss_is_clean_ce_plus_weighted_omega():
    _enc, _x, _deltas, pairs, f, first, second = setup(3, seed=2)
    text = unit_rows(C, d)
    labels = torch.tensor([0, 3, 5])
    weights = torch.rand(B, M - 1, dtype=torch.float64)
    loss, omega = simplex_head_reference(
        f, first, second, text, labels, weights, pairs, logit_scale=10.0, lam=0.6, variant="paper", kappa=1.0, order=3
    )
    ce = F.cross_entropy(10.0 * F.normalize(f, dim=-1) @ text.t(), labels, reduction="none")
    torch.testing.assert_close(loss, ce + 0.6 * (weights * omega).sum(-1), rtol=1e-14, atol=1e-14)
    assert omega.shape == (B, M - 1) and (omega >= 0).all()
