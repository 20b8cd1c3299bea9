"""The fused ``simplex_head`` op: every available backend against the pure-PyTorch reference head.

Backends: ``cpp`` (C++ CPU kernels), ``triton`` (on CPU through ``TRITON_INTERPRET=1``, set by
conftest.py, or on a GPU), ``cuda`` (GPU only). Values and gradients with respect to f, F1, F2 and
T; float64 gradcheck on the C++ op; ``torch.library.opcheck``; odd shapes; unsupported transforms.
"""

import pytest
import torch
from torch.func import grad, jvp, vmap

from advsimplex import backends, pair_index, simplex_head
from advsimplex.ops.simplex_head import op_arguments, resolve_backend
from advsimplex.reference import simplex_head_reference
from helpers import unit_rows

HAS_CUDA = torch.cuda.is_available()
AVAILABLE = backends()


def backend_params():
    for name, device in (("cpp", "cpu"), ("triton", "cuda" if HAS_CUDA else "cpu"), ("cuda", "cuda")):
        marks = [pytest.mark.gpu] if device == "cuda" else []
        reason = AVAILABLE[name][1]
        marks.append(pytest.mark.skipif(not AVAILABLE[name][0], reason=f"backend {name} unavailable: {reason}"))
        yield pytest.param(name, device, marks=marks, id=f"{name}-{device}")


BACKENDS = list(backend_params())
# (dtype, relative tolerance against the reference): fp32 and bf16 inputs compute in fp32
DTYPES = [(torch.float32, 1e-5), (torch.float64, 1e-10), (torch.bfloat16, 1e-5)]


def make_inputs(b=3, m=5, d=7, c=6, order=3, dtype=torch.float64, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    p, s = pair_index(m, order).shape[0], m - order + 2

    def rnd(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=g, dtype=torch.float64)).to(dtype).to(device)

    return {
        "f": rnd(b, d),
        "F1": rnd(b, m, d, scale=0.3),
        "F2": rnd(b, p, d, scale=0.3),
        "text_features": unit_rows(c, d, seed=seed + 1).to(dtype).to(device),
        "labels": torch.randint(0, c, (b,), generator=g).to(device),
        "weights": torch.rand(b, s, generator=g, dtype=torch.float64).to(dtype).to(device),
    }


def run(inputs, backend, seed=0, **options):
    """Loss, Ω and the gradients of Σ_b r_b loss_b + Σ G Ω with respect to f, F1, F2 and T."""
    leaves = {k: v.detach().clone().requires_grad_(k not in ("labels", "weights")) for k, v in inputs.items()}
    if backend == "oracle":  # the reference head itself, on inputs upcast to float64 (no input checks)
        opts = {"lam": 0.6, "variant": "paper", "kappa": 1.0, "order": 3, **options}
        pairs = pair_index(leaves["F1"].shape[1], opts["order"])
        loss, omega = simplex_head_reference(*leaves.values(), pairs, **opts)
    else:
        loss, omega = simplex_head(**leaves, backend=backend, return_omega=True, **options)
    g = torch.Generator().manual_seed(seed + 7)
    r = torch.rand(loss.shape, generator=g, dtype=torch.float64).to(loss)
    go = torch.randn(omega.shape, generator=g, dtype=torch.float64).to(omega)
    wrt = [leaves[k] for k in ("f", "F1", "F2", "text_features")]
    grads = torch.autograd.grad((r * loss).sum() + (go * omega).sum(), wrt)
    return [loss, omega, *grads]


def reference_run(inputs, **options):
    up = {k: (v.double() if v.is_floating_point() else v) for k, v in inputs.items()}
    return run(up, "oracle", **options)


def rel(a, e):
    return ((a.double() - e.double()).abs().max() / e.double().abs().max().clamp_min(1e-30)).item()


def assert_close(actual, expected, rtol, what):
    """Relative max-norm errors; an output in a low-precision dtype may also be off by twice the error of
    rounding the exact result to that dtype (flash-attention's rule)."""
    for name, a, e in zip(("loss", "omega", "df", "dF1", "dF2", "dT"), actual, expected):
        bound = rtol if a.dtype in (torch.float32, torch.float64) else max(rtol, 2 * rel(e.to(a.dtype), e))
        assert rel(a, e) <= bound, f"{what}: {name} relative error {rel(a, e):.2e} > {bound:.1e}"


OPTIONS = {"logit_scale": 5.0, "lam": 0.7, "kappa": 1.3}


@pytest.mark.parametrize(("backend", "device"), BACKENDS)
@pytest.mark.parametrize(("dtype", "rtol"), DTYPES, ids=["fp32", "fp64", "bf16"])
@pytest.mark.parametrize("order", [3, 4])
@pytest.mark.parametrize("variant", ["paper", "paper-cross", "taylor2"])
def test_matches_reference(backend, device, dtype, rtol, order, variant):
    if dtype == torch.float64 and backend == "triton":
        pytest.skip("the Triton kernels compute in float32 only")
    inputs = make_inputs(order=order, dtype=dtype, device=device)
    got = run(inputs, backend, variant=variant, order=order, **OPTIONS)
    expected = reference_run(inputs, variant=variant, order=order, **OPTIONS)
    assert got[0].dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert got[2].dtype == dtype
    assert_close(got, expected, rtol, f"{backend} {dtype} Q={order} {variant}")


@pytest.mark.parametrize(("backend", "device"), BACKENDS)
@pytest.mark.parametrize(
    "shape",
    [
        {"c": 1},  # one class: softmax is constant, Ω = 0, CE = 0
        {"c": 37, "d": 33},  # neither a power of two; several class tiles in the Triton kernels
        {"m": 2, "order": 3},  # m = order − 1: a single simplex
        {"m": 3, "order": 4},
        {"b": 1, "m": 10, "c": 100, "d": 16},  # the paper's m with P = 19 pairs
    ],
    ids=["C1", "C37-d33", "m2-Q3", "m3-Q4", "m10-C100"],
)
def test_odd_shapes(backend, device, shape):
    order = shape.get("order", 3)
    inputs = make_inputs(dtype=torch.float32, device=device, **shape)
    got = run(inputs, backend, order=order, **OPTIONS)
    expected = reference_run(inputs, order=order, **OPTIONS)
    if shape.get("c") == 1:
        assert got[0].abs().max() < 1e-6 and got[1].abs().max() < 1e-6
        return
    assert_close(got, expected, 1e-5, f"{backend} {shape}")


@pytest.mark.parametrize(("backend", "device"), BACKENDS)
def test_every_option_non_default(backend, device):
    """One row with every option away from its default: Q = 4, paper-cross, κ, λ, s, bf16, m = 6."""
    options = {"variant": "paper-cross", "order": 4, "kappa": 2.5, "lam": 0.3, "logit_scale": 37.0}
    inputs = make_inputs(b=4, m=6, d=12, c=9, order=4, dtype=torch.bfloat16, device=device, seed=3)
    assert_close(run(inputs, backend, **options), reference_run(inputs, **options), 1e-5, f"{backend} all options")


@pytest.mark.parametrize(("backend", "device"), BACKENDS)
@pytest.mark.parametrize("output", ["loss", "omega"])
def test_gradient_of_one_output_only(backend, device, output):
    """Only the loss (or only Ω) reaches the backward: the other output's gradient is None there."""
    inputs = make_inputs(dtype=torch.float32, device=device)

    def grads(name):
        leaves = {k: v.detach().clone().requires_grad_(k not in ("labels", "weights")) for k, v in inputs.items()}
        loss, omega = simplex_head(**leaves, backend=name, return_omega=True, **OPTIONS)
        wrt = [leaves[k] for k in ("f", "F1", "F2", "text_features")]
        return torch.autograd.grad((loss if output == "loss" else omega).sum(), wrt)

    expected = grads("reference")
    for name, a, e in zip(("df", "dF1", "dF2", "dT"), grads(backend), expected):
        assert rel(a, e) <= 1e-5, f"{backend} d{output}/{name}: relative error {rel(a, e):.2e}"


@pytest.mark.skipif(not AVAILABLE["cpp"][0], reason="compiled extension unavailable")
def test_cpp_gradcheck_float64():
    inputs = make_inputs(b=2, m=3, d=4, c=3, order=3)
    leaves = [inputs[k].requires_grad_() for k in ("f", "F1", "F2", "text_features")]

    def fn(f, F1, F2, text):
        loss, omega = simplex_head(
            f, F1, F2, text, inputs["labels"], inputs["weights"], backend="cpp", return_omega=True,
            variant="taylor2", **OPTIONS,
        )  # fmt: skip
        return loss, omega

    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-8, rtol=1e-6)


@pytest.mark.skipif(not AVAILABLE["cpp"][0], reason="compiled extension unavailable")
def test_opcheck_compiled_op():
    inputs = make_inputs(b=2, m=4, d=5, c=4, order=3, dtype=torch.float32)
    for k in ("f", "F1", "F2", "text_features"):
        inputs[k].requires_grad_()
    args = op_arguments(**inputs, logit_scale=5.0, lam=0.6, variant="paper", kappa=1.0, order=3)
    torch.library.opcheck(torch.ops.advsimplex.simplex_head_forward.default, args)


@pytest.mark.skipif(not AVAILABLE["triton"][0], reason="triton unavailable")
def test_opcheck_triton_op():
    from advsimplex.ops.simplex_head import _register_triton_ops

    _register_triton_ops()
    device = "cuda" if HAS_CUDA else "cpu"
    inputs = make_inputs(b=2, m=3, d=5, c=4, order=3, dtype=torch.float32, device=device)
    for k in ("f", "F1", "F2", "text_features"):
        inputs[k].requires_grad_()
    args = op_arguments(**inputs, logit_scale=5.0, lam=0.6, variant="paper-cross", kappa=1.0, order=3)
    # aot_dispatch_dynamic would need torch.compile's Triton codegen on CPU tensors; it runs on a GPU.
    utils = ("test_schema", "test_autograd_registration", "test_faketensor")
    torch.library.opcheck(torch.ops.advsimplex.simplex_head_triton_forward.default, args, test_utils=utils)


@pytest.mark.skipif(not AVAILABLE["cpp"][0], reason="compiled extension unavailable")
def test_torch_compile_traces_the_compiled_op():
    inputs = make_inputs(dtype=torch.float32)

    def loss_fn(f, F1, F2, text, labels, weights):
        return simplex_head(f, F1, F2, text, labels, weights, backend="cpp", **OPTIONS).sum()

    compiled = torch.compile(loss_fn, fullgraph=True, backend="aot_eager")
    leaves = [inputs[k].clone().requires_grad_() for k in ("f", "F1", "F2", "text_features")]
    value = compiled(*leaves, inputs["labels"], inputs["weights"])
    grads = torch.autograd.grad(value, leaves)
    eager = [inputs[k].clone().requires_grad_() for k in ("f", "F1", "F2", "text_features")]
    expected_value = loss_fn(*eager, inputs["labels"], inputs["weights"])
    expected = torch.autograd.grad(expected_value, eager)
    torch.testing.assert_close(value, expected_value)
    for a, e in zip(grads, expected):
        torch.testing.assert_close(a, e)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_torch_compile_gpu(backend):
    if not AVAILABLE[backend][0]:
        pytest.skip(AVAILABLE[backend][1])
    inputs = make_inputs(dtype=torch.float32, device="cuda")

    def loss_fn(f, F1, F2, text):
        return simplex_head(f, F1, F2, text, inputs["labels"], inputs["weights"], backend=backend, **OPTIONS).sum()

    compiled = torch.compile(loss_fn, fullgraph=True)
    leaves = [inputs[k].clone().requires_grad_() for k in ("f", "F1", "F2", "text_features")]
    torch.testing.assert_close(compiled(*leaves), loss_fn(*leaves))


@pytest.mark.parametrize(("backend", "device"), BACKENDS)
def test_unsupported_transforms_raise(backend, device):
    inputs = make_inputs(dtype=torch.float32, device=device)
    rest = {k: inputs[k] for k in ("labels", "weights")}

    def total(f):
        return simplex_head(
            f, inputs["F1"], inputs["F2"], inputs["text_features"], **rest, backend=backend, **OPTIONS
        ).sum()

    f = inputs["f"].clone().requires_grad_()
    (g1,) = torch.autograd.grad(total(f), f, create_graph=True)
    with pytest.raises(NotImplementedError, match="double backward"):
        torch.autograd.grad(g1.sum(), f)
    f0 = inputs["f"]
    transforms = (
        lambda: jvp(total, (f0,), (torch.ones_like(f0),)),
        lambda: grad(total)(f0),
        lambda: vmap(total)(f0[None]),
    )
    for transform in transforms:
        with pytest.raises(NotImplementedError, match=r"torch\.func"):
            transform()


def test_reference_backend_supports_torch_func():
    inputs = make_inputs()
    rest = {k: inputs[k] for k in ("F1", "F2", "text_features", "labels", "weights")}
    total = lambda f: simplex_head(f, **rest, backend="reference", **OPTIONS).sum()
    f = inputs["f"]
    tangent = torch.randn_like(f)
    _, directional = jvp(total, (f,), (tangent,))
    torch.testing.assert_close(directional, (grad(total)(f) * tangent).sum())


def test_unavailable_backend_errors(monkeypatch):
    inputs = make_inputs(dtype=torch.float32)
    if not HAS_CUDA:
        with pytest.raises(RuntimeError, match="backend 'cuda' is unavailable"):
            simplex_head(**inputs, backend="cuda", **OPTIONS)
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
        with pytest.raises(RuntimeError, match=r"backend 'triton' is unavailable.*TRITON_INTERPRET"):
            simplex_head(**inputs, backend="triton", **OPTIONS)
    if AVAILABLE["cpp"][0]:
        meta = {k: v.to("meta") for k, v in inputs.items() if k != "labels"}
        with pytest.raises(RuntimeError, match="runs on cpu tensors"):
            resolve_backend("cpp", meta["f"].device)


def test_auto_prefers_the_compiled_kernels_on_cpu():
    expected = "cpp" if AVAILABLE["cpp"][0] else "reference"
    assert resolve_backend("auto", torch.device("cpu")) == expected


@pytest.mark.skipif(not AVAILABLE["cpp"][0], reason="compiled extension unavailable")
def test_large_class_count_cpp():
    """C = 32k classes (tiled in the GPU kernels; a long row here)."""
    inputs = make_inputs(b=2, m=3, d=16, c=32768, dtype=torch.float32, seed=5)
    got = run(inputs, "cpp", **OPTIONS)
    assert_close(got, reference_run(inputs, **OPTIONS), 1e-5, "cpp C=32768")


@pytest.mark.skipif(not AVAILABLE["cpp"][0], reason="compiled extension unavailable")
def test_loss_only_backward_and_empty_batch():
    inputs = make_inputs(dtype=torch.float32)
    f = inputs["f"].clone().requires_grad_()
    rest = {k: v for k, v in inputs.items() if k != "f"}
    simplex_head(f, **rest, backend="cpp", **OPTIONS).sum().backward()  # Ω unused: its gradient is None
    expected = inputs["f"].clone().requires_grad_()
    simplex_head(expected, **rest, backend="reference", **OPTIONS).sum().backward()
    torch.testing.assert_close(f.grad, expected.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("backend", "device"), BACKENDS)
def test_frozen_text_features(backend, device):
    """Training freezes the text tower: T gets no gradient (and the backward skips its GEMM)."""
    inputs = make_inputs(dtype=torch.float32, device=device)
    rest = {k: inputs[k] for k in ("text_features", "labels", "weights")}
    results = []
    for name in (backend, "reference"):
        leaves = {k: inputs[k].clone().requires_grad_() for k in ("f", "F1", "F2")}
        loss = simplex_head(**leaves, **rest, backend=name, **OPTIONS)
        results.append(torch.autograd.grad(loss.sum(), list(leaves.values())))
    assert rest["text_features"].grad is None
    for got, ref in zip(*results):
        assert rel(got, ref) < 1e-5


# ---- conventions shared by every backend: int32 labels, constant weights, any common scale of the jets -------

ALL_BACKENDS = [pytest.param("reference", "cpu", id="reference-cpu"), *BACKENDS]


@pytest.mark.parametrize(("backend", "device"), ALL_BACKENDS)
def test_int32_labels(backend, device):
    inputs = make_inputs(dtype=torch.float32, device=device, seed=8)
    expected = run(inputs, backend, **OPTIONS)
    got = run({**inputs, "labels": inputs["labels"].int()}, backend, **OPTIONS)
    for a, e in zip(got, expected):
        assert torch.equal(a, e)


@pytest.mark.parametrize(("backend", "device"), ALL_BACKENDS)
def test_weights_are_constants(backend, device):
    """ω is a constant of the loss (spec §6): no backend passes a gradient to it, and all agree on the values."""
    inputs = make_inputs(dtype=torch.float32, device=device, seed=9)
    weights = inputs["weights"].clone().requires_grad_()
    f = inputs["f"].clone().requires_grad_()
    rest = {k: inputs[k] for k in ("F1", "F2", "text_features", "labels")}
    loss = simplex_head(f, weights=weights, **rest, backend=backend, **OPTIONS)
    loss.sum().backward()
    assert weights.grad is None
    assert f.grad is not None
    expected = reference_run(inputs, **OPTIONS)[0]
    assert rel(loss.detach(), expected) <= 1e-5


SCALES = [
    (torch.float32, 1e20, 1e-5),
    (torch.float32, 1e-25, 1e-5),
    (torch.float64, 1e20, 1e-10),
    (torch.float64, 1e-25, 1e-10),
    (torch.float64, 1e250, 1e-10),
    (torch.float64, 1e-250, 1e-10),
]


@pytest.mark.parametrize(("backend", "device"), ALL_BACKENDS)
@pytest.mark.parametrize(("dtype", "scale", "rtol"), SCALES, ids=[f"{str(d)[6:]}-{s:g}" for d, s, _ in SCALES])
def test_common_scale_of_the_jets(backend, device, dtype, scale, rtol):
    """The head depends on f only through f/‖f‖: jets scaled by s give the same loss and Ω, and gradients 1/s
    times those of the unscaled jets (where ‖f‖² itself would overflow or underflow)."""
    if dtype == torch.float64 and backend == "triton":
        pytest.skip("the Triton kernels take float32/bfloat16/float16 inputs")
    inputs = make_inputs(dtype=dtype, device=device, seed=10)
    scaled = {k: (v * scale if k in ("f", "F1", "F2") else v) for k, v in inputs.items()}
    got = run(scaled, backend, **OPTIONS)
    assert all(torch.isfinite(t).all() for t in got), f"{backend}: non-finite values at scale {scale:g}"
    for t in got[2:5]:  # dL/d(s·x) = (1/s) dL/dx
        t.mul_(scale)
    assert_close(got, reference_run(inputs, **OPTIONS), rtol, f"{backend} {dtype} scale {scale:g}")


@pytest.mark.parametrize(("backend", "device"), ALL_BACKENDS)
def test_power_of_two_scale_changes_no_bit(backend, device):
    inputs = make_inputs(dtype=torch.float32, device=device, seed=11)
    expected = run(inputs, backend, **OPTIONS)
    for scale in (2.0**40, 2.0**-40):
        got = run({k: (v * scale if k in ("f", "F1", "F2") else v) for k, v in inputs.items()}, backend, **OPTIONS)
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
        for a, e in zip(got[2:5], expected[2:5]):
            assert torch.equal(a * scale, e)


@pytest.mark.parametrize("backend", ["reference", "cpp"])
@pytest.mark.parametrize("scale", [1e-200, 1e200])
def test_gradcheck_at_extreme_scale(backend, scale):
    """float64 central finite differences (step scaled with the jets) at jets scaled by 1e±200."""
    if backend == "cpp" and not AVAILABLE["cpp"][0]:
        pytest.skip("compiled extension unavailable")
    inputs = make_inputs(b=2, m=3, d=4, c=3, order=3, seed=12)
    leaves = [(inputs[k] * scale).requires_grad_() for k in ("f", "F1", "F2")]

    def fn(f, F1, F2):
        return simplex_head(
            f, F1, F2, inputs["text_features"], inputs["labels"], inputs["weights"], backend=backend,
            return_omega=True, variant="taylor2", **OPTIONS,
        )  # fmt: skip

    # outputs O(1), gradients O(1/scale): tolerances relative to the gradients' scale
    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6 * scale, atol=1e-7 / scale, rtol=1e-6)


# ---- one source for the variants: the coefficients of reference.variant_coefficients reach every kernel ------

ODD_KAPPAS = [0.0, 1e-3, 0.37, 7.25, 1e3]


@pytest.mark.parametrize(("backend", "device"), BACKENDS)
@pytest.mark.parametrize("variant", ["paper", "paper-cross", "taylor2"])
@pytest.mark.parametrize("kappa", ODD_KAPPAS)
def test_every_variant_and_kappa(backend, device, variant, kappa):
    dtype, rtol = (torch.float32, 1e-5) if backend == "triton" else (torch.float64, 1e-10)
    inputs = make_inputs(b=2, m=4, d=6, c=5, dtype=dtype, device=device, seed=13)
    options = {**OPTIONS, "kappa": kappa, "variant": variant}
    assert_close(
        run(inputs, backend, **options), reference_run(inputs, **options), rtol, f"{backend} {variant} κ={kappa}"
    )


def test_variant_coefficients_spell_the_spec_table():
    """Ω of closed_form_alignment is c_jp2·E(Jp)² + c_qsq·Σ_c(E pᵀHp)² + c_jpq·E[(Jp)q] + c_q2·E[q²] (spec §5)."""
    from advsimplex.reference import closed_form_alignment, simplex_expectations, variant_coefficients

    g = torch.Generator().manual_seed(14)
    u = torch.randn(2, 5, 6, generator=g, dtype=torch.float64)
    h = torch.randn(2, pair_index(5, 3).shape[0], 6, generator=g, dtype=torch.float64)
    e = simplex_expectations(u, h, 3)
    terms = (e.jp2, (e.q * e.q).sum(-1), e.jpq, e.q2)
    table = {"paper": (2, 0.5 * 2.5, 0, 0), "paper-cross": (1, 0.25 * 2.5, 1, 0), "taylor2": (1, 0, 1, 0.25)}
    for variant, expected in table.items():
        assert variant_coefficients(variant, 2.5) == expected
        omega = sum(c * t for c, t in zip(expected, terms))
        torch.testing.assert_close(closed_form_alignment(u, h, variant=variant, kappa=2.5, order=3), omega)
    with pytest.raises(ValueError, match="sampled"):
        variant_coefficients("sampled", 3)
