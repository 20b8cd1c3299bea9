"""Argument checks shared by every public entry point: errors name the argument at fault."""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Sequence

import torch
from torch import Tensor

FLOAT_DTYPES = (torch.float64, torch.float32, torch.bfloat16, torch.float16)


def check_tensor(name: str, value: object) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def check_floating(name: str, value: object, dtypes: Sequence[torch.dtype] = FLOAT_DTYPES) -> Tensor:
    t = check_tensor(name, value)
    if t.dtype not in dtypes:
        allowed = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(f"{name} must have a floating dtype ({allowed}), got {t.dtype}")
    return t


def check_shape(name: str, t: Tensor, expected: Sequence[int | None], what: str) -> None:
    """``expected`` holds ints or None (any size); ``what`` spells the shape, e.g. ``"(B, m, d)"``."""
    ok = t.dim() == len(expected) and all(e is None or e == s for e, s in zip(expected, t.shape))
    if not ok:
        want = tuple("?" if e is None else e for e in expected)
        raise ValueError(f"{name} must have shape {what} = {want}, got {tuple(t.shape)}")


def _check_same(attribute: str, error: type[Exception], tensors: dict[str, Tensor | None]):
    values = {k: getattr(v, attribute) for k, v in tensors.items() if v is not None}
    first = next(iter(values.values()))
    for k, value in values.items():
        if value != first:
            listing = ", ".join(f"{n} {'on' if attribute == 'device' else 'is'} {v}" for n, v in values.items())
            raise error(f"all tensors must share one {attribute}; got {listing} ({k} differs)")
    return first


def check_same_device(**tensors: Tensor | None) -> torch.device:
    return _check_same("device", ValueError, tensors)


def check_same_dtype(**tensors: Tensor | None) -> torch.dtype:
    return _check_same("dtype", TypeError, tensors)


def check_unit_norm(name: str, t: Tensor, tol: float | None = None) -> None:
    """Rows of ``t`` must have unit ℓ2 norm (text embeddings are normalised once, by the caller)."""
    if torch.compiler.is_compiling():  # a data-dependent check: skipped inside torch.compile graphs
        return
    if tol is None:
        tol = 1e-6 if t.dtype == torch.float64 else (1e-3 if t.dtype == torch.float32 else 2e-2)
    norms = t.detach().float().norm(dim=-1) if t.dtype != torch.float64 else t.detach().norm(dim=-1)
    worst = (norms - 1).abs().max().item() if norms.numel() else 0.0
    if not worst <= tol:
        raise ValueError(
            f"{name} must hold unit-norm rows (normalise with t / t.norm(dim=-1, keepdim=True)); "
            f"largest |norm - 1| is {worst:.3g} > {tol:g}"
        )


def check_labels(name: str, labels: object, batch: int, num_classes: int | None, device: torch.device) -> Tensor:
    t = check_tensor(name, labels)
    if t.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{name} must be an integer tensor (int64) of class indices, got {t.dtype}")
    check_shape(name, t, (batch,), "(B,)")
    if t.device != device:
        raise ValueError(f"{name} is on {t.device} but the other inputs are on {device}")
    if t.numel() and num_classes is not None and not torch.compiler.is_compiling():
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"{name} must lie in [0, C) = [0, {num_classes}); got values in [{lo}, {hi}]")
    return t


def check_positive_scalar(name: str, value: object) -> float:
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a Python number or a 0-d tensor, got shape {tuple(value.shape)}")
        value = value.item()
    if not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def check_pixels(name: str, value: object) -> Tensor:
    """A floating image batch (B, ...) with B ≥ 1, finite, with pixels in [0, 1]."""
    t = check_floating(name, value)
    if t.dim() < 2 or t.shape[0] < 1:
        raise ValueError(f"{name} must be a non-empty batch (B, 3, H, W) with B >= 1, got shape {tuple(t.shape)}")
    if torch.compiler.is_compiling():  # data-dependent checks: skipped inside torch.compile graphs
        return t
    lo, hi = torch.aminmax(t.detach())
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name} holds non-finite values (NaN or ±inf)")
    if lo < 0 or hi > 1:
        raise ValueError(f"{name} must be pixels in [0, 1] (normalisation happens inside the model); got values "
                         f"in [{lo:.4g}, {hi:.4g}]")  # fmt: skip
    return t


def check_real(name: str, value: object, *, minimum: float | None = 0.0, positive: bool = False) -> float:
    """A finite real number (not a bool), >= ``minimum`` (or > 0 with ``positive``)."""
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    value = float(value)
    if positive and not value > 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum:g}, got {value!r}")
    return value


def as_int(name: str, value: object) -> int:
    """``value`` as a Python int: ints, NumPy integers and integer 0-d tensors; a clear TypeError otherwise."""
    if isinstance(value, Tensor) and value.numel() == 1 and not value.is_floating_point() and value.dtype != torch.bool:
        value = value.item()
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})") from None


def check_count(name: str, value: object, minimum: int = 1) -> int:
    """An integer (Python, NumPy or 0-d tensor; not a bool or a float) >= ``minimum``."""
    value = as_int(name, value)
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    return value
