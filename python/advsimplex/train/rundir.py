"""The run directory (``out_dir``) policy: a run is never written over by accident.

- a missing or empty folder starts a new run;
- a non-empty folder is refused unless the run is resumed (``resume: auto`` or a checkpoint file) or
  ``overwrite: true`` asks for the old run to be deleted — which deletes only what a training run
  writes (:data:`RUN_ENTRIES`), and refuses a folder that holds anything else;
- ``out_dir`` must be a writable folder (not a file), checked before any model or data is loaded;
- temporaries left by writes that a killed process interrupted are removed when the run starts.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from .._io import is_stale_temporary, remove_stale_temporaries
from ..runtime import prepare_output_dir
from .config import ConfigError, TrainConfig

log = logging.getLogger("advsimplex.train")

RUN_ENTRIES = ("config.yaml", "checkpoints", "metrics.csv", "eval.csv", "tensorboard", "model.safetensors",
               "summary.json")  # fmt: skip
"""What a training run writes into its ``out_dir`` (all that ``overwrite`` may delete)."""


def _entries(out: Path) -> list[Path]:
    if not out.is_dir():
        return []
    return sorted(p for p in out.iterdir() if not is_stale_temporary(p.name))


def _listing(paths: list[Path], limit: int = 6) -> str:
    names = [p.name + ("/" if p.is_dir() else "") for p in paths]
    return ", ".join(names[:limit]) + (f", … ({len(names)} entries)" if len(names) > limit else "")


def check_run_dir(cfg: TrainConfig) -> Path:
    """Raise :class:`ConfigError` (starting ``out_dir:``) if ``cfg`` may not use its ``out_dir`` (see the
    module docstring) or cannot write into it. Deletes nothing: it only creates the folder if it is missing
    (an empty folder is a valid place for a new run). Returns the folder."""
    out = Path(cfg.out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out_dir: {out} is a file, not a folder")
    try:
        prepare_output_dir(out, "out_dir")
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(exc)) from exc
    entries = _entries(out)
    if not entries:
        return out
    if cfg.resume is None and not cfg.overwrite:
        raise ConfigError(
            f"out_dir: {out} is not empty ({_listing(entries)}); continue its run with --resume auto, choose "
            "another --out-dir, or pass --overwrite to delete the run in it"
        )
    foreign = [p for p in entries if p.name not in RUN_ENTRIES]
    if cfg.overwrite and foreign:
        raise ConfigError(
            f"out_dir: --overwrite deletes only a training run, but {out} also holds {_listing(foreign)}; "
            "choose another --out-dir"
        )
    if cfg.resume == "auto" and not any(p.name in ("config.yaml", "checkpoints") for p in entries):
        raise ConfigError(f"out_dir: {out} holds no training run to resume ({_listing(entries)})")
    return out


def prepare_run_dir(cfg: TrainConfig) -> None:
    """Apply the policy in the main process once the run is set up (model and data loaded): delete the old
    run if ``overwrite`` asks for it, and remove stale temporaries. Call :func:`check_run_dir` first."""
    out = check_run_dir(cfg)
    if cfg.overwrite and (entries := _entries(out)):
        for p in entries:
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        log.warning("overwrite: deleted the previous run in %s (%s)", out, _listing(entries))
    for folder in (out, out / "checkpoints"):
        for p in remove_stale_temporaries(folder):
            log.info("removed %s, left by an interrupted write", p)
