"""``autograd.Function`` wrappers of the Triton ``jet_rules`` kernels (``simplex_kernels/jet_rules.py``).

Both plan kinds (pair streams and collapsed simplex streams, :class:`~advsimplex.reference.plan.JetPlan`).
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
    from ..triton_kernels import jet_rules

    return jet_rules


def first_order_only(op: str, backend: str) -> None:
    """Raise in a fused backward that runs with grad mode on (``create_graph=True``: a double backward is wanted)."""
    if torch.is_grad_enabled():
        raise NotImplementedError(
            f"{op} ({backend} backend) has no double backward; use backend='reference' (or kernels='torch' for "
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
    def forward(ctx, x: Tensor, left: Tensor | None, right: Tensor | None, m: int, order: int, kind: str, dim: int):
        xg = _grouped(x, dim, rows=False)
        ctx.save_for_backward(xg, left, right)
        ctx.m, ctx.order, ctx.kind, ctx.shape = m, order, kind, x.shape
        return _kernels().gelu_forward(xg, left, right, m, kind, order).view(x.shape)

    @staticmethod
    def backward(ctx, grad: Tensor):
        first_order_only("jet_gelu", "triton")
        xg, left, right = ctx.saved_tensors
        gg = grad.contiguous().view(xg.shape)
        dx = _kernels().gelu_backward(xg, gg, left, right, ctx.m, ctx.kind, ctx.order)
        return dx.view(ctx.shape), None, None, None, None, None, None


class _JetLayerNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, left, right, m: int, order: int, eps: float, dim: int) -> Tensor:
        xg = _grouped(x, dim, rows=True)
        weight = weight.contiguous() if weight is not None else None
        bias = bias.contiguous() if bias is not None else None
        ctx.save_for_backward(xg, weight, left, right)
        ctx.m, ctx.order, ctx.eps, ctx.shape, ctx.has_bias = m, order, eps, x.shape, bias is not None
        return _kernels().layer_norm_forward(xg, weight, bias, eps, left, right, m, order).view(x.shape)

    @staticmethod
    def backward(ctx, grad: Tensor):
        first_order_only("jet_layer_norm", "triton")
        xg, weight, left, right = ctx.saved_tensors
        gg = grad.contiguous().view(xg.shape)
        dx, dw = _kernels().layer_norm_backward(xg, weight, gg, ctx.eps, left, right, ctx.m, ctx.order)
        db = gg[:, 0].sum(dim=(0, 1)) if ctx.has_bias else None
        return dx.view(ctx.shape), dw, db, None, None, None, None, None, None


class _JetSoftmax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, left: Tensor | None, right: Tensor | None, m: int, order: int, dim: int) -> Tensor:
        xg = _grouped(x, dim, rows=True)
        ctx.save_for_backward(xg, left, right)
        ctx.m, ctx.order, ctx.shape = m, order, x.shape
        return _kernels().softmax_forward(xg, left, right, m, order).view(x.shape)

    @staticmethod
    def backward(ctx, grad: Tensor):
        first_order_only("jet_softmax", "triton")
        xg, left, right = ctx.saved_tensors
        dx = _kernels().softmax_backward(xg, grad.contiguous().view(xg.shape), left, right, ctx.m, ctx.order)
        return dx.view(ctx.shape), None, None, None, None, None


def plan_arguments(plan: JetPlan) -> tuple[Tensor | None, Tensor | None, int, int]:
    """``(left, right, m, order)`` of a plan as the kernels take it: the pair tables and ``order = 0`` for a pairs
    plan; ``None, None`` and the simplex order Q for a collapsed plan."""
    if plan.is_collapsed:
        return None, None, plan.m, plan.order
    return plan.left, plan.right, plan.m, 0


@torch.compiler.disable
def triton_jet_gelu(x: Tensor, plan: JetPlan, kind: str, dim: int) -> Tensor:
    return _JetGelu.apply(x, *plan_arguments(plan), kind, dim)


@torch.compiler.disable
def triton_jet_layer_norm(
    x: Tensor, plan: JetPlan, weight: Tensor | None, bias: Tensor | None, eps: float, dim: int
) -> Tensor:
    return _JetLayerNorm.apply(x, weight, bias, *plan_arguments(plan), eps, dim)


@torch.compiler.disable
def triton_jet_softmax(x: Tensor, plan: JetPlan, dim: int) -> Tensor:
    return _JetSoftmax.apply(x, *plan_arguments(plan), dim)
