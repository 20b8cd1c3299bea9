"""PGD trajectory recorder (math spec §2): every vertex of an ℓ∞ PGD path in pixel space."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import check_floating, check_labels


@dataclass
class Trajectory:
    """A recorded PGD path.

    - ``deltas`` (B, m, *image): ``δ_k = x^{(k)} − x`` for k = 1..m (pixel space)
    - ``probs``  (B, m): true-class probability ``g(x^{(k)})_y`` at each vertex
    """

    deltas: Tensor
    probs: Tensor

    @property
    def final(self) -> Tensor:
        """The last perturbation δ_m (B, *image)."""
        return self.deltas[:, -1]


def check_budget(eps: float, alpha: float, steps: int) -> None:
    """Clear errors for an attack budget out of range (pixels live in [0, 1])."""
    if not (0 <= eps <= 1):
        raise ValueError(f"eps must lie in [0, 1] (pixel scale; 2/255 ≈ 0.00784 is the paper's), got {eps!r}")
    if not (alpha > 0):
        raise ValueError(f"alpha (PGD step size) must be positive, got {alpha!r}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")


def pgd_trajectory(
    logits_fn: Callable[[Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    *,
    eps: float = 2 / 255,
    alpha: float = 1 / 255,
    steps: int = 10,
    init_std: float = 1e-3,
    generator: torch.Generator | None = None,
) -> Trajectory:
    """ℓ∞ PGD on the cross-entropy that records every iterate (spec §2, paper Eq. 4).

    ``x^{(0)} = x + init_std·N(0, I)``; ``x^{(i+1)} = clip_[0,1](Π_{B(x, ε)}(x^{(i)} + α·sign ∇ CE))``.

    Args:
        logits_fn: pixels (B, *image) in [0, 1] -> logits (B, C); normalisation happens inside.
        x: clean images (B, *image), floating, in [0, 1].
        y: labels (B,) int64.
        eps, alpha, steps: budget, step size and number of steps m.
        init_std: standard deviation of the Gaussian start (0.001 in the paper).
        generator: optional ``torch.Generator`` for the random start (reproducibility).

    The attack takes gradients with respect to the pixels only: parameter ``.grad`` fields are
    left untouched.
    """
    check_floating("x", x)
    check_budget(eps, alpha, steps)
    check_labels("y", y, x.shape[0], None, x.device)
    x = x.detach()
    noise = torch.randn(x.shape, generator=generator, device=x.device if generator is None else generator.device)
    x_adv = x + init_std * noise.to(device=x.device, dtype=x.dtype)
    lower, upper = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    deltas, probs = [], []

    def true_class_prob(logits: Tensor) -> Tensor:
        return torch.softmax(logits.detach().float(), dim=-1).gather(1, y[:, None]).squeeze(1)

    with torch.enable_grad():
        for step in range(steps):
            x_adv.requires_grad_(True)
            logits = logits_fn(x_adv)
            if step > 0:  # the forward pass at x^(step) gives its probability for free
                probs.append(true_class_prob(logits))
            loss = F.cross_entropy(logits.float(), y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, x_adv)
            x_adv = torch.minimum(torch.maximum(x_adv.detach() + alpha * grad.sign(), lower), upper)
            deltas.append(x_adv - x)
    with torch.no_grad():
        probs.append(true_class_prob(logits_fn(x_adv)))
    return Trajectory(deltas=torch.stack(deltas, dim=1), probs=torch.stack(probs, dim=1).to(x.dtype))


def margin_loss(logits: Tensor, y: Tensor) -> Tensor:
    """CW-style margin per sample: ``max_{c≠y} z_c − z_y`` (positive once misclassified)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(dim=1)
    return other - true


ATTACK_LOSSES = ("ce", "cw")


def pgd_attack(
    logits_fn: Callable[[Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    alpha: float | None = None,
    steps: int = 10,
    loss: str = "ce",
    random_start: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """ℓ∞ PGD for evaluation (spec §8): returns adversarial images (B, *image) in the ε-ball ∩ [0, 1].

    ``loss`` is ``ce`` (cross-entropy) or ``cw`` (margin); ``random_start`` draws the start
    uniformly from the ε-ball; ``alpha`` defaults to ε/4. Keeps, per sample, the iterate with the
    highest loss seen (so more steps never weaken the attack). ``eps = 0`` returns ``x`` unchanged.
    """
    alpha = eps / 4 if alpha is None else alpha
    check_floating("x", x)
    if eps == 0:
        return x.detach().clone()
    check_budget(eps, alpha, steps)
    check_labels("y", y, x.shape[0], None, x.device)
    if loss not in ATTACK_LOSSES:
        raise ValueError(f"loss must be one of {ATTACK_LOSSES}, got {loss!r}")
    objective = (lambda z: F.cross_entropy(z, y, reduction="none")) if loss == "ce" else (lambda z: margin_loss(z, y))
    x = x.detach()
    lower, upper = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    x_adv = x.clone()
    if random_start:
        noise = torch.rand(x.shape, generator=generator, device=x.device if generator is None else generator.device)
        x_adv = torch.minimum(torch.maximum(x + eps * (2 * noise.to(x.device, x.dtype) - 1), lower), upper)
    best, best_loss = x_adv.clone(), torch.full((x.shape[0],), float("-inf"), device=x.device)
    with torch.enable_grad():
        for step in range(steps + 1):
            x_adv.requires_grad_(True)
            values = objective(logits_fn(x_adv).float())
            improved = values.detach() > best_loss
            best[improved] = x_adv.detach()[improved]
            best_loss = torch.where(improved, values.detach(), best_loss)
            if step == steps:
                break
            (grad,) = torch.autograd.grad(values.sum(), x_adv)
            x_adv = torch.minimum(torch.maximum(x_adv.detach() + alpha * grad.sign(), lower), upper)
    return best
