"""advsimplex: closed-form adversarial-simplex alignment (AdvSimplex, ICML 2025) for CLIP models.

The public API is :data:`__all__` (the README's API table lists the same names with their signatures):

- :class:`ZeroShotModel`         pixels → embeddings → zero-shot logits, and the model's embedding jets
- :class:`AdvSimplexLoss`        the full training loss (PGD path, jets, fused head)
- :func:`simplex_alignment`      per-simplex Ω of a trajectory
- :func:`simplex_head`           fused head: CE + λ Σ ω Ω from embedding jets
- :func:`pgd_trajectory`         the PGD path recorder; :func:`sign_gradient_ascent` the attack loop
- :func:`embedding_jets`, :func:`vit_jets`, :class:`JetOptions`, :class:`JetPlan`   embedding jets
- :mod:`advsimplex.reference`    the mathematics in pure PyTorch
"""

from . import reference
from ._extension import backends
from .alignment import AlignmentSettings, simplex_alignment
from .attack import LinfBall, Trajectory, pgd_trajectory, sign_gradient_ascent
from .jets import (
    EmbeddingJets,
    FastJetsFallbackWarning,
    JetOptions,
    JetSafeMode,
    UnsupportedTowerError,
    embedding_jets,
    vit_jets,
)
from .loss import AdvSimplexLoss, LossDetails
from .ops import simplex_head
from .reference import JetPlan, dirichlet_moment, moment_tensor, pair_index, second_moment, simplex_weights
from .zeroshot import ZeroShotModel, class_text_features

__version__ = "0.1.0"

__all__ = [
    "AdvSimplexLoss",
    "AlignmentSettings",
    "EmbeddingJets",
    "FastJetsFallbackWarning",
    "JetOptions",
    "JetPlan",
    "JetSafeMode",
    "LinfBall",
    "LossDetails",
    "Trajectory",
    "UnsupportedTowerError",
    "ZeroShotModel",
    "backends",
    "class_text_features",
    "dirichlet_moment",
    "embedding_jets",
    "moment_tensor",
    "pair_index",
    "pgd_trajectory",
    "reference",
    "second_moment",
    "sign_gradient_ascent",
    "simplex_alignment",
    "simplex_head",
    "simplex_weights",
    "vit_jets",
]
