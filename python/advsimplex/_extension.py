"""Loading the compiled extension ``advsimplex._C`` and reporting the available backends."""

from __future__ import annotations

import importlib
import importlib.util
import os

import torch

_C = None
_IMPORT_ERROR: str | None = None
try:
    _C = importlib.import_module("advsimplex._C")
except ImportError as exc:  # the pure-PyTorch reference path works without it
    _IMPORT_ERROR = f"{type(exc).__name__}: {exc}"


def has_kernel(op: str, dispatch_key: str) -> bool:
    """Whether ``advsimplex::<op>`` has a kernel registered for ``dispatch_key`` ("CPU", "CUDA")."""
    if _C is None:
        return False
    try:
        return bool(torch._C._dispatch_has_kernel_for_dispatch_key(f"advsimplex::{op}", dispatch_key))
    except RuntimeError:
        return False


# Fixed for the life of the process: read once, so that torch.compile can trace the dispatch.
CPU_KERNELS = has_kernel("simplex_head_forward", "CPU")
CUDA_KERNELS = has_kernel("simplex_head_forward", "CUDA")
HAS_TRITON = importlib.util.find_spec("triton") is not None


def triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def usable(backend: str) -> bool:
    """Cheap availability test used on every call (no device queries beyond ``cuda.is_available``)."""
    if backend == "reference":
        return True
    if backend == "cpp":
        return CPU_KERNELS
    if backend == "cuda":
        return CUDA_KERNELS and torch.cuda.is_available()
    if backend == "triton":
        return HAS_TRITON and (triton_interpreted() or torch.cuda.is_available())
    raise ValueError(f"unknown backend {backend!r}")


def backends() -> dict[str, tuple[bool, str]]:
    """Which backends of the fused ops are usable here: ``{name: (available, explanation)}``.

    ``reference`` (pure PyTorch) is always available; ``cpp`` needs the compiled extension;
    ``cuda`` needs the extension built with CUDA kernels (``FORCE_CUDA=1``) and a visible GPU;
    ``triton`` needs Triton and a GPU, or ``TRITON_INTERPRET=1`` for CPU tensors.
    """
    out: dict[str, tuple[bool, str]] = {"reference": (True, "pure PyTorch (always available)")}
    if _C is None:
        out["cpp"] = (False, f"compiled extension advsimplex._C not importable ({_IMPORT_ERROR}); run scripts/setup.sh")
    elif not CPU_KERNELS:
        out["cpp"] = (False, "advsimplex._C is loaded but registers no CPU kernels")
    else:
        out["cpp"] = (True, "C++ CPU kernels (at::parallel_for)")
    if not CUDA_KERNELS:
        why = "the extension was built without CUDA kernels (rebuild with FORCE_CUDA=1)" if _C else "no extension"
        out["cuda"] = (False, why)
    elif not torch.cuda.is_available():
        out["cuda"] = (False, "CUDA kernels are compiled in but no GPU is visible")
    else:
        out["cuda"] = (True, "CUDA kernels on " + torch.cuda.get_device_name())
    if not HAS_TRITON:
        out["triton"] = (False, "triton is not installed")
    elif triton_interpreted():
        out["triton"] = (True, "triton (TRITON_INTERPRET=1: kernels run on CPU tensors through the interpreter)")
    elif not torch.cuda.is_available():
        out["triton"] = (
            False,
            "triton is installed but no GPU is visible (set TRITON_INTERPRET=1 to interpret on CPU)",
        )
    else:
        out["triton"] = (True, "triton on " + torch.cuda.get_device_name())
    return out
