"""The adversarial-simplex attack (paper Fig. 3a, spec §8) and its transfer setting.

Per image: record the PGD path ``δ_1..δ_m`` (spec §2), draw ``κ`` uniform points on each of its
``S = m − Q + 2`` path simplices (vertices ``0, δ_i, …, δ_{i+Q−2}``, spec §3), and keep the point
with the largest cross-entropy of the *target* model. In the transfer setting the path comes from
another (source) model — the simplices are the source's, the selection is the target's.

Every candidate ``x + p`` is a convex combination of ``x`` and PGD iterates, so it lies in the
ε-ball and in ``[0, 1]``; it is projected once more to remove floating-point rounding only.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_floating, check_labels
from ..alignment import sample_simplex_points
from ..attack import LinfBall, pgd_trajectory
from ..reference import num_simplices


@torch.no_grad()
def worst_simplex_point(
    logits_fn: Callable[[Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    deltas: Tensor,
    *,
    eps: float,
    order: int = 3,
    samples: int = 10,
    generator: torch.Generator | None = None,
    chunk_images: int = 512,
) -> Tensor:
    """Per image, the sampled simplex point with the largest CE under ``logits_fn``.

    Args:
        logits_fn: pixels (N, 3, H, W) in [0, 1] → logits (N, C) (the model being attacked).
        x: clean images (B, 3, H, W); y: labels (B,) int64.
        deltas: path vertices (B, m, 3, H, W) (``Trajectory.deltas``), within the ε-ball.
        eps: the ball radius (for the final projection).
        order: simplex order Q (3: triangles, 4: tetrahedra); samples: κ points per simplex.
        generator: random source of the Dirichlet weights (images are drawn in order, so results
            depend only on the seed, the batch and ``chunk_images``).
        chunk_images: candidate images per forward pass (at least one image's S·κ candidates).

    Returns (B, 3, H, W): ``x + p*`` with ``p* = argmax_p CE(logits_fn(x + p), y)``.
    """
    b, m = deltas.shape[:2]
    per_image = num_simplices(m, order) * samples
    group = max(1, chunk_images // per_image)
    ball = LinfBall.around(x, eps)
    picked = []
    for start in range(0, b, group):
        sl = slice(start, start + group)
        points = sample_simplex_points(deltas[sl], order, samples, generator).flatten(1, 2)  # (g, S·κ, *image)
        g = points.shape[0]
        cand = LinfBall(ball.lower[sl, None], ball.upper[sl, None]).project(x[sl, None] + points)
        logits = logits_fn(cand.flatten(0, 1)).float()
        ce = F.cross_entropy(logits, y[sl].repeat_interleave(per_image), reduction="none").view(g, per_image)
        picked.append(cand[torch.arange(g, device=x.device), ce.argmax(dim=1)])
    return torch.cat(picked)


def simplex_attack(
    logits_fn: Callable[[Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    alpha: float,
    steps: int = 10,
    order: int = 3,
    samples: int = 10,
    init_std: float = 1e-3,
    generator: torch.Generator | None = None,
    source_fn: Callable[[Tensor], Tensor] | None = None,
    chunk_images: int = 512,
) -> Tensor:
    """The simplex attack: worst sampled point on the path simplices of a PGD trajectory.

    Args:
        logits_fn: the attacked (target) model, pixels (B, 3, H, W) in [0, 1] → logits (B, C).
        x: clean images (B, 3, H, W) floating in [0, 1]; y: labels (B,) int64.
        eps, alpha, steps, init_std: the trajectory's PGD (spec §2: CE, sign steps, Gaussian start).
        order, samples: simplex order Q and points κ per simplex.
        generator: random source (trajectory start, then the simplex points).
        source_fn: the model whose trajectory spans the simplices (transfer setting); None: the target.
        chunk_images: candidate images per forward pass.

    Returns adversarial images (B, 3, H, W) in the ε-ball ∩ [0, 1]; ``eps = 0`` returns ``x``.
    """
    check_floating("x", x)
    check_labels("y", y, x.shape[0], None, x.device)
    num_simplices(steps, order)  # clear error for a path too short for the order
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples (points per simplex) must be a positive int, got {samples!r}")
    if eps == 0:  # the ε-ball is {x}; PGD's step would be 0, which pgd_trajectory rejects
        return x.detach().clone()
    path = pgd_trajectory(
        source_fn if source_fn is not None else logits_fn, x, y, eps=eps, alpha=alpha, steps=steps,
        init_std=init_std, generator=generator,
    )  # fmt: skip
    return worst_simplex_point(
        logits_fn, x.detach(), y, path.deltas, eps=eps, order=order, samples=samples, generator=generator,
        chunk_images=chunk_images,
    )  # fmt: skip
