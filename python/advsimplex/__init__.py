"""advsimplex: closed-form adversarial-simplex alignment (AdvSimplex, ICML 2025) for CLIP models.

Public API:

- :func:`simplex_alignment`   per-simplex Ω through an image encoder
- :class:`AdvSimplexLoss`      the full training loss (PGD path, jets, head)
- :func:`simplex_head`         fused head: CE + λ Σ ω Ω from embedding jets
- :func:`pair_index`           canonical vertex pairs of the second-order jets
- :func:`pgd_trajectory`       PGD path recorder
- :func:`embedding_jets`       generic torch.func jets of any encoder
- :func:`vit_jets`             fast Taylor-mode jets of open_clip ViT towers
- :func:`backends`             which kernel backends are usable here
- :mod:`advsimplex.reference`  the mathematics in pure PyTorch
"""

from . import reference
from ._extension import backends
from .alignment import sampled_alignment, simplex_alignment, zero_shot_probs
from .attack import Trajectory, margin_loss, pgd_attack, pgd_trajectory
from .jets import (
    EmbeddingJets,
    FastJetsFallbackWarning,
    JetSafeMode,
    UnsupportedTowerError,
    embedding_jets,
    vit_jets,
)
from .loss import AdvSimplexLoss, LossDetails
from .ops import simplex_head
from .reference import dirichlet_moment, moment_tensor, pair_index, second_moment, simplex_weights

__version__ = "0.1.0"

__all__ = [
    "AdvSimplexLoss",
    "EmbeddingJets",
    "FastJetsFallbackWarning",
    "JetSafeMode",
    "LossDetails",
    "Trajectory",
    "UnsupportedTowerError",
    "backends",
    "dirichlet_moment",
    "embedding_jets",
    "margin_loss",
    "moment_tensor",
    "pair_index",
    "pgd_attack",
    "pgd_trajectory",
    "reference",
    "sampled_alignment",
    "second_moment",
    "simplex_alignment",
    "simplex_head",
    "simplex_weights",
    "vit_jets",
    "zero_shot_probs",
]
