"""The interface of a training objective (:mod:`.methods`, :mod:`.pretrain`)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

Metrics = dict[str, Tensor]
"""Detached scalars logged with each step."""


class Objective(nn.Module):
    """``forward(images, labels, generator) -> (loss, metrics)``: pixels (B, 3, H, W) in [0, 1], labels (B,);
    the scalar batch-mean loss and a dict of detached scalars for logging."""

    def forward(self, images: Tensor, labels: Tensor, generator: torch.Generator) -> tuple[Tensor, Metrics]:
        raise NotImplementedError

    def after_step(self) -> None:
        """Called after every optimizer step (e.g. to clamp a parameter)."""
