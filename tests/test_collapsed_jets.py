"""Collapsed second-order jets (math spec §7b): one stream per simplex instead of one per vertex pair.

Truth, in float64: the pair-based jets collapsed with the Dirichlet second moments
(:meth:`JetPlan.collapse_pairs`, itself a fixed linear map), central finite differences of
``Σ_{k,l} M_kl D²f[δ_k, δ_l] = (Σ_k D²f[δ_k, δ_k] + D²f[σ, σ]) / (Q(Q + 1))`` (σ the sum of the simplex's
vertices: only second derivatives along single directions are needed), and for the head, the pair-based
reference head of the ``paper`` variant.
"""

from __future__ import annotations

import pytest
import torch
from test_vit_jets import fast, inputs, pixel_fn, tower

from advsimplex.reference import (
    JetPlan,
    collapse_matrix,
    collapsed_head_reference,
    jet_rules,
    pair_index,
    simplex_head_reference,
    simplex_vertices,
)
from helpers import fd_first, fd_second, rel_err, unit_rows

M = 5


def stacked_pairs(shape: tuple[int, ...], plan: JetPlan, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(plan.size, *shape, generator=g, dtype=torch.float64)


def collapse_stacked(x: torch.Tensor, pairs: JetPlan, collapsed: JetPlan, dim: int = 0) -> torch.Tensor:
    x0, x1, x2 = pairs.split(x, dim)
    return torch.cat([x0, x1, collapsed.collapse_pairs(x2, dim=dim)], dim=dim)


def test_plan_layout_and_collapse_matrix():
    plan = JetPlan.collapsed(10, 3)
    assert (plan.num_second, plan.size, plan.is_collapsed) == (9, 20, True)
    assert JetPlan.collapsed(10, 4).size == 19 and JetPlan.pairwise(10, 4).size == 38
    # every pair of a simplex weighs 2/(Q(Q+1)): M_kk once, M_kl + M_lk for k ≠ l
    for order in (3, 4):
        weights = collapse_matrix(M, order)
        verts = simplex_vertices(M, order).tolist()
        for s, row in enumerate(weights.tolist()):
            for p, (k, l) in enumerate(pair_index(M, order).tolist()):
                inside = k in verts[s] and l in verts[s]
                assert row[p] == pytest.approx(2 / (order * (order + 1)) if inside else 0.0)


@pytest.mark.parametrize("order", [3, 4])
@pytest.mark.parametrize("rule", ["gelu-none", "gelu-tanh", "gelu-quick", "layer_norm", "softmax"])
def test_collapsed_rules_equal_collapsed_pair_rules(rule, order):
    pairs, collapsed = JetPlan.pairwise(M, order), JetPlan.collapsed(M, order)
    x = stacked_pairs((2, 3, 7), pairs, seed=1)
    g = torch.Generator().manual_seed(2)
    weight = torch.rand(7, generator=g, dtype=torch.float64) + 0.5
    bias = torch.randn(7, generator=g, dtype=torch.float64)

    def apply(t, plan):
        if rule.startswith("gelu"):
            return jet_rules.jet_gelu(t, plan, rule.split("-")[1])
        if rule == "layer_norm":
            return jet_rules.jet_layer_norm(t, plan, weight, bias, 1e-5)
        return jet_rules.jet_softmax(t, plan)

    want = collapse_stacked(apply(x, pairs), pairs, collapsed)
    got = apply(collapse_stacked(x, pairs, collapsed), collapsed)
    assert got.shape == (collapsed.size, 2, 3, 7)
    assert rel_err(got, want) < 1e-13


def simplex_second_fd(fn, x, deltas, order, h):
    """FD truth of the collapsed streams: (Σ_k D²f[δ_k, δ_k] + D²f[σ_s, σ_s]) / (Q(Q+1)) per simplex s."""
    out = []
    for verts in simplex_vertices(deltas.shape[1], order).tolist():
        terms = [fd_second(fn, x, deltas[:, k], deltas[:, k], h) for k in verts]
        sigma = deltas[:, verts].sum(dim=1)
        out.append((sum(terms) + fd_second(fn, x, sigma, sigma, h)) / (order * (order + 1)))
    return torch.stack(out, dim=1)


@pytest.mark.parametrize(("name", "order"), [("micro-gelu", 3), ("micro-gelu", 4), ("micro-quickgelu", 3),
                                             ("micro-quickgelu", 4), ("vpt-tok", 3), ("vpt-avg", 4),
                                             ("layerscale-avg", 3)])  # fmt: skip
def test_collapsed_vit_jets_equal_collapsed_pair_jets_and_fd(name, order):
    module = tower(name)
    x, deltas = inputs(module)
    m = deltas.shape[1]
    plan = JetPlan.collapsed(m, order)
    got = fast(module, x, deltas, plan)
    pairs = fast(module, x, deltas, JetPlan.pairwise(m, order))
    assert got.plan is plan and got.second.shape == (2, m - order + 2, got.value.shape[1])
    assert rel_err(got.value, pairs.value) < 1e-14 and rel_err(got.first, pairs.first) < 1e-14
    assert rel_err(got.second, plan.collapse_pairs(pairs.second)) < 1e-12
    fn = pixel_fn(module)
    assert rel_err(got.first[:, :1], fd_first(fn, x, deltas[:, 0], 0.0625)[:, None]) < 1e-9
    truth = simplex_second_fd(fn, x, deltas, order, h=0.0625)
    assert rel_err(got.second, truth) < 1e-8, rel_err(got.second, truth)


@pytest.mark.parametrize("order", [3, 4])
def test_collapsed_head_equals_pair_head(order):
    g = torch.Generator().manual_seed(3)
    b, m, d, c = 3, 6, 7, 5
    pairs = pair_index(m, order)
    f = torch.randn(b, d, generator=g, dtype=torch.float64)
    first = torch.randn(b, m, d, generator=g, dtype=torch.float64)
    second = torch.randn(b, len(pairs), d, generator=g, dtype=torch.float64)
    text = unit_rows(c, d)
    labels = torch.randint(0, c, (b,), generator=g)
    weights = torch.rand(b, m - order + 2, generator=g, dtype=torch.float64)
    kw = {"logit_scale": 7.0, "lam": 0.6, "kappa": 1.3, "order": order}
    loss, omega = simplex_head_reference(f, first, second, text, labels, weights, pairs, variant="paper", **kw)
    collapsed = JetPlan.collapsed(m, order).collapse_pairs(second)
    loss_c, omega_c = collapsed_head_reference(f, first, collapsed, text, labels, weights, **kw)
    assert rel_err(omega_c, omega) < 1e-13 and rel_err(loss_c, loss) < 1e-13


@pytest.mark.parametrize(("name", "order"), [("micro-gelu", 3), ("micro-quickgelu", 4), ("vpt-avg", 3)])
def test_third_order_parameter_gradient_of_collapsed_omega_vs_fd(name, order):
    """⟨∇_θ Σ ω·Ω, v⟩ through the collapsed fast jets and the collapsed reference head vs central FD in θ."""
    module = tower(name)
    g = torch.Generator().manual_seed(7)
    x, _ = inputs(module, seed=3)
    deltas = (torch.rand(2, 3, 3, 8, 8, generator=g, dtype=torch.float64) - 0.5) * (8 / 255)
    text = unit_rows(4, 8)
    labels = torch.tensor([0, 3])
    weights = torch.rand(2, 3 - order + 2, generator=g, dtype=torch.float64)
    plan = JetPlan.collapsed(3, order)
    params = [p for p in module.parameters() if p.requires_grad]

    def objective() -> torch.Tensor:
        jets = fast(module, x, deltas, plan)
        _, omega = collapsed_head_reference(jets.value, jets.first, jets.second, text, labels, weights,
                                            logit_scale=20.0, lam=0.0, kappa=1.5, order=order)  # fmt: skip
        return (weights * omega).sum()

    direction = [torch.randn(p.shape, generator=g, dtype=torch.float64) for p in params]
    module.zero_grad()
    objective().backward()
    ad = sum((p.grad * v).sum() for p, v in zip(params, direction)).item()

    def shifted(step):
        with torch.no_grad():
            for p, v in zip(params, direction):
                p.add_(step * v)
            value = objective().item()
            for p, v in zip(params, direction):
                p.sub_(step * v)
        return value

    h = 1e-5
    fd = (4 * (shifted(h) - shifted(-h)) / (2 * h) - (shifted(2 * h) - shifted(-2 * h)) / (4 * h)) / 3
    assert abs(ad - fd) <= 1e-8 * abs(fd), (ad, fd, abs(ad - fd) / abs(fd))


@pytest.mark.parametrize("backend", ["reference", "cpp"])
@pytest.mark.parametrize("order", [3, 4])
def test_loss_picks_the_collapsed_plan_for_paper_with_unchanged_results(backend, order, monkeypatch):
    """AdvSimplexLoss and simplex_alignment carry collapsed jets for ``paper`` (``second_order="auto"``) and give the
    pair-based loss, Ω and parameter gradients (float64)."""
    from advsimplex import AdvSimplexLoss, ZeroShotModel, backends, simplex_alignment
    from advsimplex import zeroshot as zeroshot_module
    from helpers import micro_clip

    if backend == "cpp" and not backends()["cpp"][0]:
        pytest.skip("no compiled extension")
    clip = micro_clip(seed=4)
    model = ZeroShotModel.from_clip(clip, unit_rows(4, 8), 20.0)
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(3, 3, 8, 8, generator=g, dtype=torch.float64), torch.tensor([0, 3, 1])
    plans = []
    original = zeroshot_module.vit_jets
    monkeypatch.setattr(zeroshot_module, "vit_jets", lambda *a, **k: plans.append(a[3]) or original(*a, **k))
    results = []
    for second_order in ("auto", "pairs"):
        clip.zero_grad()
        fn = AdvSimplexLoss(steps=4, eps=4 / 255, alpha=2 / 255, order=order, backend=backend, weighting="uniform",
                            second_order=second_order)  # fmt: skip
        loss, details = fn(model, x, y, generator=torch.Generator().manual_seed(2), return_details=True)
        loss.backward()
        results.append((loss.detach(), details.omega, [p.grad.clone() for p in clip.visual.parameters()]))
    assert plans[0].is_collapsed and not plans[1].is_collapsed
    (loss_c, omega_c, grads_c), (loss_p, omega_p, grads_p) = results
    assert rel_err(loss_c, loss_p) < 1e-12 and rel_err(omega_c, omega_p) < 1e-11
    assert max(rel_err(a, b) for a, b in zip(grads_c, grads_p)) < 1e-10
    deltas = (torch.rand(3, 4, 3, 8, 8, generator=g, dtype=torch.float64) - 0.5) * (8 / 255)
    collapsed = simplex_alignment(model, x, deltas, order=order, kappa=1.5)
    pairs = simplex_alignment(model, x, deltas, order=order, kappa=1.5, second_order="pairs")
    assert rel_err(collapsed, pairs) < 1e-12
    with pytest.raises(ValueError, match="collapsed' serves variant 'paper' only"):
        simplex_alignment(model, x, deltas, variant="taylor2", second_order="collapsed")
