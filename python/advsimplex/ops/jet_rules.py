"""``jet_rules``: second-order jet rules of LayerNorm, GELU-type activations and softmax (spec §7).

Public entry points :func:`jet_layer_norm`, :func:`jet_gelu`, :func:`jet_softmax` with backend
dispatch: ``reference`` is the pure-PyTorch oracle :mod:`advsimplex.jets.rules` (differentiable to
any order, torch.func-safe); ``triton`` runs the fused kernels of ``simplex_kernels/jet_rules.py``
(forward and backward kernels in an ``autograd.Function``: backward yes, double backward raises).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..jets import rules
from ..jets.rules import GELU_KINDS, Streams

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


def _check(name: str, x: Tensor, streams: Streams, dim: int) -> int:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"{name}: x must be a floating tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    if not isinstance(streams, Streams):
        raise TypeError(f"{name}: streams must be an advsimplex.jets.rules.Streams, got {type(streams).__name__}")
    if x.dim() < 2:
        raise ValueError(f"{name}: x must have a stream dimension and a feature dimension, got {tuple(x.shape)}")
    dim = dim % x.dim()
    if dim == x.dim() - 1:
        raise ValueError(f"{name}: the stream dimension (dim={dim}) cannot be the last (feature) dimension")
    if x.shape[dim] != streams.size:
        raise ValueError(f"{name}: x has {x.shape[dim]} streams along dim {dim}, expected 1 + m + P = {streams.size}")
    if streams.left.device != x.device:
        raise ValueError(f"{name}: streams' pair indices are on {streams.left.device} but x is on {x.device}")
    return dim


def jet_gelu(x: Tensor, streams: Streams, kind: str = "none", *, dim: int = 0, backend: str = "auto") -> Tensor:
    """Jet of ``nn.GELU()`` (``kind='none'``), ``nn.GELU(approximate='tanh')`` (``'tanh'``) or open_clip's
    ``QuickGELU`` (``'quick'``), elementwise; ``x`` stacked (…, S, …) along ``dim``; returns the same shape."""
    dim = _check("jet_gelu", x, streams, dim)
    if kind not in GELU_KINDS:
        raise ValueError(f"jet_gelu: kind must be one of {GELU_KINDS}, got {kind!r}")
    if resolve_backend(backend, x.device) == "reference":
        return rules.jet_gelu(x, streams, kind, dim=dim)
    from ._jet_rules_autograd import triton_jet_gelu

    return triton_jet_gelu(x, streams, kind, dim)


def jet_layer_norm(
    x: Tensor,
    streams: Streams,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float = 1e-5,
    *,
    dim: int = 0,
    backend: str = "auto",
) -> Tensor:
    """Jet of ``layer_norm`` over the last dimension (size w); ``weight``/``bias`` (w,) or None."""
    dim = _check("jet_layer_norm", x, streams, dim)
    w = x.shape[-1]
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and (t.shape != (w,) or t.device != x.device):
            raise ValueError(f"jet_layer_norm: {name} must have shape ({w},) on {x.device}, got "
                             f"{tuple(t.shape)} on {t.device}")  # fmt: skip
    if resolve_backend(backend, x.device) == "reference":
        return rules.jet_layer_norm(x, streams, weight, bias, eps, dim=dim)
    from ._jet_rules_autograd import triton_jet_layer_norm

    return triton_jet_layer_norm(x, streams, weight, bias, float(eps), dim)


def jet_softmax(x: Tensor, streams: Streams, *, dim: int = 0, backend: str = "auto") -> Tensor:
    """Jet of ``softmax`` over the last dimension; ``x`` stacked along ``dim``; returns the same shape."""
    dim = _check("jet_softmax", x, streams, dim)
    if resolve_backend(backend, x.device) == "reference":
        return rules.jet_softmax(x, streams, dim=dim)
    from ._jet_rules_autograd import triton_jet_softmax

    return triton_jet_softmax(x, streams, dim)
