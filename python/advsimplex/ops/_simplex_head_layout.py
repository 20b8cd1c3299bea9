"""Constant tensors that express the per-simplex closed forms as contractions (used by the Triton kernels).

For simplex s with vertices s..s+W−1 (W = Q − 1) and the pair list of :func:`pair_index`:

- ``A[s, p]``      = Σ_{(k,l) ↦ p} M2_kl          so  E[pᵀH_c p]_s = Σ_p A[s,p] h_{p,c}
- ``Bm[s, a, a']`` = M2 on the simplex's vertices  so  Σ_c E[(J_c p)²]_s = ⟨Bm_s, Σ_c u uᵀ⟩
- ``D[s, a, p]``   = Σ_{(l,n) ↦ p} M3_{k l n}      so  Σ_c E[(J_c p)(pᵀH_c p)]_s = ⟨D_s, Σ_c u hᵀ⟩
- ``E[s, p, p']``  = Σ M4_{klno} over (k,l) ↦ p, (n,o) ↦ p'  so  Σ_c E[(pᵀH_c p)²]_s = ⟨E_s, Σ_c h hᵀ⟩

(spec §5). ``Bm`` and ``E`` are symmetric in their last two indices.

Collapsed jets (spec §7b) carry one second-order stream per simplex, ``h_s = E_p D²g[p, p]`` itself: then
``A`` is the identity (S, S), ``Bm`` is unchanged and ``D = E = 0`` (variant ``paper`` only).

The second-order streams are quadratic forms of the first-order ones (``csrc/simplex_head.h``, Form):
``terms[t][j] = (a, b, coef)`` with ``Π_j(x) = Σ_t coef x_a x_b`` — one term (a, b, 1) per vertex pair, the
terms (k, l, 2/(Q(Q+1))) for k ≤ l in the simplex for a collapsed stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import torch
from torch import Tensor
from torch.utils._python_dispatch import _disable_current_modes, _get_current_dispatch_mode

from ..reference import moment_tensor, pair_index, simplex_pairs, simplex_vertices


@dataclass(frozen=True)
class SimplexLayout:
    m: int
    order: int
    terms: tuple[tuple[tuple[int, int, float], ...], ...]  # terms[t][j] = (a, b, coef) of stream j's form
    A: Tensor  # (S, P)
    Bm: Tensor  # (S, m, m)
    D: Tensor  # (S, m, P)
    E: Tensor  # (S, P, P)


@cache
def simplex_layout(m: int, order: int) -> SimplexLayout:
    """The float64 CPU layout tensors for an m-step trajectory and simplex order Q."""
    pairs = pair_index(m, order)
    verts, local = simplex_vertices(m, order), simplex_pairs(m, order)
    s_count, w = verts.shape
    p_count = pairs.shape[0]
    m2, m3, m4 = (moment_tensor(order, n) for n in (2, 3, 4))
    A = torch.zeros(s_count, p_count, dtype=torch.float64)
    Bm = torch.zeros(s_count, m, m, dtype=torch.float64)
    D = torch.zeros(s_count, m, p_count, dtype=torch.float64)
    E = torch.zeros(s_count, p_count, p_count, dtype=torch.float64)
    r = range(w)
    for s in range(s_count):
        v, lp = verts[s].tolist(), local[s].tolist()
        for k in r:
            for l in r:
                A[s, lp[k][l]] += m2[k, l]
                Bm[s, v[k], v[l]] += m2[k, l]
                for n in r:
                    D[s, v[k], lp[l][n]] += m3[k, l, n]
                    for o in r:
                        E[s, lp[k][l], lp[n][o]] += m4[k, l, n, o]
    terms = (tuple((int(a), int(b), 1.0) for a, b in pairs.tolist()),)
    return SimplexLayout(m=m, order=order, terms=terms, A=A, Bm=Bm, D=D, E=E)


@cache
def collapsed_layout(m: int, order: int) -> SimplexLayout:
    """The layout of collapsed jets: one stream per simplex, h_s = E_p D²g[p, p] (spec §7b)."""
    pair_form = simplex_layout(m, order)
    s_count, w = simplex_vertices(m, order).shape
    twice_c = 2.0 / (order * (order + 1))
    local = [(k, l) for k in range(w) for l in range(k, w)]
    terms = tuple(tuple((s + k, s + l, twice_c) for s in range(s_count)) for k, l in local)
    zeros = torch.zeros
    return SimplexLayout(
        m=m, order=order, terms=terms, A=torch.eye(s_count, dtype=torch.float64), Bm=pair_form.Bm,
        D=zeros(s_count, m, s_count, dtype=torch.float64), E=zeros(s_count, s_count, s_count, dtype=torch.float64),
    )  # fmt: skip


def _next_pow2(n: int, minimum: int = 16) -> int:
    return max(minimum, 1 << max(0, (n - 1).bit_length()))


def _pad(t: Tensor, shape: tuple[int, ...]) -> list:
    out = torch.zeros(shape, dtype=torch.float64)
    out[tuple(slice(0, n) for n in t.shape)] = t
    return out.tolist()


@cache
def _padded_lists(m: int, order: int, collapsed: bool) -> dict[str, list | int]:
    """The padded layout as Python lists (computed once per (m, Q, form), outside any tracing mode)."""
    with _disable_current_modes():  # real tensors even when called while torch.compile traces the Triton ops
        lay = collapsed_layout(m, order) if collapsed else simplex_layout(m, order)
        s_count, p_count = lay.A.shape
        mp, pp, sp = _next_pow2(m), _next_pow2(p_count), _next_pow2(s_count)

        def term_rows(field: int) -> list:
            return [[term[field] for term in row] + [0] * (pp - len(row)) for row in lay.terms]

        return {
            "M_PAD": mp,
            "P_PAD": pp,
            "S_PAD": sp,
            "TERMS": len(lay.terms),
            "ta": term_rows(0),
            "tb": term_rows(1),
            "tc": term_rows(2),
            "A": _pad(lay.A, (sp, pp)),
            "Bm": _pad(lay.Bm, (sp, mp, mp)),
            "D": _pad(lay.D, (sp, mp, pp)),
            "E": _pad(lay.E, (sp, pp, pp)),
        }


def _materialize(lists: dict[str, list | int], device: torch.device) -> dict[str, Tensor | int]:
    out: dict[str, Tensor | int] = {}
    for key, value in lists.items():
        if isinstance(value, int):
            out[key] = value
        else:
            dtype = torch.int32 if key in ("ta", "tb") else torch.float32
            out[key] = torch.tensor(value, dtype=dtype, device=device)
    return out


@cache
def _padded_on(m: int, order: int, collapsed: bool, device: torch.device) -> dict[str, Tensor | int]:
    return _materialize(_padded_lists(m, order, collapsed), device)


def padded_layout(m: int, order: int, device: torch.device, collapsed: bool = False) -> dict[str, Tensor | int]:
    """The layout as float32 tensors zero-padded to powers of two ≥ 16 on ``device`` (Triton ``tl.dot`` sizes),
    plus the forms' terms as (TERMS, P_PAD) tensors ``ta``, ``tb`` (int32 vertices) and ``tc`` (coefficients, 0
    in the padding). Cached per device in eager mode; fresh (graph constants) while a tracing mode
    (torch.compile's fake tensors) is active."""
    if _get_current_dispatch_mode() is not None:
        return _materialize(_padded_lists(m, order, collapsed), device)
    return _padded_on(m, order, collapsed, device)
