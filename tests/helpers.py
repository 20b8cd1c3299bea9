"""Shared test utilities: float64 central finite differences and small encoders.

Finite differences are the ground truth for every derivative in this project: one autograd
path is never used to check another (math spec §7).
"""

from __future__ import annotations

import logging

import torch
import torch.nn as nn
from torch import Tensor


def rel_err(actual: Tensor, expected: Tensor) -> float:
    """max |actual − expected| / max |expected| (a scale-aware relative error)."""
    return ((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-300)).item()


def fd_first(fn, x: Tensor, a: Tensor, h: float) -> Tensor:
    """Df(x)[a] by central differences with one Richardson step (error O(h⁴))."""

    def central(step):
        return (fn(x + step * a) - fn(x - step * a)) / (2 * step)

    return (4 * central(h) - central(2 * h)) / 3


def fd_second(fn, x: Tensor, a: Tensor, b: Tensor, h: float) -> Tensor:
    """D²f(x)[a, b] by the 4-point mixed central difference with one Richardson step (error O(h⁴))."""

    def mixed(step):
        return (
            fn(x + step * a + step * b) - fn(x + step * a - step * b) - fn(x - step * a + step * b)
            + fn(x - step * a - step * b)
        ) / (4 * step * step)  # fmt: skip

    return (4 * mixed(h) - mixed(2 * h)) / 3


def fd_jets(fn, x: Tensor, deltas: Tensor, pairs: Tensor, h: float) -> tuple[Tensor, Tensor, Tensor]:
    """FD truth for (value, first (B, m, ·), second (B, P, ·)) of ``fn`` along ``deltas`` (B, m, ...)."""
    first = torch.stack([fd_first(fn, x, deltas[:, k], h) for k in range(deltas.shape[1])], dim=1)
    second = torch.stack([fd_second(fn, x, deltas[:, a], deltas[:, b], h) for a, b in pairs.tolist()], dim=1)
    return fn(x), first, second


class LayerNormAttentionEncoder(nn.Module):
    """A small pre-norm transformer encoder: LayerNorm + multi-head attention + GELU MLP (+ BatchNorm).

    Pixels (B, 3, H, W) -> embeddings (B, d). Every module is the stock ``torch.nn`` one, so the
    native kernels whose higher-order derivatives are wrong are the ones that get called.
    """

    def __init__(self, width: int = 8, heads: int = 2, dim: int = 6, batch_norm: bool = True) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, kernel_size=1)
        self.bn = nn.BatchNorm2d(width) if batch_norm else nn.Identity()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Linear(width, dim)

    def forward(self, x: Tensor) -> Tensor:
        t = self.bn(self.stem(x)).flatten(2).transpose(1, 2)
        h = self.ln_1(t)
        t = t + self.attn(h, h, h, need_weights=False)[0]
        t = t + self.mlp(self.ln_2(t))
        return self.proj(self.ln_post(t).mean(dim=1))


def layer_norm_encoder(seed: int = 0, dtype=torch.float64, **kwargs) -> LayerNormAttentionEncoder:
    torch.manual_seed(seed)
    enc = LayerNormAttentionEncoder(**kwargs).to(dtype)
    if isinstance(enc.bn, nn.BatchNorm2d):  # non-trivial running statistics
        enc.bn.running_mean.uniform_(-0.5, 0.5)
        enc.bn.running_var.uniform_(0.5, 2.0)
    return enc.eval()


def micro_clip(quick_gelu: bool = False, seed: int = 0, dtype=torch.float64):
    """The tiny open_clip ViT config ``advsimplex-micro-vit[-quickgelu]`` with random weights."""
    import open_clip

    from advsimplex.models import register_model_configs

    register_model_configs()
    torch.manual_seed(seed)
    name = "advsimplex-micro-vit-quickgelu" if quick_gelu else "advsimplex-micro-vit"
    logging.getLogger().setLevel(logging.ERROR)  # open_clip logs "no pretrained weights" otherwise
    model = open_clip.create_model(name, pretrained=None)
    with torch.no_grad():  # LayerNorm affine parameters away from (1, 0), so they matter
        for module in model.visual.modules():
            if isinstance(module, nn.LayerNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return model.to(dtype).eval()


def unit_rows(c: int, d: int, seed: int = 1, dtype=torch.float64) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(c, d, generator=g, dtype=dtype)
    return t / t.norm(dim=-1, keepdim=True)
