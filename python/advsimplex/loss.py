"""``AdvSimplexLoss``: the full training objective for a CLIP image tower (math spec §6)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import check_floating, check_positive_scalar, check_shape, check_unit_norm
from .alignment import sampled_alignment, zero_shot_probs
from .attack import check_budget, pgd_trajectory
from .jets.encoders import JET_MODES, encoder_jets, resolve_encoder
from .jets.vit import KERNELS as JET_KERNELS
from .ops.simplex_head import BACKENDS, simplex_head
from .reference import WEIGHTINGS, check_order, pair_index, simplex_weights
from .reference.alignment import check_variant
from .reference.weights import impact_gaps


@dataclass
class LossDetails:
    """What one :class:`AdvSimplexLoss` call measured (all detached).

    ``ce`` clean cross-entropy (B,), ``omega`` per-simplex Ω (B, S), ``weights`` ω (B, S),
    ``vertex_probs`` true-class probability at each PGD vertex (B, m), ``clean_probs`` (B,).
    """

    ce: Tensor
    omega: Tensor
    weights: Tensor
    vertex_probs: Tensor
    clean_probs: Tensor


class AdvSimplexLoss(nn.Module):
    """``L = CE(z(x), y) + λ Σ_i ω_i Ω_i`` averaged over the batch (spec §6, paper Eq. 15–16).

    Each call runs the PGD trajectory (without parameter gradients), the embedding jets at the
    clean images, the simplex weights and the zero-shot head. Defaults reproduce the paper:
    variant ``paper``, κ = 1, Q = 3, m = 10, ε = 2/255, α = 1/255, λ = 0.6, ``impact`` weights.

    Args:
        text_features: (C, d) unit-norm class-prompt embeddings (frozen; stored as a buffer).
        logit_scale: s > 0 (100 for OpenAI CLIP).
        steps, eps, alpha: PGD trajectory (m, ε, α), pixel scale.
        lam: λ. kappa: κ (closed forms) or samples per simplex (``sampled``).
        variant: ``paper``, ``paper-cross``, ``taylor2`` or ``sampled``.
        order: simplex order Q (3 or 4). weighting: ``impact``, ``uniform`` or ``linear``.
        backend: backend of the fused head (see :func:`advsimplex.simplex_head`).
        init_std: std of the PGD start noise. chunk_size: streams/images per encoder call (generic jets).
        jets: ``auto`` (default: fast Taylor-mode jets for open_clip ViT towers, the generic torch.func
            path with a warning for other open_clip towers, and for plain callables), ``fast`` or ``generic``.
        checkpoint: per-block activation checkpointing of the fast jets: None (on above a size
            threshold, :data:`advsimplex.jets.vit.CHECKPOINT_AUTO_BYTES`), True or False.
        micro_batch: images per jet computation (bounds the jets' transient memory); None: whole batch.
        jet_kernels: ``auto``, ``torch`` or ``triton``: the fast jets' LayerNorm/GELU/softmax rules.

    Call: ``loss = loss_fn(encode, images, labels)`` with ``images`` pixels (B, 3, H, W) in [0, 1] and
    ``encode`` either a callable pixels -> embeddings (B, d) (normalisation inside) or an open_clip model
    (``CLIP``, its ``VisionTransformer``, a ``PromptedVisionTransformer``, a ``ZeroShotClassifier``), whose
    preprocessing mean/std is then applied inside, for the PGD path as for the jets.
    With ``return_details=True`` it returns ``(loss, LossDetails)``.
    """

    def __init__(
        self,
        text_features: Tensor,
        *,
        logit_scale: float = 100.0,
        steps: int = 10,
        eps: float = 2 / 255,
        alpha: float = 1 / 255,
        lam: float = 0.6,
        kappa: float = 1.0,
        variant: str = "paper",
        order: int = 3,
        weighting: str = "impact",
        backend: str = "auto",
        init_std: float = 1e-3,
        chunk_size: int | None = None,
        jets: str = "auto",
        checkpoint: bool | None = None,
        micro_batch: int | None = None,
        jet_kernels: str = "auto",
    ) -> None:
        super().__init__()
        check_floating("text_features", text_features)
        check_shape("text_features", text_features, (None, None), "(C, d)")
        check_unit_norm("text_features", text_features)
        check_budget(eps, alpha, steps)
        check_order(steps, order)
        check_variant(variant, kappa)
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if jets not in JET_MODES:
            raise ValueError(f"jets must be one of {JET_MODES}, got {jets!r}")
        if jet_kernels not in JET_KERNELS:
            raise ValueError(f"jet_kernels must be one of {JET_KERNELS}, got {jet_kernels!r}")
        if checkpoint not in (None, True, False):
            raise ValueError(f"checkpoint must be None (automatic), True or False, got {checkpoint!r}")
        if micro_batch is not None and (not isinstance(micro_batch, int) or micro_batch < 1):
            raise ValueError(f"micro_batch must be a positive int or None, got {micro_batch!r}")
        self.register_buffer("text_features", text_features.detach().clone(), persistent=False)
        self.logit_scale = check_positive_scalar("logit_scale", logit_scale)
        self.steps, self.eps, self.alpha, self.init_std = steps, float(eps), float(alpha), float(init_std)
        self.lam, self.kappa, self.variant, self.order = float(lam), float(kappa), variant, order
        self.weighting, self.backend, self.chunk_size = weighting, backend, chunk_size
        self.jets, self.checkpoint, self.micro_batch, self.jet_kernels = jets, checkpoint, micro_batch, jet_kernels

    def extra_repr(self) -> str:
        return (
            f"variant={self.variant!r}, order={self.order}, steps={self.steps}, eps={self.eps:.5g}, "
            f"alpha={self.alpha:.5g}, lam={self.lam}, kappa={self.kappa}, weighting={self.weighting!r}, "
            f"logit_scale={self.logit_scale}, backend={self.backend!r}, jets={self.jets!r}"
        )

    def logits(self, encode: Callable[[Tensor], Tensor] | nn.Module, images: Tensor) -> Tensor:
        """Zero-shot logits (B, C) of images (B, 3, H, W) (``encode``: callable or open_clip model)."""
        e = resolve_encoder(encode, "generic").encode(images)
        n = e / e.norm(dim=-1, keepdim=True)
        return self.logit_scale * (n @ self.text_features.to(n.dtype).t())

    def _weights(self, clean_probs: Tensor, vertex_probs: Tensor) -> Tensor:
        batch_max = None
        if self.weighting == "impact" and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            batch_max = impact_gaps(clean_probs, vertex_probs, self.order).amax(dim=0)
            dist.all_reduce(batch_max, op=dist.ReduceOp.MAX)  # τ_i over the global batch
        return simplex_weights(clean_probs, vertex_probs, scheme=self.weighting, order=self.order, batch_max=batch_max)

    def forward(
        self,
        encode: Callable[[Tensor], Tensor],
        images: Tensor,
        labels: Tensor,
        *,
        generator: torch.Generator | None = None,
        return_details: bool = False,
    ) -> Tensor | tuple[Tensor, LossDetails]:
        encoder = resolve_encoder(encode, "generic" if self.variant == "sampled" else self.jets)
        encode = encoder.encode  # pixels in [0, 1] -> embeddings (a model's normalisation inside)
        traj = pgd_trajectory(
            lambda px: self.logits(encode, px), images, labels,
            eps=self.eps, alpha=self.alpha, steps=self.steps, init_std=self.init_std, generator=generator,
        )  # fmt: skip
        text = self.text_features
        if self.variant == "sampled":
            emb = encode(images)
            probs = zero_shot_probs(emb, text, self.logit_scale)
            clean_probs = probs.detach().gather(1, labels[:, None]).squeeze(1)
            weights = self._weights(clean_probs, traj.probs)
            omega = sampled_alignment(
                encode, images, traj.deltas.to(images.dtype), text.to(images.dtype), logit_scale=self.logit_scale,
                samples=int(self.kappa), order=self.order, generator=generator, chunk_size=self.chunk_size,
                clean_probs=probs,
            )  # fmt: skip
            ce = F.nll_loss(probs.clamp_min(1e-30).log(), labels, reduction="none")
            per_sample = ce + self.lam * (weights.to(omega.dtype) * omega).sum(dim=-1)
        else:
            pairs = pair_index(self.steps, self.order)
            jets = encoder_jets(
                encoder, images, traj.deltas, pairs, chunk_size=self.chunk_size, checkpoint=self.checkpoint,
                micro_batch=self.micro_batch, kernels=self.jet_kernels,
            )  # fmt: skip
            with torch.no_grad():
                clean_probs = zero_shot_probs(jets.value.float(), text, self.logit_scale)
                clean_probs = clean_probs.gather(1, labels[:, None]).squeeze(1)
            weights = self._weights(clean_probs, traj.probs)
            per_sample, omega = simplex_head(
                jets.value, jets.first, jets.second, text.to(jets.value.dtype), labels, weights.to(jets.value.dtype),
                logit_scale=self.logit_scale, lam=self.lam, variant=self.variant, kappa=self.kappa,
                order=self.order, backend=self.backend, return_omega=True,
            )  # fmt: skip
            ce = per_sample.detach() - self.lam * (weights * omega.detach()).sum(dim=-1)
        loss = per_sample.mean()
        if not return_details:
            return loss
        details = LossDetails(
            ce=ce.detach(), omega=omega.detach(), weights=weights, vertex_probs=traj.probs, clean_probs=clean_probs
        )
        return loss, details
