"""The compiled ``jet_rules`` ops (``csrc/jet_rules.cpp``): fake kernels, autograd formulas and entry points.

Ops in ``torch.ops.advsimplex``; ``x`` is a stacked jet with ``S = 1 + m + N`` streams along ``dim`` (any other
shape), the plan given as ``(left, right, m, order)`` (:func:`~._jet_rules_autograd.plan_arguments`)::

    jet_gelu_forward(x, left, right, m, order, kind, dim) -> y              kind: 0 erf, 1 tanh, 2 quick
    jet_gelu_backward(grad, x, left, right, m, order, kind, dim) -> dx
    jet_layer_norm_forward(x, weight, bias, left, right, m, order, eps, dim) -> y
    jet_layer_norm_backward(grad, x, weight, left, right, m, order, eps, dim, weight_grad, bias_grad)
        -> (dx, dweight (F,) or (0,), dbias (F,) or (0,))
    jet_softmax_forward(x, left, right, m, order, dim) -> y
    jet_softmax_backward(grad, x, left, right, m, order, dim) -> dx

Outputs are contiguous, in the dtype of ``x`` (float16/bfloat16 computed in float32). Transform support: backward
yes (the forward ops carry :func:`torch.library.register_autograd` formulas calling the backward ops); double
backward raises; torch.func transforms are refused by the public ops (a custom op would silently give zero
tangents under ``torch.func.jvp``, spec §7 trap 4); torch.compile traces the ops through their fake kernels.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..reference.plan import JetPlan
from ._jet_rules_autograd import first_order_only, plan_arguments

GELU_CODES = {"none": 0, "tanh": 1, "quick": 2}  # csrc/jet_rules.cpp GeluKind

OPS = ("jet_gelu", "jet_layer_norm", "jet_softmax")


def available() -> bool:
    """Whether ``advsimplex._C`` registers the CPU kernels of every jet-rule op."""
    from .._extension import has_kernel

    return all(has_kernel(f"{op}_{part}", "CPU") for op in OPS for part in ("forward", "backward"))


# ------------------------------------------------------------------------------------------------ fake kernels


def _fake_like(x: Tensor, *_) -> Tensor:
    return x.new_empty(x.shape)


def _fake_grad(grad: Tensor, x: Tensor, *_) -> Tensor:
    return x.new_empty(x.shape)


def _fake_layer_norm_backward(grad, x, weight, left, right, m, order, eps, dim, weight_grad, bias_grad):
    f = x.shape[-1]
    dweight = weight.new_empty((f,)) if weight_grad else x.new_empty((0,))
    dbias = x.new_empty((f,)) if bias_grad else x.new_empty((0,))
    return x.new_empty(x.shape), dweight, dbias


# ------------------------------------------------------------------------------------------------ autograd


def _setup_gelu(ctx, inputs, output):
    x, left, right, *options = inputs
    ctx.save_for_backward(x, left, right)
    ctx.options = tuple(options)  # m, order, kind, dim


def _backward_gelu(ctx, grad):
    first_order_only("jet_gelu", "cpp")
    x, left, right = ctx.saved_tensors
    dx = torch.ops.advsimplex.jet_gelu_backward(grad, x, left, right, *ctx.options)
    return dx, None, None, None, None, None, None


def _setup_layer_norm(ctx, inputs, output):
    x, weight, bias, left, right, *options = inputs
    ctx.save_for_backward(x, weight, left, right)
    ctx.options = tuple(options)  # m, order, eps, dim
    ctx.bias_dtype = bias.dtype if bias is not None else None


def _backward_layer_norm(ctx, grad):
    first_order_only("jet_layer_norm", "cpp")
    x, weight, left, right = ctx.saved_tensors
    weight_grad, bias_grad = bool(ctx.needs_input_grad[1]), bool(ctx.needs_input_grad[2])
    dx, dweight, dbias = torch.ops.advsimplex.jet_layer_norm_backward(
        grad, x, weight, left, right, *ctx.options, weight_grad, bias_grad
    )
    dweight = dweight if weight_grad else None
    dbias = dbias.to(ctx.bias_dtype) if bias_grad else None
    return dx, dweight, dbias, None, None, None, None, None, None


def _setup_softmax(ctx, inputs, output):
    x, left, right, *options = inputs
    ctx.save_for_backward(x, left, right)
    ctx.options = tuple(options)  # m, order, dim


def _backward_softmax(ctx, grad):
    first_order_only("jet_softmax", "cpp")
    x, left, right = ctx.saved_tensors
    dx = torch.ops.advsimplex.jet_softmax_backward(grad, x, left, right, *ctx.options)
    return dx, None, None, None, None, None


def _make_no_double_backward(op: str):
    def no_double_backward(ctx, *grads):
        raise NotImplementedError(
            f"{op} (cpp backend) has no double backward; use backend='reference' for higher-order derivatives "
            "through the jet rules"
        )

    return no_double_backward


def _register() -> None:
    formulas = {
        "jet_gelu": (_fake_like, _fake_grad, _setup_gelu, _backward_gelu),
        "jet_layer_norm": (_fake_like, _fake_layer_norm_backward, _setup_layer_norm, _backward_layer_norm),
        "jet_softmax": (_fake_like, _fake_grad, _setup_softmax, _backward_softmax),
    }
    for op, (fake_forward, fake_backward, setup, backward) in formulas.items():
        forward_name, backward_name = f"advsimplex::{op}_forward", f"advsimplex::{op}_backward"
        torch.library.register_fake(forward_name)(fake_forward)
        torch.library.register_fake(backward_name)(fake_backward)
        torch.library.register_autograd(forward_name, backward, setup_context=setup)
        torch.library.register_autograd(
            backward_name, _make_no_double_backward(op), setup_context=lambda ctx, inputs, output: None
        )


AVAILABLE = available()
"""Fixed for the life of the process (read once, so that torch.compile can trace the dispatch)."""

if AVAILABLE:
    _register()


# ------------------------------------------------------------------------------------------------ entry points


def cpp_jet_gelu(x: Tensor, plan: JetPlan, kind: str, dim: int) -> Tensor:
    return torch.ops.advsimplex.jet_gelu_forward(x, *plan_arguments(plan), GELU_CODES[kind], dim)


def cpp_jet_layer_norm(
    x: Tensor, plan: JetPlan, weight: Tensor | None, bias: Tensor | None, eps: float, dim: int
) -> Tensor:
    return torch.ops.advsimplex.jet_layer_norm_forward(x, weight, bias, *plan_arguments(plan), float(eps), dim)


def cpp_jet_softmax(x: Tensor, plan: JetPlan, dim: int) -> Tensor:
    return torch.ops.advsimplex.jet_softmax_forward(x, *plan_arguments(plan), dim)
