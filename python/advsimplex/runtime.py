"""Run-time helpers shared by the applications on top of the library (``advsimplex.train``,
``advsimplex.evaluation``, the demo): one definition of each.

- :func:`resolve_device`      ``auto`` / ``cpu`` / ``cuda`` / ``cuda:N`` → a ``torch.device`` (clear error without CUDA)
- :func:`parse_number`        ``"2/255"``, ``"0.5/255"``, ``"1e-3"`` → a finite float
- :func:`eps_label`           ``2/255`` → ``"2/255"`` (pixel-scale radii as the papers write them)
- :func:`derive_seed`         a stable 63-bit seed from a seed and a tuple of names/numbers
- :func:`setup_logging`       advsimplex's progress messages on stderr
- :func:`nonfinite_entries`   which named tensors hold NaN or ±inf (for refusing broken models)
- :func:`prepare_output_dir`  an output folder that exists and is writable, or an error naming the option
- :class:`DefaultsHelpFormatter`  argparse help that shows each option's default once
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import Tensor

__all__ = [
    "DefaultsHelpFormatter",
    "derive_seed",
    "eps_label",
    "nonfinite_entries",
    "parse_number",
    "prepare_output_dir",
    "resolve_device",
    "setup_logging",
]


def resolve_device(device: str | torch.device = "auto", *, local_rank: int | None = None,
                   name: str = "device") -> torch.device:  # fmt: skip
    """The ``torch.device`` meant by ``device``.

    ``auto`` is CUDA when a GPU is visible, else the CPU. A bare ``cuda`` means ``cuda:<local_rank>``
    when ``local_rank`` is given (one GPU per process under torchrun), else the current CUDA device.
    Raises ``ValueError`` starting with ``name`` (the option to blame) for an unparsable string or a
    CUDA device on a machine without one, ``TypeError`` for a value that is neither str nor device.
    """
    if not isinstance(device, str | torch.device):
        raise TypeError(f"{name}: expected auto, cpu, cuda or cuda:N, got {type(device).__name__} {device!r}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"{name}: {device!r} is not a device (expected auto, cpu, cuda or cuda:N)") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name}: {str(device)!r} asked for, but CUDA is not available here")
        if dev.index is None:
            dev = torch.device("cuda", local_rank if local_rank is not None else torch.cuda.current_device())
        if dev.index >= torch.cuda.device_count():
            raise ValueError(f"{name}: {dev} asked for, but only {torch.cuda.device_count()} GPU(s) are visible")
    elif dev.type != "cpu":
        raise ValueError(f"{name}: {str(device)!r} is not supported (expected auto, cpu, cuda or cuda:N)")
    return dev


def parse_number(text: str) -> float:
    """``"2/255"``, ``"0.5/255"``, ``"-1/255"``, ``"1e-3"`` → a finite float.

    Raises ``ValueError`` (``"'abc' is not a number or fraction like 2/255"``) for anything else,
    division by zero, NaN and infinities included.
    """
    if not isinstance(text, str):
        raise TypeError(f"expected a string like 2/255, got {type(text).__name__}")
    num, slash, den = text.strip().partition("/")
    try:
        value = float(num) / float(den) if slash else float(num)
    except (ValueError, ZeroDivisionError) as exc:
        raise ValueError(f"{text!r} is not a number or fraction like 2/255") from exc
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number")
    return value


def eps_label(eps: float) -> str:
    """``"2/255"``, ``"0.5/255"`` for multiples of a tenth of 1/255, else the number (``"0.003"``)."""
    k = round(eps * 255, 1)
    return f"{k:g}/255" if abs(eps * 255 - k) < 1e-6 else f"{eps:g}"


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed from ``seed`` and a tuple of names/numbers (stable across runs, processes and machines)."""
    digest = hashlib.sha256(json.dumps([seed, *parts], default=str).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def setup_logging(quiet: bool = False) -> None:
    """advsimplex's progress messages on stderr (INFO, or WARNING with ``quiet``); other libraries keep theirs.

    Idempotent: calling it again only changes the level.
    """
    logger = logging.getLogger("advsimplex")
    if not any(getattr(h, "_advsimplex", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._advsimplex = True
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(logging.WARNING if quiet else logging.INFO)


def nonfinite_entries(tensors: Iterable[tuple[str, Tensor]], limit: int = 5) -> list[str]:
    """``"name (k of n values)"`` for each floating tensor holding NaN or ±inf (at most ``limit`` of them,
    then ``"… and N more"``); an empty list when every value is finite."""
    found = []
    for name, t in tensors:
        if isinstance(t, Tensor) and (t.is_floating_point() or t.is_complex()) and t.numel():
            bad = int((~torch.isfinite(t)).sum())
            if bad:
                found.append(f"{name} ({bad} of {t.numel()} values)")
    if len(found) > limit:
        found = [*found[:limit], f"… and {len(found) - limit} more"]
    return found


def prepare_output_dir(path: str | os.PathLike, name: str = "out_dir") -> Path:
    """Create ``path`` (with parents) and check that files can be written into it.

    Raises ``ValueError`` starting with ``name`` when ``path`` (or a parent) is a file, or when the
    folder cannot be created or written (permissions, read-only file system, full disk).
    """
    if not isinstance(path, str | os.PathLike) or not str(path):
        raise TypeError(f"{name}: expected a folder path, got {path!r}")
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{name}: {out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test.", delete=True) as probe:
            probe.write(b"x")
            probe.flush()
    except (FileExistsError, NotADirectoryError) as exc:
        raise ValueError(f"{name}: cannot create {out}: a parent is a file ({exc.filename})") from exc
    except OSError as exc:
        raise ValueError(f"{name}: cannot write into {out}: {exc.strerror or exc}") from exc
    return out


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: …)`` to an option's help only where it adds something: never when the help
    already says its default, and never for ``None``/``False`` defaults (an unset option or a switch)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is None or action.default is False or "default" in text:
            return text
        return super()._get_help_string(action)
