"""How embedding jets are computed: one frozen option object, validated once (here)."""

from __future__ import annotations

from dataclasses import dataclass

JET_MODES = ("auto", "fast", "generic")
"""``auto``: fast Taylor-mode jets for covered open_clip ViT towers, the generic torch.func path otherwise
(with a :class:`FastJetsFallbackWarning` for uncovered open_clip towers); ``fast``: fast jets or an error
saying why not; ``generic``: always the torch.func path."""


class FastJetsFallbackWarning(UserWarning):
    """An open_clip model whose tower the fast jets do not cover: the generic (slower) path runs."""


def _rule_backends() -> tuple[str, ...]:
    from ..ops.jet_rules import BACKENDS

    return BACKENDS


def _optional_positive_int(name: str, value: object) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be a positive int or None, got {value!r}")


@dataclass(frozen=True)
class JetOptions:
    """Options of the embedding jets (:meth:`advsimplex.ZeroShotModel.jets`).

    - ``mode``: ``auto``, ``fast`` or ``generic`` (:data:`JET_MODES`), decided once when a
      :class:`~advsimplex.ZeroShotModel` is built;
    - ``rules``: implementation of the fast jets' LayerNorm/GELU/softmax rules, a backend of
      :mod:`advsimplex.ops.jet_rules` (``auto``, ``reference``, …);
    - ``checkpoint``: per-block activation checkpointing of the fast jets (None: on above
      :data:`advsimplex.jets.vit.CHECKPOINT_AUTO_BYTES` of estimated activations);
    - ``micro_batch``: images per jet computation (bounds the transient memory; results unchanged);
    - ``chunk_size``: pair streams per vmapped call of the generic torch.func path (memory).
    """

    mode: str = "auto"
    rules: str = "auto"
    checkpoint: bool | None = None
    micro_batch: int | None = None
    chunk_size: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in JET_MODES:
            raise ValueError(f"jets mode must be one of {JET_MODES}, got {self.mode!r}")
        backends = _rule_backends()
        if self.rules not in backends:
            raise ValueError(f"jet rules must be one of {backends}, got {self.rules!r}")
        if self.checkpoint not in (None, True, False):
            raise ValueError(f"checkpoint must be None (automatic), True or False, got {self.checkpoint!r}")
        _optional_positive_int("micro_batch", self.micro_batch)
        _optional_positive_int("chunk_size", self.chunk_size)
