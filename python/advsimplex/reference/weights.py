"""Simplex weights ω_i of the training loss (math spec §6, paper Eq. 16)."""

from __future__ import annotations

import torch
from torch import Tensor

from .simplices import num_simplices

WEIGHTINGS = ("impact", "uniform", "linear")


def simplex_weights(
    clean_prob: Tensor,
    vertex_probs: Tensor,
    *,
    scheme: str = "impact",
    order: int = 3,
    batch_max: Tensor | None = None,
) -> Tensor:
    """Weights ω (B, S) for the S simplices of each sample; always detached.

    Args:
        clean_prob: (B,) true-class probability ``g(x)_y`` at the clean images.
        vertex_probs: (B, m) true-class probability ``g(x^{(i)})_y`` at each trajectory vertex.
        scheme: ``impact`` (Eq. 16): ``ω_i = max(g(x)_y − g(x^{(i)})_y, 0) / max(τ_i, 1e-12)``
            with ``τ_i`` the batch maximum of the same clipped gap at vertex ``i`` (simplex ``i``'s
            first vertex); ``uniform``: ω = 1; ``linear``: ω_i = i/m (1-based i).
        order: simplex order Q; S = m − Q + 2.
        batch_max: optional precomputed τ (S,) — e.g. all-reduced over a distributed batch.
    """
    if scheme not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {scheme!r}")
    if clean_prob.dim() != 1 or vertex_probs.dim() != 2 or vertex_probs.shape[0] != clean_prob.shape[0]:
        raise ValueError(
            f"clean_prob must be (B,) and vertex_probs (B, m); got {tuple(clean_prob.shape)} and "
            f"{tuple(vertex_probs.shape)}"
        )
    b, m = vertex_probs.shape
    s = num_simplices(m, order)
    kw = {"dtype": vertex_probs.dtype, "device": vertex_probs.device}
    if scheme == "uniform":
        return torch.ones(b, s, **kw)
    if scheme == "linear":
        return (torch.arange(1, s + 1, **kw) / m).expand(b, s).clone()
    gap = impact_gaps(clean_prob, vertex_probs, order)
    tau = gap.amax(dim=0) if batch_max is None else batch_max.detach()
    return gap / tau.clamp_min(1e-12)


def impact_gaps(clean_prob: Tensor, vertex_probs: Tensor, order: int) -> Tensor:
    """The clipped probability drops (B, S) whose batch maximum normalises the impact weights."""
    s = num_simplices(vertex_probs.shape[1], order)
    return (clean_prob.detach().unsqueeze(1) - vertex_probs.detach()[:, :s]).clamp_min(0)
