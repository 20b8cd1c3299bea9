"""Triton kernels of advsimplex, one module per op (``simplex_kernels/<op>.py``).

Importing this package does not import Triton; each kernel module does, lazily, when its op
is dispatched to the ``triton`` backend. On CPU the kernels run under ``TRITON_INTERPRET=1``.
"""
