"""Training objectives: AdvSimplex and the baselines it is compared with.

Every objective is an :class:`~.objective.Objective` over :class:`advsimplex.ZeroShotModel` s (pixels → logits;
``embed`` for embeddings): ``objective(images, labels, generator) -> (loss, metrics)``. Attacks run in pixel
space with ε and α in pixel units, on the library's one attack loop (:mod:`advsimplex.attack`), and take
gradients with respect to the pixels only. Notation: ``z(x) = s · n(f(x)) Tᵀ`` zero-shot logits,
``g = softmax(z)``, ``δ_1..δ_m`` the PGD-CE path of math spec §2 (Gaussian start ``init_std``), ``f_0`` /
``g_0`` the frozen original model.

========== ==============================================================================================
method     per-sample loss (averaged over the batch)
========== ==============================================================================================
advsimplex ``CE(z(x), y) + λ Σ_i ω_i Ω_i`` closed-form simplex alignment (spec §6; :class:`AdvSimplexLoss`)
sampled    the same with Ω_i estimated by ``samples`` uniform points per simplex (spec §5, ``sampled``)
tecoa      ``CE(z(x + δ_m), y)`` (TeCoA: CE on the final PGD adversary)
trades     ``CE(z(x), y) + β · (1/m) Σ_i D(g(x), g(x + δ_i))``, D = ``KL(g(x) ‖ g(x+δ_i))`` or ``‖·‖²``
pmg        ``CE(z(x_a), y) + w_o · KL(g_0(x_a) ‖ g(x_a)) + w_c · KL(g(x) ‖ g(x_a))``, ``x_a = x + δ_m`` (PMG-AFT)
fare       ``(1 − λ_c) ‖f(x + δ) − f_0(x)‖² + λ_c ‖f(x) − f_0(x)‖²``, δ maximising the first term by PGD
           (uniform start); unnormalised embeddings, labels unused (FARE)
agft       ``CE(s_t · cos(f(x + δ), T), q)`` with the soft target ``q = softmax(γ · s_t · cos(f_0(x), T))`` of the
           frozen original, ``s_t`` the training scale (180), δ maximising the same loss by PGD (uniform start;
           AGFT, Cui et al. CVPR 2026)
clip       contrastive CLIP loss on (image, caption) pairs (:mod:`advsimplex.train.pretrain`)
========== ==============================================================================================
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..attack import LinfBall, pgd_trajectory, sign_gradient_ascent
from ..loss import AdvSimplexLoss
from ..zeroshot import ZeroShotModel
from .config import TrainConfig
from .objective import Metrics, Objective
from .pretrain import ContrastiveObjective


def log_kl(log_p: Tensor, log_q: Tensor) -> Tensor:
    """``KL(p ‖ q)`` per row (B,) from log-probabilities (B, C)."""
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1)


class AdvSimplexObjective(Objective):
    """``CE(z(x), y) + λ Σ_i ω_i Ω_i`` (math spec §6) with the closed forms, or Monte Carlo (``sampled``)."""

    def __init__(self, model: ZeroShotModel, cfg: TrainConfig, sampled: bool = False) -> None:
        super().__init__()
        self.model = model
        self.loss = AdvSimplexLoss(
            steps=cfg.attack_steps, eps=cfg.eps, alpha=cfg.alpha, lam=cfg.lam, kappa=cfg.kappa, samples=cfg.samples,
            variant="sampled" if sampled else cfg.variant, order=cfg.order, weighting=cfg.weighting,
            backend=cfg.backend, init_std=cfg.init_std, sample_batch_size=cfg.sample_batch_size,
            second_order=cfg.second_order if not sampled else "auto",
        )  # fmt: skip

    def forward(self, images: Tensor, labels: Tensor, generator: torch.Generator) -> tuple[Tensor, Metrics]:
        loss, d = self.loss(self.model, images, labels, generator=generator, return_details=True)
        metrics = {
            "ce": d.ce.mean(), "align": (d.weights * d.omega).sum(dim=-1).mean(),
            "p_clean": d.clean_probs.mean(), "p_adv": d.vertex_probs[:, -1].mean(),
        }  # fmt: skip
        return loss, metrics


class _PathObjective(Objective):
    """Shared by the CE-path baselines: the PGD-CE trajectory of math spec §2."""

    def __init__(self, model: ZeroShotModel, cfg: TrainConfig) -> None:
        super().__init__()
        self.model = model
        self.eps, self.alpha, self.steps, self.init_std = cfg.eps, cfg.alpha, cfg.attack_steps, cfg.init_std

    def path(self, images: Tensor, labels: Tensor, generator: torch.Generator) -> Tensor:
        """PGD vertices δ_1..δ_m (B, m, 3, H, W), computed without parameter gradients."""
        traj = pgd_trajectory(
            self.model, images, labels, eps=self.eps, alpha=self.alpha, steps=self.steps,
            init_std=self.init_std, generator=generator,
        )  # fmt: skip
        return traj.deltas.to(images.dtype)


class TeCoAObjective(_PathObjective):
    """TeCoA: ``CE(z(x + δ_m), y)``."""

    def forward(self, images: Tensor, labels: Tensor, generator: torch.Generator) -> tuple[Tensor, Metrics]:
        adv = images + self.path(images, labels, generator)[:, -1]
        logits = self.model(adv).float()
        loss = F.cross_entropy(logits, labels)
        return loss, {"ce_adv": loss.detach(), "acc_adv": (logits.argmax(-1) == labels).float().mean()}


class TradesObjective(_PathObjective):
    """Point-wise alignment over the path vertices: ``CE(z(x), y) + β (1/m) Σ_i D(g(x), g(x + δ_i))``."""

    def __init__(self, model: ZeroShotModel, cfg: TrainConfig) -> None:
        super().__init__(model, cfg)
        self.beta, self.divergence = cfg.trades_beta, cfg.trades_divergence

    def forward(self, images: Tensor, labels: Tensor, generator: torch.Generator) -> tuple[Tensor, Metrics]:
        deltas = self.path(images, labels, generator)  # (B, m, 3, H, W)
        b, m = deltas.shape[:2]
        points = (images[:, None] + deltas).flatten(0, 1)
        logits = self.model(torch.cat([images, points])).float()
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

    def __init__(self, model: ZeroShotModel, original: ZeroShotModel, cfg: TrainConfig) -> None:
        super().__init__(model, cfg)
        self.original = original
        self.w_orig, self.w_clean = cfg.pmg_orig_weight, cfg.pmg_clean_weight

    def forward(self, images: Tensor, labels: Tensor, generator: torch.Generator) -> tuple[Tensor, Metrics]:
        b = images.shape[0]
        adv = images + self.path(images, labels, generator)[:, -1]
        logits = self.model(torch.cat([adv, images])).float()
        log_adv, log_clean = logits[:b].log_softmax(-1), logits[b:].log_softmax(-1)
        with torch.no_grad():
            log_orig = self.original(adv).float().log_softmax(-1)
        ce = F.nll_loss(log_adv, labels)
        kl_orig, kl_clean = log_kl(log_orig, log_adv).mean(), log_kl(log_clean, log_adv).mean()
        loss = ce + self.w_orig * kl_orig + self.w_clean * kl_clean
        return loss, {"ce_adv": ce.detach(), "kl_orig": kl_orig.detach(), "kl_clean": kl_clean.detach()}


class _OwnLossAttack:
    """A PGD attack on a method's own per-sample loss: uniform start in the ε-ball, sign steps of α."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.eps, self.alpha, self.steps = cfg.eps, cfg.alpha, cfg.attack_steps

    def perturb(self, objective, images: Tensor, generator: torch.Generator) -> Tensor:
        """δ (B, 3, H, W) maximising ``Σ_b objective(x + δ)_b`` over the ε-ball ∩ [0, 1] (no parameter gradients)."""
        x = images.detach()
        ball = LinfBall.around(x, self.eps)
        adv = sign_gradient_ascent(lambda z: (objective(z), None), ball.uniform(x, self.eps, generator), ball,
                                   alpha=self.alpha, steps=self.steps)  # fmt: skip
        return adv - x


class FAREObjective(Objective):
    """FARE: ``(1 − λ_c) ‖f(x + δ) − f_0(x)‖² + λ_c ‖f(x) − f_0(x)‖²`` with δ from embedding-space PGD."""

    def __init__(self, model: ZeroShotModel, original: ZeroShotModel, cfg: TrainConfig) -> None:
        super().__init__()
        self.model, self.original = model, original
        self.attack = _OwnLossAttack(cfg)
        self.clean_weight = cfg.fare_clean_weight

    def forward(self, images: Tensor, labels: Tensor, generator: torch.Generator) -> tuple[Tensor, Metrics]:
        b = images.shape[0]
        with torch.no_grad():
            target = self.original.embed(images).float()
        delta = self.attack.perturb(lambda z: (self.model.embed(z).float() - target).pow(2).sum(-1), images, generator)
        emb = self.model.embed(torch.cat([images + delta, images])).float()
        dist_adv = (emb[:b] - target).pow(2).sum(-1).mean()
        dist_clean = (emb[b:] - target).pow(2).sum(-1).mean()
        loss = (1 - self.clean_weight) * dist_adv + self.clean_weight * dist_clean
        return loss, {"dist_adv": dist_adv.detach(), "dist_clean": dist_clean.detach()}


class AGFTObjective(Objective):
    """AGFT: ``CE(s_t · cos(f(x + δ), T), q)``, ``q = softmax(γ · s_t · cos(f_0(x), T))`` (soft targets of the frozen
    original), δ maximising the same loss."""

    def __init__(self, model: ZeroShotModel, original: ZeroShotModel, cfg: TrainConfig) -> None:
        super().__init__()
        self.model, self.original = model, original
        self.attack = _OwnLossAttack(cfg)
        self.scale, self.gamma = cfg.agft_scale, cfg.agft_gamma

    def soft_ce(self, pixels: Tensor, target: Tensor) -> Tensor:
        """Per-sample ``CE(s_t · cos(f(pixels), T), target)`` (B,) against probabilities ``target`` (B, C)."""
        log_probs = (self.scale * self.model.cosines(self.model.embed(pixels)).float()).log_softmax(-1)
        return -(target * log_probs).sum(-1)

    def forward(self, images: Tensor, labels: Tensor, generator: torch.Generator) -> tuple[Tensor, Metrics]:
        with torch.no_grad():
            target = torch.softmax(self.gamma * self.scale * self.original.cosines(self.original.embed(images)).float(),
                                   dim=-1)  # fmt: skip
        delta = self.attack.perturb(lambda z: self.soft_ce(z, target), images, generator)
        loss = self.soft_ce(images + delta, target).mean()
        return loss, {"soft_ce_adv": loss.detach(), "target_max": target.amax(-1).mean()}


def build_objective(
    cfg: TrainConfig, zero_shot: ZeroShotModel | None, original: ZeroShotModel | None, **clip_inputs
) -> Objective:
    """The objective of ``cfg.method`` for the trainable ``zero_shot`` model. ``original`` (the frozen starting model)
    is needed by pmg, fare and agft; ``clip_inputs`` (model, tokenizer, classes) by the contrastive ``clip`` method."""
    model = zero_shot
    if cfg.method == "clip":
        return ContrastiveObjective(cfg=cfg, **clip_inputs)
    if cfg.method in ("pmg", "fare", "agft") and original is None:
        raise ValueError(f"method {cfg.method} needs the frozen original model")
    builders = {
        "advsimplex": lambda: AdvSimplexObjective(model, cfg),
        "sampled": lambda: AdvSimplexObjective(model, cfg, sampled=True),
        "tecoa": lambda: TeCoAObjective(model, cfg),
        "trades": lambda: TradesObjective(model, cfg),
        "pmg": lambda: PMGObjective(model, original, cfg),
        "fare": lambda: FAREObjective(model, original, cfg),
        "agft": lambda: AGFTObjective(model, original, cfg),
    }
    return builders[cfg.method]()
