"""Embedding jets: directional derivatives of an image encoder at the clean images.

- :mod:`.generic`         any encoder callable, torch.func nested forward mode (the oracle)
- :mod:`.vit`             open_clip ViT towers, one Taylor-mode forward carrying every stream (fast)
- :mod:`.encoders`        what ``encode`` means (callable or open_clip model) and fast/generic dispatch
- :mod:`.decompositions`  elementary layer_norm/batch_norm/attention that keep derivatives correct
"""

from .decompositions import JetSafeMode
from .encoders import FastJetsFallbackWarning, JetEncoder, encoder_jets, resolve_encoder
from .generic import EmbeddingJets, embedding_jets
from .vit import UnsupportedTowerError, ViTTower, vit_jets, vit_support

__all__ = [
    "EmbeddingJets",
    "FastJetsFallbackWarning",
    "JetEncoder",
    "JetSafeMode",
    "UnsupportedTowerError",
    "ViTTower",
    "embedding_jets",
    "encoder_jets",
    "resolve_encoder",
    "vit_jets",
    "vit_support",
]
