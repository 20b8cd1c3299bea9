"""Zero-shot CLIP classification in pixel space (math spec §1).

:class:`ZeroShotClassifier` wraps an open_clip CLIP model and frozen class-prompt embeddings:
pixels in [0, 1] → CLIP mean/std normalisation (inside, so attacks live in pixel space) →
image embedding → logits ``s · n(f) Tᵀ``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DEFAULT_TEMPLATES = ("This is a photo of a {}",)


@torch.no_grad()
def class_text_features(
    model: nn.Module,
    tokenizer,
    classnames: Sequence[str],
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    device: str | torch.device | None = None,
) -> Tensor:
    """Unit-norm class embeddings (C, d): prompts averaged over ``templates`` then normalised
    (open_clip's ``build_zero_shot_classifier``; OpenAI template ensembles work the same way)."""
    from open_clip import build_zero_shot_classifier

    if not classnames:
        raise ValueError("classnames is empty")
    if not templates or any("{}" not in t for t in templates):
        raise ValueError(f"templates must be format strings containing '{{}}', got {list(templates)!r}")
    device = device if device is not None else next(model.parameters()).device
    weights = build_zero_shot_classifier(model, tokenizer, list(classnames), list(templates), device=device)
    return weights.t().contiguous().float()


def preprocess_stats(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The (mean, std) pixel normalisation of an open_clip model (CLIP's defaults if unset)."""
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    visual = getattr(model, "visual", model)
    cfg = getattr(visual, "preprocess_cfg", None) or {}
    return tuple(cfg.get("mean", OPENAI_DATASET_MEAN)), tuple(cfg.get("std", OPENAI_DATASET_STD))


def image_size(model: nn.Module) -> tuple[int, int]:
    """The (H, W) input size of an open_clip image tower."""
    visual = getattr(model, "visual", model)
    size = getattr(visual, "image_size", None)
    if size is None:
        raise ValueError(f"{type(visual).__name__} does not report its image_size")
    return (size, size) if isinstance(size, int) else tuple(size)


class ZeroShotClassifier(nn.Module):
    """Pixels (B, 3, H, W) in [0, 1] → zero-shot logits (B, C).

    Args:
        model: an open_clip CLIP model (its ``visual`` tower is the trainable encoder).
        text_features: (C, d) unit-norm class embeddings (a buffer, never trained).
        logit_scale: s; default ``model.logit_scale.exp()`` (100 for OpenAI CLIP).
    """

    def __init__(self, model: nn.Module, text_features: Tensor, logit_scale: float | None = None) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("text_features", F.normalize(text_features.detach().float(), dim=-1))
        if logit_scale is None:
            logit_scale = float(model.logit_scale.detach().exp()) if hasattr(model, "logit_scale") else 100.0
        self.logit_scale = float(logit_scale)
        mean, std = preprocess_stats(model)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    @property
    def visual(self) -> nn.Module:
        return self.model.visual

    def encode(self, pixels: Tensor) -> Tensor:
        """Unnormalised image embeddings (B, d) of pixels in [0, 1]."""
        return self.model.visual((pixels - self.mean.to(pixels.dtype)) / self.std.to(pixels.dtype))

    def forward(self, pixels: Tensor) -> Tensor:
        e = self.encode(pixels)
        n = e / e.norm(dim=-1, keepdim=True)
        return self.logit_scale * (n @ self.text_features.to(n.dtype).t())
