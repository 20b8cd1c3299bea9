"""``autograd.Function`` wrappers of the Triton ``jet_rules`` kernels (``simplex_kernels/jet_rules.py``).

Each op saves only its inputs and runs a fused backward kernel. Transform support: backward yes;
double backward raises (any backward with ``create_graph=True`` raises, rather than returning a
gradient without history); torch.func transforms raise (no ``setup_context``: PyTorch refuses them
instead of silently returning zero tangents, spec §7 trap 4); torch.compile runs them eagerly behind
a graph break (``torch.compiler.disable``). Use the reference backend (:mod:`advsimplex.reference.jet_rules`)
for higher-order derivatives through the rules themselves.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..reference.plan import JetPlan


def _kernels():
    from simplex_kernels import jet_rules

    return jet_rules


def _first_order_only(op: str) -> None:
    if torch.is_grad_enabled():  # backward(create_graph=True): a double backward is wanted
        raise NotImplementedError(
            f"{op} (triton backend) has no double backward; use backend='reference' (or kernels='torch' for "
            "advsimplex.jets.vit_jets) for higher-order derivatives through the jet rules"
        )


def _grouped(x: Tensor, dim: int, rows: bool) -> Tensor:
    """Contiguous view (G, S, M) — or (G, S, R, N) for row rules — of a jet stacked along ``dim``."""
    x = x.contiguous()
    g = math.prod(x.shape[:dim])
    inner = math.prod(x.shape[dim + 1 :])
    if rows:
        n = x.shape[-1]
        return x.view(g, x.shape[dim], inner // n, n)
    return x.view(g, x.shape[dim], inner)


class _JetGelu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, left: Tensor, right: Tensor, m: int, kind: str, dim: int) -> Tensor:
        xg = _grouped(x, dim, rows=False)
        ctx.save_for_backward(xg, left, right)
        ctx.m, ctx.kind, ctx.shape = m, kind, x.shape
        return _kernels().gelu_forward(xg, left, right, m, kind).view(x.shape)

    @staticmethod
    def backward(ctx, grad: Tensor):
        _first_order_only("jet_gelu")
        xg, left, right = ctx.saved_tensors
        dx = _kernels().gelu_backward(xg, grad.contiguous().view(xg.shape), left, right, ctx.m, ctx.kind)
        return dx.view(ctx.shape), None, None, None, None, None


class _JetLayerNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, left, right, m: int, eps: float, dim: int) -> Tensor:
        xg = _grouped(x, dim, rows=True)
        weight = weight.contiguous() if weight is not None else None
        bias = bias.contiguous() if bias is not None else None
        ctx.save_for_backward(xg, weight, left, right)
        ctx.m, ctx.eps, ctx.shape, ctx.has_bias = m, eps, x.shape, bias is not None
        return _kernels().layer_norm_forward(xg, weight, bias, eps, left, right, m).view(x.shape)

    @staticmethod
    def backward(ctx, grad: Tensor):
        _first_order_only("jet_layer_norm")
        xg, weight, left, right = ctx.saved_tensors
        gg = grad.contiguous().view(xg.shape)
        dx, dw = _kernels().layer_norm_backward(xg, weight, gg, ctx.eps, left, right, ctx.m)
        db = gg[:, 0].sum(dim=(0, 1)) if ctx.has_bias else None
        return dx.view(ctx.shape), dw, db, None, None, None, None, None


class _JetSoftmax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, left: Tensor, right: Tensor, m: int, dim: int) -> Tensor:
        xg = _grouped(x, dim, rows=True)
        ctx.save_for_backward(xg, left, right)
        ctx.m, ctx.shape = m, x.shape
        return _kernels().softmax_forward(xg, left, right, m).view(x.shape)

    @staticmethod
    def backward(ctx, grad: Tensor):
        _first_order_only("jet_softmax")
        xg, left, right = ctx.saved_tensors
        dx = _kernels().softmax_backward(xg, grad.contiguous().view(xg.shape), left, right, ctx.m)
        return dx.view(ctx.shape), None, None, None, None


def _pairs_of(plan: JetPlan) -> tuple[Tensor, Tensor, int]:
    if plan.is_collapsed:
        raise NotImplementedError("the triton jet-rule kernels take pair plans only; use backend='reference'")
    return plan.left, plan.right, plan.m


@torch.compiler.disable
def triton_jet_gelu(x: Tensor, plan: JetPlan, kind: str, dim: int) -> Tensor:
    return _JetGelu.apply(x, *_pairs_of(plan), kind, dim)


@torch.compiler.disable
def triton_jet_layer_norm(
    x: Tensor, plan: JetPlan, weight: Tensor | None, bias: Tensor | None, eps: float, dim: int
) -> Tensor:
    return _JetLayerNorm.apply(x, weight, bias, *_pairs_of(plan), eps, dim)


@torch.compiler.disable
def triton_jet_softmax(x: Tensor, plan: JetPlan, dim: int) -> Tensor:
    return _JetSoftmax.apply(x, *_pairs_of(plan), dim)
