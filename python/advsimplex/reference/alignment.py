"""Closed-form alignment terms Ω per simplex from probability-level derivatives (math spec §5).

For a simplex with non-zero vertices ``z_1..z_{Q−1}`` and a uniform point ``p = Σ β_k z_k``:
``J p = Σ β_k u_k`` and ``pᵀ H_c p = Σ β_k β_l h_{kl,c}``, so every expectation is a
contraction of the Dirichlet moment tensors ``M2, M3, M4`` with the per-vertex ``u`` and
per-pair ``h``; no D×D matrix is formed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .moments import moment_tensor
from .simplices import check_order, pair_index, simplex_pairs, simplex_vertices

CLOSED_FORM_VARIANTS = ("paper", "paper-cross", "taylor2")
VARIANTS = (*CLOSED_FORM_VARIANTS, "sampled")


def check_variant(variant: str, kappa: float) -> None:
    """Raise a clear error for an unknown variant or an invalid κ."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if variant == "sampled":
        if int(kappa) != kappa or kappa < 1:
            raise ValueError(f"variant 'sampled' needs kappa = a positive integer sample count, got {kappa!r}")
    elif not (kappa >= 0):
        raise ValueError(f"kappa must be >= 0 for variant {variant!r}, got {kappa!r}")


def variant_coefficients(variant: str, kappa: float) -> tuple[float, float, float, float]:
    """``(c_jp2, c_qsq, c_jpq, c_q2)`` of a closed-form variant (spec §5), the one definition every kernel gets:
    ``Ω = c_jp2·E[(Jp)²] + c_qsq·Σ_c (E[pᵀH_c p])² + c_jpq·E[(Jp)(pᵀHp)] + c_q2·E[(pᵀHp)²]`` (summed over classes).
    """
    check_variant(variant, kappa)
    if variant == "sampled":
        raise ValueError("variant 'sampled' has no closed form: it samples through the network")
    kappa = float(kappa)
    return {
        "paper": (2.0, 0.5 * kappa, 0.0, 0.0),
        "paper-cross": (1.0, 0.25 * kappa, 1.0, 0.0),
        "taylor2": (1.0, 0.0, 1.0, 0.25),
    }[variant]


@dataclass(frozen=True)
class SimplexExpectations:
    """Expectations over each simplex, summed over classes where marked (shapes for batch B, S simplices).

    - ``jp2``  ``(B, S)``     Σ_c E[(J_c p)²]
    - ``q``    ``(B, S, C)``  E[pᵀ H_c p] per class
    - ``jpq``  ``(B, S)``     Σ_c E[(J_c p)(pᵀ H_c p)]
    - ``q2``   ``(B, S)``     Σ_c E[(pᵀ H_c p)²]
    """

    jp2: Tensor
    q: Tensor
    jpq: Tensor
    q2: Tensor


def simplex_expectations(u: Tensor, h: Tensor, order: int) -> SimplexExpectations:
    """Dirichlet-moment contractions of ``u`` (B, m, C) and ``h`` (B, P, C) for every simplex."""
    m = u.shape[1]
    check_order(m, order)
    p = pair_index(m, order).shape[0]
    if h.shape[:2] != (u.shape[0], p) or h.shape[2] != u.shape[2]:
        raise ValueError(
            f"h must have shape (B, P, C) = ({u.shape[0]}, {p}, {u.shape[2]}) for m={m}, order={order}; "
            f"got {tuple(h.shape)}"
        )
    kw = {"dtype": u.dtype, "device": u.device}
    m2, m3, m4 = (moment_tensor(order, n, **kw) for n in (2, 3, 4))
    uu = u[:, simplex_vertices(m, order).to(u.device)]  # (B, S, Q-1, C)
    hh = h[:, simplex_pairs(m, order).to(u.device)]  # (B, S, Q-1, Q-1, C)
    return SimplexExpectations(
        jp2=torch.einsum("kl,bskc,bslc->bs", m2, uu, uu),
        q=torch.einsum("kl,bsklc->bsc", m2, hh),
        jpq=torch.einsum("kln,bskc,bslnc->bs", m3, uu, hh),
        q2=torch.einsum("klno,bsklc,bsnoc->bs", m4, hh, hh),
    )


def closed_form_alignment(
    u: Tensor, h: Tensor, *, variant: str = "paper", kappa: float = 1.0, order: int = 3
) -> Tensor:
    """Per-simplex Ω (B, S) from ``u`` (B, m, C) and ``h`` (B, P, C), ``P`` pairs of :func:`pair_index`.

    Variants (spec §5 table, summed over classes):

    - ``paper``:       ``2·E[(Jp)²] + (κ/2)·(E[pᵀHp])²``
    - ``paper-cross``: ``E[(Jp)²] + (κ/4)·(E[pᵀHp])² + E[(Jp)(pᵀHp)]``
    - ``taylor2``:     ``E[(Jp + ½ pᵀHp)²] = E[(Jp)²] + E[(Jp)(pᵀHp)] + ¼ E[(pᵀHp)²]``
    """
    coefficients = variant_coefficients(variant, kappa)
    e = simplex_expectations(u, h, order)
    terms = (e.jp2, (e.q * e.q).sum(dim=-1), e.jpq, e.q2)
    omega = coefficients[0] * terms[0]
    for c, term in zip(coefficients[1:], terms[1:]):
        omega = omega + c * term  # every term, zero coefficients too: h stays in the graph (κ = 0 included)
    return omega
