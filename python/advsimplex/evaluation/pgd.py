"""PGD and CW-margin attacks for evaluation (spec §8), on the package's one attack loop.

Both run :func:`advsimplex.attack.sign_gradient_ascent` from a uniform random start in the ε-ball and keep,
per sample, the iterate with the highest loss seen (so more steps never weaken the attack).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_floating, check_labels
from ..attack import LinfBall, check_budget, sign_gradient_ascent

ATTACK_LOSSES = ("ce", "cw")


def margin_loss(logits: Tensor, y: Tensor) -> Tensor:
    """CW-style margin per sample: ``max_{c≠y} z_c − z_y`` (positive once misclassified)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(dim=1)
    return other - true


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
    """ℓ∞ PGD for evaluation: returns adversarial images (B, *image) in the ε-ball ∩ [0, 1].

    ``loss`` is ``ce`` (cross-entropy) or ``cw`` (margin); ``random_start`` draws the start
    uniformly from the ε-ball; ``alpha`` defaults to ε/4. Keeps, per sample, the iterate with the
    highest loss seen. ``eps = 0`` returns ``x`` unchanged.
    """
    alpha = eps / 4 if alpha is None else alpha
    check_floating("x", x)
    if eps == 0:
        return x.detach().clone()
    check_budget(eps, alpha, steps)
    check_labels("y", y, x.shape[0], None, x.device)
    if loss not in ATTACK_LOSSES:
        raise ValueError(f"loss must be one of {ATTACK_LOSSES}, got {loss!r}")

    def objective(x_adv: Tensor) -> tuple[Tensor, None]:
        logits = logits_fn(x_adv).float()
        values = F.cross_entropy(logits, y, reduction="none") if loss == "ce" else margin_loss(logits, y)
        return values, None

    x = x.detach()
    ball = LinfBall.around(x, eps)
    start = ball.uniform(x, eps, generator) if random_start else x.clone()
    best, best_loss = start.clone(), torch.full((x.shape[0],), float("-inf"), device=x.device)

    def keep_best(i: int, x_i: Tensor, values: Tensor, aux: None) -> None:
        nonlocal best_loss
        improved = values > best_loss
        best[improved] = x_i[improved]
        best_loss = torch.where(improved, values, best_loss)

    sign_gradient_ascent(objective, start, ball, alpha=alpha, steps=steps, observe=keep_best)
    return best
