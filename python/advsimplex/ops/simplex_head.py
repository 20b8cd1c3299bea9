"""``simplex_head``: clean CE + λ Σ ω_i Ω_i from embedding jets, per sample (math spec §4–§6).

Public entry point, argument checks and backend dispatch. The pure-PyTorch oracle is
:func:`advsimplex.reference.simplex_head_reference`.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from .._checks import (
    check_floating,
    check_labels,
    check_positive_scalar,
    check_same_device,
    check_same_dtype,
    check_shape,
    check_unit_norm,
)
from ..reference import (
    CLOSED_FORM_VARIANTS,
    check_order,
    collapsed_head_reference,
    num_pairs,
    num_simplices,
    pair_index,
    simplex_head_reference,
    variant_coefficients,
)

BACKENDS = ("auto", "reference", "cpp", "cuda", "triton")


def check_head_inputs(
    f: Tensor,
    first: Tensor,
    second: Tensor,
    text_features: Tensor,
    labels: Tensor,
    weights: Tensor,
    *,
    logit_scale: float | Tensor,
    lam: float,
    variant: str,
    kappa: float,
    order: int,
    backend: str,
    collapsed: bool = False,
) -> None:
    """Every argument of :func:`simplex_head`, checked; errors name the argument at fault."""
    for name, t in (("f", f), ("F1", first), ("F2", second), ("text_features", text_features)):
        check_floating(name, t)
    if variant not in CLOSED_FORM_VARIANTS:
        raise ValueError(f"variant must be one of {CLOSED_FORM_VARIANTS} for the fused head, got {variant!r}")
    if not isinstance(collapsed, bool):
        raise TypeError(f"collapsed must be a bool, got {type(collapsed).__name__}")
    if collapsed and variant != "paper":
        raise ValueError(
            f"collapsed second-order jets serve only variant 'paper' (they carry E_p D²f[p, p] per simplex); "
            f"variant {variant!r} needs the pair jets (collapsed=False)"
        )
    if not kappa >= 0:
        raise ValueError(f"kappa must be >= 0, got {kappa!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    check_positive_scalar("logit_scale", logit_scale)
    if not isinstance(lam, (int, float)) or lam != lam:
        raise ValueError(f"lam must be a real number, got {lam!r}")
    check_shape("f", f, (None, None), "(B, d)")
    b, d = f.shape
    if first.dim() != 3:
        raise ValueError(f"F1 must have shape (B, m, d), got {tuple(first.shape)}")
    m = first.shape[1]
    check_order(m, order)
    check_shape("F1", first, (b, m, d), "(B, m, d)")
    if collapsed:
        s = num_simplices(m, order)
        check_shape("F2", second, (b, s, d), f"(B, S, d) with S = {s} simplices for m={m}, order={order} (collapsed)")
    else:
        p = num_pairs(m, order)
        check_shape("F2", second, (b, p, d), f"(B, P, d) with P = {p} pairs for m={m}, order={order}")
    check_shape("text_features", text_features, (None, d), "(C, d)")
    c = text_features.shape[0]
    if c < 1:
        raise ValueError("text_features must hold at least one class embedding (C >= 1)")
    check_floating("weights", weights)
    check_shape("weights", weights, (b, num_simplices(m, order)), "(B, S) with S = m - order + 2")
    device = check_same_device(f=f, F1=first, F2=second, text_features=text_features, weights=weights)
    check_same_dtype(f=f, F1=first, F2=second, text_features=text_features)
    check_labels("labels", labels, b, c, device)
    check_unit_norm("text_features", text_features)


def resolve_backend(backend: str, device: torch.device) -> str:
    """The backend that will run for tensors on ``device``.

    ``auto`` picks ``cuda`` (then ``triton``) for CUDA tensors and ``cpp`` for CPU tensors, falling back
    to ``reference``; an explicitly requested backend that is unavailable, or that cannot run on
    ``device``, raises and says why.
    """
    from .._extension import backends, triton_interpreted, usable

    if backend == "reference":
        return backend
    if backend == "auto":
        order = ("cuda", "triton") if device.type == "cuda" else ("cpp",)
        return next((b for b in order if usable(b)), "reference")
    if not usable(backend):
        raise RuntimeError(f"simplex_head backend {backend!r} is unavailable here: {backends()[backend][1]}")
    wanted = {"cpp": "cpu", "cuda": "cuda"}.get(backend)
    if backend == "triton":
        wanted = "cpu" if triton_interpreted() else "cuda"
    if wanted != device.type:
        raise RuntimeError(f"simplex_head backend {backend!r} runs on {wanted} tensors, but the inputs are on {device}")
    return backend


def simplex_head(
    f: Tensor,
    F1: Tensor,
    F2: Tensor,
    text_features: Tensor,
    labels: Tensor,
    weights: Tensor,
    *,
    logit_scale: float | Tensor,
    lam: float = 0.6,
    variant: str = "paper",
    kappa: float = 1.0,
    order: int = 3,
    backend: str = "auto",
    return_omega: bool = False,
    collapsed: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Per-sample AdvSimplex loss from embedding jets.

    Args:
        f: (B, d) clean embeddings (unnormalised), float64/float32/bfloat16/float16; F1, F2 and
            ``text_features`` share its dtype. Any common scale of (f, F1, F2) gives the same result.
        F1: (B, m, d) first-order jets ``Df[δ_k]``.
        F2: (B, P, d) second-order jets ``D²f[δ_k, δ_l]`` in the order of :func:`pair_index`; with
            ``collapsed``, (B, S, d) collapsed jets ``F̄_s = Σ_{k,l} M_kl D²f[δ_k, δ_l]`` of each simplex
            (spec §7b; variant ``paper`` only).
        text_features: (C, d) unit-norm class embeddings.
        labels: (B,) int64 or int32 class indices in [0, C).
        weights: (B, S) simplex weights ω (treated as constants), S = m − order + 2.
        logit_scale: s > 0 (float or 0-d tensor; a constant for the fused backends).
        lam, variant, kappa, order: loss options (spec §5, §6).
        backend: ``auto``, ``reference``, ``cpp``, ``cuda`` or ``triton`` (see :func:`resolve_backend`).
        return_omega: also return Ω (B, S).
        collapsed: F2 holds collapsed jets (one per simplex) instead of pair jets; same loss and Ω.

    Returns:
        loss (B,) = ``CE(z(x), y) + λ Σ_i ω_i Ω_i`` (float32, or float64 for float64 inputs),
        and Ω (B, S) when ``return_omega``. Differentiable with respect to f, F1, F2 and T.
        The fused backends support backward only (no double backward, no torch.func transforms).
        Under ``torch.autocast`` every backend still computes in float32 (float64 for float64 inputs).
    """
    check_head_inputs(
        f, F1, F2, text_features, labels, weights,
        logit_scale=logit_scale, lam=lam, variant=variant, kappa=kappa, order=order, backend=backend,
        collapsed=collapsed,
    )  # fmt: skip
    chosen = resolve_backend(backend, f.device)
    if chosen == "reference":
        loss, omega = _reference_head(
            f, F1, F2, text_features, labels, weights,
            logit_scale=logit_scale, lam=float(lam), variant=variant, kappa=float(kappa), order=order,
            collapsed=collapsed,
        )  # fmt: skip
        return (loss, omega) if return_omega else loss
    if torch._C._are_functorch_transforms_active():
        raise NotImplementedError(
            f"simplex_head backend {chosen!r} does not support torch.func transforms (jvp/vmap/grad would be "
            "silently wrong through a custom op); use backend='reference'"
        )
    args = op_arguments(
        f, F1, F2, text_features, labels, weights,
        logit_scale=logit_scale, lam=lam, variant=variant, kappa=kappa, order=order, collapsed=collapsed,
    )  # fmt: skip
    if chosen == "triton":
        if f.dtype == torch.float64:
            raise TypeError("simplex_head backend 'triton' supports float32/bfloat16/float16 inputs, got float64")
        _register_triton_ops()
        op = torch.ops.advsimplex.simplex_head_triton_forward
    else:
        op = torch.ops.advsimplex.simplex_head_forward
    loss, omega = op(*args)[:2]
    return (loss, omega) if return_omega else loss


def row_scale(f: Tensor) -> Tensor:
    """(B, 1) powers of two ``c`` with ``max_i |c f_i|`` in [1, 2) (1 for rows of zeros or non-finite values).

    The head is invariant to a common scale of ``f``, ``F1``, ``F2`` (spec §4: only ``f/‖f‖`` and its
    derivatives enter), and multiplying by a power of two is exact, so evaluating it at ``c·(f, F1, F2)``
    changes no bit where the unscaled computation neither overflows nor underflows, and keeps jets scaled by
    1e20 or 1e-25 finite. ``c`` is piecewise constant in ``f`` (a constant for autograd); the chain rule
    through ``c·x`` then gives exactly the gradient of the unscaled head. The fused kernels do the same inside.
    """
    amax = f.detach().abs().amax(dim=-1, keepdim=True)
    limit = math.frexp(torch.finfo(f.dtype).max)[1] - 2  # 126 (float32), 1022 (float64): c stays normal
    exponent = torch.floor(torch.log2(amax)).clamp(-limit, limit)
    scale = torch.pow(2.0, -exponent).to(f.dtype)
    return torch.where((amax > 0) & torch.isfinite(amax), scale, torch.ones_like(scale))


def _reference_head(
    f: Tensor, F1: Tensor, F2: Tensor, text: Tensor, labels: Tensor, weights: Tensor, *,
    logit_scale: float | Tensor, lam: float, variant: str, kappa: float, order: int, collapsed: bool,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """The reference head under the fused backends' conventions: float32 (float64) math whatever autocast asks
    for, int32 or int64 labels, weights as constants, jets rescaled per row (:func:`row_scale`)."""
    compute = torch.float64 if f.dtype == torch.float64 else torch.float32
    f, F1, F2, text = (t.to(compute) for t in (f, F1, F2, text))
    scale = row_scale(f)
    f, F1, F2 = f * scale, F1 * scale[..., None], F2 * scale[..., None]
    labels, weights = labels.long(), weights.detach().to(compute)
    with torch.autocast(f.device.type, enabled=False):  # the autocast policy: compute in fp32 (fp64)
        if collapsed:
            return collapsed_head_reference(
                f, F1, F2, text, labels, weights, logit_scale=logit_scale, lam=lam, kappa=kappa, order=order
            )
        return simplex_head_reference(
            f, F1, F2, text, labels, weights, pair_index(F1.shape[1], order),
            logit_scale=logit_scale, lam=lam, variant=variant, kappa=kappa, order=order,
        )  # fmt: skip


def op_arguments(
    f: Tensor,
    F1: Tensor,
    F2: Tensor,
    text_features: Tensor,
    labels: Tensor,
    weights: Tensor,
    *,
    logit_scale: float | Tensor,
    lam: float,
    variant: str,
    kappa: float,
    order: int,
    collapsed: bool = False,
) -> tuple:
    """The positional arguments of the registered forward ops (``torch.ops.advsimplex.simplex_head_forward``,
    ``simplex_head_triton_forward``) for :func:`simplex_head`'s arguments; ``weights`` are constants."""
    return (
        f, F1, F2, text_features, labels.long(), weights.detach(),
        float(logit_scale), float(lam), *variant_coefficients(variant, kappa), int(order), bool(collapsed),
    )  # fmt: skip


def _register_compiled_ops() -> None:
    from .._extension import _C
    from ._simplex_head_autograd import register

    if _C is not None and hasattr(torch.ops.advsimplex, "simplex_head_forward"):
        register("advsimplex::simplex_head_forward", "advsimplex::simplex_head_backward")


_register_compiled_ops()


@functools.cache
def _register_triton_ops() -> None:
    """Define ``advsimplex::simplex_head_triton_forward/backward`` (``torch.library.triton_op``, so that
    torch.compile traces into the Triton kernels) on first use; importing the kernels imports Triton."""
    from ..triton_kernels import simplex_head as kernels
    from ._simplex_head_autograd import register
    from ._simplex_head_checks import check_inputs, check_saved, checked_labels
    from ._simplex_head_layout import padded_layout

    @torch.library.triton_op("advsimplex::simplex_head_triton_forward", mutates_args=())
    def triton_forward(
        f: Tensor, F1: Tensor, F2: Tensor, text: Tensor, labels: Tensor, weights: Tensor,
        logit_scale: float, lam: float, c_jp2: float, c_qsq: float, c_jpq: float, c_q2: float, order: int,
        collapsed: bool,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
        options = (logit_scale, lam, c_jp2, c_qsq, c_jpq, c_q2, order, collapsed)
        _, m, _, _, c = check_inputs(f, F1, F2, text, labels, weights, *options, triton=True)
        layout = padded_layout(m, order, f.device, collapsed)
        labels = checked_labels(labels, c)
        return kernels.forward(f, F1, F2, text, labels, weights, *options[:-1], layout=layout)  # the layout: collapsed

    @torch.library.triton_op("advsimplex::simplex_head_triton_backward", mutates_args=())
    def triton_backward(
        grad_loss: Tensor, grad_omega: Tensor | None, f: Tensor, F1: Tensor, F2: Tensor, text: Tensor,
        labels: Tensor, weights: Tensor, logits: Tensor, normalized: Tensor, stats: Tensor,
        logit_scale: float, lam: float, c_jp2: float, c_qsq: float, c_jpq: float, c_q2: float, order: int,
        collapsed: bool, text_grad: bool,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
        options = (logit_scale, lam, c_jp2, c_qsq, c_jpq, c_q2, order, collapsed)
        sizes = check_inputs(f, F1, F2, text, labels, weights, *options, triton=True)
        check_saved(f, grad_loss, grad_omega, logits, normalized, stats, sizes, order)
        saved = (logits, normalized, stats)
        return kernels.backward(
            grad_loss, grad_omega, f, F1, F2, text, labels, weights, *saved, *options[:-1], text_grad,
            layout=padded_layout(sizes[1], order, f.device, collapsed),
        )  # fmt: skip

    register("advsimplex::simplex_head_triton_forward", "advsimplex::simplex_head_triton_backward", triton=True)
    for name in ("advsimplex::simplex_head_triton_forward", "advsimplex::simplex_head_triton_backward"):
        for device_type in ("cpu", "cuda"):  # the autocast policy of the compiled ops (csrc/simplex_head.cpp)
            torch.library.register_autocast(name, device_type, torch.float32)
