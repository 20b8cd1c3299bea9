"""Embedding jets of an arbitrary image encoder with torch.func (math spec §4, §7).

For an encoder ``encode(pixels) -> (B, d)`` this computes, at the clean images ``x``, the
first directional derivatives ``Df[δ_k]`` for every trajectory vertex and the second
directional derivatives ``D²f[δ_k, δ_l]`` for every needed vertex pair, by nested
forward-mode AD (``jvp`` of ``jvp``) vmapped over the pair streams: the primal is computed
once and shared by every stream. Everything runs under :class:`JetSafeMode`, so native
``layer_norm``/``batch_norm``/attention kernels (whose higher-order derivatives are wrong or
missing in PyTorch 2.14.1) are replaced by elementary decompositions. The results stay
differentiable with respect to the encoder's parameters (training needs third-order
derivatives).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import jvp, vmap

from ..reference.plan import JetPlan
from .decompositions import JetSafeMode


@dataclass
class EmbeddingJets:
    """Embedding jets at the clean images.

    - ``value``  (B, d): ``f(x)``
    - ``first``  (B, m, d): ``Df(x)[δ_k]``
    - ``second`` (B, N, d): the second-order streams of ``plan``: ``D²f(x)[δ_k, δ_l]`` per pair
      ``(k, l)``, or ``Σ_{k,l} M_kl D²f(x)[δ_k, δ_l]`` per simplex (collapsed, spec §7b)
    """

    value: Tensor
    first: Tensor
    second: Tensor
    plan: JetPlan


def as_plan(plan: JetPlan | Tensor, m: int, device: torch.device) -> JetPlan:
    """``plan`` on ``device``; a (P, 2) tensor of vertex pairs stands for ``JetPlan.from_pairs(pairs, m)``."""
    if isinstance(plan, Tensor):
        return JetPlan.from_pairs(plan, m, device=device)
    if not isinstance(plan, JetPlan):
        raise TypeError(f"plan must be a JetPlan or a (P, 2) tensor of vertex pairs, got {type(plan).__name__}")
    if plan.m != m:
        raise ValueError(f"plan is for m={plan.m} first-order streams but deltas has m={m} directions")
    return plan.to(device)


def _check_inputs(encode: object, x: object, deltas: object) -> None:
    if not callable(encode):
        raise TypeError(f"encode must be a callable images -> (B, d) embeddings, got {type(encode).__name__}")
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating tensor (B, ...), got {getattr(x, 'dtype', type(x).__name__)}")
    if not isinstance(deltas, Tensor) or not deltas.is_floating_point():
        raise TypeError(f"deltas must be a floating tensor (B, m, ...), got "
                        f"{getattr(deltas, 'dtype', type(deltas).__name__)}")  # fmt: skip
    if x.dim() < 2 or x.shape[0] < 1:
        raise ValueError(f"x must have shape (B, ...) with B >= 1, got {tuple(x.shape)}")
    if deltas.dim() != x.dim() + 1 or deltas.shape[0] != x.shape[0] or deltas.shape[2:] != x.shape[1:]:
        raise ValueError(f"deltas must have shape (B, m, *x.shape[1:]) = ({x.shape[0]}, m, "
                         f"{', '.join(map(str, x.shape[1:]))}), got {tuple(deltas.shape)}")  # fmt: skip
    if deltas.shape[1] < 1:
        raise ValueError("deltas must hold at least one direction (m >= 1)")
    if deltas.dtype != x.dtype:
        raise TypeError(f"deltas ({deltas.dtype}) must have the dtype of x ({x.dtype})")
    if deltas.device != x.device:
        raise ValueError(f"deltas is on {deltas.device} but x is on {x.device}")


def embedding_jets(
    encode: Callable[[Tensor], Tensor],
    x: Tensor,
    deltas: Tensor,
    plan: JetPlan | Tensor,
    *,
    chunk_size: int | None = None,
) -> EmbeddingJets:
    """Jets of ``encode`` at ``x`` (B, ...) along ``deltas`` (B, m, ...), second order as ``plan`` says.

    A pairs plan (or a (P, 2) tensor of vertex pairs) must contain the diagonal pair ``(k, k)`` of every
    vertex (true of :func:`advsimplex.pair_index`): its first-order jet is read off that stream. A collapsed
    plan is served by the canonical pair jets, collapsed afterwards (:meth:`JetPlan.collapse_pairs`: this
    path is the oracle of the fast collapsed jets). ``chunk_size`` bounds how many pair streams are vmapped
    at once (memory).
    """
    _check_inputs(encode, x, deltas)
    m = deltas.shape[1]
    plan = as_plan(plan, m, deltas.device)
    pair_plan = JetPlan.pairwise(m, plan.order, deltas.device) if plan.is_collapsed else plan
    left, right = pair_plan.left, pair_plan.right
    diag = {int(k): p for p, (k, l) in enumerate(zip(left.tolist(), right.tolist())) if k == l}
    missing = [k for k in range(m) if k not in diag]
    if missing:
        raise ValueError(f"pairs must contain the diagonal pair (k, k) of every vertex; missing k = {missing}")
    tangent_a = deltas[:, left].movedim(1, 0)  # (P, B, ...)
    tangent_b = deltas[:, right].movedim(1, 0)

    def pair_stream(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        def along_a(y: Tensor) -> tuple[Tensor, Tensor]:
            return jvp(encode, (y,), (a,))

        (value, first), (_, second) = jvp(along_a, (x,), (b,))
        return value, first, second

    with JetSafeMode():
        value, first, second = vmap(pair_stream, in_dims=(0, 0), out_dims=0, chunk_size=chunk_size)(
            tangent_a, tangent_b
        )
    value = value[0]
    if value.dim() != 2 or value.shape[0] != x.shape[0]:
        raise ValueError(f"encode must map (B, ...) images to (B, d) embeddings; got output shape {tuple(value.shape)}")
    diag_streams = torch.tensor([diag[k] for k in range(m)], device=first.device)
    second = second.movedim(0, 1)
    if plan.is_collapsed:
        second = plan.collapse_pairs(second, dim=1)
    return EmbeddingJets(value=value, first=first[diag_streams].movedim(0, 1), second=second, plan=plan)
