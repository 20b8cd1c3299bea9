"""Dirichlet moments and Theorem 3.1 (math spec §3) against closed values and Monte Carlo."""

import itertools
import math

import pytest
import torch

from advsimplex import dirichlet_moment, moment_tensor, second_moment


@pytest.mark.parametrize(
    ("exps", "value"),
    [
        ((1,), 1 / 3),
        ((2,), 1 / 6),
        ((1, 1), 1 / 12),
        ((3,), 1 / 10),
        ((2, 1), 1 / 30),
        ((1, 1, 1), 1 / 60),
        ((4,), 1 / 15),
        ((3, 1), 1 / 60),
        ((2, 2), 1 / 90),
        ((2, 1, 1), 1 / 180),
    ],
)
def test_spec_values_order3(exps, value):
    assert dirichlet_moment(3, exps) == pytest.approx(value, rel=1e-15)


def dirichlet_samples(order: int, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    e = -torch.rand(n, order, generator=g, dtype=torch.float64).log()
    return e / e.sum(dim=1, keepdim=True)


@pytest.mark.parametrize("order", [2, 3, 4, 5])
def test_moments_vs_monte_carlo(order):
    alpha = dirichlet_samples(order, 400_000, seed=order)
    for exps in itertools.product(range(4), repeat=order):
        if sum(exps) == 0 or sum(exps) > 5:
            continue
        terms = torch.ones(alpha.shape[0], dtype=torch.float64)
        for k, e in enumerate(exps):
            terms = terms * alpha[:, k] ** e
        se = terms.std().item() / math.sqrt(terms.numel())
        assert abs(terms.mean().item() - dirichlet_moment(order, exps)) < 5 * se + 1e-12, exps


@pytest.mark.parametrize("order", [3, 4])
@pytest.mark.parametrize("degree", [2, 3, 4])
def test_moment_tensor_entries_and_symmetry(order, degree):
    mt = moment_tensor(order, degree)
    assert mt.shape == (order - 1,) * degree
    for idx in itertools.product(range(order - 1), repeat=degree):
        exps = [idx.count(k) for k in range(order - 1)]
        assert mt[idx].item() == pytest.approx(dirichlet_moment(order, exps), rel=1e-15)
        for perm in itertools.permutations(idx):
            assert mt[perm] == mt[idx]


@pytest.mark.parametrize("q", [2, 3, 4, 6])
def test_theorem_3_1_vs_monte_carlo(q):
    g = torch.Generator().manual_seed(q)
    vertices = torch.randn(q, 5, generator=g, dtype=torch.float64)
    alpha = dirichlet_samples(q, 400_000, seed=10 + q)
    points = alpha @ vertices
    outer = points.unsqueeze(2) * points.unsqueeze(1)
    empirical, se = outer.mean(0), outer.std(0) / math.sqrt(points.shape[0])
    assert ((second_moment(vertices) - empirical).abs() <= 5 * se + 1e-12).all()


def test_second_moment_batched_and_origin_vertex():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(4, 3, 6, generator=g, dtype=torch.float64)
    v[:, 0] = 0  # the clean vertex: only the Q-1 trajectory vertices contribute
    sigma = second_moment(v)
    m2 = moment_tensor(3, 2)
    expected = torch.einsum("kl,bkd,ble->bde", m2, v[:, 1:], v[:, 1:])
    torch.testing.assert_close(sigma, expected, rtol=1e-14, atol=1e-14)


def test_bad_arguments():
    with pytest.raises(ValueError, match="order"):
        dirichlet_moment(0, [1])
    with pytest.raises(ValueError, match="exponents has 3 entries"):
        dirichlet_moment(2, [1, 1, 1])
    with pytest.raises(ValueError, match="non-negative"):
        dirichlet_moment(3, [1, -1])
    with pytest.raises(ValueError, match=r"shape \(\.\.\., Q, D\)"):
        second_moment(torch.zeros(3))
    with pytest.raises(TypeError, match="floating"):
        second_moment(torch.zeros(3, 2, dtype=torch.long))
