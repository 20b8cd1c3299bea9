"""Fused ops: registration, backend dispatch and autograd. One module per op."""

from .simplex_head import BACKENDS, simplex_head

__all__ = ["BACKENDS", "simplex_head"]
