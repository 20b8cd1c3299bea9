"""``taylor2`` against Monte Carlo of the true alignment ‖g(x+p) − g(x)‖² for shrinking ε (math spec §5).

Ω scales like ε², the second-order Taylor model's error like ε⁴, so the relative gap between the
closed form and the true expectation must fall like ε². The true expectation is estimated by
Monte Carlo over uniform simplex points, with the Taylor model at the same points as a control
variate (unbiased for the true mean; its variance is that of the O(ε⁴) remainder only).
"""

import itertools
import math

import torch
from test_jets import zero_shot_probs

from advsimplex import ZeroShotModel, pair_index, simplex_alignment
from advsimplex.alignment import sample_simplex_points
from advsimplex.jets import embedding_jets
from advsimplex.reference import logit_jets, probability_jets, simplex_pairs, simplex_vertices
from helpers import micro_clip, unit_rows

M, ORDER, SCALE = 3, 3, 20.0


def relative_gap(enc, x, direction, text, eps, n=3000):
    deltas = eps * direction
    closed = simplex_alignment(ZeroShotModel.from_encoder(enc, text, SCALE), x, deltas, variant="taylor2", order=ORDER)
    pairs = pair_index(M, ORDER)
    jets = embedding_jets(enc, x, deltas, pairs)
    _, u, h = probability_jets(*logit_jets(jets.value, jets.first, jets.second, text, SCALE, pairs), pairs)
    gen = torch.Generator().manual_seed(0)
    points = sample_simplex_points(deltas, ORDER, n, gen)  # (B, S, n, 3, H, W)
    b, s = points.shape[:2]
    with torch.no_grad():
        g0 = zero_shot_probs(enc(x), text, SCALE)
        g = zero_shot_probs(enc((x[:, None, None] + points).flatten(0, 2)), text, SCALE).reshape(b, s, n, -1)
        true = ((g - g0[:, None, None]) ** 2).sum(-1)
        # Taylor model r(p) = J p + ½ pᵀHp at the same points: barycentric weights solved from p.
        verts = simplex_vertices(M, ORDER)
        corners = deltas[:, verts].flatten(3)  # (B, S, Q-1, D)
        beta = torch.linalg.lstsq(corners.transpose(-1, -2), points.flatten(3).transpose(-1, -2)).solution
        jp = torch.einsum("bskn,bskc->bsnc", beta, u[:, verts])
        q = torch.einsum("bskn,bsln,bsklc->bsnc", beta, beta, h[:, simplex_pairs(M, ORDER)])
        model = ((jp + 0.5 * q) ** 2).sum(-1)
        diff = true - model
    true_mean = closed + diff.mean(-1)
    se = diff.std(-1) / math.sqrt(n)
    return ((true_mean - closed).abs() / true_mean).max().item(), (se / true_mean).max().item(), closed


def test_relative_gap_falls_like_eps_squared():
    model = micro_clip(seed=4)
    enc = lambda y: model.visual(y)  # a plain callable in its own input space: generic jets, no pixel normalisation
    g = torch.Generator().manual_seed(5)
    x = torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64)
    direction = torch.randn(2, M, 3, 8, 8, generator=g, dtype=torch.float64)
    text = unit_rows(6, 8, seed=2)
    eps_list = [0.08, 0.04, 0.02, 0.01]
    gaps, closeds = [], []
    for eps in eps_list:
        gap, se, closed = relative_gap(enc, x, direction, text, eps)
        assert se < 0.2 * gap, (eps, gap, se)  # the gap is resolved, not noise
        gaps.append(gap)
        closeds.append(closed)
    # Ω itself scales like ε²
    for c0, c1 in itertools.pairwise(closeds):
        ratio = (c0 / c1).min().item()
        assert 3.0 < ratio < 5.5, ratio
    slopes = [math.log(a / b) / math.log(2) for a, b in itertools.pairwise(gaps)]
    assert all(1.6 < sl < 2.4 for sl in slopes), (gaps, slopes)
    assert gaps[-1] < 1e-2
