"""Second-order Taylor-mode (jet) rules of the ViT nonlinearities in plain PyTorch (math spec §4, §7, §7b).

A jet is stacked along one stream dimension ``dim`` as a :class:`~advsimplex.reference.plan.JetPlan`
describes: the primal ``x``, the first-order tangents ``x_k = Dx[δ_k]`` and the second-order streams
(pair streams ``D²x[δ_a, δ_b]`` or collapsed simplex streams ``Σ M_kl D²x[δ_k, δ_l]``). For a smooth map
``y = f(x)`` the streams obey the chain rule of order 2::

    y_k = f'(x)[x_k]
    y_2 = f'(x)[x_2] + Σ f''(x)[x_a, x_b]      (the plan's quadratic sum, JetPlan.quadratic)

These functions are the reference of the fused Triton kernels (``advsimplex.ops.jet_rules``) and
the CPU path of the fast ViT jets. They are written with elementary differentiable ops only (no
native ``layer_norm``, spec §7 traps 1–2), so autograd through them gives correct parameter
gradients of the jets: third-order derivatives of the tower. Low-precision inputs (float16,
bfloat16) are computed in float32 and cast back, as PyTorch's own ``layer_norm``/``softmax`` do.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .plan import JetPlan

GELU_KINDS = ("none", "tanh", "quick")
QUICK_GELU_K = 1.702  # open_clip's QuickGELU: x·σ(1.702 x)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_TANH_C = 0.044715


def _opmath(x: Tensor) -> torch.dtype:
    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype


def gelu_coefficients(x: Tensor, kind: str) -> tuple[Tensor, Tensor, Tensor]:
    """``(f(x), f'(x), f''(x))`` of an activation: ``none`` (erf GELU, ``nn.GELU()``), ``tanh``
    (``nn.GELU(approximate='tanh')``) or ``quick`` (open_clip ``QuickGELU``, x·σ(1.702x))."""
    if kind == "none":  # f = xΦ, f' = Φ + xφ, f'' = φ(2 − x²)
        cdf = 0.5 * (1.0 + torch.erf(x * (1.0 / math.sqrt(2.0))))
        pdf = torch.exp(-0.5 * x * x) * (1.0 / math.sqrt(2.0 * math.pi))
        return x * cdf, cdf + x * pdf, pdf * (2.0 - x * x)
    if kind == "tanh":  # f = ½x(1 + tanh w), w = c(x + 0.044715x³)
        x2 = x * x
        t = torch.tanh(_SQRT_2_OVER_PI * (x + _TANH_C * x2 * x))
        q = 1.0 - t * t  # sech² w
        w1 = _SQRT_2_OVER_PI * (1.0 + 3.0 * _TANH_C * x2)
        w2 = _SQRT_2_OVER_PI * 6.0 * _TANH_C * x
        f1 = 0.5 * (1.0 + t) + 0.5 * x * q * w1
        f2 = q * w1 - x * t * q * w1 * w1 + 0.5 * x * q * w2
        return 0.5 * x * (1.0 + t), f1, f2
    if kind == "quick":  # f = xσ(kx), f' = σ + kxσ(1−σ), f'' = 2kσ(1−σ) + k²xσ(1−σ)(1−2σ)
        k = QUICK_GELU_K
        s = torch.sigmoid(k * x)
        u = s * (1.0 - s)
        return x * s, s + k * x * u, u * (2.0 * k + k * k * x * (1.0 - 2.0 * s))
    raise ValueError(f"activation kind must be one of {GELU_KINDS}, got {kind!r}")


def jet_gelu(x: Tensor, plan: JetPlan, kind: str = "none", dim: int = 0) -> Tensor:
    """Jet of an elementwise GELU-type activation (stacked along ``dim``), same shape as ``x``.

    ``y_k = f'(x) x_k``, ``y_2 = f'(x) x_2 + f''(x) Σ x_a x_b`` (the plan's quadratic sum).
    """
    x0, x1, x2 = (t.to(_opmath(x)) for t in plan.split(x, dim))
    y0, f1, f2 = gelu_coefficients(x0, kind)
    y1 = f1 * x1
    y2 = f1 * x2 + f2 * plan.quadratic(torch.mul, x1, dim)
    return torch.cat([y0, y1, y2], dim=dim).to(x.dtype)


def jet_layer_norm(
    x: Tensor, plan: JetPlan, weight: Tensor | None, bias: Tensor | None, eps: float, dim: int = 0
) -> Tensor:
    """Jet of ``layer_norm`` over the last dimension (stacked along ``dim``, which must not be last).

    With ``r = (var(x) + eps)^(-1/2)``, ``n = (x − mean x) r``, ``⟨·⟩`` the mean over features and
    ``t_k = (x_k − ⟨x_k⟩) r``, ``α_k = ⟨n t_k⟩`` (derived from mean, variance and rsqrt)::

        n_k = t_k − n α_k
        n_2 = t_2 − n ⟨n t_2⟩ + Σ B(t_a, t_b),   B(t_a, t_b) = n (3 α_a α_b − ⟨t_a t_b⟩) − t_a α_b − t_b α_a

    and ``y = n·weight + bias`` on the primal, ``y_k = n_k·weight`` on the tangents.
    """
    if dim % x.dim() == x.dim() - 1:
        raise ValueError("jet_layer_norm: the stream dimension cannot be the normalised (last) dimension")
    x0, x1, x2 = (t.to(_opmath(x)) for t in plan.split(x, dim))
    mu = x0.mean(dim=-1, keepdim=True)
    c0 = x0 - mu
    r = torch.rsqrt((c0 * c0).mean(dim=-1, keepdim=True) + eps)
    n0 = c0 * r
    t1 = (x1 - x1.mean(dim=-1, keepdim=True)) * r
    alpha = (n0 * t1).mean(dim=-1, keepdim=True)
    n1 = t1 - n0 * alpha
    t2 = (x2 - x2.mean(dim=-1, keepdim=True)) * r

    def bilinear(a: tuple[Tensor, Tensor], b: tuple[Tensor, Tensor]) -> Tensor:
        (ta, aa), (tb, ab) = a, b
        return n0 * (3.0 * aa * ab - (ta * tb).mean(dim=-1, keepdim=True)) - ta * ab - tb * aa

    n2 = t2 - n0 * (n0 * t2).mean(dim=-1, keepdim=True) + plan.quadratic(bilinear, (t1, alpha), dim)
    out = torch.cat([n0, n1, n2], dim=dim)
    if weight is not None:
        out = out * weight.to(out.dtype)
    out = out.to(x.dtype)
    if bias is not None:
        out.narrow(dim, 0, 1).add_(bias.to(out.dtype))  # the bias shifts the primal only
    return out


def jet_softmax(s: Tensor, plan: JetPlan, dim: int = 0) -> Tensor:
    """Jet of ``softmax`` over the last dimension (stacked along ``dim``, which must not be last).

    With ``P = softmax(s)``, ``D_k = s_k − ⟨P, s_k⟩`` and ``E_2 = s_2 + Σ D_a D_b`` (spec §4's softmax
    rule, rearranged with ``Σ P D_k = 0``; the sum is the plan's quadratic sum)::

        P_k = P ⊙ D_k
        P_2 = P ⊙ (E_2 − ⟨P, E_2⟩)
    """
    if dim % s.dim() == s.dim() - 1:
        raise ValueError("jet_softmax: the stream dimension cannot be the softmax (last) dimension")
    s0, s1, s2 = (t.to(_opmath(s)) for t in plan.split(s, dim))
    p = torch.softmax(s0, dim=-1)
    d1 = s1 - (p * s1).sum(dim=-1, keepdim=True)
    e = s2 + plan.quadratic(torch.mul, d1, dim)
    p2 = p * (e - (p * e).sum(dim=-1, keepdim=True))
    return torch.cat([p, p * d1, p2], dim=dim).to(s.dtype)


def jet_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None, dim: int = 0) -> Tensor:
    """``x @ weightᵀ`` on every stream as one matmul; the bias is added to the primal only."""
    out = torch.nn.functional.linear(x, weight)
    if bias is not None:
        out.narrow(dim, 0, 1).add_(bias.to(out.dtype))
    return out
