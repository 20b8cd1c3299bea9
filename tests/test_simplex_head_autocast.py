"""``simplex_head`` under ``torch.autocast``: every backend computes in float32 (float64 inputs in float64).

The policy (csrc/simplex_head.cpp, ``torch.library.register_autocast`` for the Triton ops, an autocast-free
region for the reference): under autocast the head casts bfloat16/float16 tensors to float32 and runs with
autocast off. So its results on given inputs are the float32 results on those inputs, whatever autocast
asks for: the tolerance against the float64 oracle is the float32 one (1e-5 relative), plus, for gradients
returned in bf16/fp16 (the inputs' dtype), twice the error of rounding the exact gradient to that dtype.
Before the policy, autocast ran the head's GEMM in bf16 (a crash in cpp, errors of 1e-2 in reference/triton).
"""

from __future__ import annotations

import pytest
import torch
from test_simplex_head import AVAILABLE, HAS_CUDA, OPTIONS, assert_close, make_inputs, reference_run

from advsimplex import simplex_head
from advsimplex.ops.simplex_head import op_arguments


def backend_params():
    cpu = [("reference", "cpu"), ("cpp", "cpu")] + ([] if HAS_CUDA else [("triton", "cpu")])
    gpu = [("reference", "cuda"), ("cuda", "cuda"), ("triton", "cuda")]
    for name, device in cpu + gpu:
        marks = [pytest.mark.gpu] if device == "cuda" else []
        if name != "reference":
            reason = f"backend {name} unavailable: {AVAILABLE[name][1]}"
            marks.append(pytest.mark.skipif(not AVAILABLE[name][0], reason=reason))
        yield pytest.param(name, device, marks=marks, id=f"{name}-{device}")


BACKENDS = list(backend_params())


def run_autocast(inputs, backend, device, autocast_dtype, backward_inside=False):
    """Loss, Ω and the gradients (f, F1, F2, T) of a fixed random combination, the forward under autocast
    (and the backward too when ``backward_inside``)."""
    leaves = {k: v.detach().clone().requires_grad_(k not in ("labels", "weights")) for k, v in inputs.items()}
    g = torch.Generator().manual_seed(7)
    with torch.autocast(device, dtype=autocast_dtype):
        loss, omega = simplex_head(**leaves, backend=backend, return_omega=True, **OPTIONS)
        r = torch.rand(loss.shape, generator=g, dtype=torch.float64).to(loss)
        go = torch.randn(omega.shape, generator=g, dtype=torch.float64).to(omega)
        objective = (r * loss).sum() + (go * omega).sum()
        wrt = [leaves[k] for k in ("f", "F1", "F2", "text_features")]
        if backward_inside:
            grads = torch.autograd.grad(objective, wrt)
    if not backward_inside:
        grads = torch.autograd.grad(objective, wrt)
    return [loss, omega, *grads]


@pytest.mark.parametrize(("backend", "device"), BACKENDS)
@pytest.mark.parametrize("autocast_dtype", [torch.bfloat16, torch.float16], ids=["ac-bf16", "ac-fp16"])
@pytest.mark.parametrize(
    "input_dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64], ids=["fp32", "bf16", "fp16", "fp64"]
)
def test_autocast_computes_in_float32(backend, device, autocast_dtype, input_dtype):
    if input_dtype == torch.float64 and backend == "triton":
        pytest.skip("the Triton kernels take float32/bfloat16/float16 inputs")
    inputs = make_inputs(dtype=input_dtype, device=device, seed=2)
    got = run_autocast(inputs, backend, device, autocast_dtype)
    expected = reference_run(inputs, **OPTIONS)  # float64 oracle on the same (rounded) inputs
    compute = torch.float64 if input_dtype == torch.float64 else torch.float32
    assert got[0].dtype == compute and got[1].dtype == compute
    assert all(t.dtype == input_dtype for t in got[2:]), [t.dtype for t in got[2:]]
    rtol = 1e-10 if input_dtype == torch.float64 else 1e-5
    assert_close(got, expected, rtol, f"{backend} autocast {autocast_dtype} inputs {input_dtype}")


@pytest.mark.parametrize(("backend", "device"), [p for p in BACKENDS if p.values[0] != "reference"])
def test_fused_backward_inside_the_autocast_region(backend, device):
    """The fused ops follow the policy in their backward too, even when ``backward()`` runs under autocast.
    (The reference is plain PyTorch: like any model, its backward under autocast runs its matmuls in bf16;
    PyTorch advises running the backward outside autocast, as ``advsimplex-train`` does.)"""
    inputs = make_inputs(dtype=torch.float32, device=device, seed=4)
    got = run_autocast(inputs, backend, device, torch.bfloat16, backward_inside=True)
    assert_close(got, reference_run(inputs, **OPTIONS), 1e-5, f"{backend} backward inside autocast")


@pytest.mark.skipif(not AVAILABLE["cpp"][0], reason="compiled extension unavailable")
def test_raw_compiled_op_under_autocast():
    """The registered op itself (no Python dispatch) follows the policy: fp32 outputs, no dtype error."""
    x = make_inputs(dtype=torch.bfloat16, seed=5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = torch.ops.advsimplex.simplex_head_forward(*op_arguments(**x, **OPTIONS, variant="paper", order=3))
    assert all(t.dtype == torch.float32 for t in outputs)
    loss = outputs[0]
    expected = reference_run(x, **OPTIONS)[0]
    assert ((loss.double() - expected).abs().max() / expected.abs().max()).item() < 1e-5


# ---- a full training run with bf16 autocast, per backend -----------------------------------------------


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    from test_train_support import write_cifar_slice  # the training package only where a run is made

    return write_cifar_slice(tmp_path_factory.mktemp("data") / "c10.npz", "train", 16)


def train_backends():
    for name, device in (("reference", "cpu"), ("cpp", "cpu"), ("triton", "cpu"), ("cuda", "cuda"), ("auto", "cuda")):
        marks = [pytest.mark.gpu] if device == "cuda" else []
        if name == "triton" and HAS_CUDA:
            marks.append(pytest.mark.skip(reason="the CPU triton run needs TRITON_INTERPRET (no GPU visible)"))
        if name not in ("reference", "auto"):
            marks.append(pytest.mark.skipif(not AVAILABLE[name][0], reason=f"backend {name} unavailable"))
        yield pytest.param(name, device, marks=marks, id=f"{name}-{device}")


@pytest.mark.parametrize(("backend", "device"), list(train_backends()))
def test_train_with_bf16_autocast(tmp_path, npz, backend, device):
    """``advsimplex-train --precision bf16`` (CUDA: the default precision, bf16 autocast) runs to the end."""
    from test_train_support import single_thread

    from advsimplex.train.cli import main

    out = tmp_path / "run"
    args = ["--model", "advsimplex-micro-vit", "--dataset", f"npz:{npz}", "--method", "advsimplex",
            "--batch-size", "4", "--steps", "2", "--attack-steps", "2", "--eval-samples", "0", "--log-every", "1",
            "--backend", backend, "--device", device, "--out-dir", str(out), "--no-progress", "--quiet",
            "--no-tensorboard"]  # fmt: skip
    if device == "cpu":
        args += ["--precision", "bf16"]  # on CUDA, bf16 autocast is the default ("auto")
    with single_thread():
        assert main(args) == 0
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3  # header + 2 steps
    header = rows[0].split(",")
    losses = [float(row.split(",")[header.index("loss")]) for row in rows[1:]]
    assert all(torch.isfinite(torch.tensor(losses))), losses
