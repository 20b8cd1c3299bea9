"""Training objectives: AdvSimplex and the baselines it is compared with, one module per method.

Every objective is an ``nn.Module`` called as ``objective(images, labels, generator)`` with pixels
(B, 3, H, W) in [0, 1] and labels (B,), returning ``(loss, metrics)``: the scalar batch-mean loss
and a dict of detached scalars for logging. Attacks run in pixel space (CLIP normalisation happens
inside the classifier), with ε and α in pixel units, and take gradients with respect to the pixels
only. Notation: ``z(x) = s · n(f(x)) Tᵀ`` zero-shot logits, ``g = softmax(z)``, ``δ_1..δ_m`` the
PGD-CE path of math spec §2 (Gaussian start ``init_std``), ``f_0`` the frozen original image tower.

========== ==============================================================================================
method     per-sample loss (averaged over the batch)
========== ==============================================================================================
advsimplex ``CE(z(x), y) + λ Σ_i ω_i Ω_i`` closed-form simplex alignment (spec §6; :class:`AdvSimplexLoss`)
sampled    the same with Ω_i estimated by ``samples`` uniform points per simplex (spec §5, ``sampled``)
tecoa      ``CE(z(x + δ_m), y)`` (TeCoA: CE on the final PGD adversary)
trades     ``CE(z(x), y) + β · (1/m) Σ_i D(g(x), g(x + δ_i))``, D = ``KL(g(x) ‖ g(x+δ_i))`` or ``‖·‖²``
pmg        ``CE(z(x_a), y) + w_o · KL(g_0(x_a) ‖ g(x_a)) + w_c · KL(g(x) ‖ g(x_a))``, ``x_a = x + δ_m``,
           ``g_0`` the frozen original model (PMG-AFT)
fare       ``(1 − λ_c) ‖f(x + δ) − f_0(x)‖² + λ_c ‖f(x) − f_0(x)‖²``, δ maximising the first term by PGD
           (uniform start, ``attack_steps`` sign steps of α); unnormalised embeddings, labels unused (FARE)
clip       contrastive CLIP loss on (image, caption) pairs (:mod:`advsimplex.train.pretrain`)
========== ==============================================================================================
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..attack import pgd_trajectory
from ..loss import AdvSimplexLoss
from ..zeroshot import ZeroShotClassifier
from .config import TrainConfig

Metrics = dict[str, Tensor]


def advsimplex_encoder(classifier: ZeroShotClassifier):
    """What :class:`AdvSimplexLoss` differentiates for ``classifier``: the classifier itself.

    :class:`AdvSimplexLoss` recognises it as an open_clip model (its tower and pixel mean/std), so open_clip
    ViT towers, VPT ones included, get the fast Taylor-mode jets (``jets: auto``) and other towers the
    generic torch.func path; ``jets: generic`` forces the latter. The one place to change what is passed.
    """
    return classifier


def log_kl(log_p: Tensor, log_q: Tensor) -> Tensor:
    """``KL(p ‖ q)`` per row (B,) from log-probabilities (B, C)."""
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1)


class Objective(nn.Module):
    """Base class: ``forward(images, labels, generator) -> (loss, metrics)``."""

    def after_step(self) -> None:
        """Called after every optimizer step (e.g. to clamp a parameter)."""


class AdvSimplexObjective(Objective):
    """``CE(z(x), y) + λ Σ_i ω_i Ω_i`` (math spec §6) with the closed forms, or Monte Carlo (``sampled``)."""

    def __init__(self, classifier: ZeroShotClassifier, cfg: TrainConfig, sampled: bool = False) -> None:
        super().__init__()
        self.classifier = classifier
        self.loss = AdvSimplexLoss(
            classifier.text_features, logit_scale=classifier.logit_scale, steps=cfg.attack_steps, eps=cfg.eps,
            alpha=cfg.alpha, lam=cfg.lam, kappa=float(cfg.samples) if sampled else cfg.kappa,
            variant="sampled" if sampled else cfg.variant, order=cfg.order, weighting=cfg.weighting,
            backend=cfg.backend, init_std=cfg.init_std, chunk_size=cfg.chunk_size, jets=cfg.jets,
            checkpoint=cfg.jet_checkpoint, micro_batch=cfg.jet_micro_batch, jet_kernels=cfg.jet_kernels,
        )  # fmt: skip

    def forward(self, images: Tensor, labels: Tensor, generator: torch.Generator) -> tuple[Tensor, Metrics]:
        loss, d = self.loss(advsimplex_encoder(self.classifier), images, labels, generator=generator,
                            return_details=True)  # fmt: skip
        metrics = {
            "ce": d.ce.mean(), "align": (d.weights * d.omega).sum(dim=-1).mean(),
            "p_clean": d.clean_probs.mean(), "p_adv": d.vertex_probs[:, -1].mean(),
        }  # fmt: skip
        return loss, metrics


class _PathObjective(Objective):
    """Shared by the CE-path baselines: the PGD-CE trajectory of math spec §2."""

    def __init__(self, classifier: ZeroShotClassifier, cfg: TrainConfig) -> None:
        super().__init__()
        self.classifier = classifier
        self.eps, self.alpha, self.steps, self.init_std = cfg.eps, cfg.alpha, cfg.attack_steps, cfg.init_std

    def path(self, images: Tensor, labels: Tensor, generator: torch.Generator) -> Tensor:
        """PGD vertices δ_1..δ_m (B, m, 3, H, W), computed without parameter gradients."""
        traj = pgd_trajectory(
            self.classifier, images, labels, eps=self.eps, alpha=self.alpha, steps=self.steps,
            init_std=self.init_std, generator=generator,
        )  # fmt: skip
        return traj.deltas.to(images.dtype)


class TeCoAObjective(_PathObjective):
    """TeCoA: ``CE(z(x + δ_m), y)``."""

    def forward(self, images: Tensor, labels: Tensor, generator: torch.Generator) -> tuple[Tensor, Metrics]:
        adv = images + self.path(images, labels, generator)[:, -1]
        logits = self.classifier(adv).float()
        loss = F.cross_entropy(logits, labels)
        return loss, {"ce_adv": loss.detach(), "acc_adv": (logits.argmax(-1) == labels).float().mean()}


class TradesObjective(_PathObjective):
    """Point-wise alignment over the path vertices: ``CE(z(x), y) + β (1/m) Σ_i D(g(x), g(x + δ_i))``."""

    def __init__(self, classifier: ZeroShotClassifier, cfg: TrainConfig) -> None:
        super().__init__(classifier, cfg)
        self.beta, self.divergence = cfg.trades_beta, cfg.trades_divergence

    def forward(self, images: Tensor, labels: Tensor, generator: torch.Generator) -> tuple[Tensor, Metrics]:
        deltas = self.path(images, labels, generator)  # (B, m, 3, H, W)
        b, m = deltas.shape[:2]
        points = (images[:, None] + deltas).flatten(0, 1)
        logits = self.classifier(torch.cat([images, points])).float()
        clean, adv = logits[:b], logits[b:].view(b, m, -1)
        ce = F.cross_entropy(clean, labels)
        log_clean, log_adv = clean.log_softmax(-1), adv.log_softmax(-1)
        if self.divergence == "kl":
            div = log_kl(log_clean[:, None].expand_as(log_adv), log_adv)  # (B, m)
        else:
            div = ((log_adv.exp() - log_clean.exp()[:, None]) ** 2).sum(dim=-1)
        align = div.mean(dim=1).mean()
        return ce + self.beta * align, {"ce": ce.detach(), "align": align.detach()}


class PMGObjective(_PathObjective):
    """PMG-AFT: ``CE(z(x_a), y) + w_o KL(g_0(x_a) ‖ g(x_a)) + w_c KL(g(x) ‖ g(x_a))``."""

    def __init__(self, classifier: ZeroShotClassifier, original: ZeroShotClassifier, cfg: TrainConfig) -> None:
        super().__init__(classifier, cfg)
        self.original = original
        self.w_orig, self.w_clean = cfg.pmg_orig_weight, cfg.pmg_clean_weight

    def forward(self, images: Tensor, labels: Tensor, generator: torch.Generator) -> tuple[Tensor, Metrics]:
        b = images.shape[0]
        adv = images + self.path(images, labels, generator)[:, -1]
        logits = self.classifier(torch.cat([adv, images])).float()
        log_adv, log_clean = logits[:b].log_softmax(-1), logits[b:].log_softmax(-1)
        with torch.no_grad():
            log_orig = self.original(adv).float().log_softmax(-1)
        ce = F.nll_loss(log_adv, labels)
        kl_orig, kl_clean = log_kl(log_orig, log_adv).mean(), log_kl(log_clean, log_adv).mean()
        loss = ce + self.w_orig * kl_orig + self.w_clean * kl_clean
        return loss, {"ce_adv": ce.detach(), "kl_orig": kl_orig.detach(), "kl_clean": kl_clean.detach()}


class FAREObjective(Objective):
    """FARE: ``(1 − λ_c) ‖f(x + δ) − f_0(x)‖² + λ_c ‖f(x) − f_0(x)‖²`` with δ from embedding-space PGD."""

    def __init__(self, classifier: ZeroShotClassifier, original: ZeroShotClassifier, cfg: TrainConfig) -> None:
        super().__init__()
        self.classifier, self.original = classifier, original
        self.eps, self.alpha, self.steps = cfg.eps, cfg.alpha, cfg.attack_steps
        self.clean_weight = cfg.fare_clean_weight

    def attack(self, images: Tensor, target: Tensor, generator: torch.Generator) -> Tensor:
        """δ (B, 3, H, W) maximising ``‖f(x + δ) − target‖²`` over the ε-ball ∩ [0, 1] (no parameter gradients)."""
        x = images.detach()
        lower, upper = (x - self.eps).clamp(0, 1), (x + self.eps).clamp(0, 1)
        noise = torch.rand(x.shape, generator=generator).to(x.device, x.dtype)
        x_adv = torch.minimum(torch.maximum(x + self.eps * (2 * noise - 1), lower), upper)
        with torch.enable_grad():
            for _ in range(self.steps):
                x_adv.requires_grad_(True)
                dist = (self.classifier.encode(x_adv).float() - target).pow(2).sum()
                (grad,) = torch.autograd.grad(dist, x_adv)
                x_adv = torch.minimum(torch.maximum(x_adv.detach() + self.alpha * grad.sign(), lower), upper)
        return x_adv - x

    def forward(self, images: Tensor, labels: Tensor, generator: torch.Generator) -> tuple[Tensor, Metrics]:
        b = images.shape[0]
        with torch.no_grad():
            target = self.original.encode(images).float()
        adv = images + self.attack(images, target, generator)
        emb = self.classifier.encode(torch.cat([adv, images])).float()
        dist_adv = (emb[:b] - target).pow(2).sum(-1).mean()
        dist_clean = (emb[b:] - target).pow(2).sum(-1).mean()
        loss = (1 - self.clean_weight) * dist_adv + self.clean_weight * dist_clean
        return loss, {"dist_adv": dist_adv.detach(), "dist_clean": dist_clean.detach()}


def build_objective(
    cfg: TrainConfig, classifier: ZeroShotClassifier | None, original: ZeroShotClassifier | None, **clip_inputs
) -> Objective:
    """The objective of ``cfg.method``. ``original`` (the frozen starting model) is needed by pmg and fare;
    ``clip_inputs`` (model, tokenizer, classes) by the contrastive ``clip`` method."""
    if cfg.method == "clip":
        from .pretrain import ContrastiveObjective

        return ContrastiveObjective(cfg=cfg, **clip_inputs)
    if cfg.method in ("pmg", "fare") and original is None:
        raise ValueError(f"method {cfg.method} needs the frozen original model")
    builders = {
        "advsimplex": lambda: AdvSimplexObjective(classifier, cfg),
        "sampled": lambda: AdvSimplexObjective(classifier, cfg, sampled=True),
        "tecoa": lambda: TeCoAObjective(classifier, cfg),
        "trades": lambda: TradesObjective(classifier, cfg),
        "pmg": lambda: PMGObjective(classifier, original, cfg),
        "fare": lambda: FAREObjective(classifier, original, cfg),
    }
    return builders[cfg.method]()
