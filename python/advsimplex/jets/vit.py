"""Fast embedding jets of open_clip ``VisionTransformer`` towers by Taylor-mode propagation (spec §4, §7).

:func:`vit_jets` computes, at the clean images, the embedding ``f``, its first directional
derivatives ``Df[δ_k]`` along the ``m`` trajectory vertices and the second derivatives
``D²f[δ_a, δ_b]`` for the ``P`` needed vertex pairs, in **one** forward pass that carries
``S = 1 + m + P`` streams stacked along a leading dimension (layout of :mod:`.rules`):

- linear maps (patch embedding, q/k/v and output projections, MLP, final projection) act on all
  streams at once: one batched matmul, the bias on the primal stream only;
- class token, positional embedding and visual prompts are constants: primal stream only;
- LayerNorm, GELU/QuickGELU and the attention softmax use the second-order rules of :mod:`.rules`
  (or their fused Triton kernels, :mod:`advsimplex.ops.jet_rules`);
- the attention products ``q kᵀ`` and ``A v`` are bilinear:
  ``(q kᵀ)_p = q_p k₀ᵀ + q₀ k_pᵀ + q_a k_bᵀ + q_b k_aᵀ`` (and the same for ``A v``).

Compared with nested forward AD over pairs (:func:`advsimplex.embedding_jets`, where every pair
stream recomputes its two first-order tangents), the primal and each first-order stream are
computed once. Everything is plain differentiable PyTorch: reverse mode through it gives the
parameter gradients of the jets (third-order derivatives of the tower). Per-block activation
checkpointing and batch micro-batching bound the memory.

Covered towers (:func:`vit_support`): open_clip ``VisionTransformer`` with the standard residual
blocks (``nn.MultiheadAttention``, LayerNorm, an MLP with ``nn.GELU`` (erf or tanh) or
``QuickGELU``, optional LayerScale), ``tok`` or ``avg`` pooling, with or without ``ln_pre``, with
``final_ln_after_pool``, with or without projection; and
:class:`advsimplex.vpt.PromptedVisionTransformer` around such a tower.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint as activation_checkpoint

from ..reference.jet_rules import jet_linear
from ..reference.plan import JetPlan
from .generic import EmbeddingJets, as_plan
from .options import JetOptions

CHECKPOINT_AUTO_BYTES = 2 * 1024**3
"""``checkpoint=None`` turns per-block activation checkpointing on when the estimated autograd
activations of the jet forward (:func:`estimate_activation_bytes`) exceed this many bytes."""


class UnsupportedTowerError(ValueError):
    """The module is not a tower the fast jets cover; the message names the module and the reason."""


@dataclass(frozen=True)
class ViTTower:
    """A covered tower: the open_clip ``VisionTransformer`` and, for VPT, the prompted wrapper."""

    visual: nn.Module
    prompted: nn.Module | None = None

    @property
    def num_prompts(self) -> int:
        return 0 if self.prompted is None else int(self.prompted.prompts.shape[0])

    @property
    def num_tokens(self) -> int:
        """Tokens in the residual stream: class token + prompts + patches."""
        gh, gw = self.visual.grid_size
        return 1 + self.num_prompts + gh * gw


def _activation_kind(act: nn.Module) -> str | None:
    from open_clip.transformer import QuickGELU

    if type(act) is QuickGELU:
        return "quick"
    if type(act) is nn.GELU and act.approximate in ("none", "tanh"):
        return act.approximate
    return None


def _is_layer_norm(module: nn.Module) -> bool:
    from open_clip.transformer import LayerNorm, LayerNormFp32

    return type(module) in (nn.LayerNorm, LayerNorm, LayerNormFp32) and len(module.normalized_shape) == 1


def _block_problem(i: int, blk: nn.Module) -> str | None:
    from open_clip.transformer import LayerScale, ResidualAttentionBlock

    where = f"transformer.resblocks[{i}]"
    if type(blk) is not ResidualAttentionBlock:
        return f"{where} is a {type(blk).__name__} (only open_clip's ResidualAttentionBlock is covered)"
    if hasattr(blk, "ln_1_kv"):
        return f"{where} is a cross-attention block"
    attn = blk.attn
    if type(attn) is not nn.MultiheadAttention:
        return f"{where}.attn is a {type(attn).__name__}"
    if not attn.batch_first or not attn._qkv_same_embed_dim or attn.bias_k is not None or attn.add_zero_attn:
        return f"{where}.attn uses an unsupported nn.MultiheadAttention option (batch_first/kdim/bias_k/add_zero_attn)"
    if attn.training and attn.dropout > 0:
        return f"{where}.attn has attention dropout p={attn.dropout} in training mode (random jets)"
    for name in ("ln_1", "ln_2"):
        if not _is_layer_norm(getattr(blk, name)):
            return f"{where}.{name} is a {type(getattr(blk, name)).__name__}, not a LayerNorm"
    for name in ("ls_1", "ls_2"):
        ls = getattr(blk, name)
        if type(ls) not in (nn.Identity, LayerScale):
            return f"{where}.{name} is a {type(ls).__name__}"
    mlp = blk.mlp
    if (
        type(mlp) is not nn.Sequential
        or list(mlp._modules) != ["c_fc", "gelu", "c_proj"]
        or type(mlp.c_fc) is not nn.Linear
        or type(mlp.c_proj) is not nn.Linear
    ):
        return f"{where}.mlp is not Linear → activation → Linear"
    if _activation_kind(mlp.gelu) is None:
        return f"{where}.mlp.gelu is a {type(mlp.gelu).__name__} (covered: nn.GELU, QuickGELU)"
    return None


def vit_support(module: nn.Module) -> tuple[ViTTower | None, str]:
    """Whether the fast jets cover ``module`` (an open_clip ``VisionTransformer`` or a
    ``PromptedVisionTransformer``): ``(tower, "")`` if so, ``(None, reason)`` otherwise."""
    from open_clip.transformer import PatchDropout, VisionTransformer

    from ..vpt import PromptedVisionTransformer

    prompted = None
    name = type(module).__name__
    if isinstance(module, PromptedVisionTransformer):
        if type(module).forward is not PromptedVisionTransformer.forward:
            return None, f"{name} overrides PromptedVisionTransformer.forward"
        prompted, module = module, module.visual
    if not isinstance(module, VisionTransformer):
        return None, f"{type(module).__module__}.{type(module).__name__} is not an open_clip VisionTransformer"
    for method in ("forward", "_embeds", "_pool", "_global_pool"):
        if getattr(type(module), method) is not getattr(VisionTransformer, method):
            return None, f"{type(module).__name__} overrides VisionTransformer.{method}"
    v = module
    if v.attn_pool is not None:
        return None, "VisionTransformer with attentional pooling (attn_pool)"
    if v.pool_type not in ("tok", "avg"):
        return None, f"VisionTransformer with pool_type={v.pool_type!r} (covered: 'tok', 'avg')"
    if isinstance(v.patch_dropout, PatchDropout) and v.patch_dropout.training and v.patch_dropout.prob > 0:
        return None, f"VisionTransformer with patch dropout p={v.patch_dropout.prob} in training mode (random jets)"
    if type(v.patch_dropout) not in (nn.Identity, PatchDropout):
        return None, f"patch_dropout is a {type(v.patch_dropout).__name__}"
    conv = v.conv1
    if (
        type(conv) is not nn.Conv2d
        or conv.kernel_size != conv.stride
        or conv.padding not in ((0, 0), "valid")
        or conv.dilation != (1, 1)
        or conv.groups != 1
    ):
        return None, "conv1 is not a non-overlapping patch embedding (kernel == stride, no padding)"
    for ln in ("ln_pre", "ln_post"):
        mod = getattr(v, ln)
        if not (_is_layer_norm(mod) or (ln == "ln_pre" and type(mod) is nn.Identity)):
            return None, f"{ln} is a {type(mod).__name__}, not a LayerNorm"
    if not getattr(v.transformer, "batch_first", True):
        return None, "transformer with batch_first=False"
    for i, blk in enumerate(v.transformer.resblocks):
        problem = _block_problem(i, blk)
        if problem:
            return None, problem
    return ViTTower(visual=v, prompted=prompted), ""


def estimate_activation_bytes(tower: ViTTower, batch: int, plan: JetPlan, dtype: torch.dtype) -> int:
    """What autograd keeps for the jet forward with the PyTorch rules and no checkpointing (bytes).

    Per residual block, stream and token: about 19 width-sized values (LayerNorm and attention jets,
    residual stream), 4.5 hidden-sized ones (MLP and GELU jets) and 7 attention-row values per head
    (fitted to saved-tensor measurements of Q = 3, m = 10 jets within 10 %). For ViT-B/32 at batch 128,
    m = 10, float32 that is about 25 GB per block: checkpointing is what makes training steps fit.
    """
    v = tower.visual
    blocks = v.transformer.resblocks
    if not len(blocks):
        return 0
    width = v.class_embedding.shape[0]
    hidden = blocks[0].mlp.c_fc.out_features
    heads = blocks[0].attn.num_heads
    tokens = tower.num_tokens
    per_value = plan.size * batch * tokens * (19 * width + 4.5 * hidden + 7 * heads * tokens)
    return int(len(blocks) * per_value * torch.finfo(dtype).bits // 8)


def _rule_functions(backend: str, device: torch.device):
    """The (gelu, layer_norm, softmax) jet functions of the rule ``backend`` for tensors on ``device``."""
    from ..ops import jet_rules

    chosen = jet_rules.resolve_backend(backend, device)

    def gelu(x: Tensor, plan: JetPlan, kind: str, dim: int = 0) -> Tensor:
        return jet_rules.jet_gelu(x, plan, kind, dim=dim, backend=chosen)

    def layer_norm(x: Tensor, plan: JetPlan, module: nn.Module, dim: int = 0) -> Tensor:
        return jet_rules.jet_layer_norm(x, plan, module.weight, module.bias, module.eps, dim=dim, backend=chosen)

    def softmax(x: Tensor, plan: JetPlan, dim: int = 0) -> Tensor:
        return jet_rules.jet_softmax(x, plan, dim=dim, backend=chosen)

    return gelu, layer_norm, softmax


def _score_bilinear(a: tuple[Tensor, Tensor], b: tuple[Tensor, Tensor]) -> Tensor:
    """``q_a k_bᵀ + q_b k_aᵀ`` as one matmul over the doubled head dimension."""
    (qa, ka), (qb, kb) = a, b
    return torch.cat([qa, qb], dim=-1) @ torch.cat([kb, ka], dim=-1).transpose(-1, -2)


def _score_square(a: tuple[Tensor, Tensor]) -> Tensor:
    q, k = a
    return 2.0 * (q @ k.transpose(-1, -2))


def _value_bilinear(a: tuple[Tensor, Tensor], b: tuple[Tensor, Tensor]) -> Tensor:
    """``A_a v_b + A_b v_a`` as one matmul over the doubled key dimension."""
    (pa, va), (pb, vb) = a, b
    return torch.cat([pa, pb], dim=-1) @ torch.cat([vb, va], dim=-2)


def _value_square(a: tuple[Tensor, Tensor]) -> Tensor:
    p, v = a
    return 2.0 * (p @ v)


class _JetForward:
    """The Taylor-mode forward of one covered tower (stream dimension 0 everywhere but attention)."""

    def __init__(self, tower: ViTTower, plan: JetPlan, rules: str, device: torch.device) -> None:
        self.tower, self.v, self.plan = tower, tower.visual, plan
        self.gelu, self.layer_norm, self.softmax = _rule_functions(rules, device)

    # --- embedding -------------------------------------------------------------------------
    def embed(self, x: Tensor, deltas: Tensor) -> Tensor:
        """Normalised images (B, 3, H, W) and tangents (B, m, 3, H, W) → stacked tokens (S, B, L, w)."""
        v, plan = self.v, self.plan
        b, m = x.shape[0], plan.m
        conv = v.conv1
        images = torch.cat([x.unsqueeze(0), deltas.transpose(0, 1)], dim=0).flatten(0, 1)  # ((1+m)B, 3, H, W)
        feats = F.conv2d(images, conv.weight, None, conv.stride)  # patch embedding: linear, one call
        feats = feats.flatten(2).transpose(1, 2).unflatten(0, (1 + m, b))  # (1+m, B, grid, w)
        patches0 = feats[0] if conv.bias is None else feats[0] + conv.bias.to(feats.dtype)
        width = feats.shape[-1]
        cls = v.class_embedding.to(feats.dtype).view(1, 1, width).expand(b, 1, width)
        primal = torch.cat([cls, patches0], dim=1) + v.positional_embedding.to(feats.dtype)
        tangents = F.pad(feats[1:], (0, 0, 1, 0))  # zero tangent at the class token
        if self.tower.prompted is not None:  # VPT: prompts after the class token (constants: zero tangents)
            n = self.tower.num_prompts
            prompts = self.tower.prompted.prompts.to(feats.dtype).unsqueeze(0).expand(b, n, width)
            primal = torch.cat([primal[:, :1], prompts, primal[:, 1:]], dim=1)
            tangents = torch.cat([tangents[:, :, :1], tangents.new_zeros(m, b, n, width), tangents[:, :, 1:]], dim=2)
        second = tangents.new_zeros(plan.num_second, *tangents.shape[1:])  # D²(affine map of x) = 0
        out = torch.cat([primal.unsqueeze(0), tangents, second], dim=0)
        if isinstance(v.ln_pre, nn.LayerNorm):
            out = self.layer_norm(out, plan, v.ln_pre)
        return out

    # --- one residual block ----------------------------------------------------------------
    def attention(self, attn: nn.MultiheadAttention, h: Tensor, query_tokens: int | None) -> Tensor:
        """Jet of ``nn.MultiheadAttention(h, h, h)``: (S, B, L, w) → (S, B, Lq, w)."""
        plan = self.plan
        m, s = plan.m, plan.size
        _, b, length, width = h.shape
        heads = attn.num_heads
        hd = width // heads
        qkv = jet_linear(h, attn.in_proj_weight, attn.in_proj_bias)  # (S, B, L, 3w)
        qkv = qkv.view(s, b, length, 3, heads, hd).permute(3, 1, 4, 0, 2, 5)  # (3, B, H, S, L, hd)
        q, k, v = qkv.unbind(0)
        if query_tokens is not None:
            q = q[..., :query_tokens, :]
        q = q * (1.0 / math.sqrt(hd))
        lq = q.shape[-2]
        q0, k0, v0 = q[:, :, 0], k[:, :, 0], v[:, :, 0]
        q1, k1, v1 = q[:, :, 1 : 1 + m], k[:, :, 1 : 1 + m], v[:, :, 1 : 1 + m]
        # scores of every stream: q_s k₀ᵀ (all s) + q₀ k_sᵀ (s ≥ 1) + the second-order cross terms
        # Σ (q_a k_bᵀ + q_b k_aᵀ) (bilinear product rule; the plan's quadratic sum, spec §7b)
        rows = (q.reshape(b, heads, s * lq, hd) @ k0.transpose(-1, -2)).view(b, heads, s, lq, length)
        cols = (k[:, :, 1:].reshape(b, heads, (s - 1) * length, hd) @ q0.transpose(-1, -2)).view(
            b, heads, s - 1, length, lq
        )
        tangent = rows[:, :, 1:] + cols.transpose(-1, -2)
        cross = plan.quadratic(_score_bilinear, (q1, k1), dim=2, diagonal=_score_square)  # (B, H, N, Lq, L)
        scores = torch.cat([rows[:, :, :1], tangent[:, :, :m], tangent[:, :, m:] + cross], dim=2)
        probs = self.softmax(scores, plan, dim=2)  # (B, H, S, Lq, L)
        # A v: A_s v₀ (all s) + A₀ v_s (s ≥ 1) + Σ (A_a v_b + A_b v_a)
        out = (probs.reshape(b, heads, s * lq, length) @ v0).view(b, heads, s, lq, hd)
        a0v = probs[:, :, :1] @ v[:, :, 1:]  # (B, H, S-1, Lq, hd)
        cross_v = plan.quadratic(_value_bilinear, (probs[:, :, 1 : 1 + m], v1), dim=2, diagonal=_value_square)
        tangent_v = out[:, :, 1:] + a0v
        out = torch.cat([out[:, :, :1], tangent_v[:, :, :m], tangent_v[:, :, m:] + cross_v], dim=2)
        out = out.permute(2, 0, 3, 1, 4).reshape(s, b, lq, width)
        return jet_linear(out, attn.out_proj.weight, attn.out_proj.bias)

    def block(self, blk: nn.Module, x: Tensor, query_tokens: int | None = None) -> Tensor:
        """One ``ResidualAttentionBlock``; with ``query_tokens`` only the first tokens are updated (and kept)."""
        plan = self.plan
        h = self.layer_norm(x, plan, blk.ln_1)
        a = self.attention(blk.attn, h, query_tokens)
        if query_tokens is not None:
            x = x[:, :, :query_tokens]
        x = x + (a * blk.ls_1.gamma.to(a.dtype) if hasattr(blk.ls_1, "gamma") else a)
        h = self.layer_norm(x, plan, blk.ln_2)
        h = jet_linear(h, blk.mlp.c_fc.weight, blk.mlp.c_fc.bias)
        h = self.gelu(h, plan, _activation_kind(blk.mlp.gelu))
        h = jet_linear(h, blk.mlp.c_proj.weight, blk.mlp.c_proj.bias)
        return x + (h * blk.ls_2.gamma.to(h.dtype) if hasattr(blk.ls_2, "gamma") else h)

    def run(self, x: Tensor, deltas: Tensor, checkpoint: bool) -> Tensor:
        """Normalised images and tangents → stacked embeddings (S, B, d), optionally checkpointed per block."""
        h = self.embed(x, deltas)
        blocks = list(self.v.transformer.resblocks)
        last_query = 1 if self.v.pool_type == "tok" else None  # 'tok' pooling reads the class token only
        for i, blk in enumerate(blocks):
            query = last_query if i == len(blocks) - 1 else None
            if checkpoint:
                h = activation_checkpoint(self.block, blk, h, query, use_reentrant=False)
            else:
                h = self.block(blk, h, query)
        return self.head(h)

    # --- pooling and projection ------------------------------------------------------------
    def head(self, x: Tensor) -> Tensor:
        """Stacked tokens (S, B, L, w) → stacked embeddings (S, B, d)."""
        v, plan = self.v, self.plan
        n = self.tower.num_prompts
        if v.pool_type == "tok":
            pooled = self.layer_norm(x[:, :, 0], plan, v.ln_post)  # ln_post acts per token: before == after
        else:  # avg over the patch tokens (prompts removed)
            patches = x[:, :, 1 + n :]
            if v.final_ln_after_pool:
                pooled = self.layer_norm(patches.mean(dim=2), plan, v.ln_post)
            else:
                pooled = self.layer_norm(patches, plan, v.ln_post).mean(dim=2)
        if v.proj is not None:
            pooled = pooled @ v.proj.to(pooled.dtype)
        return pooled


def _check_inputs(tower: ViTTower, x: Tensor, deltas: Tensor) -> None:
    v = tower.visual
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating tensor (B, 3, H, W), got {getattr(x, 'dtype', type(x).__name__)}")
    if not isinstance(deltas, Tensor) or deltas.dtype != x.dtype:
        raise TypeError(f"deltas must be a tensor of the dtype of x ({x.dtype}), got "
                        f"{getattr(deltas, 'dtype', type(deltas).__name__)}")  # fmt: skip
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"x must have shape (B, 3, H, W), got {tuple(x.shape)}")
    if deltas.dim() != 5 or deltas.shape[0] != x.shape[0] or deltas.shape[2:] != x.shape[1:]:
        raise ValueError(f"deltas must have shape (B, m, 3, H, W) = (B, m, *x.shape[1:]), got {tuple(deltas.shape)}")
    if tuple(x.shape[-2:]) != tuple(v.image_size):
        raise ValueError(f"x has spatial size {tuple(x.shape[-2:])} but the tower expects {tuple(v.image_size)}")
    weight = v.conv1.weight
    for name, t in (("x", x), ("deltas", deltas)):
        if t.device != weight.device:
            raise ValueError(f"{name} is on {t.device} but the tower's parameters are on {weight.device}")
    if x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
        raise TypeError(f"x has dtype {x.dtype} but the tower's parameters are {weight.dtype} (no autocast active)")


def _needs_grad(tower: ViTTower, *tensors: Tensor) -> bool:
    if not torch.is_grad_enabled():
        return False
    module = tower.prompted if tower.prompted is not None else tower.visual
    return any(t.requires_grad for t in tensors) or any(p.requires_grad for p in module.parameters())


def _normalize_pixels(x: Tensor, deltas: Tensor, mean, std) -> tuple[Tensor, Tensor]:
    """``(x − mean)/std`` per channel and the tangents ``δ/std`` (the normalisation is affine)."""
    if (mean is None) != (std is None):
        raise ValueError("mean and std must be given together (or neither)")
    if mean is None:
        return x, deltas
    mean_t = torch.as_tensor(mean, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
    if mean_t.shape[1] != x.shape[1] or std_t.shape[1] != x.shape[1]:
        raise ValueError(f"mean/std must have one value per channel ({x.shape[1]}), got "
                         f"{mean_t.shape[1]} and {std_t.shape[1]}")  # fmt: skip
    return (x - mean_t) / std_t, deltas / std_t.unsqueeze(1)


def as_vit_tower(tower: nn.Module | ViTTower) -> ViTTower:
    """``tower`` as a covered :class:`ViTTower`, or :class:`UnsupportedTowerError` naming the module and why."""
    if isinstance(tower, ViTTower):
        return tower
    found, reason = vit_support(tower)
    if found is None:
        raise UnsupportedTowerError(f"fast jets do not cover {type(tower).__name__}: {reason}")
    return found


def vit_jets(
    tower: nn.Module | ViTTower,
    x: Tensor,
    deltas: Tensor,
    plan: JetPlan | Tensor,
    *,
    mean: Sequence[float] | Tensor | None = None,
    std: Sequence[float] | Tensor | None = None,
    options: JetOptions | None = None,
) -> EmbeddingJets:
    """Embedding jets of an open_clip ViT tower at ``x`` along ``deltas``, second order as ``plan`` says.

    Args:
        tower: an open_clip ``VisionTransformer``, a ``PromptedVisionTransformer`` (or a
            :class:`ViTTower` from :func:`vit_support`). Raises :class:`UnsupportedTowerError`
            (naming the module and why) for towers it does not cover.
        x: images (B, 3, H, W); with ``mean``/``std`` they are pixels normalised as ``(x − mean)/std``
            per channel inside (tangents divided by ``std``), otherwise the tower's own input.
        deltas: directions δ_1..δ_m (B, m, 3, H, W), same dtype/device as ``x``.
        plan: the second-order streams to carry (:class:`~advsimplex.reference.plan.JetPlan`: pair streams,
            or collapsed simplex streams, spec §7b); a (P, 2) tensor of vertex pairs means
            ``JetPlan.from_pairs(pairs, m)``.
        options: :class:`JetOptions`; this function reads ``rules`` (the LayerNorm/GELU/softmax rule backend,
            :mod:`advsimplex.ops.jet_rules`), ``checkpoint`` (recompute each residual block in the backward
            pass, non-reentrant; None: on when gradients are needed and :func:`estimate_activation_bytes`
            exceeds :data:`CHECKPOINT_AUTO_BYTES`; results and gradients are identical either way) and
            ``micro_batch`` (images per chunk: bounds the transient memory of the forward and of each
            checkpointed block's recomputation).

    Returns:
        :class:`EmbeddingJets` with ``value`` (B, d), ``first`` (B, m, d), ``second`` (B, N, d) in
        the dtype of the tower's computation, differentiable with respect to the tower's parameters
        (and prompts), ``x`` and ``deltas``.
    """
    options = JetOptions() if options is None else options
    if not isinstance(options, JetOptions):
        raise TypeError(f"options must be a JetOptions, got {type(options).__name__}")
    tower = as_vit_tower(tower)
    _check_inputs(tower, x, deltas)
    m = deltas.shape[1]
    plan = as_plan(plan, m, x.device)
    x, deltas = _normalize_pixels(x, deltas, mean, std)
    b = x.shape[0]
    chunk = b if options.micro_batch is None else min(options.micro_batch, b)
    checkpoint = options.checkpoint
    if checkpoint is None:
        checkpoint = _needs_grad(tower, x, deltas) and (
            estimate_activation_bytes(tower, chunk, plan, x.dtype) > CHECKPOINT_AUTO_BYTES
        )
    forward = _JetForward(tower, plan, options.rules, x.device)
    out = torch.cat([forward.run(x[i : i + chunk], deltas[i : i + chunk], checkpoint) for i in range(0, b, chunk)],
                    dim=1)  # fmt: skip
    first = out[1 : 1 + m].transpose(0, 1).contiguous()
    second = out[1 + m :].transpose(0, 1).contiguous()
    return EmbeddingJets(value=out[0], first=first, second=second, plan=plan)
