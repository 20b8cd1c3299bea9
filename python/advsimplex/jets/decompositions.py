"""Elementary decompositions that keep higher-order derivatives correct (math spec §7, traps 1–3).

PyTorch 2.14.1 computes wrong nested forward-mode derivatives through native ``layer_norm``
and ``batch_norm``, a wrong third-order gradient through native ``layer_norm`` when its input
depends on the weights, and has no forward AD at all through the fused
``scaled_dot_product_attention`` kernels (hence through ``nn.MultiheadAttention``).
Written with elementary ops (mean, var, rsqrt, matmul, softmax) the same functions are
correct at every order. :class:`JetSafeMode` reroutes those functions, wherever they are
called from (``nn.LayerNorm``, ``nn.MultiheadAttention``, open_clip blocks, a user's own
module), to the decompositions below for as long as it is active.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode


def layer_norm(
    input: Tensor,
    normalized_shape: list[int] | tuple[int, ...] | int,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """``F.layer_norm`` from mean, biased variance and rsqrt."""
    if isinstance(normalized_shape, int):
        normalized_shape = (normalized_shape,)
    dims = tuple(range(-len(normalized_shape), 0))
    mean = input.mean(dim=dims, keepdim=True)
    centered = input - mean
    var = (centered * centered).mean(dim=dims, keepdim=True)
    out = centered * torch.rsqrt(var + eps)
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out


def batch_norm(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float | None = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """``F.batch_norm`` in evaluation mode (running statistics) from elementary ops.

    Training-mode batch norm mixes the samples of a batch and updates buffers; it is not
    supported inside jet computations: put the encoder in ``eval()`` mode.
    """
    if training or running_mean is None or running_var is None:
        raise NotImplementedError(
            "batch_norm in training mode (batch statistics) is not supported inside the jet computation: "
            "call encoder.eval() first, or use a LayerNorm-based tower"
        )
    shape = [1, -1] + [1] * (input.dim() - 2)
    out = (input - running_mean.reshape(shape)) * torch.rsqrt(running_var.reshape(shape) + eps)
    if weight is not None:
        out = out * weight.reshape(shape)
    if bias is not None:
        out = out + bias.reshape(shape)
    return out


def normalize(input: Tensor, p: float = 2.0, dim: int = 1, eps: float = 1e-12, out: Tensor | None = None) -> Tensor:
    """``F.normalize`` as ``x / max(‖x‖_p, eps)`` with an elementary norm."""
    if out is not None:
        raise NotImplementedError("normalize(out=...) is not supported inside the jet computation")
    if p == 2:
        norm = (input * input).sum(dim=dim, keepdim=True).sqrt()
    else:
        norm = input.abs().pow(p).sum(dim=dim, keepdim=True).pow(1.0 / p)
    return input / norm.clamp_min(eps)


def _combine_masks(
    attn_mask: Tensor | None, is_causal: bool, target_len: int, source_len: int, dtype: torch.dtype, device
) -> Tensor | None:
    bias = None
    if is_causal:
        keep = torch.ones(target_len, source_len, dtype=torch.bool, device=device).tril()
        bias = torch.zeros(target_len, source_len, dtype=dtype, device=device).masked_fill(~keep, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            mask_bias = torch.zeros(attn_mask.shape, dtype=dtype, device=device).masked_fill(~attn_mask, float("-inf"))
        else:
            mask_bias = attn_mask.to(dtype)
        bias = mask_bias if bias is None else bias + mask_bias
    return bias


def scaled_dot_product_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> Tensor:
    """``F.scaled_dot_product_attention`` as ``softmax(q kᵀ · scale + mask) v`` (no fused kernel)."""
    if dropout_p > 0:
        raise NotImplementedError(
            f"attention dropout (dropout_p={dropout_p}) inside the jet computation: the jets of a random "
            "function are meaningless; disable dropout (encoder.eval() or dropout=0)"
        )
    if enable_gqa and key.shape[-3] != query.shape[-3]:
        rep = query.shape[-3] // key.shape[-3]
        key = key.repeat_interleave(rep, dim=-3)
        value = value.repeat_interleave(rep, dim=-3)
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    scores = (query * scale) @ key.transpose(-2, -1)
    bias = _combine_masks(attn_mask, is_causal, query.shape[-2], key.shape[-2], scores.dtype, scores.device)
    if bias is not None:
        scores = scores + bias
    return torch.softmax(scores, dim=-1) @ value


def multi_head_attention_forward(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    embed_dim_to_check: int,
    num_heads: int,
    in_proj_weight: Tensor | None,
    in_proj_bias: Tensor | None,
    bias_k: Tensor | None,
    bias_v: Tensor | None,
    add_zero_attn: bool,
    dropout_p: float,
    out_proj_weight: Tensor,
    out_proj_bias: Tensor | None,
    training: bool = True,
    key_padding_mask: Tensor | None = None,
    need_weights: bool = True,
    attn_mask: Tensor | None = None,
    use_separate_proj_weight: bool = False,
    q_proj_weight: Tensor | None = None,
    k_proj_weight: Tensor | None = None,
    v_proj_weight: Tensor | None = None,
    static_k: Tensor | None = None,
    static_v: Tensor | None = None,
    average_attn_weights: bool = True,
    is_causal: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """``F.multi_head_attention_forward`` (what ``nn.MultiheadAttention`` calls) from elementary ops.

    Supports packed or separate projections, biases, 2-D/3-D boolean or additive ``attn_mask``,
    ``key_padding_mask``, ``is_causal`` and ``need_weights``. The rarely used ``bias_k``/``bias_v``,
    ``add_zero_attn``, ``static_k``/``static_v`` and training-mode dropout raise.
    """
    _refuse_unsupported(bias_k, bias_v, add_zero_attn, static_k, static_v, training and dropout_p > 0, dropout_p)
    batched = query.dim() == 3
    if not batched:
        query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
        if key_padding_mask is not None:
            key_padding_mask = key_padding_mask.unsqueeze(0)
    tgt_len, bsz, embed_dim = query.shape
    src_len = key.shape[0]
    if embed_dim != embed_dim_to_check:
        raise ValueError(f"expected embedding dimension {embed_dim_to_check}, got {embed_dim}")
    head_dim = embed_dim // num_heads
    separate = (q_proj_weight, k_proj_weight, v_proj_weight) if use_separate_proj_weight else None
    q, k, v = _project_qkv(query, key, value, in_proj_weight, in_proj_bias, separate)

    def heads(t: Tensor, length: int) -> Tensor:  # (L, N, E) -> (N, H, L, head_dim)
        return t.reshape(length, bsz, num_heads, head_dim).permute(1, 2, 0, 3)

    q, k, v = heads(q, tgt_len), heads(k, src_len), heads(v, src_len)
    scores = (q / math.sqrt(head_dim)) @ k.transpose(-2, -1)  # (N, H, L, S)
    bias = _attention_bias(attn_mask, key_padding_mask, is_causal, scores, bsz, num_heads)
    if bias is not None:
        scores = scores + bias
    weights = torch.softmax(scores, dim=-1)
    out = (weights @ v).permute(2, 0, 1, 3).reshape(tgt_len, bsz, embed_dim)
    out = F.linear(out, out_proj_weight, out_proj_bias)
    if not batched:
        out = out.squeeze(1)
    if not need_weights:
        return out, None
    if average_attn_weights:
        weights = weights.mean(dim=1)
    if not batched:
        weights = weights.squeeze(0)
    return out, weights


def _refuse_unsupported(bias_k, bias_v, add_zero_attn, static_k, static_v, dropout: bool, dropout_p: float) -> None:
    unsupported = {
        "bias_k/bias_v": bias_k is not None or bias_v is not None,
        "add_zero_attn": add_zero_attn,
        "static_k/static_v": static_k is not None or static_v is not None,
        f"dropout (p={dropout_p}) in training mode": dropout,
    }
    for feature, used in unsupported.items():
        if used:
            raise NotImplementedError(
                f"nn.MultiheadAttention with {feature} is not supported inside the jet computation"
            )


def _project_qkv(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    in_proj_weight: Tensor | None,
    in_proj_bias: Tensor | None,
    separate: tuple[Tensor, Tensor, Tensor] | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """The q/k/v input projections: packed ``in_proj_weight`` or ``separate`` (q, k, v) weights."""
    b_q, b_k, b_v = (None, None, None) if in_proj_bias is None else in_proj_bias.chunk(3)
    w_q, w_k, w_v = separate if separate is not None else in_proj_weight.chunk(3)
    return F.linear(query, w_q, b_q), F.linear(key, w_k, b_k), F.linear(value, w_v, b_v)


def _attention_bias(
    attn_mask: Tensor | None,
    key_padding_mask: Tensor | None,
    is_causal: bool,
    scores: Tensor,
    bsz: int,
    num_heads: int,
) -> Tensor | None:
    """The additive score bias of ``attn_mask`` (boolean: True = do not attend), causality and key padding."""
    tgt_len, src_len = scores.shape[-2:]
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            attn_mask = torch.zeros(attn_mask.shape, dtype=scores.dtype, device=scores.device).masked_fill(
                attn_mask, float("-inf")
            )
        if attn_mask.dim() == 3:
            attn_mask = attn_mask.reshape(bsz, num_heads, tgt_len, src_len)
    bias = _combine_masks(attn_mask, is_causal and attn_mask is None, tgt_len, src_len, scores.dtype, scores.device)
    if key_padding_mask is not None:
        if key_padding_mask.dtype == torch.bool:
            pad = torch.zeros(key_padding_mask.shape, dtype=scores.dtype, device=scores.device)
            pad = pad.masked_fill(key_padding_mask, float("-inf"))
        else:
            pad = key_padding_mask.to(scores.dtype)
        pad = pad.reshape(bsz, 1, 1, src_len)
        bias = pad if bias is None else bias + pad
    return bias


def _torch_layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5, cudnn_enable=True):
    return layer_norm(input, normalized_shape, weight, bias, eps)


def _torch_batch_norm(input, weight, bias, running_mean, running_var, training, momentum, eps, cudnn_enabled=True):
    return batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)


REROUTED = {
    F.layer_norm: layer_norm,
    torch.layer_norm: _torch_layer_norm,
    F.batch_norm: batch_norm,
    torch.batch_norm: _torch_batch_norm,
    F.normalize: normalize,
    F.scaled_dot_product_attention: scaled_dot_product_attention,
    F.multi_head_attention_forward: multi_head_attention_forward,
}


class JetSafeMode(TorchFunctionMode):
    """Reroute ``layer_norm``, ``batch_norm``, ``normalize``, ``scaled_dot_product_attention`` and
    ``multi_head_attention_forward`` to elementary decompositions while active.

    Use it around any derivative computation of order >= 2 through a user's encoder::

        with JetSafeMode():
            jets = torch.func.jvp(...)
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        replacement = REROUTED.get(func, func)
        return replacement(*args, **(kwargs or {}))
