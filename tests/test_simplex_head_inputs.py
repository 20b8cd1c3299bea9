"""Bad inputs of the registered ``simplex_head`` ops raise a clear error naming the argument.

The Python entry point checks its arguments, but a direct call of the registered op, or a call from a
torch.compile graph (where data-dependent Python checks do not run), reaches the kernels directly: every
check that guards memory lives in the ops themselves (C++ for the compiled ops, the op bodies and fake
kernels for the Triton ops). Each case asserts the error type and that the message names the argument;
under torch.compile a shape or dtype error is raised while tracing (by the fake kernels: dynamo reports it
as ``TorchRuntimeError`` quoting the original error), a label error when the graph runs.
"""

from __future__ import annotations

import re

import pytest
import torch
from test_simplex_head import AVAILABLE, HAS_CUDA, OPTIONS, make_inputs, reference_run

from advsimplex import simplex_head
from advsimplex.ops.simplex_head import op_arguments

ARGUMENTS = (
    "f", "F1", "F2", "text_features", "labels", "weights", "logit_scale", "lam", "c_jp2", "c_qsq", "c_jpq", "c_q2",
    "order", "collapsed",
)  # fmt: skip


def base_args(device="cpu", **shape):
    x = make_inputs(dtype=torch.float32, device=device, **shape)
    return dict(zip(ARGUMENTS, op_arguments(**x, **OPTIONS, variant="paper", order=3)))


def _labels(*values):
    return lambda a: torch.tensor(values, device=a["f"].device)


# (id, replacement of one argument: name -> function of the valid arguments, error type, message pattern)
# fmt: off
CASES = [
    ("label-1e9", {"labels": _labels(0, 1, 10**9)}, ValueError, r"labels must lie in \[0, C\) = \[0, 6\)"),
    ("label-negative", {"labels": _labels(0, -1, 2)}, ValueError, r"labels must lie in \[0, C\)"),
    ("label-equals-C", {"labels": _labels(0, 6, 2)}, ValueError, r"labels must lie in \[0, C\).*\[0, 6\]"),
    ("labels-int32-huge", {"labels": lambda a: torch.tensor([0, 2**31 - 1, 1], dtype=torch.int32)}, ValueError,
     r"labels must lie in \[0, C\)"),
    ("labels-float", {"labels": lambda a: a["labels"].float()}, TypeError, r"labels must be an int64 or int32"),
    ("labels-long", {"labels": lambda a: torch.zeros(4, dtype=torch.long)}, ValueError, r"labels must have shape"),
    ("labels-2d", {"labels": lambda a: a["labels"][:, None]}, ValueError, r"labels must have shape"),
    ("weights-one-column", {"weights": lambda a: a["weights"][:, :1]}, ValueError,
     r"weights must have shape \(B, S\) = \(3, 4\)"),
    ("weights-int", {"weights": lambda a: a["weights"].long()}, TypeError, r"weights must have a floating dtype"),
    ("weights-batch", {"weights": lambda a: a["weights"][:2]}, ValueError, r"weights must have shape"),
    ("F2-few-pairs", {"F2": lambda a: a["F2"][:, :3]}, ValueError, r"F2 must have shape \(B, P, d\) = \(3, 9, 7\)"),
    ("F1-width", {"F1": lambda a: a["F1"][..., :4]}, ValueError, r"F1 must have shape \(B, m, d\)"),
    ("F1-2d", {"F1": lambda a: a["F1"][:, 0]}, ValueError, r"F1 must have shape"),
    ("F1-batch", {"F1": lambda a: a["F1"][:2]}, ValueError, r"F1 must have shape"),
    ("f-1d", {"f": lambda a: a["f"][0]}, ValueError, r"\bf must have shape \(B, d\)"),
    ("f-int", {"f": lambda a: a["f"].long()}, TypeError, r"\bf must have a floating dtype"),
    ("text-width", {"text_features": lambda a: a["text_features"][:, :5]}, ValueError, r"text must have shape"),
    ("text-empty", {"text_features": lambda a: a["text_features"][:0]}, ValueError,
     r"text must hold at least one class"),
    ("text-dtype", {"text_features": lambda a: a["text_features"].half()}, TypeError, r"text has dtype"),
    ("m-too-short", {"F1": lambda a: a["F1"][:, :1], "F2": lambda a: a["F2"][:, :1]}, ValueError,
     r"F1 holds m = 1 steps: no simplex of order 3"),
    ("order-5", {"order": lambda a: 5}, ValueError, r"order must be 3 or 4"),
    ("logit-scale-zero", {"logit_scale": lambda a: 0.0}, ValueError, r"logit_scale must be a finite positive"),
    ("logit-scale-nan", {"logit_scale": lambda a: float("nan")}, ValueError, r"logit_scale"),
    ("lam-inf", {"lam": lambda a: float("inf")}, ValueError, r"lam must be a finite number"),
    ("coefficient-nan", {"c_qsq": lambda a: float("nan")}, ValueError, r"variant coefficient c_qsq must be a finite"),
    ("coefficient-inf", {"c_q2": lambda a: float("-inf")}, ValueError, r"variant coefficient c_q2 must be a finite"),
    ("collapsed-pair-jets", {"collapsed": lambda a: True, "c_jpq": lambda a: 0.0}, ValueError,
     r"F2 must have shape \(B, S, d\) = \(3, 4, 7\)"),
]
# fmt: on


def bad_args(case, device="cpu"):
    _, replace, error, pattern = case
    args = base_args(device)
    for name, make in replace.items():
        value = make(args)
        args[name] = value.to(device) if isinstance(value, torch.Tensor) else value
    return tuple(args.values()), error, pattern


def forward_op(backend):
    if backend == "triton":
        from advsimplex.ops.simplex_head import _register_triton_ops

        _register_triton_ops()
        return torch.ops.advsimplex.simplex_head_triton_forward
    return torch.ops.advsimplex.simplex_head_forward


def assert_clear_error(raised: BaseException, error: type, pattern: str) -> None:
    """``raised`` is ``error`` naming the argument, or dynamo's wrapper of it (a tracing-time error)."""
    message = str(raised)
    if isinstance(raised, torch._dynamo.exc.TorchRuntimeError):
        assert f"got {error.__name__}(" in message, message[:600]
    else:
        assert isinstance(raised, error), f"expected {error.__name__}, got {type(raised).__name__}: {message[:300]}"
    assert re.search(pattern, message), f"{pattern!r} not in {message[:600]!r}"
    assert "simplex_head:" in message


def op_params():
    for backend, device, mode in (
        ("cpp", "cpu", "eager"),
        ("cpp", "cpu", "compile"),
        ("triton", "cpu", "eager"),
        ("cuda", "cuda", "eager"),
        ("cuda", "cuda", "compile"),
        ("triton", "cuda", "eager"),
        ("triton", "cuda", "compile"),
    ):
        marks = [pytest.mark.gpu] if device == "cuda" else []
        if backend == "triton" and device == "cpu" and HAS_CUDA:
            marks.append(pytest.mark.skip(reason="the CPU lane of the Triton op needs TRITON_INTERPRET"))
        marks.append(pytest.mark.skipif(not AVAILABLE[backend][0], reason=f"backend {backend} unavailable"))
        yield pytest.param(backend, device, mode, marks=marks, id=f"{backend}-{device}-{mode}")


def call(op, args, mode):
    if mode == "compile":
        torch._dynamo.reset()  # a fresh compilation per case (no fallback to eager after recompilations)
        return torch.compile(lambda *a: op(*a)[0], backend="aot_eager" if args[0].is_cpu else "inductor")(*args)
    return op(*args)


@pytest.mark.parametrize(("backend", "device", "mode"), list(op_params()))
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_raw_forward_op_rejects_bad_input(backend, device, mode, case):
    args, error, pattern = bad_args(case, device)
    with pytest.raises(Exception) as info:
        call(forward_op(backend), args, mode)
    assert_clear_error(info.value, error, pattern)


@pytest.mark.skipif(not AVAILABLE["cpp"][0], reason="compiled extension unavailable")
@pytest.mark.parametrize("label", [10**9, -1, 6])
def test_compiled_public_function_checks_labels(label):
    """torch.compile skips the Python label check (data-dependent): the op's own check raises."""
    x = make_inputs(dtype=torch.float32)
    x["labels"] = torch.tensor([0, label, 1])

    def loss(f, F1, F2, text, labels, weights):
        return simplex_head(f, F1, F2, text, labels, weights, backend="cpp", **OPTIONS).sum()

    torch._dynamo.reset()
    with pytest.raises(ValueError, match=r"simplex_head: labels must lie in \[0, C\)"):
        torch.compile(loss, backend="aot_eager", fullgraph=True)(*x.values())


def backward_args(backend, device):
    args = base_args(device)
    forward = forward_op(backend)(*args.values())
    b, s = args["weights"].shape
    return {
        "grad_loss": torch.ones(b, device=device), "grad_omega": torch.ones(b, s, device=device),
        **{k: args[k] for k in ARGUMENTS[:6]}, "logits": forward[2], "normalized": forward[3], "stats": forward[4],
        **{k: args[k] for k in ARGUMENTS[6:]}, "text_grad": True,
    }  # fmt: skip


BACKWARD_CASES = [
    ("logits-shape", {"logits": lambda a: a["logits"][:, :-1]}, ValueError, r"logits must have shape \(B, K, C\)"),
    ("logits-dtype", {"logits": lambda a: a["logits"].double()}, TypeError, r"logits has dtype"),
    ("normalized-shape", {"normalized": lambda a: a["normalized"][..., :3]}, ValueError, r"normalized must have shape"),
    ("stats-shape", {"stats": lambda a: a["stats"][:, :4]}, ValueError, r"stats must have shape \(B, K \+ P\)"),
    ("grad-omega-shape", {"grad_omega": lambda a: a["grad_omega"][:, :1]}, ValueError, r"grad_omega must have shape"),
    ("grad-loss-shape", {"grad_loss": lambda a: a["grad_loss"][:1]}, ValueError, r"grad_loss must have shape"),
    ("weights-shape", {"weights": lambda a: a["weights"][:, :2]}, ValueError, r"weights must have shape"),
    ("F2-shape", {"F2": lambda a: a["F2"][:, 1:]}, ValueError, r"F2 must have shape"),
]


@pytest.mark.parametrize(("backend", "device", "mode"), [p for p in op_params() if p.values[2] == "eager"])
@pytest.mark.parametrize("case", BACKWARD_CASES, ids=[c[0] for c in BACKWARD_CASES])
def test_raw_backward_op_rejects_bad_input(backend, device, mode, case):
    _, replace, error, pattern = case
    args = backward_args(backend, device)
    for name, make in replace.items():
        args[name] = make(args)
    ops = torch.ops.advsimplex
    op = ops.simplex_head_triton_backward if backend == "triton" else ops.simplex_head_backward
    with pytest.raises(Exception) as info:
        op(*args.values())
    assert_clear_error(info.value, error, pattern)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_arguments_on_two_devices(backend):
    if not AVAILABLE[backend][0]:
        pytest.skip(AVAILABLE[backend][1])
    for name in ("labels", "weights", "text_features", "F2"):
        args = base_args("cuda")
        args[name] = args[name].cpu()
        shown = name.replace("_features", "")
        with pytest.raises(ValueError, match=rf"simplex_head: {shown} is on cpu but f is on cuda"):
            forward_op(backend)(*args.values())


@pytest.mark.gpu
def test_cuda_trajectory_limit():
    if not AVAILABLE["cuda"][0]:
        pytest.skip(AVAILABLE["cuda"][1])
    args = base_args("cuda", m=33)
    with pytest.raises(ValueError, match=r"m = 33 steps exceed the CUDA kernels' limit of 32"):
        forward_op("cuda")(*args.values())


def layouts(x):
    """The same values in non-contiguous layouts: transposed storage, expanded, offset views."""
    wide = torch.zeros(x["F1"].shape[0], x["F1"].shape[1], 2 * x["F1"].shape[2])
    wide[..., 1::2] = x["F1"]
    return {
        "f": x["f"].t().contiguous().t(),
        "F1": wide[..., 1::2],
        "F2": torch.cat([torch.zeros_like(x["F2"][:, :1]), x["F2"]], dim=1)[:, 1:],
        "text_features": x["text_features"].t().contiguous().t(),
        "labels": torch.stack([x["labels"], x["labels"]], dim=1)[:, 0],
        "weights": x["weights"][:, None, :].expand(-1, 2, -1)[:, 0],
    }


@pytest.mark.parametrize("backend", ["cpp", "triton"])
def test_strided_inputs_match_contiguous(backend):
    if not AVAILABLE[backend][0] or (backend == "triton" and HAS_CUDA):
        pytest.skip("backend unavailable on CPU")
    x = make_inputs(dtype=torch.float32, seed=3)
    strided = layouts(x)
    assert not all(t.is_contiguous() for t in strided.values())
    op = forward_op(backend)
    got = op(*op_arguments(**strided, **OPTIONS, variant="paper", order=3))
    want = op(*op_arguments(**x, **OPTIONS, variant="paper", order=3))
    for a, e in zip(got[:2], want[:2]):
        torch.testing.assert_close(a, e, rtol=0, atol=0)
    expected = reference_run(x, **OPTIONS)[0]
    assert ((got[0].double() - expected).abs().max() / expected.abs().max()).item() < 1e-5
