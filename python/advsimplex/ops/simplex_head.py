"""``simplex_head``: clean CE + λ Σ ω_i Ω_i from embedding jets, per sample (math spec §4–§6).

Public entry point, argument checks and backend dispatch. The pure-PyTorch oracle is
:func:`advsimplex.reference.simplex_head_reference`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import (
    check_floating,
    check_labels,
    check_positive_scalar,
    check_same_device,
    check_same_dtype,
    check_shape,
    check_unit_norm,
)
from ..reference import CLOSED_FORM_VARIANTS, check_order, num_simplices, pair_index, simplex_head_reference

BACKENDS = ("auto", "reference", "cpp", "cuda", "triton")


def check_head_inputs(
    f: Tensor,
    first: Tensor,
    second: Tensor,
    text_features: Tensor,
    labels: Tensor,
    weights: Tensor,
    *,
    logit_scale: float | Tensor,
    lam: float,
    variant: str,
    kappa: float,
    order: int,
    backend: str,
) -> None:
    """Every argument of :func:`simplex_head`, checked; errors name the argument at fault."""
    for name, t in (("f", f), ("F1", first), ("F2", second), ("text_features", text_features)):
        check_floating(name, t)
    if variant not in CLOSED_FORM_VARIANTS:
        raise ValueError(f"variant must be one of {CLOSED_FORM_VARIANTS} for the fused head, got {variant!r}")
    if not kappa >= 0:
        raise ValueError(f"kappa must be >= 0, got {kappa!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    check_positive_scalar("logit_scale", logit_scale)
    if not isinstance(lam, (int, float)) or lam != lam:
        raise ValueError(f"lam must be a real number, got {lam!r}")
    check_shape("f", f, (None, None), "(B, d)")
    b, d = f.shape
    if first.dim() != 3:
        raise ValueError(f"F1 must have shape (B, m, d), got {tuple(first.shape)}")
    m = first.shape[1]
    check_order(m, order)
    check_shape("F1", first, (b, m, d), "(B, m, d)")
    p = pair_index(m, order).shape[0]
    check_shape("F2", second, (b, p, d), f"(B, P, d) with P = {p} pairs for m={m}, order={order}")
    check_shape("text_features", text_features, (None, d), "(C, d)")
    c = text_features.shape[0]
    if c < 1:
        raise ValueError("text_features must hold at least one class embedding (C >= 1)")
    check_floating("weights", weights)
    check_shape("weights", weights, (b, num_simplices(m, order)), "(B, S) with S = m - order + 2")
    device = check_same_device(f=f, F1=first, F2=second, text_features=text_features, weights=weights)
    check_same_dtype(f=f, F1=first, F2=second, text_features=text_features)
    check_labels("labels", labels, b, c, device)
    check_unit_norm("text_features", text_features)


def resolve_backend(backend: str, device: torch.device) -> str:
    """The backend that will run: ``auto`` picks the best available for ``device``; an explicitly
    requested backend that is unavailable raises, saying why."""
    from .._extension import backends

    if backend in ("auto", "reference"):
        return "reference"
    _, why = backends()[backend]
    raise RuntimeError(f"simplex_head backend {backend!r} is unavailable here: {why}")


def simplex_head(
    f: Tensor,
    F1: Tensor,
    F2: Tensor,
    text_features: Tensor,
    labels: Tensor,
    weights: Tensor,
    *,
    logit_scale: float | Tensor,
    lam: float = 0.6,
    variant: str = "paper",
    kappa: float = 1.0,
    order: int = 3,
    backend: str = "auto",
    return_omega: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Per-sample AdvSimplex loss from embedding jets.

    Args:
        f: (B, d) clean embeddings (unnormalised), float32/bfloat16/float64.
        F1: (B, m, d) first-order jets ``Df[δ_k]``.
        F2: (B, P, d) second-order jets ``D²f[δ_k, δ_l]`` in the order of :func:`pair_index`.
        text_features: (C, d) unit-norm class embeddings.
        labels: (B,) int64 class indices.
        weights: (B, S) simplex weights ω (treated as constants), S = m − order + 2.
        logit_scale: s > 0 (float or 0-d tensor).
        lam, variant, kappa, order: loss options (spec §5, §6).
        backend: ``auto``, ``reference``, ``cpp``, ``cuda`` or ``triton``.
        return_omega: also return Ω (B, S).

    Returns:
        loss (B,) = ``CE(z(x), y) + λ Σ_i ω_i Ω_i`` (float32, or float64 for float64 inputs),
        and Ω (B, S) when ``return_omega``. Differentiable with respect to f, F1, F2 and T.
    """
    check_head_inputs(
        f, F1, F2, text_features, labels, weights,
        logit_scale=logit_scale, lam=lam, variant=variant, kappa=kappa, order=order, backend=backend,
    )  # fmt: skip
    resolve_backend(backend, f.device)
    compute = torch.float64 if f.dtype == torch.float64 else torch.float32
    pairs = pair_index(F1.shape[1], order)
    loss, omega = simplex_head_reference(
        f.to(compute), F1.to(compute), F2.to(compute), text_features.to(compute), labels, weights.to(compute), pairs,
        logit_scale=logit_scale, lam=float(lam), variant=variant, kappa=float(kappa), order=order,
    )  # fmt: skip
    return (loss, omega) if return_omega else loss
