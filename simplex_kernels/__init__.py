"""Triton kernels of advsimplex, one module per op: the source folder ``simplex_kernels/<op>.py``, installed and
imported as ``advsimplex.triton_kernels.<op>`` (setup.py maps the folder into the package namespace).

Importing this package does not import Triton; each kernel module does, lazily, when its op is dispatched to
the ``triton`` backend. On CPU the kernels run under ``TRITON_INTERPRET=1``. The modules import only torch and
Triton: the ops layer (``advsimplex.ops``) checks the arguments and passes in every constant the kernels need.
"""
