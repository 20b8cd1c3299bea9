"""Fused ops: registration, backend dispatch and autograd. One module per op."""

from .jet_rules import jet_gelu, jet_layer_norm, jet_softmax
from .simplex_head import BACKENDS, simplex_head

__all__ = ["BACKENDS", "jet_gelu", "jet_layer_norm", "jet_softmax", "simplex_head"]
