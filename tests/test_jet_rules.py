"""jet_rules: second-order jet rules of GELU-type activations, LayerNorm and softmax.

- the PyTorch reference (advsimplex.reference.jet_rules) against float64 central finite differences of
  ``u ↦ f(x(u))`` with ``x(u) = x₀ + Σ u_k x_k + Σ_p c_p u_a u_b x_p`` (so that ``Dx[e_k] = x_k`` and
  ``D²x[e_a, e_b] = x_p``);
- the fused C++ CPU kernels (``backend='cpp'``) and Triton kernels (``backend='triton'``; CPU tensors run through
  TRITON_INTERPRET=1, set in conftest.py) against the reference: values and gradients, odd shapes, every option,
  Q = 3 and 4, pair and collapsed plans; the C++ backward against float64 finite differences (gradcheck);
  ``torch.library.opcheck`` of the registered ops and clear errors of their argument checks;
- transform support: backward yes, double backward and torch.func raise on the fused backends;
- the whole Taylor-mode ViT forward with the fused rules equals the PyTorch rules.
"""

from __future__ import annotations

import pytest
import torch

from advsimplex import pair_index
from advsimplex._extension import usable
from advsimplex.jets import decompositions
from advsimplex.ops import _jet_rules_cpp, jet_gelu, jet_layer_norm, jet_softmax
from advsimplex.ops import jet_rules as jet_rule_ops
from advsimplex.reference import JetPlan
from advsimplex.reference import jet_rules as rules
from helpers import fd_first, fd_second, rel_err

needs_triton = pytest.mark.skipif(not usable("triton"), reason="triton needs a GPU or TRITON_INTERPRET=1")
needs_cpp = pytest.mark.skipif(not _jet_rules_cpp.AVAILABLE, reason="compiled jet_rules kernels unavailable")
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


PLANS = ["pairs", "collapsed"]


def make_plan(kind: str, m: int, order: int, device: str = "cpu") -> JetPlan:
    return JetPlan.collapsed(m, order) if kind == "collapsed" else JetPlan.pairwise(m, order, device=device)


@pytest.mark.parametrize("backend", ["reference", pytest.param("cpp", marks=needs_cpp)])
@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("order", [3, 4])
def test_rules_vs_fd(name, order, backend):
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
    out = jet_fn(x, st, dim, backend=backend).movedim(dim, 0)
    assert rel_err(out[0], plain(x0[0])) < 1e-14
    first = torch.stack([fd_first(composed, u0, eye[k], 1e-2) for k in range(m)])
    second = torch.stack([fd_second(composed, u0, eye[a], eye[b], 1e-2) for a, b in pairs.tolist()])
    assert rel_err(out[1 : 1 + m], first) < 1e-8
    assert rel_err(out[1 + m :], second) < 1e-7


def assert_matches_reference(jet_fn, shape, dim, plan, dtype, tol, grad_tol, backend, device):
    """Values and x-gradients of ``backend`` equal the reference's (relative to the largest reference entry)."""
    x = stacked(shape, dim, plan, dtype=dtype, device=device).requires_grad_(True)
    ref = jet_fn(x, plan, dim, backend="reference")
    got = jet_fn(x, plan, dim, backend=backend)
    assert got.shape == ref.shape and got.dtype == ref.dtype
    assert rel_err(got.double(), ref.double()) < tol
    grad = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1)).to(device, dtype)
    (ref_grad,) = torch.autograd.grad(ref, x, grad)
    (got_grad,) = torch.autograd.grad(got, x, grad)
    assert got_grad.dtype == ref_grad.dtype
    assert rel_err(got_grad.double(), ref_grad.double()) < grad_tol


@needs_triton
@pytest.mark.parametrize("plan", PLANS)
@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize(("dtype", "tol", "grad_tol"), TOLERANCES, ids=lambda v: str(v).replace("torch.", ""))
def test_triton_matches_reference(name, dtype, tol, grad_tol, plan):
    jet_fn, _, shape, dim = CASES[name]
    m = 4 if dtype == torch.float64 else 3
    order = 4 if dtype == torch.float64 else 3
    st = make_plan(plan, m, order, DEVICE)
    assert_matches_reference(jet_fn, shape, dim, st, dtype, tol, grad_tol, "triton", DEVICE)


@needs_cpp
@pytest.mark.parametrize("plan", PLANS)
@pytest.mark.parametrize("order", [3, 4])
@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize(("dtype", "tol", "grad_tol"), TOLERANCES, ids=lambda v: str(v).replace("torch.", ""))
def test_cpp_matches_reference(name, order, plan, dtype, tol, grad_tol):
    jet_fn, _, shape, dim = CASES[name]
    st = make_plan(plan, 5, order)
    assert_matches_reference(jet_fn, shape, dim, st, dtype, tol, grad_tol, "cpp", "cpu")


LARGE_SHAPES = {  # shapes without streams; with the 30 streams of the pair plan each jet is 35 MiB in float32
    "gelu-erf": (2, 50, 3072),
    "gelu-tanh": (2, 50, 3072),
    "quickgelu": (2, 50, 3072),
    "layer-norm": (2, 200, 768),
    "layer-norm-plain": (2, 200, 768),
    "softmax": (2, 12, 50, 256),
}


@needs_cpp
@pytest.mark.parametrize("name", list(CASES))
def test_cpp_outputs_of_32_mib_and_more_match_reference(name):
    """Outputs and gradients of 32 MiB and more take the kernels' huge-page-advised allocation (csrc/jet_rules.cpp
    ``empty_output``): ViT-B/32 sizes, pair plan m = 10, Q = 3 (30 streams), float32."""
    jet_fn, _, _, dim = CASES[name]
    st = make_plan("pairs", 10, 3)
    shape = LARGE_SHAPES[name]
    assert st.size * torch.Size(shape).numel() * 4 >= 32 << 20
    _, tol, grad_tol = TOLERANCES[1]
    assert_matches_reference(jet_fn, shape, dim, st, torch.float32, tol, grad_tol, "cpp", "cpu")


@pytest.mark.parametrize("backend", [pytest.param("triton", marks=needs_triton), pytest.param("cpp", marks=needs_cpp)])
@pytest.mark.parametrize("plan", PLANS)
@pytest.mark.parametrize("affine", [True, False])
def test_fused_layer_norm_parameter_gradients(affine, plan, backend):
    device = DEVICE if backend == "triton" else "cpu"
    st = make_plan(plan, 3, 3, device)
    x = stacked((4, 6), 0, st, device=device).requires_grad_(True)
    weight, bias = (t.requires_grad_(True) for t in _ln_params(x))
    if not affine:
        weight, bias = None, bias
    inputs = [t for t in (x, weight, bias) if t is not None]
    grad = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2)).to(device)
    ref = torch.autograd.grad(jet_layer_norm(x, st, weight, bias, 1e-5, backend="reference"), inputs, grad)
    got = torch.autograd.grad(jet_layer_norm(x, st, weight, bias, 1e-5, backend=backend), inputs, grad)
    for a, b in zip(got, ref):
        assert rel_err(a, b) < 1e-13


@needs_cpp
def test_cpp_layer_norm_parameter_gradients_in_their_own_dtype():
    """float32 jet, float64 affine parameters: the gradients come back in the parameters' dtype."""
    st = make_plan("collapsed", 4, 3)
    x = stacked((3, 5), 0, st, dtype=torch.float32).requires_grad_(True)
    weight, bias = (t.double().requires_grad_(True) for t in _ln_params(x))
    grads = {}
    for backend in ("reference", "cpp"):
        out = jet_layer_norm(x, st, weight, bias, 1e-5, backend=backend)
        assert out.dtype == torch.float32
        grads[backend] = torch.autograd.grad(out.square().sum(), (weight, bias))
    for a, b in zip(grads["cpp"], grads["reference"]):
        assert a.dtype == b.dtype == torch.float64
        assert rel_err(a, b) < 1e-5


@needs_cpp
@pytest.mark.parametrize("plan", PLANS)
@pytest.mark.parametrize("order", [3, 4])
@pytest.mark.parametrize("name", list(CASES))
def test_cpp_gradcheck_float64(name, order, plan):
    """The C++ backward kernels against float64 central finite differences of the C++ forward."""
    jet_fn, _, shape, dim = CASES[name]
    st = make_plan(plan, 3, order)
    x = stacked(shape[-2:], min(dim, 1), st).requires_grad_(True)  # a smaller odd shape of the same layout
    dim = min(dim, 1)
    if name == "layer-norm":
        weight, bias = (t.requires_grad_(True) for t in _ln_params(x))
        fn = lambda t, w, b: jet_layer_norm(t, st, w, b, 1e-5, dim=dim, backend="cpp")
        leaves = (x, weight, bias)
    else:
        fn = lambda t: jet_fn(t, st, dim, backend="cpp")
        leaves = (x,)
    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-8, rtol=1e-6)


def raw_arguments(plan: JetPlan) -> tuple:
    return (None, None, plan.m, plan.order) if plan.is_collapsed else (plan.left, plan.right, plan.m, 0)


@needs_cpp
@pytest.mark.parametrize("plan", PLANS)
def test_cpp_opcheck(plan):
    ops = torch.ops.advsimplex
    st = make_plan(plan, 4, 3)
    x = stacked((2, 3, 5), 0, st, dtype=torch.float32)
    weight, bias = _ln_params(x)
    plan_args = raw_arguments(st)
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
    lead = x.clone().requires_grad_(True)
    cases = [
        (ops.jet_gelu_forward.default, (lead, *plan_args, 2, 0)),
        (ops.jet_gelu_forward.default, (x.movedim(0, 1).requires_grad_(True), *plan_args, 0, 1)),  # non-contiguous
        (ops.jet_layer_norm_forward.default, (lead, weight.requires_grad_(True), bias.requires_grad_(True),
                                              *plan_args, 1e-5, 0)),
        (ops.jet_layer_norm_forward.default, (lead, None, None, *plan_args, 0.1, 0)),
        (ops.jet_softmax_forward.default, (lead, *plan_args, 0)),
        (ops.jet_gelu_backward.default, (grad, x, *plan_args, 1, 0)),
        (ops.jet_layer_norm_backward.default, (grad, x, weight.detach(), *plan_args, 1e-5, 0, True, True)),
        (ops.jet_layer_norm_backward.default, (grad, x, None, *plan_args, 1e-5, 0, False, False)),
        (ops.jet_softmax_backward.default, (grad, x, *plan_args, 0)),
    ]  # fmt: skip
    for op, args in cases:
        torch.library.opcheck(op, args)


@needs_cpp
def test_cpp_ops_reject_bad_arguments():
    """Every memory-guarding check of the registered ops raises and names the argument at fault."""
    ops = torch.ops.advsimplex
    pairs, collapsed = make_plan("pairs", 3, 3), make_plan("collapsed", 3, 3)
    x = stacked((2, 5), 0, pairs)
    xc = stacked((2, 5), 0, collapsed)
    p = raw_arguments(pairs)
    bad = [
        (lambda: ops.jet_gelu_forward(x[:8], *p, 0, 0), r"x has 8 streams along dim 0, expected 1 \+ m \+ P = 9"),
        (lambda: ops.jet_gelu_forward(xc, *raw_arguments(make_plan("collapsed", 3, 4)), 0, 0),
         r"x has 6 streams along dim 0, expected 1 \+ m \+ S = 5"),
        (lambda: ops.jet_gelu_forward(x, pairs.left, None, 3, 0, 0, 0), "left and right must be given together"),
        (lambda: ops.jet_gelu_forward(x, pairs.left, pairs.right[:-1], 3, 0, 0, 0),
         "left and right must have the same length"),
        (lambda: ops.jet_gelu_forward(x, pairs.left + 1, pairs.right, 3, 0, 0, 0), r"left\[\d\] = 3 is not a vertex"),
        (lambda: ops.jet_gelu_forward(x, pairs.left, -pairs.right - 1, 3, 0, 0, 0), r"right\[0\] = -1 is not a vertex"),
        (lambda: ops.jet_gelu_forward(x, pairs.left.float(), pairs.right, 3, 0, 0, 0), "left must be an int64"),
        (lambda: ops.jet_gelu_forward(x, pairs.left.view(-1, 1), pairs.right.view(-1, 1), 3, 0, 0, 0),
         r"left must be 1-D"),
        (lambda: ops.jet_gelu_forward(x, *p[:3], 3, 0, 0), "order must be 0 for a pairs plan"),
        (lambda: ops.jet_gelu_forward(xc, None, None, 3, 5, 0, 0), "order of a collapsed plan must be 3 or 4"),
        (lambda: ops.jet_gelu_forward(xc, None, None, 1, 3, 0, 0), "m = 1 first-order streams have no simplex"),
        (lambda: ops.jet_gelu_forward(x, *p, 7, 0), "kind must be 0"),
        (lambda: ops.jet_gelu_forward(x.long(), *p, 0, 0), "x must be a floating tensor"),
        (lambda: ops.jet_gelu_forward(x[:, 0, 0], *p, 0, 0), "x must have a stream and a feature dimension"),
        (lambda: ops.jet_gelu_backward(x[..., :4], x, *p, 0, 0), r"grad must have the shape of x"),
        (lambda: ops.jet_softmax_forward(x.movedim(0, -1), *p, -1), r"stream dimension \(dim=2\) cannot be the last"),
        (lambda: ops.jet_softmax_backward(x.long(), x, *p, 0), "grad must be a floating tensor"),
        (lambda: ops.jet_layer_norm_forward(x, torch.ones(4, dtype=x.dtype), None, *p, 1e-5, 0),
         r"weight must have shape \(5,\)"),
        (lambda: ops.jet_layer_norm_forward(x, None, torch.ones(5, dtype=torch.long), *p, 1e-5, 0),
         "bias must be a floating tensor"),
        (lambda: ops.jet_layer_norm_forward(x, None, None, *p, -1.0, 0), "eps must be >= 0"),
        (lambda: ops.jet_layer_norm_backward(x, x, None, *p, 1e-5, 0, True, False),
         "weight_grad asks for the gradient of a weight that is None"),
    ]  # fmt: skip
    for fn, message in bad:
        with pytest.raises(RuntimeError, match=message):
            fn()
    with pytest.raises(IndexError, match="Dimension out of range"):
        ops.jet_gelu_forward(x, *p, 0, 3)


@pytest.mark.parametrize("backend", [pytest.param("triton", marks=needs_triton), pytest.param("cpp", marks=needs_cpp)])
@pytest.mark.parametrize("plan", PLANS)
def test_fused_transforms_raise_clearly(backend, plan):
    device = DEVICE if backend == "triton" else "cpu"
    st = make_plan(plan, 3, 3, device)
    x = stacked((2, 5), 0, st, device=device).requires_grad_(True)
    for op in (lambda t: jet_gelu(t, st, "none", backend=backend), lambda t: jet_softmax(t, st, backend=backend),
               lambda t: jet_layer_norm(t, st, None, None, backend=backend)):  # fmt: skip
        y = op(x).square().sum()
        torch.autograd.grad(y, x, retain_graph=True)  # first order: fine
        with pytest.raises(NotImplementedError, match=f"\\({backend} backend\\) has no double backward"):
            torch.autograd.grad(y, x, create_graph=True)
    fn = lambda t: jet_softmax(t, st, backend=backend)
    error = (RuntimeError, "setup_context") if backend == "triton" else (NotImplementedError, "torch.func")
    for transform in (lambda: torch.func.jvp(fn, (x.detach(),), (torch.ones_like(x),)),
                      lambda: torch.func.vmap(fn)(x.detach().unsqueeze(0)),
                      lambda: torch.func.grad(lambda t: fn(t).square().sum())(x.detach())):  # fmt: skip
        with pytest.raises(error[0], match=error[1]):
            transform()


@needs_cpp
def test_cpp_backward_op_has_no_double_backward():
    """The registered backward op refuses to be differentiated (rather than giving a gradient without history)."""
    st = make_plan("pairs", 3, 3)
    x = stacked((2, 5), 0, st).requires_grad_(True)
    grad = torch.ones_like(x).requires_grad_(True)
    dx = torch.ops.advsimplex.jet_softmax_backward(grad, x, *raw_arguments(st), 0)
    with pytest.raises(NotImplementedError, match="jet_softmax \\(cpp backend\\) has no double backward"):
        torch.autograd.grad(dx.sum(), (grad, x))


@needs_cpp
def test_auto_backend_picks_cpp_on_cpu_and_reference_under_torch_func(monkeypatch):
    assert jet_rule_ops.resolve_backend("auto", "cpu") == "cpp"
    st = make_plan("collapsed", 3, 3)
    x = stacked((2, 5), 0, st)
    tangent = torch.randn(x.shape, dtype=x.dtype, generator=torch.Generator().manual_seed(4))
    fn = lambda backend: lambda t: jet_layer_norm(t, st, None, None, 1e-5, backend=backend)
    _, got = torch.func.jvp(fn("auto"), (x,), (tangent,))  # auto falls back to the reference: true tangents
    _, ref = torch.func.jvp(fn("reference"), (x,), (tangent,))
    assert torch.equal(got, ref) and got.abs().sum() > 0
    with pytest.raises(RuntimeError, match="'cpp' runs on cpu tensors, but the input is on meta"):
        jet_rule_ops.resolve_backend("cpp", "meta")
    monkeypatch.setattr(_jet_rules_cpp, "AVAILABLE", False)
    assert jet_rule_ops.resolve_backend("auto", "cpu") == "reference"
    with pytest.raises(RuntimeError, match=r"backend 'cpp' is unavailable: .*rebuild"):
        jet_softmax(x, st, backend="cpp")


@needs_cpp
def test_cpp_torch_compile_traces_the_ops():
    """The compiled ops trace into one graph (fake kernels) and give the eager results and gradients."""
    import torch._dynamo

    st = make_plan("collapsed", 4, 3)
    x = stacked((2, 5), 0, st, dtype=torch.float32).requires_grad_(True)
    weight, bias = (t.requires_grad_(True) for t in _ln_params(x))
    fn = lambda t: jet_softmax(jet_layer_norm(jet_gelu(t, st, "tanh", backend="cpp"), st, weight, bias,
                                              backend="cpp"), st, backend="cpp")  # fmt: skip
    torch._dynamo.reset()
    assert torch._dynamo.explain(fn)(x).graph_break_count == 0
    compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)
    got, ref = compiled(x), fn(x)
    assert torch.equal(got, ref)
    leaves = (x, weight, bias)
    for a, b in zip(torch.autograd.grad(got.sum(), leaves), torch.autograd.grad(ref.sum(), leaves)):
        assert torch.equal(a, b)


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


def vit_jets_fused_vs_reference(backend: str, plan: str, quick_gelu: bool, device: str) -> None:
    """The whole Taylor-mode ViT forward with the fused rules (``backend``, and checkpointing) equals the PyTorch
    rules (values and θ-gradients)."""
    from advsimplex.jets import JetOptions, vit_jets
    from helpers import micro_clip

    tower = micro_clip(quick_gelu=quick_gelu).visual.to(device)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64).to(device)
    deltas = (0.01 * torch.rand(2, 3, 3, 8, 8, generator=g, dtype=torch.float64)).to(device)
    st = make_plan(plan, 3, 3, device)
    params = list(tower.parameters())
    results = []
    for run in ("reference", backend):  # the fused run also recomputes each block in the backward pass
        jets = vit_jets(tower, x, deltas, st, options=JetOptions(rules=run, checkpoint=run != "reference"))
        grads = torch.autograd.grad(jets.second.square().sum() + jets.first.sum(), params)
        results.append((jets, grads))
    (ref, ref_grads), (got, got_grads) = results
    for field in ("value", "first", "second"):
        assert rel_err(getattr(got, field), getattr(ref, field)) < 1e-13
    assert max(rel_err(a, b) for a, b in zip(got_grads, ref_grads)) < 1e-12


@needs_triton
@pytest.mark.parametrize("plan", PLANS)
def test_vit_jets_with_triton_kernels_match_torch(plan):
    vit_jets_fused_vs_reference("triton", plan, quick_gelu=True, device=DEVICE)


@needs_cpp
@pytest.mark.parametrize("plan", PLANS)
@pytest.mark.parametrize("quick_gelu", [False, True])
def test_vit_jets_with_cpp_rules_match_torch(plan, quick_gelu, monkeypatch):
    """On CPU the default rules (``auto``) are the C++ kernels (every rule counted) and equal the PyTorch rules."""
    calls = []
    for name in ("cpp_jet_gelu", "cpp_jet_layer_norm", "cpp_jet_softmax"):
        original = getattr(_jet_rules_cpp, name)
        monkeypatch.setattr(_jet_rules_cpp, name, lambda *a, _f=original, _n=name: calls.append(_n) or _f(*a))
    vit_jets_fused_vs_reference("auto", plan, quick_gelu=quick_gelu, device="cpu")
    assert {"cpp_jet_gelu", "cpp_jet_layer_norm", "cpp_jet_softmax"} <= set(calls)


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
