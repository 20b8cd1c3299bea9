"""Embedding jets: directional derivatives of an image encoder at the clean images (math spec §4, §7, §7b).

- :mod:`.options`         :class:`JetOptions`, the one option object of the jets (mode, rules, memory)
- :mod:`.generic`         any encoder callable, torch.func nested forward mode (the oracle)
- :mod:`.vit`             open_clip ViT towers, one Taylor-mode forward carrying every stream (fast)
- :mod:`.decompositions`  elementary layer_norm/batch_norm/attention that keep derivatives correct

Which second-order streams a jet carries is a :class:`advsimplex.reference.JetPlan`; the jet rules of the
nonlinearities live in :mod:`advsimplex.reference.jet_rules` (PyTorch) and :mod:`advsimplex.ops.jet_rules`
(fused kernels). :class:`advsimplex.ZeroShotModel` decides which path serves a model.
"""

from .decompositions import JetSafeMode
from .generic import EmbeddingJets, embedding_jets
from .options import JET_MODES, FastJetsFallbackWarning, JetOptions
from .vit import UnsupportedTowerError, ViTTower, vit_jets, vit_support

__all__ = [
    "JET_MODES",
    "EmbeddingJets",
    "FastJetsFallbackWarning",
    "JetOptions",
    "JetSafeMode",
    "UnsupportedTowerError",
    "ViTTower",
    "embedding_jets",
    "vit_jets",
    "vit_support",
]
