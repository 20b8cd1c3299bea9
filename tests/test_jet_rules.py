"""jet_rules: second-order jet rules of GELU-type activations, LayerNorm and softmax.

- the PyTorch reference (advsimplex.reference.jet_rules) against float64 central finite differences of
  ``u ↦ f(x(u))`` with ``x(u) = x₀ + Σ u_k x_k + Σ_p c_p u_a u_b x_p`` (so that ``Dx[e_k] = x_k`` and
  ``D²x[e_a, e_b] = x_p``);
- the fused Triton kernels (``backend='triton'``; CPU tensors run through TRITON_INTERPRET=1, set in
  conftest.py) against the reference: values and gradients, odd shapes, every option, Q = 3 and 4;
- transform support: backward yes, double backward and torch.func raise.
"""

from __future__ import annotations

import pytest
import torch

from advsimplex import pair_index
from advsimplex._extension import usable
from advsimplex.jets import decompositions
from advsimplex.ops import jet_gelu, jet_layer_norm, jet_softmax
from advsimplex.reference import JetPlan
from advsimplex.reference import jet_rules as rules
from helpers import fd_first, fd_second, rel_err

needs_triton = pytest.mark.skipif(not usable("triton"), reason="triton needs a GPU or TRITON_INTERPRET=1")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# (dtype, value tolerance, gradient tolerance): relative to the largest reference entry
TOLERANCES = [(torch.float64, 1e-13, 1e-13), (torch.float32, 2e-6, 5e-6), (torch.float16, 4e-3, 8e-3)]


def stacked(shape, dim, streams, dtype=torch.float64, seed=0, device="cpu"):
    """A random stacked jet with ``streams.size`` streams at ``dim`` (tangents smaller than the primal)."""
    g = torch.Generator().manual_seed(seed)
    full = list(shape)
    full.insert(dim, streams.size)
    x = torch.randn(full, generator=g, dtype=torch.float64)
    x.narrow(dim, 1, streams.size - 1).mul_(0.3)
    return x.to(device=device, dtype=dtype)


CASES = {
    # name: (function of the stacked jet, reference plain function of x, shape without streams, stream dim)
    "gelu-erf": (lambda x, st, dim, **kw: jet_gelu(x, st, "none", dim=dim, **kw),
                 torch.nn.functional.gelu, (2, 3, 13), 0),
    "gelu-tanh": (lambda x, st, dim, **kw: jet_gelu(x, st, "tanh", dim=dim, **kw),
                  lambda x: torch.nn.functional.gelu(x, approximate="tanh"), (3, 5), 1),
    "quickgelu": (lambda x, st, dim, **kw: jet_gelu(x, st, "quick", dim=dim, **kw),
                  lambda x: x * torch.sigmoid(1.702 * x), (2, 1, 7), 2),
    "layer-norm": (lambda x, st, dim, **kw: jet_layer_norm(x, st, *_ln_params(x), 1e-5, dim=dim, **kw),
                   lambda x: decompositions.layer_norm(x, (x.shape[-1],), *_ln_params(x), 1e-5), (3, 5, 7), 0),
    "layer-norm-plain": (lambda x, st, dim, **kw: jet_layer_norm(x, st, None, None, 0.1, dim=dim, **kw),
                         lambda x: decompositions.layer_norm(x, (x.shape[-1],), None, None, 0.1), (2, 9), 1),
    "softmax": (lambda x, st, dim, **kw: jet_softmax(x, st, dim=dim, **kw),
                lambda x: torch.softmax(x, dim=-1), (2, 3, 5, 11), 2),
}  # fmt: skip


def _ln_params(x):
    n = x.shape[-1]
    g = torch.Generator().manual_seed(3)
    weight = (torch.rand(n, generator=g, dtype=torch.float64) + 0.5).to(x.device, x.dtype)
    bias = torch.randn(n, generator=g, dtype=torch.float64).to(x.device, x.dtype)
    return weight, bias


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("order", [3, 4])
def test_reference_rules_vs_fd(name, order):
    jet_fn, plain, shape, dim = CASES[name]
    m = 3
    pairs = pair_index(m, order)
    st = JetPlan.from_pairs(pairs, m)
    x = stacked(shape, dim, st)
    x0, x1, x2 = (t.movedim(dim, 0) for t in st.split(x, dim))

    def composed(u):  # u (m,) -> f(x(u))
        point = x0[0] + torch.einsum("k,k...->...", u, x1)
        for p, (a, b) in enumerate(pairs.tolist()):
            point = point + (0.5 if a == b else 1.0) * u[a] * u[b] * x2[p]
        return plain(point)

    u0 = torch.zeros(m, dtype=torch.float64)
    eye = torch.eye(m, dtype=torch.float64)
    out = jet_fn(x, st, dim, backend="reference").movedim(dim, 0)
    assert rel_err(out[0], plain(x0[0])) < 1e-14
    first = torch.stack([fd_first(composed, u0, eye[k], 1e-2) for k in range(m)])
    second = torch.stack([fd_second(composed, u0, eye[a], eye[b], 1e-2) for a, b in pairs.tolist()])
    assert rel_err(out[1 : 1 + m], first) < 1e-8
    assert rel_err(out[1 + m :], second) < 1e-7


@needs_triton
@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize(("dtype", "tol", "grad_tol"), TOLERANCES, ids=lambda v: str(v).replace("torch.", ""))
def test_triton_matches_reference(name, dtype, tol, grad_tol):
    jet_fn, _, shape, dim = CASES[name]
    m = 4 if dtype == torch.float64 else 3
    order = 4 if dtype == torch.float64 else 3
    st = JetPlan.from_pairs(pair_index(m, order), m, device=DEVICE)
    x = stacked(shape, dim, st, dtype=dtype, device=DEVICE).requires_grad_(True)
    ref = jet_fn(x, st, dim, backend="reference")
    got = jet_fn(x, st, dim, backend="triton")
    assert got.shape == ref.shape and got.dtype == ref.dtype
    assert rel_err(got.double(), ref.double()) < tol
    grad = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1)).to(DEVICE, dtype)
    (ref_grad,) = torch.autograd.grad(ref, x, grad)
    (got_grad,) = torch.autograd.grad(got, x, grad)
    assert rel_err(got_grad.double(), ref_grad.double()) < grad_tol


@needs_triton
@pytest.mark.parametrize("affine", [True, False])
def test_triton_layer_norm_parameter_gradients(affine):
    st = JetPlan.from_pairs(pair_index(3, 3), 3, device=DEVICE)
    x = stacked((4, 6), 0, st, device=DEVICE).requires_grad_(True)
    weight, bias = (t.requires_grad_(True) for t in _ln_params(x))
    if not affine:
        weight, bias = None, bias
    inputs = [t for t in (x, weight, bias) if t is not None]
    grad = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2)).to(DEVICE)
    ref = torch.autograd.grad(jet_layer_norm(x, st, weight, bias, 1e-5, backend="reference"), inputs, grad)
    got = torch.autograd.grad(jet_layer_norm(x, st, weight, bias, 1e-5, backend="triton"), inputs, grad)
    for a, b in zip(got, ref):
        assert rel_err(a, b) < 1e-13


@needs_triton
def test_triton_transforms_raise_clearly():
    st = JetPlan.from_pairs(pair_index(3, 3), 3, device=DEVICE)
    x = stacked((2, 5), 0, st, device=DEVICE).requires_grad_(True)
    for op in (lambda t: jet_gelu(t, st, "none", backend="triton"), lambda t: jet_softmax(t, st, backend="triton"),
               lambda t: jet_layer_norm(t, st, None, None, backend="triton")):  # fmt: skip
        y = op(x).square().sum()
        torch.autograd.grad(y, x, retain_graph=True)  # first order: fine
        with pytest.raises(NotImplementedError, match="has no double backward"):
            torch.autograd.grad(y, x, create_graph=True)
    with pytest.raises(RuntimeError, match="setup_context"):
        torch.func.jvp(lambda t: jet_softmax(t, st, backend="triton"), (x.detach(),), (torch.ones_like(x),))


def test_reference_rules_support_torch_func_and_double_backward():
    st = JetPlan.from_pairs(pair_index(3, 3), 3)
    x = stacked((2, 5), 0, st).requires_grad_(True)
    fn = lambda t: jet_layer_norm(t, st, None, None, 1e-5, backend="reference")
    _, tangent = torch.func.jvp(fn, (x.detach(),), (torch.ones_like(x),))
    assert torch.isfinite(tangent).all()
    (g,) = torch.autograd.grad(fn(x).square().sum(), x, create_graph=True)
    (gg,) = torch.autograd.grad((g * torch.randn_like(g)).sum(), x)
    assert torch.isfinite(gg).all() and gg.abs().sum() > 0


def test_bad_arguments():
    st = JetPlan.from_pairs(pair_index(3, 3), 3)
    x = stacked((2, 5), 0, st)
    with pytest.raises(ValueError, match="has 8 streams along dim 0, expected 1 \\+ m \\+ P = 9"):
        jet_gelu(x[:8], st)
    with pytest.raises(ValueError, match=r"stream dimension .* cannot be the last"):
        jet_softmax(x.movedim(0, -1), st, dim=-1)
    with pytest.raises(ValueError, match="kind must be one of"):
        jet_gelu(x, st, "relu")
    with pytest.raises(ValueError, match=r"weight must have shape \(5,\)"):
        jet_layer_norm(x, st, torch.ones(4, dtype=x.dtype), None)
    with pytest.raises(TypeError, match="floating tensor"):
        jet_softmax(x.long(), st)
    with pytest.raises(ValueError, match="backend must be one of"):
        jet_softmax(x, st, backend="cuda")
    with pytest.raises(ValueError, match=r"pairs must be an integer tensor of shape \(P, 2\)"):
        JetPlan.from_pairs(torch.zeros(3, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="pairs must index vertices"):
        JetPlan.from_pairs(torch.tensor([[0, 3]]), 3)


@needs_triton
def test_vit_jets_with_triton_kernels_match_torch():
    """The whole Taylor-mode ViT forward with the fused rules (and checkpointing) equals the PyTorch rules
    (values and θ-gradients)."""
    from advsimplex.jets import vit_jets
    from helpers import micro_clip

    tower = micro_clip(quick_gelu=True).visual.to(DEVICE)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64).to(DEVICE)
    deltas = (0.01 * torch.rand(2, 3, 3, 8, 8, generator=g, dtype=torch.float64)).to(DEVICE)
    pairs = pair_index(3, 3)
    params = list(tower.parameters())
    results = []
    for kernels in ("torch", "triton"):  # the Triton run also recomputes each block in the backward pass
        jets = vit_jets(tower, x, deltas, pairs, kernels=kernels, checkpoint=kernels == "triton")
        grads = torch.autograd.grad(jets.second.square().sum() + jets.first.sum(), params)
        results.append((jets, grads))
    (ref, ref_grads), (got, got_grads) = results
    for field in ("value", "first", "second"):
        assert rel_err(getattr(got, field), getattr(ref, field)) < 1e-13
    assert max(rel_err(a, b) for a, b in zip(got_grads, ref_grads)) < 1e-12


def test_reference_rule_functions_are_the_jets_rules():
    """The public ops dispatch to advsimplex.reference.jet_rules on the reference backend (one implementation)."""
    st = JetPlan.from_pairs(pair_index(3, 3), 3)
    x = stacked((2, 5), 0, st)
    assert torch.equal(jet_gelu(x, st, "quick", backend="reference"), rules.jet_gelu(x, st, "quick"))


@needs_triton
def test_torch_compile():
    """Reference rules trace into one graph; the Triton ops run eagerly behind a graph break (same results)."""
    import torch._dynamo

    st = JetPlan.from_pairs(pair_index(3, 3), 3, device=DEVICE)
    x = stacked((2, 5), 0, st, dtype=torch.float32, device=DEVICE).requires_grad_(True)
    for backend in ("reference", "triton"):
        fn = lambda t, backend=backend: jet_softmax(jet_gelu(t, st, "quick", backend=backend), st, backend=backend)
        torch._dynamo.reset()
        if backend == "reference":
            assert torch._dynamo.explain(fn)(x).graph_break_count == 0
        compiled = torch.compile(fn, backend="eager")
        got, ref = compiled(x), fn(x)
        assert torch.equal(got, ref)
        assert torch.equal(torch.autograd.grad(got.sum(), x)[0], torch.autograd.grad(ref.sum(), x)[0])
