"""Training checkpoints: one safetensors file per checkpoint, written atomically, loaded without pickle.

Layout of ``step-NNNNNNNN.safetensors``:

- tensors ``model.<name>``: the model's full state dict;
- tensors ``optim.<param index>.<name>``: the optimizer's tensor state (``exp_avg``, ``momentum_buffer``, …);
- tensors ``rng.<kind>`` of shape (world_size, …): every process's RNG state (``torch``, ``cuda``,
  ``python``, ``python_gauss``, ``numpy``, ``numpy_gauss``);
- metadata ``format`` and ``state`` (JSON): step, micro-batch position, world size, the optimizer's
  param groups and non-tensor state, the scheduler's state dict and the run's config.

Writing goes to a temporary file in the same folder, flushed and ``os.replace``-d into place, so a
crash leaves the previous checkpoint intact. Reading uses ``safetensors`` only: nothing is unpickled.
"""

from __future__ import annotations

import json
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from .._io import atomic_write
from .distributed import gather_tensors

CHECKPOINT_FORMAT = "advsimplex.train-checkpoint/1"
_NAME = re.compile(r"^step-(\d+)\.safetensors$")


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
) -> Path:
    """Write a checkpoint atomically (see the module docstring); returns its path."""
    from safetensors.torch import save_file

    tensors, optim_rest = checkpoint_tensors(model, optimizer)
    tensors.update({f"rng.{k}": v.contiguous() for k, v in rng.items()})
    state = {
        "step": step, "micro_batch": micro_batch, "world_size": world_size, "optimizer": optim_rest,
        "scheduler": _json_safe(scheduler.state_dict()), "config": _json_safe(config),
    }  # fmt: skip
    meta = {"format": CHECKPOINT_FORMAT, "state": json.dumps(state)}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint with safetensors (no pickle); raises ``ValueError`` for other files."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from ..models import read_checkpoint_metadata

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"resume: checkpoint {path} does not exist")
    try:
        meta = read_checkpoint_metadata(path)
    except SafetensorError as exc:
        raise ValueError(f"resume: {path} is not a safetensors checkpoint: {exc}") from exc
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"resume: {path} is not an advsimplex training checkpoint (format {meta.get('format')!r})")
    state = json.loads(meta["state"])
    tensors = load_file(str(path))
    model = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    rng = {k[len("rng.") :]: v for k, v in tensors.items() if k.startswith("rng.")}
    optim_state: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, pid, name = k.split(".", 2)
            optim_state.setdefault(int(pid), {})[name] = v
    for pid, entries in state["optimizer"]["state"].items():
        optim_state.setdefault(int(pid), {}).update(entries)
    optimizer = {"state": optim_state, "param_groups": state["optimizer"]["param_groups"]}
    return Checkpoint(
        path=path, step=int(state["step"]), micro_batch=int(state["micro_batch"]),
        world_size=int(state["world_size"]), model=model, optimizer=optimizer, scheduler=state["scheduler"],
        rng=rng, config=state["config"],
    )  # fmt: skip


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


def resolve_resume(resume: str | None, folder: str | os.PathLike) -> Path | None:
    """``auto`` → the newest checkpoint in ``folder`` (None when there is none); else the given file."""
    if resume is None:
        return None
    if resume == "auto":
        found = list_checkpoints(folder)
        return found[-1] if found else None
    path = Path(resume)
    if not path.is_file():
        raise FileNotFoundError(f"resume: checkpoint {resume!r} does not exist")
    return path
