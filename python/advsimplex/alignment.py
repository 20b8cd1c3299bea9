"""Simplex alignment through a zero-shot model: Ω per simplex and the per-sample loss (math spec §4–§6).

:func:`simplex_terms` is the one orchestration behind :func:`simplex_alignment` and
:class:`~advsimplex.AdvSimplexLoss`:

- closed forms (``paper``, ``paper-cross``, ``taylor2``): the model's embedding jets at the clean images
  (:meth:`ZeroShotModel.jets`, carrying the streams the variant needs: :meth:`JetPlan.for_variant`), then
  the fused head (:func:`advsimplex.simplex_head`), which forms ``CE(z(x), y) + λ Σ_i ω_i Ω_i`` and Ω;
- ``sampled``: Ω by Monte Carlo through the network (paper Eq. 1) and the clean CE from the same forward.

The clean cross-entropy is computed from the clean logits, never recovered from the loss.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import check_count, check_real
from .ops.simplex_head import BACKENDS, simplex_head
from .reference import VARIANTS, check_order, simplex_vertices
from .reference.plan import JetPlan
from .zeroshot import ZeroShotModel

SECOND_ORDER = ("auto", "pairs", "collapsed")


@dataclass(frozen=True)
class AlignmentSettings:
    """How Ω is computed, validated once.

    - ``variant``: ``paper``, ``paper-cross``, ``taylor2`` (closed forms) or ``sampled`` (Monte Carlo);
    - ``kappa``: the bound's factor κ of ``paper``/``paper-cross`` (ignored by ``taylor2`` and ``sampled``);
    - ``samples``: Monte-Carlo points per simplex (``sampled`` only);
    - ``order``: simplex order Q, 3 (triangles) or 4 (tetrahedra);
    - ``backend``: the fused head's backend (:func:`advsimplex.simplex_head`);
    - ``sample_batch_size``: perturbed images per forward pass of ``sampled`` (None: all at once);
    - ``second_order``: which second-order jets the closed forms consume (:data:`SECOND_ORDER`): ``auto``
      (collapsed simplex streams for ``paper``, the only variant that needs no more; pair streams otherwise,
      spec §7b), ``pairs`` or ``collapsed`` (``paper`` only). Results agree to rounding.
    """

    variant: str = "paper"
    kappa: float = 1.0
    samples: int = 10
    order: int = 3
    backend: str = "auto"
    sample_batch_size: int | None = None
    second_order: str = "auto"

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        object.__setattr__(self, "kappa", check_real("kappa", self.kappa))
        object.__setattr__(self, "samples", check_count("samples", self.samples))
        if self.order not in (3, 4) or isinstance(self.order, bool):
            raise ValueError(f"order must be 3 (triangles) or 4 (tetrahedra), got {self.order!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.sample_batch_size is not None:
            check_count("sample_batch_size", self.sample_batch_size)
        if self.second_order not in SECOND_ORDER:
            raise ValueError(f"second_order must be one of {SECOND_ORDER}, got {self.second_order!r}")
        if self.second_order == "collapsed" and self.variant != "paper":
            raise ValueError(
                f"second_order 'collapsed' serves variant 'paper' only; {self.variant!r} needs the pair streams "
                "(products of second-order terms)"
            )

    def plan(self, m: int, device: torch.device) -> JetPlan:
        """The second-order streams the closed form consumes (:meth:`JetPlan.for_variant` for ``auto``)."""
        if self.second_order == "pairs":
            return JetPlan.pairwise(m, self.order, device)
        if self.second_order == "collapsed":
            return JetPlan.collapsed(m, self.order)
        return JetPlan.for_variant(self.variant, m, self.order, device)


@dataclass
class SimplexTerms:
    """What :func:`simplex_terms` computed for a batch of B images with S simplices each.

    ``per_sample`` (B,) ``CE(z(x), y) + λ Σ_i ω_i Ω_i`` (differentiable); ``omega`` (B, S) Ω (differentiable);
    detached: ``ce`` (B,) the clean cross-entropy, ``clean_probs`` (B,) ``g(x)_y``, ``weights`` (B, S) ω.
    """

    per_sample: Tensor
    omega: Tensor
    ce: Tensor
    clean_probs: Tensor
    weights: Tensor


def check_model(model: object, name: str = "model") -> ZeroShotModel:
    if not isinstance(model, ZeroShotModel):
        raise TypeError(
            f"{name} must be an advsimplex.ZeroShotModel (build one with ZeroShotModel.from_clip, from_tower or "
            f"from_encoder), got {type(model).__name__}"
        )
    return model


def check_deltas(deltas: object, x: Tensor, order: int) -> Tensor:
    """Trajectory vertices (B, m, *x.shape[1:]) of the dtype and device of ``x``, m ≥ Q − 1."""
    if not isinstance(deltas, Tensor) or not deltas.is_floating_point():
        raise TypeError(f"deltas must be a floating tensor (B, m, *image), got "
                        f"{getattr(deltas, 'dtype', type(deltas).__name__)}")  # fmt: skip
    if deltas.dim() != x.dim() + 1 or deltas.shape[0] != x.shape[0] or deltas.shape[2:] != x.shape[1:]:
        raise ValueError(f"deltas must have shape (B, m, *x.shape[1:]) = ({x.shape[0]}, m, "
                         f"{', '.join(map(str, x.shape[1:]))}), got {tuple(deltas.shape)}")  # fmt: skip
    check_order(deltas.shape[1], order)
    if deltas.dtype != x.dtype:
        raise TypeError(f"deltas ({deltas.dtype}) must have the dtype of x ({x.dtype})")
    if deltas.device != x.device:
        raise ValueError(f"deltas is on {deltas.device} but x is on {x.device}")
    if not torch.compiler.is_compiling() and not bool(torch.isfinite(deltas).all()):
        raise ValueError("deltas holds non-finite values (NaN or ±inf)")
    return deltas


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
    model: ZeroShotModel,
    x: Tensor,
    deltas: Tensor,
    clean_probs: Tensor,
    settings: AlignmentSettings,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Monte-Carlo Ω (B, S) = (1/κ) Σ_j ‖g(x + p_j) − g(x)‖², ``κ = settings.samples`` points p_j uniform on each
    simplex (paper Eq. 1); ``clean_probs`` (B, C) is ``g(x)`` (differentiable)."""
    b = x.shape[0]
    points = sample_simplex_points(deltas, settings.order, settings.samples, generator)  # (B, S, κ, *image)
    s = points.shape[1]
    images = (x.unsqueeze(1).unsqueeze(1) + points).flatten(0, 2)
    chunk = images.shape[0] if settings.sample_batch_size is None else settings.sample_batch_size
    probs = torch.cat(
        [torch.softmax(model.logits(images[i : i + chunk]), dim=-1) for i in range(0, images.shape[0], chunk)]
    ).reshape(b, s, settings.samples, -1)
    return ((probs - clean_probs[:, None, None]) ** 2).sum(dim=-1).mean(dim=-1)


def simplex_terms(
    model: ZeroShotModel,
    x: Tensor,
    deltas: Tensor,
    labels: Tensor,
    settings: AlignmentSettings,
    *,
    lam: float,
    weights: Callable[[Tensor], Tensor],
    generator: torch.Generator | None = None,
) -> SimplexTerms:
    """Ω and the per-sample loss ``CE(z(x), y) + λ Σ_i ω_i Ω_i`` of images ``x`` (B, 3, H, W) with trajectory
    vertices ``deltas`` (B, m, 3, H, W) and labels (B,); ``weights(clean_probs (B,)) -> ω (B, S)`` (constants).
    Inputs are assumed checked (:func:`simplex_alignment`, :class:`~advsimplex.AdvSimplexLoss`)."""
    model.check_deterministic()
    if settings.variant == "sampled":
        logits = model.logits(x)
        probs = torch.softmax(logits, dim=-1)
        clean = probs.detach().gather(1, labels[:, None]).squeeze(1)
        w = weights(clean)
        omega = sampled_alignment(model, x, deltas, probs, settings, generator)
        ce = F.cross_entropy(logits, labels, reduction="none")
        return SimplexTerms(ce + lam * (w.to(omega.dtype) * omega).sum(dim=-1), omega, ce.detach(), clean, w)
    plan = settings.plan(deltas.shape[1], x.device)
    jets = model.jets(x, deltas, plan)
    with torch.no_grad():
        logits = model.head(jets.value.float())
        clean = torch.softmax(logits, dim=-1).gather(1, labels[:, None]).squeeze(1)
        ce = F.cross_entropy(logits, labels, reduction="none")
    w = weights(clean)
    dtype = jets.value.dtype
    per_sample, omega = simplex_head(
        jets.value, jets.first, jets.second, model.text_features.to(dtype), labels, w.to(dtype),
        logit_scale=model.logit_scale, lam=lam, variant=settings.variant, kappa=settings.kappa, order=settings.order,
        backend=settings.backend, return_omega=True, collapsed=plan.is_collapsed,
    )  # fmt: skip
    return SimplexTerms(per_sample, omega, ce, clean, w)


def simplex_alignment(
    model: ZeroShotModel,
    x: Tensor,
    deltas: Tensor,
    *,
    variant: str = "paper",
    kappa: float = 1.0,
    samples: int = 10,
    order: int = 3,
    backend: str = "reference",
    sample_batch_size: int | None = None,
    second_order: str = "auto",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Per-simplex alignment Ω (B, m − order + 2) of a trajectory (spec §5).

    Args:
        model: a :class:`~advsimplex.ZeroShotModel` (image tower, pixel normalisation, class embeddings, logit
            scale, and the jet options: fast Taylor-mode jets for covered open_clip ViTs, else torch.func).
        x: clean images (B, 3, H, W), pixels in [0, 1].
        deltas: trajectory vertices δ_1..δ_m (B, m, 3, H, W).
        variant: ``paper``, ``paper-cross``, ``taylor2`` (closed forms) or ``sampled`` (Monte Carlo through the
            network).
        kappa: the bound's factor κ (``paper``, ``paper-cross``).
        samples: Monte-Carlo points per simplex (``sampled``).
        order: simplex order Q, 3 (triangles) or 4 (tetrahedra).
        backend: backend of the fused head (:func:`advsimplex.simplex_head`); the default ``reference`` is
            differentiable to any order and under torch.func.
        sample_batch_size: perturbed images per forward pass (``sampled``).
        second_order: ``auto`` (collapsed jets for ``paper``, pair jets otherwise), ``pairs`` or ``collapsed``.
        generator: random source of the ``sampled`` variant.

    Differentiable with respect to the model's parameters (third-order derivatives of the tower for the closed
    forms). float64 inputs are supported throughout.
    """
    settings = AlignmentSettings(variant, kappa, samples, order, backend, sample_batch_size, second_order)
    check_model(model).check_images(x, "x")
    check_deltas(deltas, x, order)
    labels = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)  # CE is not part of Ω (λ = 0 below)
    terms = simplex_terms(model, x, deltas, labels, settings, lam=0.0,
                          weights=lambda clean: clean.new_zeros(x.shape[0], deltas.shape[1] - order + 2))  # fmt: skip
    return terms.omega
