"""Training checkpoints: one safetensors file per checkpoint, written atomically, loaded without pickle.

Layout of ``step-NNNNNNNN.safetensors``:

- tensors ``model.<name>``: the model's full state dict;
- tensors ``optim.<param index>.<name>``: the optimizer's tensor state (``exp_avg``, ``momentum_buffer``, …);
- tensors ``rng.<kind>`` of shape (world_size, …): every process's RNG state (``torch``, ``cuda``,
  ``python``, ``python_gauss``, ``numpy``, ``numpy_gauss``);
- metadata ``format``, ``checksum`` (:func:`advsimplex._io.tensors_checksum` of every tensor above) and
  ``state`` (JSON): step, micro-batch position, total steps, world size, the names of the optimizer's
  tensors, the optimizer's param groups and non-tensor state, the scheduler's state dict, the steps
  skipped for non-finite values and the run's config.

Writing goes to a temporary file in the same folder, flushed and ``os.replace``-d into place, so a
crash leaves the previous checkpoint intact; a checkpoint with non-finite model or optimizer values is
never written. Reading uses ``safetensors`` only (nothing is unpickled) and raises
:class:`CheckpointError` for anything it cannot vouch for: an unreadable, truncated or foreign file, a
checksum mismatch, missing model/optimizer/RNG tensors, non-finite values or an impossible step.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from .._io import atomic_write, tensors_checksum
from ..runtime import nonfinite_entries
from .distributed import gather_tensors

CHECKPOINT_FORMAT = "advsimplex.train-checkpoint/1"
_NAME = re.compile(r"^step-(\d+)\.safetensors$")
RNG_KINDS = ("torch", "python", "python_gauss", "numpy", "numpy_gauss")

log = logging.getLogger("advsimplex.train")


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from (unreadable, corrupted, incomplete or impossible);
    the message names the file and what is wrong with it."""


# ---------------------------------------------------------------------- RNG states as tensors


def capture_rng(device: torch.device) -> dict[str, Tensor]:
    """This process's RNG states (torch CPU, CUDA of ``device``, Python, NumPy) as fixed-shape tensors."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 (the legacy global RNG)
    if kind != "MT19937":
        raise RuntimeError(f"unsupported NumPy RNG {kind}")
    out = {
        "torch": torch.get_rng_state(),
        "python": torch.tensor([version, *mt], dtype=torch.int64),
        "python_gauss": torch.tensor([float("nan") if gauss is None else gauss], dtype=torch.float64),
        "numpy": torch.tensor([pos, has_gauss, *keys.tolist()], dtype=torch.int64),
        "numpy_gauss": torch.tensor([cached], dtype=torch.float64),
    }
    if device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    return out


def restore_rng(states: dict[str, Tensor], device: torch.device) -> None:
    """Set the RNGs from :func:`capture_rng`'s tensors."""
    torch.set_rng_state(states["torch"].to(torch.uint8).cpu())
    py = states["python"].tolist()
    gauss = float(states["python_gauss"][0])
    random.setstate((py[0], tuple(py[1:]), None if gauss != gauss else gauss))
    npy = states["numpy"].tolist()
    keys = np.array(npy[2:], dtype=np.uint32)
    np.random.set_state(("MT19937", keys, npy[0], npy[1], float(states["numpy_gauss"][0])))  # noqa: NPY002
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"].to(torch.uint8).cpu(), device)


def gather_rng(device: torch.device) -> dict[str, Tensor]:
    """Every process's RNG states stacked along a leading rank axis (a collective under torchrun)."""
    return {k: torch.stack([t.cpu() for t in gather_tensors(v.to(device))]) for k, v in capture_rng(device).items()}


# ---------------------------------------------------------------------- save / load


@dataclass
class Checkpoint:
    """A loaded checkpoint (CPU tensors)."""

    path: Path
    step: int
    micro_batch: int
    world_size: int
    model: dict[str, Tensor]
    optimizer: dict
    scheduler: dict
    rng: dict[str, Tensor]
    config: dict
    total_steps: int | None = None
    skipped_steps: list[int] = field(default_factory=list)


def _json_safe(value):
    if isinstance(value, tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"cannot store {type(value).__name__} in checkpoint metadata")


def checkpoint_tensors(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict]:
    """Tensors of the model and optimizer, and the optimizer's JSON-able remainder."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    state = optimizer.state_dict()
    rest: dict[str, dict] = {}
    for pid, entries in state["state"].items():
        for name, value in entries.items():
            if isinstance(value, Tensor):
                tensors[f"optim.{pid}.{name}"] = value.detach().cpu().contiguous()
            else:
                rest.setdefault(str(pid), {})[name] = _json_safe(value)
    return tensors, {"param_groups": _json_safe(state["param_groups"]), "state": rest}


def nonfinite_state(tensors: dict[str, Tensor]) -> list[str]:
    """The model and optimizer tensors (``model.*``, ``optim.*``) holding NaN or ±inf, described."""
    return nonfinite_entries((k, v) for k, v in tensors.items() if k.startswith(("model.", "optim.")))


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    step: int,
    micro_batch: int,
    world_size: int,
    rng: dict[str, Tensor],
    config: dict,
    total_steps: int | None = None,
    skipped_steps: list[int] | None = None,
) -> Path:
    """Write a checkpoint atomically (see the module docstring); returns its path.

    Raises ``ValueError`` (nothing is written) when a model or optimizer tensor is not finite.
    """
    from safetensors.torch import save_file

    tensors, optim_rest = checkpoint_tensors(model, optimizer)
    if bad := nonfinite_state(tensors):
        raise ValueError(f"refusing to write checkpoint {path}: non-finite values in {', '.join(bad)}")
    tensors.update({f"rng.{k}": v.contiguous() for k, v in rng.items()})
    state = {
        "step": step, "micro_batch": micro_batch, "total_steps": total_steps, "world_size": world_size,
        "optimizer_tensors": sorted(k for k in tensors if k.startswith("optim.")), "optimizer": optim_rest,
        "scheduler": _json_safe(scheduler.state_dict()), "skipped_steps": list(skipped_steps or []),
        "config": _json_safe(config),
    }  # fmt: skip
    meta = {"format": CHECKPOINT_FORMAT, "checksum": tensors_checksum(tensors), "state": json.dumps(state)}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def _read(path: Path) -> tuple[dict[str, str], dict, dict[str, Tensor]]:
    """(metadata, state, tensors) of a training checkpoint; :class:`CheckpointError` if unreadable or foreign."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from ..models import read_checkpoint_metadata  # ValueError naming the file for unreadable files

    try:
        meta = read_checkpoint_metadata(path)
    except ValueError as exc:  # names the file
        raise CheckpointError(f"resume: {exc}") from exc
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"resume: {path} is not an advsimplex training checkpoint (format {meta.get('format')!r})"
        )
    try:
        state = json.loads(meta["state"])
        if not isinstance(state, dict):
            raise TypeError(f"state is a {type(state).__name__}")
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"resume: {path} has no readable state in its metadata: {exc}") from exc
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"resume: {path} is truncated or corrupted: {exc}") from exc
    return meta, state, tensors


def _verify(path: Path, meta: dict[str, str], state: dict, tensors: dict[str, Tensor]) -> None:
    """Checksum, completeness, finiteness and a possible step; :class:`CheckpointError` otherwise."""
    expected = meta.get("checksum")
    if expected is None:
        log.warning("resume: %s has no checksum (written by an older advsimplex); its tensors are unverified", path)
    elif tensors_checksum(tensors) != expected:
        raise CheckpointError(f"resume: {path} is corrupted: its tensors do not match the stored checksum")
    for key in ("step", "micro_batch", "world_size", "optimizer", "scheduler", "config"):
        if key not in state:
            raise CheckpointError(f"resume: {path} lacks '{key}' in its state")
    step = state["step"]
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise CheckpointError(f"resume: {path} records an impossible step {step!r}")
    total = state.get("total_steps")
    if total is not None and not (isinstance(total, int) and step <= total):
        raise CheckpointError(f"resume: {path} records step {step} beyond its run's {total} steps")
    if (at := state["scheduler"].get("last_epoch")) not in (None, step):
        raise CheckpointError(f"resume: {path} is inconsistent: step {step} but the scheduler is at step {at}")
    if not any(k.startswith("model.") for k in tensors):
        raise CheckpointError(f"resume: {path} holds no model tensors")
    missing = sorted(set(state.get("optimizer_tensors", [])) - set(tensors))
    if missing:
        shown = ", ".join(missing[:4]) + (f", … ({len(missing)} in all)" if len(missing) > 4 else "")
        raise CheckpointError(f"resume: {path} lacks optimizer tensors {shown}: the optimizer state is incomplete")
    if step > 0 and not any(k.startswith("optim.") for k in tensors) and not state["optimizer"].get("state"):
        raise CheckpointError(f"resume: {path} is at step {step} but holds no optimizer state")
    missing_rng = [k for k in RNG_KINDS if f"rng.{k}" not in tensors]
    if missing_rng:
        raise CheckpointError(f"resume: {path} lacks the RNG states {', '.join(missing_rng)}")
    if bad := nonfinite_state(tensors):
        raise CheckpointError(f"resume: {path} holds non-finite values in {', '.join(bad)}")


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read and verify a checkpoint with safetensors (no pickle).

    Raises ``FileNotFoundError`` when ``path`` is not a file and :class:`CheckpointError` (a
    ``ValueError``) when it cannot be resumed from (see the module docstring).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"resume: checkpoint {path} does not exist")
    meta, state, tensors = _read(path)
    _verify(path, meta, state, tensors)
    model = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    rng = {k[len("rng.") :]: v for k, v in tensors.items() if k.startswith("rng.")}
    optim_state: dict[int, dict] = {}
    try:
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, pid, name = k.split(".", 2)
                optim_state.setdefault(int(pid), {})[name] = v
        for pid, entries in state["optimizer"]["state"].items():
            optim_state.setdefault(int(pid), {}).update(entries)
        optimizer = {"state": optim_state, "param_groups": state["optimizer"]["param_groups"]}
        return Checkpoint(
            path=path, step=state["step"], micro_batch=int(state["micro_batch"]),
            world_size=int(state["world_size"]), model=model, optimizer=optimizer, scheduler=state["scheduler"],
            rng=rng, config=state["config"], total_steps=state.get("total_steps"),
            skipped_steps=[int(s) for s in state.get("skipped_steps", [])],
        )  # fmt: skip
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"resume: {path} has a malformed state: {exc!r}") from exc


def checkpoint_path(folder: str | os.PathLike, step: int) -> Path:
    return Path(folder) / f"step-{step:08d}.safetensors"


def list_checkpoints(folder: str | os.PathLike) -> list[Path]:
    """Checkpoints in ``folder``, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def prune_checkpoints(folder: str | os.PathLike, keep: int) -> None:
    for old in list_checkpoints(folder)[:-keep]:
        old.unlink(missing_ok=True)


def quarantine(path: Path) -> Path:
    """Rename a checkpoint that cannot be loaded to ``<name>.corrupt`` (kept for inspection, out of the way
    of ``resume: auto`` and of pruning); returns the new path."""
    target = path.with_name(path.name + ".corrupt")
    os.replace(path, target)
    return target
