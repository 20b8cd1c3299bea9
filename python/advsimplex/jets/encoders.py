"""What ``encode`` means to :func:`advsimplex.simplex_alignment` and :class:`advsimplex.AdvSimplexLoss`.

``encode`` is either a plain callable (pixels → embeddings, normalisation inside; jets by the generic
torch.func path, :func:`advsimplex.embedding_jets`) or an open_clip model:

- a ``CLIP``-like model (anything with ``.visual`` and ``.encode_image``), an open_clip image tower
  (``VisionTransformer``, ``ModifiedResNet``, ``TimmModel``) or an
  :class:`advsimplex.vpt.PromptedVisionTransformer`: pixels in [0, 1] are normalised inside with the
  model's preprocessing mean/std (:func:`advsimplex.zeroshot.preprocess_stats`);
- an :class:`advsimplex.zeroshot.ZeroShotClassifier` or its bound ``.encode``: its own mean/std.

Towers covered by :func:`advsimplex.jets.vit.vit_support` get the fast Taylor-mode jets
(:func:`advsimplex.jets.vit.vit_jets`); other models fall back to the generic path with a
:class:`FastJetsFallbackWarning` naming the module.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .generic import EmbeddingJets, embedding_jets
from .vit import KERNELS, UnsupportedTowerError, ViTTower, vit_jets, vit_support

JET_MODES = ("auto", "fast", "generic")


class FastJetsFallbackWarning(UserWarning):
    """An open_clip model whose tower the fast jets do not cover: the generic (slower) path runs."""


@dataclass(frozen=True)
class JetEncoder:
    """A resolved ``encode`` argument.

    - ``encode``: pixels (B, 3, H, W) → embeddings (B, d), normalisation included;
    - ``tower``: the covered ViT tower when the fast jets run, else None;
    - ``mean``/``std``: per-channel normalisation applied before the tower (None for plain callables);
    - ``module``: the open_clip module behind ``encode`` (None for plain callables).
    """

    encode: Callable[[Tensor], Tensor]
    tower: ViTTower | None = None
    mean: tuple[float, ...] | Tensor | None = None
    std: tuple[float, ...] | Tensor | None = None
    module: nn.Module | None = None

    @property
    def fast(self) -> bool:
        return self.tower is not None


def _is_open_clip_tower(module: object) -> bool:
    from ..vpt import PromptedVisionTransformer

    if isinstance(module, PromptedVisionTransformer):
        return True
    return (
        isinstance(module, nn.Module)
        and type(module).__module__.startswith("open_clip.")
        and hasattr(module, "image_size")
        and not hasattr(module, "encode_image")
    )


def _model_and_stats(encode: object) -> tuple[nn.Module, nn.Module, object, object] | None:
    """(model, image tower, mean, std) when ``encode`` is an open_clip model, else None."""
    from ..zeroshot import ZeroShotClassifier, preprocess_stats

    owner = getattr(encode, "__self__", None)
    if isinstance(owner, ZeroShotClassifier) and getattr(encode, "__func__", None) is ZeroShotClassifier.encode:
        encode = owner
    if isinstance(encode, ZeroShotClassifier):
        return encode, encode.model.visual, encode.mean.flatten(), encode.std.flatten()
    if isinstance(encode, nn.Module) and hasattr(encode, "visual") and hasattr(encode, "encode_image"):
        mean, std = preprocess_stats(encode)
        return encode, encode.visual, mean, std
    if _is_open_clip_tower(encode):
        mean, std = preprocess_stats(encode)
        return encode, encode, mean, std
    return None


def random_layers(module: nn.Module) -> list[str]:
    """Submodules that make ``module`` a random function right now (dropout > 0 in training mode)."""
    from open_clip.transformer import PatchDropout

    found = []
    for name, sub in module.named_modules():
        if not sub.training:
            continue
        p = None
        if isinstance(sub, nn.modules.dropout._DropoutNd) or isinstance(sub, PatchDropout):
            p = getattr(sub, "p", getattr(sub, "prob", 0.0))
        elif isinstance(sub, nn.MultiheadAttention):
            p = sub.dropout
        if p:
            found.append(f"{name or type(module).__name__} ({type(sub).__name__}, p={p})")
    return found


def resolve_encoder(encode: object, jets: str = "auto") -> JetEncoder:
    """Interpret ``encode`` (see the module docstring) for the jet mode ``jets``.

    ``auto``: fast jets where covered, else the generic path (warning for uncovered open_clip models);
    ``fast``: fast jets or an error saying why not; ``generic``: always the torch.func path.
    """
    if jets not in JET_MODES:
        raise ValueError(f"jets must be one of {JET_MODES}, got {jets!r}")
    found = _model_and_stats(encode)
    if found is None:
        if not callable(encode):
            raise TypeError(f"encode must be a callable or an open_clip model, got {type(encode).__name__}")
        if jets == "fast":
            raise TypeError(
                f"jets='fast' needs an open_clip CLIP model, VisionTransformer or PromptedVisionTransformer; "
                f"got the callable {getattr(encode, '__qualname__', type(encode).__name__)} (use jets='auto')"
            )
        return JetEncoder(encode=encode)
    model, visual, mean, std = found
    randomness = random_layers(visual)
    if randomness:
        raise ValueError(
            f"{type(visual).__name__} is a random function in training mode ({', '.join(randomness)}): its jets "
            "are meaningless; set the dropout probabilities to 0 or call .eval() on the tower"
        )

    def normalized(pixels: Tensor) -> Tensor:
        m = torch.as_tensor(mean, dtype=pixels.dtype, device=pixels.device).reshape(1, -1, 1, 1)
        s = torch.as_tensor(std, dtype=pixels.dtype, device=pixels.device).reshape(1, -1, 1, 1)
        out = visual((pixels - m) / s)
        return out[0] if isinstance(out, tuple) else out  # towers built with output_tokens=True

    tower = None
    if jets != "generic":
        tower, reason = vit_support(visual)
        if tower is None:
            where = f"{type(visual).__module__}.{type(visual).__name__}"
            if jets == "fast":
                raise UnsupportedTowerError(f"fast embedding jets do not cover {where}: {reason}")
            warnings.warn(
                f"advsimplex: fast embedding jets do not cover {where} ({reason}); "
                "using the generic torch.func path (slower)",
                FastJetsFallbackWarning,
                stacklevel=3,
            )
    return JetEncoder(encode=normalized, tower=tower, mean=mean, std=std, module=model)


def encoder_jets(
    encoder: JetEncoder,
    x: Tensor,
    deltas: Tensor,
    pairs: Tensor,
    *,
    chunk_size: int | None = None,
    checkpoint: bool | None = None,
    micro_batch: int | None = None,
    kernels: str = "auto",
) -> EmbeddingJets:
    """Embedding jets of a resolved encoder: fast (:func:`vit_jets`) or generic (:func:`embedding_jets`).

    ``chunk_size`` bounds the vmapped pair streams of the generic path; ``checkpoint`` and ``kernels``
    apply to the fast path; ``micro_batch`` splits the batch for both.
    """
    if kernels not in KERNELS:
        raise ValueError(f"jet kernels must be one of {KERNELS}, got {kernels!r}")
    if encoder.fast:
        return vit_jets(
            encoder.tower, x, deltas, pairs, mean=encoder.mean, std=encoder.std,
            checkpoint=checkpoint, micro_batch=micro_batch, kernels=kernels,
        )  # fmt: skip
    if micro_batch is not None and (not isinstance(micro_batch, int) or micro_batch < 1):
        raise ValueError(f"micro_batch must be a positive int or None, got {micro_batch!r}")
    b = x.shape[0]
    chunk = b if micro_batch is None else micro_batch
    parts = [
        embedding_jets(encoder.encode, x[i : i + chunk], deltas[i : i + chunk], pairs, chunk_size=chunk_size)
        for i in range(0, b, chunk)
    ]
    if len(parts) == 1:
        return parts[0]
    return EmbeddingJets(
        *(torch.cat([getattr(p, f) for p in parts]) for f in ("value", "first", "second")), parts[0].plan
    )
