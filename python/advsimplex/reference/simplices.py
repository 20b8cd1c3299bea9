"""Simplices over an m-step trajectory and the vertex pairs they need (math spec §3, §4).

Vertices are 0-based here: trajectory vertex ``k`` (0..m−1) is the spec's ``δ_{k+1}``.
Simplex ``i`` (0..S−1, ``S = m − Q + 2``) has the clean point and the vertices
``i, …, i+Q−2``. The needed second-order quantities are the pairs ``(k, l)``, ``k ≤ l``,
``l − k ≤ Q − 2``; :func:`pair_index` fixes their canonical order (lexicographic).
"""

from __future__ import annotations

from functools import cache

import torch
from torch import Tensor

from .._checks import as_int

SUPPORTED_ORDERS = (3, 4)


def check_order(m: int, order: int) -> tuple[int, int]:
    """Raise a clear error unless ``order`` is supported and ``m ≥ order − 1``; returns ``(m, order)`` as ints."""
    order, m = as_int("order", order), as_int("m", m)
    if order not in SUPPORTED_ORDERS:
        raise ValueError(f"order must be one of {SUPPORTED_ORDERS} (triangles or tetrahedra), got {order!r}")
    if m < order - 1:
        raise ValueError(
            f"a trajectory of m={m} steps has no simplex of order {order}: need m >= order - 1 = {order - 1}"
        )
    return m, order


def num_simplices(m: int, order: int) -> int:
    """``S = m − Q + 2`` simplices of order ``Q`` over an ``m``-step trajectory."""
    m, order = check_order(m, order)
    return m - order + 2


def num_pairs(m: int, order: int) -> int:
    """``P`` of :func:`pair_index`: ``W·m − W(W−1)/2`` with ``W = order − 1`` (2m − 1 for Q = 3, 3m − 3 for Q = 4)."""
    m, order = check_order(m, order)
    w = order - 1
    return w * m - w * (w - 1) // 2


@cache
def _pairs(m: int, order: int) -> tuple[tuple[int, int], ...]:
    check_order(m, order)
    return tuple((k, l) for k in range(m) for l in range(k, min(k + order - 1, m)))


def pair_index(m: int, order: int) -> Tensor:
    """Canonical vertex pairs ``(k, l)``, ``k ≤ l``, whose second-order jets are needed.

    Returns a ``LongTensor[P, 2]`` (CPU); ``F2[:, p]`` holds ``D²f[δ_k, δ_l]`` for pair ``p``.
    ``P = 2m − 1`` for order 3 and ``3m − 3`` for order 4.
    """
    m, order = check_order(m, order)
    return torch.tensor(_pairs(m, order), dtype=torch.long).reshape(-1, 2)


def simplex_vertices(m: int, order: int) -> Tensor:
    """``LongTensor[S, Q−1]``: the trajectory vertices of each simplex (0-based)."""
    s = num_simplices(m, order)
    return torch.arange(s).unsqueeze(1) + torch.arange(order - 1).unsqueeze(0)


@cache
def _local_pairs(m: int, order: int) -> tuple[int, ...]:
    lookup = {kl: p for p, kl in enumerate(_pairs(m, order))}
    s = num_simplices(m, order)
    q1 = order - 1
    out = []
    for i in range(s):
        for a in range(q1):
            for b in range(q1):
                k, l = sorted((i + a, i + b))
                out.append(lookup[(k, l)])
    return tuple(out)


def simplex_pairs(m: int, order: int) -> Tensor:
    """``LongTensor[S, Q−1, Q−1]``: index into the pair list of vertex pair ``(a, b)`` of each simplex.

    Symmetric in the last two dimensions, so ``h[:, simplex_pairs(m, Q)]`` gathers the full
    (symmetric) second-order block of every simplex.
    """
    s = num_simplices(m, order)
    return torch.tensor(_local_pairs(m, order), dtype=torch.long).reshape(s, order - 1, order - 1)
