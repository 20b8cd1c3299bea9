"""``jet_rules``: second-order jet rules of LayerNorm, GELU-type activations and softmax (spec §7, §7b).

Public entry points :func:`jet_layer_norm`, :func:`jet_gelu`, :func:`jet_softmax` for both plan kinds (pair streams
and collapsed simplex streams, :class:`~advsimplex.reference.plan.JetPlan`), with backend dispatch:

- ``reference``: the pure-PyTorch oracle :mod:`advsimplex.reference.jet_rules` (differentiable to any order,
  torch.func-safe);
- ``cpp``: the fused C++ CPU kernels of ``csrc/jet_rules.cpp`` (registered ops, :mod:`._jet_rules_cpp`: backward yes,
  double backward raises, torch.func refused, torch.compile traces them);
- ``triton``: the fused Triton kernels of ``simplex_kernels/jet_rules.py`` (``autograd.Function``: backward yes,
  double backward and torch.func raise, torch.compile runs them behind a graph break);
- ``auto``: ``cpp`` for CPU tensors when the extension has the kernels, ``reference`` on CUDA (``triton`` if
  :data:`TRITON_ON_CUDA_BY_DEFAULT`), and ``reference`` whenever torch.func transforms are active.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..reference import jet_rules as rules
from ..reference.jet_rules import GELU_KINDS
from ..reference.plan import JetPlan
from . import _jet_rules_cpp

BACKENDS = ("auto", "reference", "cpp", "triton")

TRITON_ON_CUDA_BY_DEFAULT = False
"""``auto`` picks the Triton kernels for CUDA tensors only when this is True. Off until the kernels are
measured faster than the PyTorch rules on a GPU (they are unmeasured: see the README)."""


def _cpp_unavailable_reason() -> str:
    from .._extension import _C, backends

    if _C is None:
        return backends()["cpp"][1]
    return ("advsimplex._C was built without the jet_rules kernels (csrc/jet_rules.cpp); rebuild it with "
            "scripts/setup.sh")  # fmt: skip


def resolve_backend(backend: str, device: torch.device | str) -> str:
    """The backend that runs for tensors on ``device``: ``auto`` → ``cpp`` on CPU when the compiled kernels are
    there, else ``reference`` (or ``triton`` on CUDA if :data:`TRITON_ON_CUDA_BY_DEFAULT`); ``auto`` under active
    torch.func transforms → ``reference``. An explicit backend that cannot run there raises and says why."""
    from .._extension import triton_interpreted, usable

    device = torch.device(device)
    if backend not in BACKENDS:
        raise ValueError(f"jet_rules backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        if torch._C._are_functorch_transforms_active():  # only the reference supports torch.func
            return "reference"
        if device.type == "cpu" and _jet_rules_cpp.AVAILABLE:
            return "cpp"
        if TRITON_ON_CUDA_BY_DEFAULT and device.type == "cuda" and usable("triton"):
            return "triton"
        return "reference"
    if backend == "cpp":
        if not _jet_rules_cpp.AVAILABLE:
            raise RuntimeError(f"jet_rules backend 'cpp' is unavailable: {_cpp_unavailable_reason()}")
        if device.type != "cpu":
            raise RuntimeError(f"jet_rules backend 'cpp' runs on cpu tensors, but the input is on {device}")
    if backend == "triton":
        if not usable("triton"):
            raise RuntimeError("jet_rules backend 'triton' is unavailable: triton needs a CUDA device "
                               "(or TRITON_INTERPRET=1 for CPU tensors)")  # fmt: skip
        wanted = "cpu" if triton_interpreted() else "cuda"
        if device.type != wanted:
            raise RuntimeError(
                f"jet_rules backend 'triton' runs on {wanted} tensors here, but the input is on {device}"
            )
    return backend


def _fused(name: str, backend: str) -> None:
    """Refuse torch.func transforms on the fused backends (custom ops give silently wrong tangents, spec §7)."""
    if backend == "cpp" and torch._C._are_functorch_transforms_active():
        raise NotImplementedError(
            f"{name} backend 'cpp' does not support torch.func transforms (jvp/vmap/grad would be silently wrong "
            "through a custom op); use backend='reference' (or 'auto')"
        )


def _check(name: str, x: Tensor, plan: JetPlan, dim: int) -> int:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"{name}: x must be a floating tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    if not isinstance(plan, JetPlan):
        raise TypeError(f"{name}: plan must be an advsimplex.reference.JetPlan, got {type(plan).__name__}")
    if x.dim() < 2:
        raise ValueError(f"{name}: x must have a stream dimension and a feature dimension, got {tuple(x.shape)}")
    dim = dim % x.dim()
    if dim == x.dim() - 1:
        raise ValueError(f"{name}: the stream dimension (dim={dim}) cannot be the last (feature) dimension")
    if x.shape[dim] != plan.size:
        n = "S" if plan.is_collapsed else "P"
        raise ValueError(f"{name}: x has {x.shape[dim]} streams along dim {dim}, expected 1 + m + {n} = {plan.size} "
                         f"for the plan {plan.describe()}")  # fmt: skip
    if not plan.is_collapsed and plan.left.device != x.device:
        raise ValueError(f"{name}: the plan's pair indices are on {plan.left.device} but x is on {x.device}")
    return dim


def jet_gelu(x: Tensor, plan: JetPlan, kind: str = "none", *, dim: int = 0, backend: str = "auto") -> Tensor:
    """Jet of ``nn.GELU()`` (``kind='none'``), ``nn.GELU(approximate='tanh')`` (``'tanh'``) or open_clip's
    ``QuickGELU`` (``'quick'``), elementwise; ``x`` stacked (…, S, …) along ``dim``; returns the same shape."""
    dim = _check("jet_gelu", x, plan, dim)
    if kind not in GELU_KINDS:
        raise ValueError(f"jet_gelu: kind must be one of {GELU_KINDS}, got {kind!r}")
    chosen = resolve_backend(backend, x.device)
    if chosen == "reference":
        return rules.jet_gelu(x, plan, kind, dim=dim)
    _fused("jet_gelu", chosen)
    if chosen == "cpp":
        return _jet_rules_cpp.cpp_jet_gelu(x, plan, kind, dim)
    from ._jet_rules_autograd import triton_jet_gelu

    return triton_jet_gelu(x, plan, kind, dim)


def jet_layer_norm(
    x: Tensor,
    plan: JetPlan,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float = 1e-5,
    *,
    dim: int = 0,
    backend: str = "auto",
) -> Tensor:
    """Jet of ``layer_norm`` over the last dimension (size w); ``weight``/``bias`` (w,) or None."""
    dim = _check("jet_layer_norm", x, plan, dim)
    w = x.shape[-1]
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and (t.shape != (w,) or t.device != x.device):
            raise ValueError(f"jet_layer_norm: {name} must have shape ({w},) on {x.device}, got "
                             f"{tuple(t.shape)} on {t.device}")  # fmt: skip
    chosen = resolve_backend(backend, x.device)
    if chosen == "reference":
        return rules.jet_layer_norm(x, plan, weight, bias, eps, dim=dim)
    _fused("jet_layer_norm", chosen)
    if chosen == "cpp":
        return _jet_rules_cpp.cpp_jet_layer_norm(x, plan, weight, bias, float(eps), dim)
    from ._jet_rules_autograd import triton_jet_layer_norm

    return triton_jet_layer_norm(x, plan, weight, bias, float(eps), dim)


def jet_softmax(x: Tensor, plan: JetPlan, *, dim: int = 0, backend: str = "auto") -> Tensor:
    """Jet of ``softmax`` over the last dimension; ``x`` stacked along ``dim``; returns the same shape."""
    dim = _check("jet_softmax", x, plan, dim)
    chosen = resolve_backend(backend, x.device)
    if chosen == "reference":
        return rules.jet_softmax(x, plan, dim=dim)
    _fused("jet_softmax", chosen)
    if chosen == "cpp":
        return _jet_rules_cpp.cpp_jet_softmax(x, plan, dim)
    from ._jet_rules_autograd import triton_jet_softmax

    return triton_jet_softmax(x, plan, dim)
