"""Embedding jets: directional derivatives of an image encoder at the clean images.

- :mod:`.generic`         any encoder callable, torch.func nested forward mode (the oracle)
- :mod:`.decompositions`  elementary layer_norm/batch_norm/attention that keep derivatives correct
"""

from .decompositions import JetSafeMode
from .generic import EmbeddingJets, embedding_jets

__all__ = ["EmbeddingJets", "JetSafeMode", "embedding_jets"]
