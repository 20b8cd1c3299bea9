"""The zero-shot head and its derivatives from embedding jets (math spec §1, §4 "Chain rule").

``g(x) = softmax(s · T n(f(x)))`` with ``n(f) = f/‖f‖``. Given the embedding jets
``f``, ``f_a = Df[a]`` and ``f_ab = D²f[a, b]``, this module forms the normalised-embedding
jets, the logit jets, and the probability-level first and second directional derivatives
``u_a = Dg[a]`` and ``h_ab = D²g[a, b]``: the pure-PyTorch reference head that every fused
kernel is held to.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .alignment import closed_form_alignment
from .plan import JetPlan


def normalized_jets(f: Tensor, first: Tensor, second: Tensor, pairs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Jets of ``n = f/‖f‖`` (spec §4): returns ``n`` (B, d), ``n_a`` (B, m, d), ``n_ab`` (B, P, d).

    ``first`` is (B, m, d) = ``f_a`` per vertex, ``second`` (B, P, d) = ``f_ab`` per pair of
    ``pairs`` (LongTensor[P, 2]). With ``r = ‖f‖`` and ``P = I − n nᵀ``::

        n_a  = P f_a / r
        n_ab = P f_ab / r − P f_b (nᵀf_a)/r² − P f_a (nᵀf_b)/r² − n (f_aᵀ P f_b)/r²
    """
    r = f.norm(dim=-1, keepdim=True).unsqueeze(1)  # (B, 1, 1)
    n = f.unsqueeze(1) / r  # (B, 1, d)

    def project(v: Tensor) -> Tensor:
        return v - n * (v * n).sum(dim=-1, keepdim=True)

    fa = first[:, pairs[:, 0]]
    fb = first[:, pairs[:, 1]]
    pfa, pfb = project(fa), project(fb)
    nfa = (n * fa).sum(dim=-1, keepdim=True)
    nfb = (n * fb).sum(dim=-1, keepdim=True)
    fa_p_fb = (fa * pfb).sum(dim=-1, keepdim=True)
    n_first = project(first) / r
    n_second = project(second) / r - (pfb * nfa + pfa * nfb + n * fa_p_fb) / (r * r)
    return n.squeeze(1), n_first, n_second


def logit_jets(
    f: Tensor, first: Tensor, second: Tensor, text: Tensor, logit_scale: float | Tensor, pairs: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Logits and their jets ``z = s T n``: (B, C), (B, m, C), (B, P, C)."""
    n, n_first, n_second = normalized_jets(f, first, second, pairs)
    t = text.t()
    return logit_scale * (n @ t), logit_scale * (n_first @ t), logit_scale * (n_second @ t)


def probability_jets(z: Tensor, z_first: Tensor, z_second: Tensor, pairs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Softmax and its directional derivatives (spec §4): ``g`` (B, C), ``u`` (B, m, C), ``h`` (B, P, C).

    ``u_a = g ⊙ (z_a − ⟨g, z_a⟩)`` and
    ``h_ab = u_b ⊙ (z_a − ⟨g, z_a⟩) + g ⊙ (z_ab − ⟨g, z_ab⟩ − ⟨u_b, z_a⟩)``.
    """
    g = torch.softmax(z, dim=-1).unsqueeze(1)  # (B, 1, C)
    zc = z_first - (g * z_first).sum(dim=-1, keepdim=True)
    u = g * zc
    za, ub = z_first[:, pairs[:, 0]], u[:, pairs[:, 1]]
    h = ub * zc[:, pairs[:, 0]] + g * (
        z_second - (g * z_second).sum(dim=-1, keepdim=True) - (ub * za).sum(dim=-1, keepdim=True)
    )
    return g.squeeze(1), u, h


def simplex_head_reference(
    f: Tensor,
    first: Tensor,
    second: Tensor,
    text: Tensor,
    labels: Tensor,
    weights: Tensor,
    pairs: Tensor,
    *,
    logit_scale: float | Tensor,
    lam: float,
    variant: str,
    kappa: float,
    order: int,
) -> tuple[Tensor, Tensor]:
    """Per-sample loss ``CE(z, y) + λ Σ_i ω_i Ω_i`` (B,) and per-simplex Ω (B, S) (spec §6).

    Inputs are assumed validated (see :func:`advsimplex.ops.simplex_head.simplex_head`);
    computation runs in the inputs' dtype (upcast bf16/fp16 before calling for fp32 math).
    """
    pairs = pairs.to(f.device)
    z, z_first, z_second = logit_jets(f, first, second, text, logit_scale, pairs)
    _, u, h = probability_jets(z, z_first, z_second, pairs)
    omega = closed_form_alignment(u, h, variant=variant, kappa=kappa, order=order)
    ce = F.cross_entropy(z, labels, reduction="none")
    return ce + lam * (weights * omega).sum(dim=-1), omega


def collapsed_probability_jets(
    f: Tensor, first: Tensor, collapsed: Tensor, text: Tensor, logit_scale: float | Tensor, plan: JetPlan
) -> tuple[Tensor, Tensor, Tensor]:
    """``g`` (B, C), ``u`` (B, m, C) and ``E_p D²g[p, p]`` (B, S, C) per simplex from collapsed jets (spec §7b).

    ``collapsed`` (B, S, d) holds ``F̄_s = Σ_{k,l} M_kl D²f[δ_k, δ_l]`` (``plan`` collapsed). With
    ``z̃_k = z_k − ⟨g, z_k⟩`` and ``u_k = g ⊙ z̃_k``::

        E[n_pp] = P F̄ / r − Σ M_kl [P f_k (nᵀf_l) + P f_l (nᵀf_k)] / r² − n Σ M_kl (f_kᵀ P f_l) / r²
        E_p D²g[p, p] = g ⊙ Σ M_kl z̃_k z̃_l + g ⊙ (E[z_pp] − ⟨g, E[z_pp]⟩) − g Σ M_kl ⟨u_k, z_l⟩
    """
    r = f.norm(dim=-1, keepdim=True).unsqueeze(1)  # (B, 1, 1)
    n = f.unsqueeze(1) / r  # (B, 1, d)

    def project(v: Tensor) -> Tensor:
        return v - n * (v * n).sum(dim=-1, keepdim=True)

    def normal_bilinear(a: Tensor, b: Tensor) -> Tensor:
        na, nb = (n * a).sum(dim=-1, keepdim=True), (n * b).sum(dim=-1, keepdim=True)
        return -(project(b) * na + project(a) * nb + n * (a * project(b)).sum(dim=-1, keepdim=True)) / (r * r)

    n_first = project(first) / r
    n_bar = project(collapsed) / r + plan.quadratic(normal_bilinear, first, dim=1)
    t = text.t()
    z = logit_scale * (n.squeeze(1) @ t)
    z_first, z_bar = logit_scale * (n_first @ t), logit_scale * (n_bar @ t)
    g = torch.softmax(z, dim=-1).unsqueeze(1)  # (B, 1, C)
    centred = z_first - (g * z_first).sum(dim=-1, keepdim=True)

    def prob_bilinear(a: Tensor, b: Tensor) -> Tensor:
        gab = g * a * b
        return gab - g * gab.sum(dim=-1, keepdim=True)

    h_bar = g * (z_bar - (g * z_bar).sum(dim=-1, keepdim=True)) + plan.quadratic(prob_bilinear, centred, dim=1)
    return g.squeeze(1), g * centred, h_bar


def collapsed_alignment(u: Tensor, h_bar: Tensor, plan: JetPlan, *, kappa: float = 1.0) -> Tensor:
    """Per-simplex Ω of the ``paper`` variant (B, S) from ``u`` (B, m, C) and ``h̄ = E_p D²g[p, p]`` (B, S, C):
    ``Σ_c [2 Σ M_kl u_k u_l + (κ/2) h̄²]`` (spec §5, §7b)."""
    jp2 = plan.quadratic(torch.mul, u, dim=1).sum(dim=-1)
    return 2.0 * jp2 + 0.5 * kappa * (h_bar * h_bar).sum(dim=-1)


def collapsed_head_reference(
    f: Tensor,
    first: Tensor,
    collapsed: Tensor,
    text: Tensor,
    labels: Tensor,
    weights: Tensor,
    *,
    logit_scale: float | Tensor,
    lam: float,
    kappa: float,
    order: int,
) -> tuple[Tensor, Tensor]:
    """:func:`simplex_head_reference` of the ``paper`` variant from collapsed jets ``F̄`` (B, S, d), spec §7b."""
    plan = JetPlan.collapsed(first.shape[1], order)
    _, u, h_bar = collapsed_probability_jets(f, first, collapsed, text, logit_scale, plan)
    omega = collapsed_alignment(u, h_bar, plan, kappa=kappa)
    z = logit_scale * ((f / f.norm(dim=-1, keepdim=True)) @ text.t())
    ce = F.cross_entropy(z, labels, reduction="none")
    return ce + lam * (weights * omega).sum(dim=-1), omega
