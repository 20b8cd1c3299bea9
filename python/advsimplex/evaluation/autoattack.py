"""AutoAttack (APGD-CE + APGD-T, spec §8) from the maintained ``pyautoattack`` package.

``pyautoattack`` 0.2.0 is fra31/auto-attack (Croce & Hein, ICML 2020) packaged for PyPI; it is
imported as ``pyautoattack`` (not ``autoattack``) and needs no TensorFlow. Its quirks, handled here:

- ``AutoAttack(model, *, attacks=, version="custom", eps=, norm=, seed=, device=)`` takes keyword
  arguments only; ``attacks`` is accepted with ``version="custom"`` alone.
- In the custom version APGD-CE runs 5 restarts (the standard version sets 1) and APGD-T targets 9
  classes; the schedule checkpoints are fixed when an attack object is built, so a different
  iteration count needs new ``APGDAttack`` objects (built here) rather than a changed ``n_iter``.
- APGD-T's targeted DLR loss reads the 4th-largest logit: it needs ≥ 4 classes, and at most C − 1
  target classes. With 2 or 3 classes only APGD-CE runs (the paper: APGD-CE alone on binary tasks).
- ``run_standard_evaluation`` returns ``(x_adv, y_adv)``, casts inputs to float32, and reseeds the
  *global* torch RNG with ``seed`` (``time.time()`` when None): the global RNG state is restored here.
"""

from __future__ import annotations

import importlib.metadata

import torch
from torch import Tensor, nn

from .._checks import check_floating, check_labels

PACKAGE = "pyautoattack"


def autoattack_version() -> str:
    """The installed ``pyautoattack`` version (raises ImportError with the install command if absent)."""
    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ImportError(f"the autoattack attack needs {PACKAGE}: pip install {PACKAGE}==0.2.0") from exc


def autoattack_attacks(num_classes: int) -> list[str]:
    """The AutoAttack components run for ``num_classes`` classes: APGD-CE (+ APGD-T when C ≥ 4)."""
    if num_classes < 2:
        raise ValueError(f"AutoAttack needs at least 2 classes, got num_classes={num_classes}")
    return ["apgd-ce"] if num_classes <= 3 else ["apgd-ce", "apgd-t"]


def autoattack(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    num_classes: int,
    iters: int = 100,
    restarts: int = 1,
    targets: int = 9,
    seed: int = 0,
) -> Tensor:
    """ℓ∞ AutoAttack (APGD-CE, then APGD-T on the points still correct) on a logits model.

    Args:
        model: pixels (B, 3, H, W) float32 in [0, 1] → logits (B, C).
        x: clean images (B, 3, H, W) in [0, 1]; y: labels (B,) int64.
        eps: ℓ∞ radius (pixel scale). ``eps = 0`` returns ``x``.
        num_classes: C; selects the components (:func:`autoattack_attacks`).
        iters, restarts: APGD iterations and restarts (both components; AutoAttack standard: 100, 1).
        targets: APGD-T target classes, capped at C − 1 (standard: 9).
        seed: the package's seed (starting points); the global RNG state is left as it was.

    Returns adversarial images (B, 3, H, W) float32: points the attack could not flip are ``x``.
    """
    check_floating("x", x)
    check_labels("y", y, x.shape[0], num_classes, x.device)
    if not 0 <= eps <= 1:
        raise ValueError(f"eps must lie in [0, 1] (pixel scale), got {eps!r}")
    for name, value in (("iters", iters), ("restarts", restarts), ("targets", targets)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"AutoAttack {name} must be a positive int, got {value!r}")
    autoattack_version()
    from pyautoattack import AutoAttack
    from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted

    attacks = autoattack_attacks(num_classes)
    device = x.device
    adversary = AutoAttack(
        model, attacks=attacks, version="custom", eps=float(eps), norm="Linf", seed=seed, device=device
    )
    common = dict(norm="Linf", eps=float(eps), seed=seed, eot_iter=1, rho=0.75, device=device, logger=adversary.logger)
    adversary.apgd = APGDAttack(model, n_iter=iters, n_restarts=restarts, loss="ce", **common)
    adversary.apgd_targeted = APGDAttack_targeted(
        model, n_iter=iters, n_restarts=restarts, n_target_classes=min(targets, num_classes - 1), **common
    )
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        x_adv, _ = adversary.run_standard_evaluation(x.detach().float(), y.detach(), batch_size=x.shape[0])
    return x_adv.to(x.dtype)


def autoattack_settings(num_classes: int, *, iters: int, restarts: int, targets: int) -> dict:
    """The settings recorded with AutoAttack results."""
    attacks = autoattack_attacks(num_classes)
    return {
        "package": f"{PACKAGE} {autoattack_version()}",
        "components": attacks,
        "norm": "Linf",
        "iterations": iters,
        "restarts": restarts,
        "target_classes": min(targets, num_classes - 1) if "apgd-t" in attacks else 0,
    }
