"""The evaluation attacks (spec §8) behind one interface, with their settings.

=================== =====================================================================================
name                attack
=================== =====================================================================================
``pgd``             ℓ∞ PGD on the cross-entropy, uniform random start, best iterate kept (``pgd_attack``)
``cw``              the same PGD loop on the CW margin ``max_{c≠y} z_c − z_y``
``autoattack``      APGD-CE + APGD-T from ``pyautoattack`` (APGD-CE alone for ≤ 3 classes)
``simplex``         worst-CE point on the path simplices of the model's own PGD trajectory (Fig. 3a)
``simplex-transfer`` the same with the trajectory of a source model, selected by the target's CE
=================== =====================================================================================

:func:`run_attack` returns adversarial images; the runner measures accuracy on them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from ..reference import num_simplices
from .autoattack import autoattack, autoattack_settings
from .pgd import pgd_attack
from .simplex import simplex_attack

ATTACKS = ("pgd", "cw", "autoattack", "simplex", "simplex-transfer")
TRANSFER_ATTACKS = ("simplex-transfer",)


@dataclass(frozen=True)
class AttackSettings:
    """Budgets of every attack. Step sizes of None scale with ε: PGD/CW ε/4, simplex path ε/2
    (the paper's training path: ε = 2/255, α = 1/255)."""

    pgd_steps: int = 10
    pgd_alpha: float | None = None
    cw_steps: int = 10
    cw_alpha: float | None = None
    aa_iters: int = 100
    aa_restarts: int = 1
    aa_targets: int = 9
    simplex_steps: int = 10
    simplex_alpha: float | None = None
    simplex_order: int = 3
    simplex_samples: int = 10
    simplex_init_std: float = 1e-3
    chunk_images: int = 512

    def validate(self) -> None:
        """Raise ``ValueError`` whose message starts with the name of the first setting out of range."""
        for name, value in asdict(self).items():
            if name.endswith("_alpha"):
                if value is not None and not (0 < value <= 1):
                    raise ValueError(f"{name} must lie in (0, 1] (pixel scale), got {value!r}")
            elif name == "simplex_init_std":
                if not (value >= 0):
                    raise ValueError(f"{name} must be >= 0, got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.simplex_order not in (3, 4):
            raise ValueError(f"simplex_order must be 3 (triangles) or 4 (tetrahedra), got {self.simplex_order!r}")
        if self.simplex_steps < self.simplex_order - 1:
            raise ValueError(
                f"simplex_steps must be >= simplex_order - 1 = {self.simplex_order - 1} for a path with a simplex, "
                f"got {self.simplex_steps}"
            )

    def step_size(self, attack: str, eps: float) -> float:
        """The step size ``attack`` uses at radius ``eps``."""
        if attack == "pgd":
            return self.pgd_alpha if self.pgd_alpha is not None else eps / 4
        if attack == "cw":
            return self.cw_alpha if self.cw_alpha is not None else eps / 4
        if attack in ("simplex", "simplex-transfer"):
            return self.simplex_alpha if self.simplex_alpha is not None else eps / 2
        raise ValueError(f"attack {attack!r} has no fixed step size")

    def describe(self, attack: str, eps: float, num_classes: int) -> dict:
        """The settings recorded with a result of ``attack`` at ``eps``."""
        check_attack(attack)
        if attack in ("pgd", "cw"):
            steps = self.pgd_steps if attack == "pgd" else self.cw_steps
            return {
                "loss": "ce" if attack == "pgd" else "cw-margin", "steps": steps,
                "alpha": self.step_size(attack, eps), "random_start": "uniform", "keeps": "best iterate",
            }  # fmt: skip
        if attack == "autoattack":
            return autoattack_settings(
                num_classes, iters=self.aa_iters, restarts=self.aa_restarts, targets=self.aa_targets
            )
        return {
            "path": "pgd-ce (spec §2)", "steps": self.simplex_steps, "alpha": self.step_size(attack, eps),
            "init_std": self.simplex_init_std, "order": self.simplex_order, "samples_per_simplex": self.simplex_samples,
            "simplices": num_simplices(self.simplex_steps, self.simplex_order), "keeps": "max target CE",
            "chunk_images": self.chunk_images,
        }  # fmt: skip


def check_attack(name: str) -> None:
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}: choose from {', '.join(ATTACKS)}")


def run_attack(
    name: str,
    target: Callable[[Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    settings: AttackSettings,
    seed: int,
    num_classes: int,
    source: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """Adversarial images (B, 3, H, W) in the ε-ball ∩ [0, 1] for ``target`` (pixels → logits).

    ``seed`` fixes every random draw (a CPU generator, so CUDA and CPU draw the same numbers);
    ``source`` is the source model of the transfer attacks (required there, ignored elsewhere).
    """
    check_attack(name)
    generator = torch.Generator().manual_seed(seed)
    if name in ("pgd", "cw"):
        steps = settings.pgd_steps if name == "pgd" else settings.cw_steps
        loss = "ce" if name == "pgd" else "cw"
        return pgd_attack(
            target, x, y, eps=eps, alpha=settings.step_size(name, eps), steps=steps, loss=loss, random_start=True,
            generator=generator,
        )  # fmt: skip
    if name == "autoattack":
        return autoattack(
            target, x, y, eps=eps, num_classes=num_classes, iters=settings.aa_iters, restarts=settings.aa_restarts,
            targets=settings.aa_targets, seed=seed,
        )  # fmt: skip
    if name in TRANSFER_ATTACKS and source is None:
        raise ValueError(f"attack {name!r} needs a source model (--source-model)")
    return simplex_attack(
        target, x, y, eps=eps, alpha=settings.step_size(name, eps), steps=settings.simplex_steps,
        order=settings.simplex_order, samples=settings.simplex_samples, init_std=settings.simplex_init_std,
        generator=generator, source_fn=source if name in TRANSFER_ATTACKS else None,
        chunk_images=settings.chunk_images,
    )  # fmt: skip
