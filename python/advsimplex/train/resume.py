"""Resuming a run: which checkpoint to continue from, and whether this invocation's settings allow an
exact continuation of the run that wrote it.

Checkpoint: ``resume: <file>`` loads that file (any problem is an error); ``resume: auto`` takes the
newest checkpoint in ``out_dir/checkpoints`` that loads and verifies, renaming each newer one that does
not to ``<name>.corrupt`` with a warning naming it (truncated or garbage files, checksum mismatches,
missing tensors, non-finite values); with checkpoints present but none loadable it stops.

Settings (each key's policy is in :mod:`.config`): every ``same`` key must equal the value the run was
started with, ``free`` keys may change, and the total number of steps may change only with the
``constant`` schedule (under the cosine schedule every step's learning rate depends on the total). A
difference is a :class:`~.config.ConfigError` listing every differing key, saved → now.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path

from .checkpoint import Checkpoint, CheckpointError, list_checkpoints, load_checkpoint, quarantine
from .coercion import coerce
from .config import ConfigError, TrainConfig, config_fields

log = logging.getLogger("advsimplex.train")


def select_checkpoint(
    resume: str | None, folder: Path, accept: Callable[[Checkpoint], None], *, is_main: bool = True
) -> Checkpoint | None:
    """The checkpoint to resume from (None: start at step 0); see the module docstring.

    ``accept(state)`` checks a loaded checkpoint against the run (raising :class:`ConfigError` for
    different settings, which stops the search, or :class:`CheckpointError`). Only the main process
    renames bad files.
    """
    if resume is None:
        return None
    if resume != "auto":
        path = Path(resume)
        if not path.is_file():
            raise FileNotFoundError(f"resume: checkpoint {resume!r} does not exist")
        state = load_checkpoint(path)
        accept(state)
        return state
    found = list_checkpoints(folder)
    problems = []
    for path in reversed(found):
        try:
            state = load_checkpoint(path)
            accept(state)
            return state
        except FileNotFoundError:  # renamed meanwhile by the main process
            continue
        except CheckpointError as exc:
            problems.append(f"{path.name}: {exc}")
            moved = quarantine(path) if is_main and path.exists() else path
            log.warning("%s; skipped it (renamed to %s) and try the previous checkpoint", exc, moved.name)
    if problems:
        raise CheckpointError(f"resume: no loadable checkpoint in {folder}: " + "; ".join(problems))
    return None


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def _saved_values(saved: dict) -> dict:
    """``saved`` with known keys coerced to the field types (keys of other versions are dropped)."""
    known = {f.name: f for f in config_fields()}
    out = {}
    for key, value in saved.items():
        if key in known:
            try:
                out[key] = coerce(TrainConfig, known[key], value)
            except ConfigError:
                out[key] = value
    return out


def setting_differences(saved: dict, cfg: TrainConfig) -> list[str]:
    """``"key saved → now"`` for each ``same``-policy key whose value differs (a key the saved config does
    not know counts as its default)."""
    values = _saved_values(saved)
    defaults = TrainConfig()
    out = []
    for f in config_fields():
        if f.metadata["resume"] != "same":
            continue
        before, now = values.get(f.name, getattr(defaults, f.name)), getattr(cfg, f.name)
        if not _same(before, now):
            out.append(f"{f.name} {before!r} → {now!r}")
    return out


def changed_free_settings(saved: dict, cfg: TrainConfig) -> list[str]:
    """``"key saved → now"`` for the ``free``-policy keys that changed (reported, allowed)."""
    values = _saved_values(saved)
    return [
        f"{f.name} {values[f.name]!r} → {getattr(cfg, f.name)!r}"
        for f in config_fields()
        if f.metadata["resume"] == "free" and f.name in values and f.name not in ("resume", "overwrite")
        and not _same(values[f.name], getattr(cfg, f.name))
    ]  # fmt: skip


def total_steps_problem(saved_total: int | None, total: int, step: int, cfg: TrainConfig) -> str | None:
    """Why a run of ``saved_total`` steps cannot continue as one of ``total`` steps from ``step`` (None: it can)."""
    if saved_total is None or saved_total == total:
        return None
    if cfg.schedule != "constant":
        return (
            f"steps {saved_total} → {total} (the cosine schedule's learning rate at every step depends on the total "
            "steps; changing them is exact only with schedule: constant)"
        )
    if step > total:
        return f"steps {saved_total} → {total} (the checkpoint is at step {step}, past the new total)"
    return None


def check_resumable(saved: dict, cfg: TrainConfig, *, saved_total: int | None, total: int, step: int,
                    source: str) -> None:  # fmt: skip
    """Raise :class:`ConfigError` listing every setting of ``cfg`` that differs from ``saved`` (the config of
    ``source``, a checkpoint or a run's ``config.yaml``) in a way an exact resume cannot honour."""
    problems = setting_differences(saved, cfg)
    if problem := total_steps_problem(saved_total, total, step, cfg):
        problems.append(problem)
    if problems:
        raise ConfigError(
            f"resume: this run's settings differ from those of {source}: {'; '.join(problems)}. An exact resume "
            "needs the saved values; to train with new settings start a new run (another --out-dir) from the "
            "model, e.g. --model <out_dir>/model.safetensors"
        )
