"""``simplex_head(..., collapsed=True)``: the fused head from collapsed second-order jets (spec §7b).

For variant ``paper`` the head needs the second-order jets only through ``F̄_s = Σ_{k,l} M_kl D²f[δ_k, δ_l]``
per simplex. Every backend takes F̄ (B, S, d) and gives the loss and Ω of the pair-based head: checked to 1e-12
in float64 (Q = 3 and 4) against the pair-based reference, the gradient of F̄ against the pair gradient pulled
back through the collapse (dL/dF2_pair = Cᵀ dL/dF̄), float64 gradcheck (central finite differences) and opcheck
of the compiled op, and the errors of a collapsed call that cannot be served.
"""

from __future__ import annotations

import pytest
import torch
from test_simplex_head import AVAILABLE, BACKENDS, HAS_CUDA, OPTIONS, assert_close, make_inputs, rel, run

from advsimplex import simplex_head
from advsimplex.ops.simplex_head import op_arguments
from advsimplex.reference import JetPlan, collapse_matrix

ALL_BACKENDS = [pytest.param("reference", "cpu", id="reference-cpu"), *BACKENDS]


def collapsed_inputs(inputs: dict, order: int) -> dict:
    """The same jets with F2 collapsed: F̄_s = Σ_p C[s, p] F2_p (float64, then the inputs' dtype)."""
    m = inputs["F1"].shape[1]
    second = JetPlan.collapsed(m, order).collapse_pairs(inputs["F2"].double(), dim=1)
    return {**inputs, "F2": second.to(inputs["F2"].dtype)}


def pair_expectations(inputs: dict, order: int) -> list[torch.Tensor]:
    """Loss, Ω and gradients (f, F1, pair F2, T) of the pair-based reference head, in float64."""
    up = {k: (v.double() if v.is_floating_point() else v) for k, v in inputs.items()}
    return run(up, "reference", order=order, **OPTIONS)


def pulled_back(got: list[torch.Tensor], m: int, order: int) -> list[torch.Tensor]:
    """The collapsed run's outputs with dF̄ pulled back to the pair streams: dL/dF2 = Cᵀ dL/dF̄."""
    c = collapse_matrix(m, order).to(got[4].device)  # (S, P)
    return [*got[:4], torch.einsum("sp,bsd->bpd", c, got[4].double()), got[5]]


@pytest.mark.parametrize(("backend", "device"), ALL_BACKENDS)
@pytest.mark.parametrize("order", [3, 4])
@pytest.mark.parametrize(("dtype", "rtol"), [(torch.float64, 1e-12), (torch.float32, 1e-5)], ids=["fp64", "fp32"])
def test_collapsed_matches_pair_head(backend, device, order, dtype, rtol):
    if dtype == torch.float64 and backend == "triton":
        pytest.skip("the Triton kernels compute in float32 only")
    pairs = make_inputs(b=3, m=6, d=9, c=7, order=order, dtype=torch.float64, device=device, seed=21)
    inputs = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in collapsed_inputs(pairs, order).items()}
    got = run(inputs, backend, order=order, collapsed=True, **OPTIONS)
    assert got[4].shape == inputs["F2"].shape  # the gradient of F̄ (B, S, d)
    expected = pair_expectations(pairs, order)
    assert_close(pulled_back(got, 6, order), expected, rtol, f"{backend} collapsed Q={order} {dtype}")


@pytest.mark.parametrize(("backend", "device"), ALL_BACKENDS)
@pytest.mark.parametrize(
    "shape",
    [{"m": 2, "order": 3}, {"m": 3, "order": 4}, {"c": 37, "d": 33, "m": 4}, {"b": 1, "m": 10, "c": 50, "d": 16}],
    ids=["m2-Q3", "m3-Q4", "C37-d33", "m10"],
)
def test_collapsed_odd_shapes(backend, device, shape):
    order = shape.get("order", 3)
    pairs = make_inputs(dtype=torch.float64, device=device, seed=22, **shape)
    dtype, rtol = (torch.float32, 1e-5) if backend == "triton" else (torch.float64, 1e-12)
    inputs = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in collapsed_inputs(pairs, order).items()}
    got = run(inputs, backend, order=order, collapsed=True, **OPTIONS)
    assert_close(pulled_back(got, pairs["F1"].shape[1], order), pair_expectations(pairs, order), rtol, str(shape))


@pytest.mark.skipif(not AVAILABLE["cpp"][0], reason="compiled extension unavailable")
@pytest.mark.parametrize("order", [3, 4])
def test_cpp_gradcheck_collapsed(order):
    inputs = collapsed_inputs(make_inputs(b=2, m=4, d=4, c=3, order=order, seed=23), order)
    leaves = [inputs[k].requires_grad_() for k in ("f", "F1", "F2", "text_features")]

    def fn(f, F1, F2, text):
        return simplex_head(
            f, F1, F2, text, inputs["labels"], inputs["weights"], backend="cpp", return_omega=True, order=order,
            collapsed=True, **OPTIONS,
        )  # fmt: skip

    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("backend", ["cpp", "triton"])
def test_opcheck_collapsed(backend):
    if not AVAILABLE[backend][0] or (backend == "triton" and HAS_CUDA):
        pytest.skip(f"{backend} unavailable on CPU")
    inputs = collapsed_inputs(make_inputs(b=2, m=4, d=5, c=4, order=3, dtype=torch.float32, seed=24), 3)
    for k in ("f", "F1", "F2", "text_features"):
        inputs[k].requires_grad_()
    args = op_arguments(**inputs, logit_scale=5.0, lam=0.6, variant="paper", kappa=1.3, order=3, collapsed=True)
    if backend == "cpp":
        torch.library.opcheck(torch.ops.advsimplex.simplex_head_forward.default, args)
    else:
        from advsimplex.ops.simplex_head import _register_triton_ops

        _register_triton_ops()
        utils = ("test_schema", "test_autograd_registration", "test_faketensor")  # as test_opcheck_triton_op
        torch.library.opcheck(torch.ops.advsimplex.simplex_head_triton_forward.default, args, test_utils=utils)


@pytest.mark.parametrize(("backend", "device"), ALL_BACKENDS)
def test_collapsed_under_autocast(backend, device):
    pairs = make_inputs(dtype=torch.float32, device=device, seed=25)
    inputs = collapsed_inputs(pairs, 3)
    with torch.autocast(device, dtype=torch.bfloat16):
        loss = simplex_head(**inputs, backend=backend, collapsed=True, **OPTIONS)
    assert loss.dtype == torch.float32
    assert rel(loss, pair_expectations(pairs, 3)[0]) <= 1e-5


@pytest.mark.parametrize(("backend", "device"), ALL_BACKENDS)
def test_collapsed_call_errors(backend, device):
    pairs = make_inputs(dtype=torch.float32, device=device, seed=26)
    inputs = collapsed_inputs(pairs, 3)
    for variant in ("taylor2", "paper-cross"):
        with pytest.raises(ValueError, match=rf"collapsed .* only variant 'paper'.*variant '{variant}'"):
            simplex_head(**inputs, backend=backend, collapsed=True, **{**OPTIONS, "variant": variant})
    with pytest.raises(ValueError, match=r"F2 must have shape \(B, S, d\).*collapsed"):
        simplex_head(**pairs, backend=backend, collapsed=True, **OPTIONS)  # pair jets passed as collapsed
    with pytest.raises(ValueError, match=r"F2 must have shape \(B, P, d\)"):
        simplex_head(**inputs, backend=backend, **OPTIONS)  # collapsed jets passed as pairs


@pytest.mark.parametrize("backend", ["cpp", "triton"])
def test_raw_op_rejects_collapsed_cross_terms(backend):
    """The op takes coefficients: collapsed jets cannot give E[(Jp)q] or E[q²] (c_jpq, c_q2 must be 0)."""
    if not AVAILABLE[backend][0] or (backend == "triton" and HAS_CUDA):
        pytest.skip(f"{backend} unavailable on CPU")
    inputs = collapsed_inputs(make_inputs(dtype=torch.float32, seed=27), 3)
    args = list(op_arguments(**inputs, **OPTIONS, variant="paper", order=3, collapsed=True))
    args[11] = 0.25  # c_q2
    if backend == "triton":
        from advsimplex.ops.simplex_head import _register_triton_ops

        _register_triton_ops()
        op = torch.ops.advsimplex.simplex_head_triton_forward
    else:
        op = torch.ops.advsimplex.simplex_head_forward
    with pytest.raises(ValueError, match=r"simplex_head: collapsed .* c_jpq and c_q2 must be 0"):
        op(*args)
