"""``simplex_alignment``: per-simplex Ω through an image encoder (math spec §4, §5)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ._checks import check_floating, check_positive_scalar, check_shape, check_unit_norm
from .jets.encoders import encoder_jets, resolve_encoder
from .reference import (
    check_order,
    closed_form_alignment,
    logit_jets,
    pair_index,
    probability_jets,
    simplex_vertices,
)
from .reference.alignment import check_variant


def zero_shot_probs(embeddings: Tensor, text_features: Tensor, logit_scale: float | Tensor) -> Tensor:
    """``g = softmax(s · n(f) Tᵀ)`` (B, C) from embeddings (B, d) (spec §1)."""
    n = embeddings / embeddings.norm(dim=-1, keepdim=True)
    return torch.softmax(logit_scale * (n @ text_features.to(n.dtype).t()), dim=-1)


def check_alignment_inputs(x: Tensor, deltas: Tensor, text_features: Tensor, logit_scale, variant, kappa, order):
    check_floating("x", x)
    check_floating("deltas", deltas)
    check_floating("text_features", text_features)
    if x.dim() < 2:
        raise ValueError(f"x must have shape (B, 3, H, W) (or (B, ...)), got {tuple(x.shape)}")
    if deltas.dim() != x.dim() + 1:
        raise ValueError(
            f"deltas must have shape (B, m, *x.shape[1:]), got {tuple(deltas.shape)} for x {tuple(x.shape)}"
        )
    check_shape("deltas", deltas, (x.shape[0], None, *x.shape[1:]), "(B, m, *x.shape[1:])")
    check_order(deltas.shape[1], order)
    check_variant(variant, kappa)
    check_positive_scalar("logit_scale", logit_scale)
    if deltas.dtype != x.dtype:
        raise TypeError(f"deltas ({deltas.dtype}) must have the dtype of x ({x.dtype})")
    for name, t in (("deltas", deltas), ("text_features", text_features)):
        if t.device != x.device:
            raise ValueError(f"{name} is on {t.device} but x is on {x.device}")
    check_shape("text_features", text_features, (None, None), "(C, d)")
    check_unit_norm("text_features", text_features)


def sample_simplex_points(deltas: Tensor, order: int, samples: int, generator: torch.Generator | None = None) -> Tensor:
    """Uniform points on every simplex: (B, S, κ, *image) with Dirichlet(1, …, 1) weights (spec §3)."""
    b, m = deltas.shape[:2]
    verts = simplex_vertices(m, order).to(deltas.device)  # (S, Q-1)
    s = verts.shape[0]
    gen_device = generator.device if generator is not None else deltas.device
    # Dirichlet(1..1) = normalised i.i.d. Exp(1); component 0 is the clean (zero) vertex.
    expo = -torch.rand((b, s, samples, order), generator=generator, device=gen_device).clamp_min(1e-12).log()
    beta = (expo / expo.sum(dim=-1, keepdim=True))[..., 1:].to(device=deltas.device, dtype=deltas.dtype)
    corners = deltas[:, verts].flatten(3)  # (B, S, Q-1, D)
    return torch.einsum("bsjk,bskd->bsjd", beta, corners).reshape(b, s, samples, *deltas.shape[2:])


def sampled_alignment(
    encode: Callable[[Tensor], Tensor],
    x: Tensor,
    deltas: Tensor,
    text_features: Tensor,
    *,
    logit_scale: float | Tensor,
    samples: int,
    order: int = 3,
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
    clean_probs: Tensor | None = None,
) -> Tensor:
    """Monte-Carlo Ω (B, S) = (1/κ) Σ_j ‖g(x + p_j) − g(x)‖², p_j uniform on each simplex (paper Eq. 1).

    ``encode`` is a callable or an open_clip model (normalisation inside), as for :func:`simplex_alignment`.
    """
    encode = resolve_encoder(encode, "generic").encode
    b = x.shape[0]
    points = sample_simplex_points(deltas, order, samples, generator)  # (B, S, κ, *image)
    s = points.shape[1]
    if clean_probs is None:
        clean_probs = zero_shot_probs(encode(x), text_features, logit_scale)
    images = (x.unsqueeze(1).unsqueeze(1) + points).flatten(0, 2)
    chunk = images.shape[0] if chunk_size is None else chunk_size
    probs = torch.cat(
        [
            zero_shot_probs(encode(images[i : i + chunk]), text_features, logit_scale)
            for i in range(0, images.shape[0], chunk)
        ]
    ).reshape(b, s, samples, -1)
    return ((probs - clean_probs[:, None, None]) ** 2).sum(dim=-1).mean(dim=-1)


def simplex_alignment(
    encode: Callable[[Tensor], Tensor],
    x: Tensor,
    deltas: Tensor,
    text_features: Tensor,
    *,
    logit_scale: float | Tensor,
    variant: str = "paper",
    kappa: float = 1.0,
    order: int = 3,
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
    jets: str = "auto",
    checkpoint: bool | None = None,
    micro_batch: int | None = None,
    jet_kernels: str = "auto",
) -> Tensor:
    """Per-simplex alignment Ω (B, m − order + 2) of a trajectory (spec §5).

    Args:
        encode: image encoder, pixels (B, 3, H, W) -> embeddings (B, d), normalisation inside; or an
            open_clip model: a ``CLIP`` model, its ``VisionTransformer`` (or another open_clip image tower),
            a :class:`~advsimplex.vpt.PromptedVisionTransformer` or a
            :class:`~advsimplex.zeroshot.ZeroShotClassifier`. A model takes pixels in [0, 1] and applies its
            preprocessing mean/std inside (:mod:`advsimplex.jets.encoders`).
        x: clean images (B, 3, H, W).
        deltas: trajectory vertices δ_1..δ_m (B, m, 3, H, W).
        text_features: (C, d) unit-norm class embeddings.
        logit_scale: s > 0.
        variant: ``paper``, ``paper-cross``, ``taylor2`` (closed forms) or ``sampled`` (Monte Carlo
            through the network with κ samples per simplex).
        kappa: the bound's factor κ (closed forms) or the sample count (``sampled``).
        order: simplex order Q, 3 (triangles) or 4 (tetrahedra).
        generator: random source of the ``sampled`` variant.
        chunk_size: streams (closed forms, generic jets) or images (``sampled``) per encoder call.
        jets: ``auto`` (fast Taylor-mode jets for covered open_clip ViT towers, :func:`advsimplex.jets.vit_jets`;
            the generic torch.func path otherwise, with a :class:`~advsimplex.jets.FastJetsFallbackWarning` for
            uncovered open_clip towers), ``fast`` (fast jets or an error) or ``generic``.
        checkpoint: per-block activation checkpointing of the fast jets (None: automatic by size).
        micro_batch: images per jet computation (memory bound); None: the whole batch.
        jet_kernels: ``auto``, ``torch`` or ``triton``: implementation of the fast jets' nonlinear rules.

    Differentiable with respect to the encoder's parameters (third-order derivatives of the tower
    for the closed forms). float64 inputs are supported throughout.
    """
    check_alignment_inputs(x, deltas, text_features, logit_scale, variant, kappa, order)
    text = text_features.to(x.dtype)
    encoder = resolve_encoder(encode, "generic" if variant == "sampled" else jets)
    if variant == "sampled":
        return sampled_alignment(
            encoder.encode, x, deltas, text, logit_scale=logit_scale, samples=int(kappa), order=order,
            generator=generator, chunk_size=chunk_size,
        )  # fmt: skip
    pairs = pair_index(deltas.shape[1], order)
    emb = encoder_jets(
        encoder, x, deltas, pairs, chunk_size=chunk_size, checkpoint=checkpoint, micro_batch=micro_batch,
        kernels=jet_kernels,
    )  # fmt: skip
    if emb.value.shape[1] != text.shape[1]:
        raise ValueError(
            f"encode returns {emb.value.shape[1]}-dimensional embeddings but text_features are (C, {text.shape[1]})"
        )
    z, z_first, z_second = logit_jets(emb.value, emb.first, emb.second, text, logit_scale, pairs.to(x.device))
    _, u, h = probability_jets(z, z_first, z_second, pairs.to(x.device))
    return closed_form_alignment(u, h, variant=variant, kappa=kappa, order=order)
