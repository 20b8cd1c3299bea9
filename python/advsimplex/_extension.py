"""Loading the compiled extension ``advsimplex._C`` and reporting the available backends."""

from __future__ import annotations

import importlib
import importlib.util

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


def _triton_status() -> tuple[bool, str]:
    if importlib.util.find_spec("triton") is None:
        return False, "triton is not installed"
    import os

    if os.environ.get("TRITON_INTERPRET") == "1":
        return True, "triton (TRITON_INTERPRET=1: kernels run on CPU tensors through the interpreter)"
    if not torch.cuda.is_available():
        return False, "triton is installed but no GPU is visible (set TRITON_INTERPRET=1 to interpret on CPU)"
    return True, "triton on " + torch.cuda.get_device_name()


def backends() -> dict[str, tuple[bool, str]]:
    """Which backends of the fused ops are usable here: ``{name: (available, explanation)}``.

    ``reference`` (pure PyTorch) is always available; ``cpp`` needs the compiled extension;
    ``cuda`` needs the extension built with CUDA kernels (``FORCE_CUDA=1``) and a visible GPU;
    ``triton`` needs Triton and a GPU, or ``TRITON_INTERPRET=1`` for CPU tensors.
    """
    out: dict[str, tuple[bool, str]] = {"reference": (True, "pure PyTorch (always available)")}
    if _C is None:
        out["cpp"] = (False, f"compiled extension advsimplex._C not importable ({_IMPORT_ERROR}); run scripts/setup.sh")
    elif not has_kernel("simplex_head_forward", "CPU"):
        out["cpp"] = (False, "advsimplex._C is loaded but registers no CPU kernels")
    else:
        out["cpp"] = (True, "C++ CPU kernels (at::parallel_for)")
    if not has_kernel("simplex_head_forward", "CUDA"):
        why = "the extension was built without CUDA kernels (rebuild with FORCE_CUDA=1)" if _C else "no extension"
        out["cuda"] = (False, why)
    elif not torch.cuda.is_available():
        out["cuda"] = (False, "CUDA kernels are compiled in but no GPU is visible")
    else:
        out["cuda"] = (True, "CUDA kernels on " + torch.cuda.get_device_name())
    out["triton"] = _triton_status()
    return out
