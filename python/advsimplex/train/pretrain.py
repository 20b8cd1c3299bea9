"""CLIP-style contrastive pre-training on a labelled image dataset (the ``clip`` method).

Captions are built from the dataset's class names and ``caption_templates`` ("a blurry photo of a
{}."); each image gets one template drawn at random. Both towers and the logit scale are trained
with open_clip's ``ClipLoss`` (symmetric InfoNCE over the global batch: under torchrun the features
of every process are gathered with gradients, ``local_loss=True``, as open_clip's own trainer does
with ``--local-loss --gather-with-grad``). Images that share a class are negatives of each other, as
duplicated captions are in web data. The logit scale is clamped to ``[0, ln 100]`` after each step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from open_clip.loss import ClipLoss
from torch import Tensor, nn

from ..zeroshot import PixelNormalize
from .config import TrainConfig
from .objective import Metrics, Objective


def caption_tokens(tokenizer, classes: Sequence[str], templates: Sequence[str]) -> Tensor:
    """Token ids (C, T, L) of every class × template caption."""
    return torch.stack([tokenizer([t.format(c) for t in templates]) for c in classes])


class ContrastiveObjective(Objective):
    """``ClipLoss(n(f(x)), n(t(caption)), exp(logit_scale))`` for images (B, 3, H, W) and labels (B,)."""

    def __init__(self, cfg: TrainConfig, model: nn.Module, tokenizer, classes: Sequence[str]) -> None:
        super().__init__()
        import torch.distributed as dist

        from .distributed import active

        self.model = model
        self.register_buffer("tokens", caption_tokens(tokenizer, classes, cfg.caption_templates), persistent=False)
        self.normalize = PixelNormalize.of(model)
        rank, world = (dist.get_rank(), dist.get_world_size()) if active() else (0, 1)
        self.clip_loss = ClipLoss(local_loss=world > 1, gather_with_grad=world > 1, rank=rank, world_size=world)

    def forward(self, images: Tensor, labels: Tensor, generator: torch.Generator) -> tuple[Tensor, Metrics]:
        choice = torch.randint(0, self.tokens.shape[1], (images.shape[0],), generator=generator).to(labels.device)
        text = self.tokens[labels, choice]  # (B, L)
        image_features = self.model.encode_image(self.normalize(images), normalize=True)
        text_features = self.model.encode_text(text, normalize=True)
        scale = self.model.logit_scale.exp()
        loss = self.clip_loss(image_features.float(), text_features.float(), scale.float())
        return loss, {"logit_scale": scale.detach()}

    @torch.no_grad()
    def after_step(self) -> None:
        self.model.logit_scale.clamp_(0, math.log(100))
