"""Visual prompt tuning (VPT-shallow, Jia et al. 2022) for open_clip ``VisionTransformer`` towers.

:class:`PromptedVisionTransformer` wraps a tower and inserts ``n`` learnable prompt tokens right
after the class token, once the class and positional embeddings have been added and before
``ln_pre``::

    tokens = [cls + pos_0, prompt_1 .. prompt_n, patch_1 + pos_1, ..., patch_L + pos_L]

The prompts take part in every attention layer and are dropped again before pooling, so the
tower's own pooling (``tok``: the class token; ``avg``: the mean of the patch tokens) sees the
sequence layout it was built for. With ``n = 0`` the output equals the wrapped tower's exactly.

Install it with :func:`add_visual_prompts`, which replaces ``model.visual`` of an open_clip
``CLIP`` model; ``model.encode_image`` and everything built on it then run the prompted tower.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class PromptedVisionTransformer(nn.Module):
    """An open_clip ``VisionTransformer`` with ``num_prompts`` learnable input tokens.

    Args:
        visual: the open_clip ``VisionTransformer`` to wrap (kept as ``self.visual``).
        num_prompts: number of prompt tokens n >= 0.
        init_std: standard deviation of the prompts' normal initialisation.

    Input: normalised pixels (B, 3, H, W); output: embeddings (B, output_dim), like the tower.
    ``prompts`` has shape (n, width) and the tower's dtype.
    """

    def __init__(self, visual: nn.Module, num_prompts: int = 8, init_std: float = 0.02) -> None:
        super().__init__()
        from open_clip.transformer import VisionTransformer

        if not isinstance(visual, VisionTransformer):
            raise TypeError(
                f"visual prompt tuning needs an open_clip VisionTransformer tower, got {type(visual).__name__}"
            )
        if not isinstance(num_prompts, int) or num_prompts < 0:
            raise ValueError(f"num_prompts must be an int >= 0, got {num_prompts!r}")
        if visual.attn_pool is not None:
            raise NotImplementedError("visual prompt tuning of towers with attentional pooling is not supported")
        self.visual = visual
        width = visual.class_embedding.shape[0]
        weight = visual.class_embedding
        self.prompts = nn.Parameter(init_std * torch.randn(num_prompts, width, dtype=weight.dtype))
        # what open_clip and advsimplex read off a tower
        self.image_size = visual.image_size
        self.patch_size = visual.patch_size
        self.output_dim = visual.output_dim
        self.preprocess_cfg = getattr(visual, "preprocess_cfg", None)

    @property
    def num_prompts(self) -> int:
        return self.prompts.shape[0]

    def insert_prompts(self, tokens: Tensor) -> Tensor:
        """(B, 1 + L, width) embedded tokens → (B, 1 + n + L, width)."""
        prompts = self.prompts.to(tokens.dtype).unsqueeze(0).expand(tokens.shape[0], -1, -1)
        return torch.cat([tokens[:, :1], prompts, tokens[:, 1:]], dim=1)

    def remove_prompts(self, tokens: Tensor) -> Tensor:
        """(B, 1 + n + L, width) → (B, 1 + L, width)."""
        return torch.cat([tokens[:, :1], tokens[:, 1 + self.num_prompts :]], dim=1)

    def forward(self, x: Tensor) -> Tensor:
        v = self.visual
        x = v.conv1(x)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)
        x = v.patch_dropout(x)
        x = v.ln_pre(self.insert_prompts(x))
        x = v.transformer(x)
        pooled, tokens = v._pool(self.remove_prompts(x))
        if v.proj is not None:
            pooled = pooled @ v.proj
        return (pooled, tokens) if v.output_tokens else pooled


def add_visual_prompts(model: nn.Module, num_prompts: int = 8, init_std: float = 0.02) -> PromptedVisionTransformer:
    """Replace ``model.visual`` (an open_clip ``VisionTransformer``) by a prompted tower; returns it.

    Only the prompts are new parameters; freezing the rest is the caller's choice.
    """
    if isinstance(model.visual, PromptedVisionTransformer):
        raise ValueError("model.visual already carries visual prompts")
    prompted = PromptedVisionTransformer(model.visual, num_prompts, init_std)
    prompted.to(next(model.visual.parameters()).device)
    model.visual = prompted
    return prompted
