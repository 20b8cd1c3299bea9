"""Argument checks of the registered ``simplex_head`` ops, in Python: the fake kernels of every op (so that
torch.compile reports bad shapes and dtypes at trace time) and the Triton ops' implementations run them.

They mirror the checks compiled into the C++/CUDA ops (``csrc/simplex_head_host.cpp``), message for message:
everything that a kernel's memory accesses rely on (shapes, dtypes, devices; contiguity is made, not required).
The label range, a property of the data, is checked by :func:`checked_labels`, a custom op, so that it also
runs inside compiled graphs.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

COMPILED_DTYPES = (torch.float64, torch.float32, torch.bfloat16, torch.float16)
TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _shape_text(shape) -> str:
    return str([int(s) for s in shape])


def _check_shape(name: str, t: Tensor, what: str, expected: tuple[int | None, ...], note: str = "") -> None:
    if t.dim() != len(expected) or any(e is not None and e != s for e, s in zip(expected, t.shape)):
        want = ", ".join("?" if e is None else str(e) for e in expected) + ("," if len(expected) == 1 else "")
        raise ValueError(f"simplex_head: {name} must have shape {what} = ({want}){note}, got {_shape_text(t.shape)}")


def _check_floating(name: str, t: Tensor, dtypes: tuple[torch.dtype, ...]) -> None:
    if t.dtype not in dtypes:
        allowed = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(f"simplex_head: {name} must have a floating dtype ({allowed}), got {t.dtype}")


def _check_device(name: str, t: Tensor, f: Tensor) -> None:
    if t.device != f.device:
        raise ValueError(
            f"simplex_head: {name} is on {t.device} but f is on {f.device} (every tensor argument must be on one "
            "device)"
        )


def num_band_pairs(m: int, order: int) -> int:
    """P: vertex pairs of the band (vertex k with k .. k + Q − 2), the streams of ``pair_index(m, order)``."""
    w = order - 1
    return sum(min(w, m - k) for k in range(m))


def check_inputs(
    f: Tensor, F1: Tensor, F2: Tensor, text: Tensor, labels: Tensor, weights: Tensor,
    logit_scale: float, lam: float, c_jp2: float, c_qsq: float, c_jpq: float, c_q2: float, order: int,
    collapsed: bool, *, triton: bool = False,
) -> tuple[int, int, int, int, int]:  # fmt: skip
    """Every forward argument of the ops except the label range; returns (B, m, d, P, C), P the second-order
    streams (vertex pairs, or simplices for collapsed jets).

    ``triton``: the Triton kernels' limits (float32/bfloat16/float16 inputs, d ≤ 16384)."""
    if order not in (3, 4):
        raise ValueError(f"simplex_head: order must be 3 or 4, got {order}")
    if not (math.isfinite(logit_scale) and logit_scale > 0):
        raise ValueError(f"simplex_head: logit_scale must be a finite positive number, got {logit_scale}")
    if not math.isfinite(lam):
        raise ValueError(f"simplex_head: lam must be a finite number, got {lam}")
    for name, value in (("c_jp2", c_jp2), ("c_qsq", c_qsq), ("c_jpq", c_jpq), ("c_q2", c_q2)):
        if not math.isfinite(value):
            raise ValueError(f"simplex_head: the variant coefficient {name} must be a finite number, got {value}")
    if collapsed and (c_jpq != 0 or c_q2 != 0):
        raise ValueError(
            "simplex_head: collapsed second-order jets carry only E_p D²f[p, p] per simplex: the variant coefficients "
            f"c_jpq and c_q2 must be 0 (variant 'paper'), got c_jpq = {c_jpq}, c_q2 = {c_q2}"
        )
    dtypes = TRITON_DTYPES if triton else COMPILED_DTYPES
    _check_floating("f", f, dtypes)
    _check_shape("f", f, "(B, d)", (None, None))
    b, d = f.shape
    if d < 1:
        raise ValueError(f"simplex_head: f must have an embedding dimension d >= 1, got shape {_shape_text(f.shape)}")
    if triton and d > 16384:
        raise ValueError(f"simplex_head: f has d = {d}: the Triton kernels take embedding dimensions d <= 16384")
    if F1.dim() != 3:
        raise ValueError(f"simplex_head: F1 must have shape (B, m, d), got {_shape_text(F1.shape)}")
    m = F1.shape[1]
    if m < order - 1:
        raise ValueError(f"simplex_head: F1 holds m = {m} steps: no simplex of order {order} (need m >= {order - 1})")
    _check_shape("F1", F1, "(B, m, d)", (b, m, d))
    if collapsed:
        p = m - order + 2
        note = f" with S = {p} simplices for m = {m}, order = {order} (collapsed jets)"
        _check_shape("F2", F2, "(B, S, d)", (b, p, d), note)
    else:
        p = num_band_pairs(m, order)
        _check_shape("F2", F2, "(B, P, d)", (b, p, d), f" with P = {p} vertex pairs for m = {m}, order = {order}")
    _check_shape("text", text, "(C, d)", (None, d))
    c = text.shape[0]
    if c < 1:
        raise ValueError(
            f"simplex_head: text must hold at least one class embedding (C >= 1), got {_shape_text(text.shape)}"
        )
    for name, t in (("F1", F1), ("F2", F2), ("text", text)):
        if t.dtype != f.dtype:
            raise TypeError(
                f"simplex_head: {name} has dtype {t.dtype} but must be {f.dtype} (f, F1, F2 and text share one dtype)"
            )
    _check_floating("weights", weights, COMPILED_DTYPES)
    _check_shape("weights", weights, "(B, S)", (b, m - order + 2), " with S = m - order + 2")
    if labels.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"simplex_head: labels must be an int64 or int32 tensor of class indices, got {labels.dtype}")
    _check_shape("labels", labels, "(B,)", (b,))
    for name, t in (("F1", F1), ("F2", F2), ("text", text), ("labels", labels), ("weights", weights)):
        _check_device(name, t, f)
    return b, m, d, p, c


def check_saved(
    f: Tensor, grad_loss: Tensor, grad_omega: Tensor | None, logits: Tensor, normalized: Tensor, stats: Tensor,
    sizes: tuple[int, int, int, int, int], order: int,
) -> None:  # fmt: skip
    """The backward's other arguments: the incoming gradients and the tensors the forward op saved."""
    b, m, d, p, c = sizes
    k, s = 1 + m + p, m - order + 2
    _check_floating("grad_loss", grad_loss, COMPILED_DTYPES)
    _check_shape("grad_loss", grad_loss, "(B,)", (b,))
    _check_device("grad_loss", grad_loss, f)
    if grad_omega is not None:
        _check_floating("grad_omega", grad_omega, COMPILED_DTYPES)
        _check_shape("grad_omega", grad_omega, "(B, S)", (b, s))
        _check_device("grad_omega", grad_omega, f)
    compute = torch.float64 if f.dtype == torch.float64 else torch.float32
    for name, t, what, shape in (
        ("logits", logits, "(B, K, C)", (b, k, c)),
        ("normalized", normalized, "(B, K, d)", (b, k, d)),
        ("stats", stats, "(B, K + P)", (b, k + p)),
    ):
        _check_shape(name, t, what, shape, " with K = 1 + m + P")
        if t.dtype != compute:
            raise TypeError(
                f"simplex_head: {name} has dtype {t.dtype} but must be {compute} (the forward op's output: float32, "
                "or float64 for float64 inputs)"
            )
        _check_device(name, t, f)


@torch.library.custom_op("advsimplex::simplex_head_checked_labels", mutates_args=())
def checked_labels(labels: Tensor, num_classes: int) -> Tensor:
    """``labels`` (B,) as an int64 copy, checked to lie in [0, num_classes): they index the logits.

    A custom op, so that the check also runs inside torch.compile graphs; on a GPU it costs one host
    synchronisation (two scalars), as the compiled ops' check does."""
    out = labels.to(torch.int64, copy=True)
    if out.numel():
        lo, hi = torch.stack(torch.aminmax(out)).tolist()
        if lo < 0 or hi >= num_classes:
            raise ValueError(
                f"simplex_head: labels must lie in [0, C) = [0, {num_classes}); got values in [{lo}, {hi}]"
            )
    return out


@checked_labels.register_fake
def _checked_labels_fake(labels: Tensor, num_classes: int) -> Tensor:
    return torch.empty_like(labels, dtype=torch.int64)
