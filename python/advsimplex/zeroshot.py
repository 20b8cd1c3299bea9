"""The zero-shot model: pixels in [0, 1] → image embedding → zero-shot logits, and its embedding jets.

:class:`ZeroShotModel` owns everything that turns pixels into zero-shot logits (math spec §1): the
image tower, its pixel mean/std (applied inside, so attacks and jets live in pixel space), the frozen
unit-norm class-text embeddings ``T`` (C, d) and the logit scale ``s``::

    embed(x)  = f(x) = tower((x − mean) / std)              (B, d)
    logits(x) = s · n(f(x)) Tᵀ,  n(f) = f / ‖f‖              (B, C)
    jets(x, δ, plan) = f, Df[δ_k], second-order streams      (spec §4, §7b)

Whether the fast Taylor-mode jets (:func:`advsimplex.jets.vit_jets`) or the generic torch.func path
(:func:`advsimplex.embedding_jets`) serves :meth:`ZeroShotModel.jets` is decided once, when the model
is built. Build one with :meth:`ZeroShotModel.from_clip` (an open_clip CLIP model),
:meth:`ZeroShotModel.from_tower` (an open_clip image tower or a VPT tower) or
:meth:`ZeroShotModel.from_encoder` (any callable pixels → embeddings, normalisation inside).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import check_floating, check_pixels, check_shape, check_unit_norm
from .jets import EmbeddingJets, JetOptions, embedding_jets, vit_jets
from .jets.options import FastJetsFallbackWarning
from .jets.vit import UnsupportedTowerError, ViTTower, vit_support
from .reference.plan import JetPlan

DEFAULT_TEMPLATES = ("This is a photo of a {}",)


@torch.no_grad()
def class_text_features(
    model: nn.Module,
    tokenizer,
    classnames: Sequence[str],
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    device: str | torch.device | None = None,
) -> Tensor:
    """Unit-norm class embeddings (C, d) float32: prompts averaged over ``templates`` then normalised
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
    """The (mean, std) pixel normalisation of an open_clip model or tower (CLIP's defaults if unset)."""
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    visual = getattr(model, "visual", model)
    cfg = getattr(visual, "preprocess_cfg", None) or {}
    return tuple(cfg.get("mean", OPENAI_DATASET_MEAN)), tuple(cfg.get("std", OPENAI_DATASET_STD))


def image_size(model: nn.Module) -> tuple[int, int]:
    """The (H, W) input size of an open_clip model or image tower."""
    visual = getattr(model, "visual", model)
    size = getattr(visual, "image_size", None)
    if size is None:
        raise ValueError(f"{type(visual).__name__} does not report its image_size")
    return (size, size) if isinstance(size, int) else tuple(size)


def random_layers(module: nn.Module) -> list[str]:
    """Submodules that make ``module`` a random function right now (dropout > 0 in training mode)."""
    from open_clip.transformer import PatchDropout

    found = []
    for name, sub in module.named_modules():
        if not sub.training:
            continue
        p = None
        if isinstance(sub, nn.modules.dropout._DropoutNd | PatchDropout):
            p = getattr(sub, "p", getattr(sub, "prob", 0.0))
        elif isinstance(sub, nn.MultiheadAttention):
            p = sub.dropout
        if p:
            found.append(f"{name or type(module).__name__} ({type(sub).__name__}, p={p})")
    return found


def _is_open_clip_module(module: object) -> bool:
    from .vpt import PromptedVisionTransformer

    return isinstance(module, PromptedVisionTransformer) or (
        isinstance(module, nn.Module) and type(module).__module__.startswith("open_clip.")
    )


def _fast_tower(encoder: object, options: JetOptions) -> ViTTower | None:
    """The covered ViT tower that serves the fast jets, or None (generic path); decided once, here."""
    if options.mode == "generic":
        return None
    if isinstance(encoder, nn.Module):
        tower, reason = vit_support(encoder)
        if tower is not None:
            return tower
        where = f"{type(encoder).__module__}.{type(encoder).__name__}"
    else:
        reason, where = "a plain callable", getattr(encoder, "__qualname__", type(encoder).__name__)
    if options.mode == "fast":
        raise UnsupportedTowerError(f"fast embedding jets do not cover {where}: {reason}")
    if _is_open_clip_module(encoder):
        warnings.warn(
            f"advsimplex: fast embedding jets do not cover {where} ({reason}); using the generic torch.func path "
            "(slower)",
            FastJetsFallbackWarning,
            stacklevel=4,
        )
    return None


class ZeroShotModel(nn.Module):
    """Pixels (B, 3, H, W) in [0, 1] → zero-shot logits (B, C) (see the module docstring).

    Args:
        encoder: the image tower (an ``nn.Module``, trained) or any callable pixels → embeddings (B, d).
        text_features: (C, d) unit-norm class embeddings (a buffer, never trained).
        logit_scale: s > 0 (100 for OpenAI CLIP).
        mean, std: per-channel pixel normalisation applied before ``encoder`` (None: none).
        jets: :class:`~advsimplex.jets.JetOptions` of :meth:`jets` (its ``mode`` is decided here).

    Calling the model returns the logits.
    """

    def __init__(
        self,
        encoder: nn.Module | Callable[[Tensor], Tensor],
        text_features: Tensor,
        logit_scale: float,
        *,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        jets: JetOptions | None = None,
    ) -> None:
        super().__init__()
        if not callable(encoder):
            raise TypeError(f"encoder must be an nn.Module or a callable pixels -> embeddings, got "
                            f"{type(encoder).__name__}")  # fmt: skip
        jets = JetOptions() if jets is None else jets
        if not isinstance(jets, JetOptions):
            raise TypeError(f"jets must be an advsimplex.jets.JetOptions, got {type(jets).__name__}")
        check_floating("text_features", text_features)
        check_shape("text_features", text_features, (None, None), "(C, d)")
        if text_features.shape[0] < 1:
            raise ValueError("text_features must hold at least one class embedding (C >= 1)")
        check_unit_norm("text_features", text_features)
        if isinstance(logit_scale, Tensor):
            logit_scale = logit_scale.item()
        if (
            isinstance(logit_scale, bool)
            or not isinstance(logit_scale, int | float)
            or not (math.isfinite(logit_scale) and logit_scale > 0)
        ):
            raise ValueError(f"logit_scale must be a positive number (finite), got {logit_scale!r}")
        if (mean is None) != (std is None):
            raise ValueError("mean and std must be given together (or neither)")
        self.encoder = encoder  # an nn.Module is registered as a submodule
        self.register_buffer("text_features", F.normalize(text_features.detach(), dim=-1))
        self.logit_scale = float(logit_scale)
        self.normalize = PixelNormalize(mean, std) if mean is not None else None
        self.jet_options = jets
        width = getattr(encoder, "output_dim", None)
        if isinstance(width, int) and width != text_features.shape[1]:
            raise ValueError(f"text_features are {tuple(text_features.shape)} but the tower's embeddings are "
                             f"{width}-dimensional: need (C, {width})")  # fmt: skip
        self._tower = _fast_tower(encoder, jets)

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_clip(
        cls,
        model: nn.Module,
        text_features: Tensor,
        logit_scale: float | None = None,
        *,
        jets: JetOptions | None = None,
    ) -> ZeroShotModel:
        """The zero-shot model of an open_clip ``CLIP`` model: its ``visual`` tower (trainable), its preprocessing
        mean/std, and ``logit_scale`` (default ``exp(model.logit_scale)``, 100 for OpenAI CLIP)."""
        if not (isinstance(model, nn.Module) and hasattr(model, "visual") and hasattr(model, "encode_image")):
            raise TypeError(f"model must be an open_clip CLIP model (with .visual and .encode_image), got "
                            f"{type(model).__name__}; use ZeroShotModel.from_tower for an image tower")  # fmt: skip
        if logit_scale is None:
            logit_scale = float(model.logit_scale.detach().exp()) if hasattr(model, "logit_scale") else 100.0
        mean, std = preprocess_stats(model)
        return cls(model.visual, text_features, logit_scale, mean=mean, std=std, jets=jets)

    @classmethod
    def from_tower(
        cls, tower: nn.Module, text_features: Tensor, logit_scale: float, *, jets: JetOptions | None = None
    ) -> ZeroShotModel:
        """An open_clip image tower (``VisionTransformer``, ``ModifiedResNet``, …) or a
        :class:`~advsimplex.vpt.PromptedVisionTransformer`, with its own preprocessing mean/std."""
        if not isinstance(tower, nn.Module):
            raise TypeError(f"tower must be an nn.Module (an open_clip image tower), got {type(tower).__name__}")
        mean, std = preprocess_stats(tower)
        return cls(tower, text_features, logit_scale, mean=mean, std=std, jets=jets)

    @classmethod
    def from_encoder(
        cls,
        encode: Callable[[Tensor], Tensor],
        text_features: Tensor,
        logit_scale: float,
        *,
        jets: JetOptions | None = None,
    ) -> ZeroShotModel:
        """Any callable ``encode(pixels) -> (B, d)`` (normalisation inside, its own input space); its jets
        come from the generic torch.func path."""
        return cls(encode, text_features, logit_scale, jets=jets)

    # ------------------------------------------------------------------ properties

    @property
    def num_classes(self) -> int:
        return self.text_features.shape[0]

    @property
    def fast_jets(self) -> bool:
        """Whether :meth:`jets` runs the fast Taylor-mode jets (decided at construction)."""
        return self._tower is not None

    @property
    def tower(self) -> nn.Module | Callable[[Tensor], Tensor]:
        """The image encoder (for open_clip models: the ``visual`` tower)."""
        return self.encoder

    def extra_repr(self) -> str:
        path = "fast Taylor-mode" if self.fast_jets else "generic torch.func"
        return f"classes={self.num_classes}, logit_scale={self.logit_scale:.4g}, jets={path}"

    # ------------------------------------------------------------------ pixels → embeddings → logits

    def check_images(self, images: object, name: str = "images") -> Tensor:
        """Clear errors for images this model cannot take: not a floating (B, C, H, W) batch with B ≥ 1, on another
        device or of another dtype than the tower's, the wrong channel count or spatial size, non-finite values,
        or pixels outside [0, 1]."""
        t = check_floating(name, images)
        device = self.text_features.device
        if t.device != device:
            raise ValueError(f"{name} is on {t.device} but the model is on {device}")
        encoder = self.encoder
        if isinstance(encoder, nn.Module):
            weight = next((p for p in encoder.parameters() if p.is_floating_point()), None)
            autocast = torch.is_autocast_enabled(t.device.type)
            if weight is not None and t.dtype != weight.dtype and not autocast:
                raise TypeError(f"{name} have dtype {t.dtype} but the model's parameters are {weight.dtype} "
                                "(cast the images, or run under torch.autocast)")  # fmt: skip
        channels = None if self.normalize is None else self.normalize.mean.shape[1]
        size = getattr(encoder, "image_size", None) if isinstance(encoder, nn.Module) else None
        if size is not None:
            size = (size, size) if isinstance(size, int) else tuple(size)
            if t.dim() != 4 or t.shape[1] != (channels or t.shape[1]) or tuple(t.shape[-2:]) != size:
                raise ValueError(f"{name} must have shape (B, {channels or 'C'}, {size[0]}, {size[1]}) for this "
                                 f"tower, got {tuple(t.shape)}")  # fmt: skip
        elif channels is not None and (t.dim() < 2 or t.shape[1] != channels):
            raise ValueError(f"{name} must have {channels} channels (B, {channels}, H, W), got shape {tuple(t.shape)}")
        return check_pixels(name, t)

    def embed(self, pixels: Tensor) -> Tensor:
        """Unnormalised image embeddings ``f(x)`` (B, d) of pixels (B, 3, H, W)."""
        out = self.encoder(pixels if self.normalize is None else self.normalize(pixels))
        return out[0] if isinstance(out, tuple) else out  # towers built with output_tokens=True

    def cosines(self, embeddings: Tensor) -> Tensor:
        """``n(f) Tᵀ`` (B, C): cosine similarities of embeddings (B, d) with the class embeddings."""
        self._check_width(embeddings)
        n = embeddings / embeddings.norm(dim=-1, keepdim=True)
        return n @ self.text_features.to(n.dtype).t()

    def head(self, embeddings: Tensor) -> Tensor:
        """Zero-shot logits ``s · n(f) Tᵀ`` (B, C) of embeddings (B, d): the one place logits are formed."""
        return self.logit_scale * self.cosines(embeddings)

    def _check_width(self, embeddings: Tensor) -> None:
        if embeddings.dim() != 2 or embeddings.shape[1] != self.text_features.shape[1]:
            raise ValueError(
                f"the encoder returns embeddings of shape {tuple(embeddings.shape)} but text_features are "
                f"{tuple(self.text_features.shape)}: need (B, d) with d = {self.text_features.shape[1]}"
            )

    def logits(self, pixels: Tensor) -> Tensor:
        """Zero-shot logits (B, C) of pixels (B, 3, H, W)."""
        return self.head(self.embed(pixels))

    def forward(self, pixels: Tensor) -> Tensor:
        return self.logits(pixels)

    # ------------------------------------------------------------------ jets

    def check_deterministic(self) -> None:
        """Refuse a tower that is a random function right now (dropout in training mode): its jets and
        simplex alignment are meaningless."""
        if not isinstance(self.encoder, nn.Module):
            return
        randomness = random_layers(self.encoder)
        if randomness:
            raise ValueError(
                f"{type(self.encoder).__name__} is a random function in training mode ({', '.join(randomness)}): "
                "its jets are meaningless; set the dropout probabilities to 0 or call .eval() on the tower"
            )

    def jets(self, images: Tensor, deltas: Tensor, plan: JetPlan | Tensor) -> EmbeddingJets:
        """Embedding jets at ``images`` (B, 3, H, W) along ``deltas`` (B, m, 3, H, W) (pixel space):
        ``f`` (B, d), ``Df[δ_k]`` (B, m, d) and the second-order streams of ``plan`` (B, N, d)."""
        self.check_deterministic()
        options = self.jet_options
        if self._tower is not None:
            norm = self.normalize
            mean, std = (None, None) if norm is None else (norm.mean.flatten(), norm.std.flatten())
            return vit_jets(self._tower, images, deltas, plan, mean=mean, std=std, options=options)
        b = images.shape[0]
        chunk = b if options.micro_batch is None else options.micro_batch
        parts = [
            embedding_jets(
                self.embed, images[i : i + chunk], deltas[i : i + chunk], plan, chunk_size=options.chunk_size
            )
            for i in range(0, b, chunk)
        ]
        if len(parts) == 1:
            return parts[0]
        value, first, second = (torch.cat([getattr(p, f) for p in parts]) for f in ("value", "first", "second"))
        return EmbeddingJets(value, first, second, parts[0].plan)


class PixelNormalize(nn.Module):
    """``(x − mean) / std`` per channel of pixels (B, C, H, W) (the preprocessing of a CLIP tower).

    ``mean``/``std`` are kept in float64 (exact for float64 pixels, rounded once by ``.to(dtype)`` for others).
    """

    def __init__(self, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor) -> None:
        super().__init__()
        m = torch.as_tensor(mean, dtype=torch.float64).flatten()
        s = torch.as_tensor(std, dtype=torch.float64).flatten()
        if m.shape != s.shape or m.numel() < 1:
            raise ValueError(f"mean and std must have one value per channel each, got {m.numel()} and {s.numel()}")
        if not bool((s > 0).all()):
            raise ValueError(f"std must be positive, got {s.tolist()}")
        self.register_buffer("mean", m.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", s.view(1, -1, 1, 1), persistent=False)

    @classmethod
    def of(cls, model: nn.Module) -> PixelNormalize:
        """The preprocessing of an open_clip model or tower (:func:`preprocess_stats`)."""
        return cls(*preprocess_stats(model))

    def forward(self, pixels: Tensor) -> Tensor:
        return (pixels - self.mean.to(pixels.dtype)) / self.std.to(pixels.dtype)
