"""ℓ∞ attacks in pixel space: one projected sign-gradient loop, and the PGD path recorder (math spec §2).

:func:`sign_gradient_ascent` is the only attack loop of the package: ``x_{i+1} = Π(x_i + α sign ∇ Σ_b o_b(x_i))``
with a pluggable per-sample objective ``o``, a given start and an optional observer of every iterate.
:class:`LinfBall` is the only projection (the ε-ball around the clean images ∩ [0, 1]). Built on them:
:func:`pgd_trajectory` (the training path of AdvSimplex and its baselines), the evaluation attacks
(:mod:`advsimplex.evaluation.attacks`) and FARE's embedding-space attack (:mod:`advsimplex.train.methods`).
Attacks take gradients with respect to the pixels only: parameter ``.grad`` fields are left untouched.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import check_labels, check_pixels, check_real

Objective = Callable[[Tensor], tuple[Tensor, object]]
"""``objective(x_adv) -> (values (B,), aux)``: the per-sample quantity to increase, and anything the observer wants
(e.g. the logits)."""
Observer = Callable[[int, Tensor, Tensor, object], None]
"""``observe(i, x_i, values_i, aux_i)`` for every evaluated iterate ``x_i`` (detached)."""


def check_budget(eps: float, alpha: float, steps: int) -> None:
    """Clear errors for an attack budget out of range (pixels live in [0, 1])."""
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not (0 <= eps <= 1):
        raise ValueError(f"eps must lie in [0, 1] (pixel scale; 2/255 ≈ 0.00784 is the paper's), got {eps!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha (PGD step size) must be a finite positive number, got {alpha!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")


@dataclass(frozen=True)
class LinfBall:
    """The feasible set ``{x' : ‖x' − x‖_∞ ≤ ε} ∩ [0, 1]`` around clean images ``x`` (B, …)."""

    lower: Tensor
    upper: Tensor

    @classmethod
    def around(cls, x: Tensor, eps: float) -> LinfBall:
        x = x.detach()
        return cls((x - eps).clamp(0, 1), (x + eps).clamp(0, 1))

    def project(self, x: Tensor) -> Tensor:
        return torch.minimum(torch.maximum(x, self.lower), self.upper)

    def uniform(self, x: Tensor, eps: float, generator: torch.Generator | None = None) -> Tensor:
        """A uniform random start ``Π(x + ε·U(−1, 1))`` (drawn on the generator's device, then moved)."""
        device = x.device if generator is None else generator.device
        noise = torch.rand(x.shape, generator=generator, device=device)
        return self.project(x.detach() + eps * (2 * noise.to(x.device, x.dtype) - 1))


def sign_gradient_ascent(
    objective: Objective,
    start: Tensor,
    ball: LinfBall,
    *,
    alpha: float,
    steps: int,
    observe: Observer | None = None,
    observe_last: bool = True,
) -> Tensor:
    """``steps`` projected sign-gradient ascent steps on ``Σ_b objective(x)_b`` from ``start``; returns ``x_steps``.

    ``observe`` sees every evaluated iterate: ``x_0 .. x_{steps-1}`` (evaluated with gradients, for the step) and,
    with ``observe_last``, ``x_steps`` (one more evaluation, without gradients).
    """
    x_adv = start.detach()
    with torch.enable_grad():
        for i in range(steps):
            x_adv.requires_grad_(True)
            values, aux = objective(x_adv)
            if observe is not None:
                observe(i, x_adv.detach(), values.detach(), aux)
            (grad,) = torch.autograd.grad(values.sum(), x_adv)
            x_adv = ball.project(x_adv.detach() + alpha * grad.sign())
    if observe is not None and observe_last:
        with torch.no_grad():
            values, aux = objective(x_adv)
        observe(steps, x_adv, values, aux)
    return x_adv


def cross_entropy_objective(logits_fn: Callable[[Tensor], Tensor], y: Tensor) -> Objective:
    """Per-sample CE of ``logits_fn`` (float32 or float64 math), with the logits as ``aux``."""

    def objective(x: Tensor) -> tuple[Tensor, Tensor]:
        logits = logits_fn(x)
        return F.cross_entropy(logits.float(), y, reduction="none"), logits

    return objective


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
        logits_fn: pixels (B, *image) in [0, 1] -> logits (B, C) (a :class:`~advsimplex.ZeroShotModel` or any
            callable; normalisation happens inside).
        x: clean images (B, *image), floating, in [0, 1].
        y: labels (B,) int64, in [0, C).
        eps, alpha, steps: budget, step size and number of steps m.
        init_std: standard deviation of the Gaussian start (0.001 in the paper).
        generator: optional ``torch.Generator`` for the random start (reproducibility).
    """
    _check_model_images(logits_fn, x, "x")
    check_budget(eps, alpha, steps)
    init_std = check_real("init_std", init_std)
    check_labels("y", y, x.shape[0], getattr(logits_fn, "num_classes", None), x.device)
    x = x.detach()
    noise = torch.randn(x.shape, generator=generator, device=x.device if generator is None else generator.device)
    start = x + init_std * noise.to(device=x.device, dtype=x.dtype)
    deltas, probs = [], []

    def record(i: int, x_i: Tensor, values: Tensor, logits: Tensor) -> None:
        if i > 0:  # the forward pass at x^(i) gives its probability for free
            deltas.append(x_i - x)
            probs.append(torch.softmax(logits.detach().float(), dim=-1).gather(1, y[:, None]).squeeze(1))

    sign_gradient_ascent(
        cross_entropy_objective(logits_fn, y), start, LinfBall.around(x, eps), alpha=alpha, steps=steps, observe=record
    )
    return Trajectory(deltas=torch.stack(deltas, dim=1), probs=torch.stack(probs, dim=1).to(x.dtype))


def _check_model_images(model: object, x: object, name: str) -> None:
    """The images checks of a :class:`~advsimplex.ZeroShotModel`, or the generic pixel checks for callables."""
    check = getattr(model, "check_images", None)
    if check is not None:
        check(x, name)
    else:
        check_pixels(name, x)
