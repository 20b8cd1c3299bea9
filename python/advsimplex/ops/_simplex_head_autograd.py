"""register_fake / register_autograd for the compiled and Triton ``simplex_head`` ops.

Forward op: ``(f, F1, F2, text, labels, weights, logit_scale, lam, c_jp2, c_qsq, c_jpq, c_q2, order, collapsed)
-> (loss (B,), omega (B, S), logits (B, K, C), normalized (B, K, d), stats (B, K + P))``; the last three
are saved for the backward op, which returns ``(df, dF1, dF2, dtext)``. K = 1 + m + P.
"""

from __future__ import annotations

import functools

import torch

from ._simplex_head_checks import check_inputs, check_saved


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _fake_forward(f, F1, F2, text, labels, weights, *options, triton):
    b, m, d, p, c = check_inputs(f, F1, F2, text, labels, weights, *options, triton=triton)
    order = options[-2]
    k, s = 1 + m + p, m - order + 2
    ct = _compute_dtype(f)
    return (
        f.new_empty((b,), dtype=ct),
        f.new_empty((b, s), dtype=ct),
        f.new_empty((b, k, c), dtype=ct),
        f.new_empty((b, k, d), dtype=ct),
        f.new_empty((b, k + p), dtype=ct),
    )


def _fake_backward(
    grad_loss, grad_omega, f, F1, F2, text, labels, weights, logits, normalized, stats, *options_text_grad, triton
):  # fmt: skip
    *options, text_grad = options_text_grad
    sizes = check_inputs(f, F1, F2, text, labels, weights, *options, triton=triton)
    check_saved(f, grad_loss, grad_omega, logits, normalized, stats, sizes, options[-2])
    dtext = torch.empty_like(text) if text_grad else text.new_empty((0,))
    return torch.empty_like(f), torch.empty_like(F1), torch.empty_like(F2), dtext


def _setup_context(ctx, inputs, output):
    f, F1, F2, text, labels, weights, *options = inputs
    _, _, logits, normalized, stats = output
    ctx.mark_non_differentiable(logits, normalized, stats)  # saved for the backward only
    # Unused outputs (the saved tensors, often omega) get None instead of zero-filled gradients: filling
    # the (B, K, d) and (B, K, C) zeros cost more than the normalisation backward itself.
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(f, F1, F2, text, labels, weights, logits, normalized, stats)
    ctx.options = tuple(options)


def _make_backward(backward_op):
    def backward(ctx, grad_loss, grad_omega, *_):
        f, F1, F2, text, labels, weights, logits, normalized, stats = ctx.saved_tensors
        if grad_loss is None:
            grad_loss = torch.zeros(f.shape[0], dtype=logits.dtype, device=f.device)
        text_grad = bool(ctx.needs_input_grad[3])
        df, dF1, dF2, dtext = backward_op(
            grad_loss, grad_omega, f, F1, F2, text, labels, weights, logits, normalized, stats, *ctx.options, text_grad
        )
        no_gradients = (None,) * (2 + len(ctx.options))  # labels, weights and the options are constants
        return df, dF1, dF2, dtext if text_grad else None, *no_gradients

    return backward


def _no_double_backward(ctx, *grads):
    raise NotImplementedError(
        "simplex_head (fused backends) has no double backward; use backend='reference' for higher-order derivatives"
    )


def register(forward_name: str, backward_name: str, *, triton: bool = False) -> None:
    """Attach the fake kernels (which check the arguments as the real kernels do) and the autograd formula to a
    forward/backward op pair; ``triton``: the Triton ops' dtype limits."""
    torch.library.register_fake(forward_name)(functools.partial(_fake_forward, triton=triton))
    torch.library.register_fake(backward_name)(functools.partial(_fake_backward, triton=triton))
    backward_op = getattr(torch.ops.advsimplex, backward_name.split("::")[1])
    torch.library.register_autograd(forward_name, _make_backward(backward_op), setup_context=_setup_context)
    torch.library.register_autograd(backward_name, _no_double_backward, setup_context=lambda ctx, inputs, output: None)
