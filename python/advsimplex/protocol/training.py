"""One training run through the public :mod:`advsimplex.train` API, resumable, with its cost measured.

The protocol sets only the TrainConfig keys it needs; they are checked against the fields of the
installed :class:`~advsimplex.train.TrainConfig` at run time (:func:`check_keys`), so that a renamed key
is reported by name instead of silently ignored. Optional keys (``progress``, ``tensorboard``) are set
only where the installed version has them.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path


class ProtocolError(RuntimeError):
    """The protocol cannot run as asked (a missing method or key, settings that differ from a previous run)."""


def config_keys() -> set[str]:
    """The field names of the installed :class:`advsimplex.train.TrainConfig`."""
    from ..train import TrainConfig

    return {f.name for f in dataclasses.fields(TrainConfig)}


def check_keys(keys, where: str) -> None:
    """Raise :class:`ProtocolError` naming every key of ``keys`` that TrainConfig lacks."""
    missing = sorted(set(keys) - config_keys())
    if missing:
        raise ProtocolError(f"{where} sets TrainConfig key(s) {', '.join(missing)}, which this version of "
                            "advsimplex.train does not have")  # fmt: skip


def method_available(method: str) -> str | None:
    """None if ``advsimplex.train`` accepts ``method``, else the reason it does not."""
    from ..train import ConfigError, load_config

    try:
        load_config(None, {"method": method})
    except ConfigError as exc:
        return str(exc)
    return None


def run_training(overrides: dict, progress: bool = False) -> dict:
    """Train (or finish training) the run described by ``overrides`` (``out_dir`` included).

    A non-empty ``out_dir`` is resumed from its latest checkpoint. Returns the trained model's path, the
    steps, the training seconds (wall, this invocation), the CPU seconds of this process, and the number
    of classes of the training data.
    """
    from ..train import load_config, train

    check_keys(overrides, "the protocol")
    out = Path(overrides["out_dir"])
    values = dict(overrides)
    values["resume"] = "auto" if out.is_dir() and any(out.iterdir()) else None
    keys = config_keys()
    values.update({k: v for k, v in {"progress": progress, "tensorboard": False}.items() if k in keys})
    cfg = load_config(None, values)
    wall, cpu = time.perf_counter(), time.process_time()
    result = train(cfg)
    if not result.finished or result.model_path is None:
        raise ProtocolError(f"training in {out} stopped at step {result.step} of {result.total_steps}")
    return {
        "model": str(result.model_path), "steps": result.step, "train_seconds": result.seconds,
        "wall_seconds": time.perf_counter() - wall, "cpu_seconds": time.process_time() - cpu,
        "classes": len(result.classes), "images_per_second": result.images_per_second,
    }  # fmt: skip
