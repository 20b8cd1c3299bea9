"""``jet_rules``: second-order jet rules of LayerNorm, GELU-type activations and softmax (spec §7).

Public entry points :func:`jet_layer_norm`, :func:`jet_gelu`, :func:`jet_softmax` with backend
dispatch: ``reference`` is the pure-PyTorch oracle :mod:`advsimplex.reference.jet_rules` (differentiable to
any order, torch.func-safe); ``triton`` runs the fused kernels of ``simplex_kernels/jet_rules.py``
(forward and backward kernels in an ``autograd.Function``: backward yes, double backward raises).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..reference import jet_rules as rules
from ..reference.jet_rules import GELU_KINDS
from ..reference.plan import JetPlan

BACKENDS = ("auto", "reference", "triton")

TRITON_ON_CUDA_BY_DEFAULT = False
"""``auto`` picks the Triton kernels for CUDA tensors only when this is True. Off until the kernels are
measured faster than the PyTorch rules on a GPU (they are unmeasured: see the README)."""


def resolve_backend(backend: str, device: torch.device | str) -> str:
    """The backend that runs for tensors on ``device``: ``auto`` → ``reference`` (or ``triton`` on CUDA if
    :data:`TRITON_ON_CUDA_BY_DEFAULT`); an explicit ``triton`` that cannot run there raises and says why."""
    from .._extension import triton_interpreted, usable

    device = torch.device(device)
    if backend not in BACKENDS:
        raise ValueError(f"jet_rules backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        if TRITON_ON_CUDA_BY_DEFAULT and device.type == "cuda" and usable("triton"):
            return "triton"
        return "reference"
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
    if resolve_backend(backend, x.device) == "reference":
        return rules.jet_gelu(x, plan, kind, dim=dim)
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
    if resolve_backend(backend, x.device) == "reference":
        return rules.jet_layer_norm(x, plan, weight, bias, eps, dim=dim)
    from ._jet_rules_autograd import triton_jet_layer_norm

    return triton_jet_layer_norm(x, plan, weight, bias, float(eps), dim)


def jet_softmax(x: Tensor, plan: JetPlan, *, dim: int = 0, backend: str = "auto") -> Tensor:
    """Jet of ``softmax`` over the last dimension; ``x`` stacked along ``dim``; returns the same shape."""
    dim = _check("jet_softmax", x, plan, dim)
    if resolve_backend(backend, x.device) == "reference":
        return rules.jet_softmax(x, plan, dim=dim)
    from ._jet_rules_autograd import triton_jet_softmax

    return triton_jet_softmax(x, plan, dim)
