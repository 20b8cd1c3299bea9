"""``AdvSimplexLoss``: the full training objective for a zero-shot model (math spec §6)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ._checks import check_labels, check_real
from .alignment import AlignmentSettings, check_model, simplex_terms
from .attack import check_budget, pgd_trajectory
from .reference import WEIGHTINGS, check_order, simplex_weights
from .reference.weights import impact_gaps
from .zeroshot import ZeroShotModel


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

    Each call runs the PGD trajectory (without parameter gradients), then :func:`advsimplex.alignment.simplex_terms`:
    the embedding jets at the clean images, the simplex weights and the zero-shot head. Defaults reproduce the
    paper: variant ``paper``, κ = 1, Q = 3, m = 10, ε = 2/255, α = 1/255, λ = 0.6, ``impact`` weights.

    Args:
        steps, eps, alpha: PGD trajectory (m, ε, α), pixel scale. init_std: std of the PGD start noise.
        lam: λ ≥ 0. kappa: κ of the ``paper``/``paper-cross`` bound. samples: Monte-Carlo points per simplex
            (``sampled``).
        variant: ``paper``, ``paper-cross``, ``taylor2`` or ``sampled``.
        order: simplex order Q (3 or 4). weighting: ``impact``, ``uniform`` or ``linear``.
        backend: backend of the fused head (see :func:`advsimplex.simplex_head`).
        sample_batch_size: perturbed images per forward pass (``sampled``).
        second_order: the jets' second-order streams: ``auto`` (collapsed for ``paper``, spec §7b; pairs for the
            other closed forms), ``pairs`` or ``collapsed``.

    Call: ``loss = loss_fn(model, images, labels)`` with ``model`` a :class:`~advsimplex.ZeroShotModel` (it owns
    the tower, the class embeddings, the logit scale and the jet options), ``images`` pixels (B, 3, H, W) in
    [0, 1] and ``labels`` (B,) in [0, C). With ``return_details=True`` it returns ``(loss, LossDetails)``.
    """

    def __init__(
        self,
        *,
        steps: int = 10,
        eps: float = 2 / 255,
        alpha: float = 1 / 255,
        lam: float = 0.6,
        kappa: float = 1.0,
        samples: int = 10,
        variant: str = "paper",
        order: int = 3,
        weighting: str = "impact",
        backend: str = "auto",
        init_std: float = 1e-3,
        sample_batch_size: int | None = None,
        second_order: str = "auto",
    ) -> None:
        super().__init__()
        check_budget(eps, alpha, steps)
        self.alignment = AlignmentSettings(variant, kappa, samples, order, backend, sample_batch_size, second_order)
        check_order(steps, order)
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        self.steps, self.eps, self.alpha = steps, float(eps), float(alpha)
        self.init_std = check_real("init_std", init_std)
        self.lam = check_real("lam", lam)
        self.weighting = weighting

    def extra_repr(self) -> str:
        a = self.alignment
        return (
            f"variant={a.variant!r}, order={a.order}, steps={self.steps}, eps={self.eps:.5g}, alpha={self.alpha:.5g}, "
            f"lam={self.lam}, kappa={a.kappa}, weighting={self.weighting!r}, backend={a.backend!r}"
        )

    def _weights(self, clean_probs: Tensor, vertex_probs: Tensor) -> Tensor:
        order, batch_max = self.alignment.order, None
        if self.weighting == "impact" and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            batch_max = impact_gaps(clean_probs, vertex_probs, order).amax(dim=0)
            dist.all_reduce(batch_max, op=dist.ReduceOp.MAX)  # τ_i over the global batch
        return simplex_weights(clean_probs, vertex_probs, scheme=self.weighting, order=order, batch_max=batch_max)

    def forward(
        self,
        model: ZeroShotModel,
        images: Tensor,
        labels: Tensor,
        *,
        generator: torch.Generator | None = None,
        return_details: bool = False,
    ) -> Tensor | tuple[Tensor, LossDetails]:
        check_model(model).check_images(images)
        check_labels("labels", labels, images.shape[0], model.num_classes, images.device)
        traj = pgd_trajectory(
            model, images, labels, eps=self.eps, alpha=self.alpha, steps=self.steps, init_std=self.init_std,
            generator=generator,
        )  # fmt: skip
        terms = simplex_terms(
            model, images, traj.deltas, labels, self.alignment, lam=self.lam,
            weights=lambda clean: self._weights(clean, traj.probs), generator=generator,
        )  # fmt: skip
        loss = terms.per_sample.mean()
        if not return_details:
            return loss
        details = LossDetails(ce=terms.ce, omega=terms.omega.detach(), weights=terms.weights,
                              vertex_probs=traj.probs, clean_probs=terms.clean_probs)  # fmt: skip
        return loss, details
