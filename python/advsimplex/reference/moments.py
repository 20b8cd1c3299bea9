"""Dirichlet moments of the uniform distribution on a simplex (math spec §3).

A uniform point of ``conv{z_1..z_Q}`` is ``p = Σ_k α_k z_k`` with ``α ~ Dirichlet(1, …, 1)``.
With the clean point as the zero vertex, only the ``Q − 1`` trajectory vertices carry weight,
so the moment tensors here are indexed by those ``Q − 1`` non-origin components.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from functools import cache

import torch
from torch import Tensor

from .._checks import as_int


def dirichlet_moment(order: int, exponents: Sequence[int]) -> float:
    """``E[Π_k α_k^{e_k}]`` for ``α ~ Dirichlet(1, …, 1)`` with ``order`` components.

    ``E = (Q−1)! · Π_k e_k! / (Q−1+N)!`` with ``N = Σ_k e_k`` (spec §3). ``exponents`` may be
    shorter than ``order``: the missing components have exponent 0 (the origin vertex).
    """
    order = as_int("order", order)
    if order < 1:
        raise ValueError(f"order must be a positive int (number of Dirichlet components), got {order!r}")
    exponents = [as_int("exponents", e) for e in exponents]
    if len(exponents) > order:
        raise ValueError(f"exponents has {len(exponents)} entries but order (components) is {order}")
    if any(e < 0 for e in exponents):
        raise ValueError(f"exponents must be non-negative ints, got {exponents!r}")
    total = sum(exponents)
    num = math.factorial(order - 1) * math.prod(math.factorial(e) for e in exponents)
    return num / math.factorial(order - 1 + total)


@cache
def _moment_table(order: int, degree: int) -> tuple[float, ...]:
    k = order - 1
    values = []
    for idx in itertools.product(range(k), repeat=degree):
        exps = [0] * k
        for i in idx:
            exps[i] += 1
        values.append(dirichlet_moment(order, exps))
    return tuple(values)


def moment_tensor(
    order: int, degree: int, *, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
) -> Tensor:
    """Moment tensor ``M[k_1..k_n] = E[β_{k_1} ⋯ β_{k_n}]`` of the ``Q−1`` non-origin weights.

    Returns a tensor of shape ``(Q−1,) * degree`` (``degree`` = n ≥ 1): ``M2``, ``M3``, ``M4``
    of the spec for ``degree`` = 2, 3, 4.
    """
    order, degree = as_int("order", order), as_int("degree", degree)
    if order < 2:
        raise ValueError(f"a simplex with a trajectory vertex needs order >= 2, got {order}")
    if degree < 1:
        raise ValueError(f"degree must be >= 1, got {degree}")
    shape = (order - 1,) * degree
    return torch.tensor(_moment_table(order, degree), dtype=dtype, device=device).reshape(shape)


def second_moment(vertices: Tensor) -> Tensor:
    """Theorem 3.1: ``E[p pᵀ]`` for ``p`` uniform on ``conv{z_1..z_Q}``.

    Args:
        vertices: ``(..., Q, D)`` floating tensor, the Q vertices of each simplex.

    Returns:
        ``(..., D, D)``: ``(Σ_k z_k z_kᵀ + (Σ_k z_k)(Σ_k z_k)ᵀ) / (Q(Q+1))``.
    """
    if not isinstance(vertices, Tensor) or not vertices.is_floating_point():
        raise TypeError(f"vertices must be a floating tensor of shape (..., Q, D), got {type(vertices).__name__}")
    if vertices.dim() < 2 or vertices.shape[-2] < 1:
        raise ValueError(f"vertices must have shape (..., Q, D) with Q >= 1, got shape {tuple(vertices.shape)}")
    q = vertices.shape[-2]
    outer = vertices.transpose(-1, -2) @ vertices
    s = vertices.sum(dim=-2)
    return (outer + s.unsqueeze(-1) * s.unsqueeze(-2)) / (q * (q + 1))
