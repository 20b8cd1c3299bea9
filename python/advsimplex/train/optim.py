"""Optimisers (AdamW, SGD) and the warmup + cosine learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from .config import TrainConfig


def make_optimizer(cfg: TrainConfig, params: Sequence[nn.Parameter]) -> torch.optim.Optimizer:
    """AdamW (``lr``, ``betas``, ``weight_decay``) or SGD (``momentum``, ``weight_decay``)."""
    if not params:
        raise ValueError("no trainable parameters (check tuning / method)")
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


@dataclass
class WarmupCosine:
    """Multiplier of the peak learning rate at step ``s`` (0-based optimizer steps):
    ``(s + 1) / warmup`` during warmup, then ``r + (1 − r) · ½ (1 + cos(π · progress))`` (``cosine``)
    or 1 (constant), ``r = min_ratio``, ``progress = (s − warmup) / (total − warmup)`` clipped to 1.

    A plain dataclass, so that ``LambdaLR.state_dict()`` records its fields (JSON-able)."""

    warmup: int
    total: int
    min_ratio: float = 0.0
    cosine: bool = True

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if not self.cosine:
            return 1.0
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer, total_steps: int) -> LambdaLR:
    """Per-optimizer-step schedule (``scheduler.step()`` after each ``optimizer.step()``)."""
    rule = WarmupCosine(cfg.warmup_steps, total_steps, cfg.min_lr_ratio, cfg.schedule == "cosine")
    return LambdaLR(optimizer, rule)
