"""Multi-process training under ``torchrun``: environment detection, process group, reductions.

``torchrun --nproc_per_node N [--nnodes K ...] -m advsimplex.train ...`` sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address; :func:`init_distributed` reads them and
starts the process group (``nccl`` on CUDA, ``gloo`` on CPU). Without them training is a single
process and every helper here is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits: ``rank`` of ``world_size`` processes, ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_from_environment() -> DistEnv:
    """The :class:`DistEnv` described by torchrun's environment variables (single process without them)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistEnv()
    return DistEnv(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def init_distributed(env: DistEnv, device: torch.device) -> None:
    """Start the process group for ``env`` (``nccl`` on CUDA, else ``gloo``) unless already started."""
    if not env.enabled or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs = {"device_id": device} if backend == "nccl" else {}
    dist.init_process_group(backend=backend, rank=env.rank, world_size=env.world_size, **kwargs)


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    if active():
        dist.barrier()


def all_reduce_mean(values: Tensor) -> Tensor:
    """The mean of ``values`` over processes (a copy; unchanged in a single process)."""
    out = values.detach().clone()
    if active():
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        out /= dist.get_world_size()
    return out


def gather_tensors(value: Tensor) -> list[Tensor]:
    """Every process's ``value`` (same shape and dtype on all), in rank order; ``[value]`` alone."""
    if not active():
        return [value]
    backend = dist.get_backend()
    work = value.cuda() if backend == "nccl" else value
    out = [torch.empty_like(work) for _ in range(dist.get_world_size())]
    dist.all_gather(out, work)
    return [t.to(value.device) for t in out]
