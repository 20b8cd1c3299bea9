"""The model of a training run: loading, the frozen text tower and the tuning mode.

- The text tower is frozen; the class-prompt embeddings (C, d) are computed once, before training.
- ``tuning: full`` trains the whole image tower; ``tuning: vpt`` inserts ``vpt_prompts`` prompt tokens
  (:func:`advsimplex.vpt.add_visual_prompts`) and trains only them.
- ``method: clip`` (contrastive pre-training) trains both towers and the logit scale.
- pmg, fare and agft keep a frozen copy of the starting model (``original``).
- The trainable model is an :class:`advsimplex.ZeroShotModel` built once, with the run's jet options.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..jets import JetOptions
from ..models import load_clip
from ..vpt import PromptedVisionTransformer, add_visual_prompts
from ..zeroshot import ZeroShotModel, class_text_features, image_size
from .config import ConfigError, TrainConfig


@dataclass
class LoadedModel:
    """``model`` (an open_clip CLIP model, fp32), its tokenizer and the name to recreate it with."""

    model: nn.Module
    tokenizer: object
    name: str

    @property
    def image_size(self) -> tuple[int, int]:
        return image_size(self.model)


def load_model(cfg: TrainConfig, device: torch.device) -> LoadedModel:
    """Load ``cfg.model`` (seeded with ``cfg.seed``, so random initialisations are reproducible)."""
    torch.manual_seed(cfg.seed)
    try:
        model, tokenizer, name = load_clip(cfg.model, cfg.pretrained, device=device)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"model: {exc}") from exc
    except ValueError as exc:
        raise ConfigError(f"model: {exc}") from exc
    except RuntimeError as exc:
        if not str(exc).startswith("could not create open_clip model"):
            raise
        raise ConfigError(f"model: {exc}") from exc
    return LoadedModel(model.float(), tokenizer, name)


@dataclass
class ZeroShotSetup:
    """The trainable zero-shot model, the frozen original (pmg, fare, agft) and the class embeddings (C, d)."""

    classifier: ZeroShotModel
    original: ZeroShotModel | None
    text_features: torch.Tensor


def jet_options(cfg: TrainConfig) -> JetOptions:
    """The run's :class:`~advsimplex.jets.JetOptions` (validated by the config's own validation)."""
    return JetOptions(mode=cfg.jets, rules=cfg.jet_rules, checkpoint=cfg.jet_checkpoint,
                      micro_batch=cfg.jet_micro_batch, chunk_size=cfg.jet_chunk_size)  # fmt: skip


def prepare_model(cfg: TrainConfig, loaded: LoadedModel, classes: Sequence[str]) -> ZeroShotSetup | None:
    """Freeze what ``cfg`` does not train and build the zero-shot classifier (None for ``clip``)."""
    model = loaded.model
    if cfg.method == "clip":
        model.requires_grad_(True)
        return None
    model.requires_grad_(False)
    text = class_text_features(model, loaded.tokenizer, list(classes), cfg.templates)
    original = None
    if cfg.method in ("pmg", "fare", "agft"):
        frozen = copy.deepcopy(model).eval()
        original = ZeroShotModel.from_clip(frozen, text, cfg.logit_scale, jets=JetOptions(mode="generic"))
    if cfg.tuning == "vpt":
        if not isinstance(model.visual, PromptedVisionTransformer):
            try:
                add_visual_prompts(model, cfg.vpt_prompts)
            except (TypeError, NotImplementedError) as exc:
                raise ConfigError(f"tuning: {exc}") from exc
        elif model.visual.num_prompts != cfg.vpt_prompts:
            raise ConfigError(
                f"vpt_prompts: the model already carries {model.visual.num_prompts} prompts, got {cfg.vpt_prompts}"
            )
        model.visual.prompts.requires_grad_(True)
    else:
        model.visual.requires_grad_(True)
    classifier = ZeroShotModel.from_clip(model, text, cfg.logit_scale, jets=jet_options(cfg))
    if original is not None:
        original.logit_scale = classifier.logit_scale
    return ZeroShotSetup(classifier, original, text)


def trainable_parameters(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """Parameters with ``requires_grad`` in ``named_parameters`` order (the optimizer's order)."""
    return [(n, p) for n, p in module.named_parameters() if p.requires_grad]
