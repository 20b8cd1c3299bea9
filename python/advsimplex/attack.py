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
