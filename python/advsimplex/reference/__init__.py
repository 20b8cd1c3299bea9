"""The AdvSimplex mathematics in pure PyTorch (float64-capable, differentiable).

This is the one place where the formulas of ``docs/advsimplex-math.md`` live:

- :mod:`.moments`    Dirichlet moments and Theorem 3.1 (§3)
- :mod:`.simplices`  simplex enumeration and the canonical vertex pairs (§3, §4)
- :mod:`.head`       zero-shot head and its chain rule from embedding jets (§4)
- :mod:`.alignment`  closed-form Ω per simplex for each variant (§5)
- :mod:`.weights`    simplex weights ω of the training loss (§6)
- :mod:`.plan`       second-order jet plans: pair streams or collapsed simplex streams (§4, §7b)
- :mod:`.jet_rules` second-order jet rules of LayerNorm, GELU/QuickGELU and softmax (§7, §7b)

Fused kernels (``advsimplex.ops``) and fast jets are tested against this package.
"""

from .alignment import (
    CLOSED_FORM_VARIANTS,
    VARIANTS,
    closed_form_alignment,
    simplex_expectations,
    variant_coefficients,
)
from .head import (
    collapsed_alignment,
    collapsed_head_reference,
    collapsed_probability_jets,
    logit_jets,
    normalized_jets,
    probability_jets,
    simplex_head_reference,
)
from .jet_rules import GELU_KINDS
from .moments import dirichlet_moment, moment_tensor, second_moment
from .plan import JetPlan, collapse_matrix
from .simplices import check_order, num_pairs, num_simplices, pair_index, simplex_pairs, simplex_vertices
from .weights import WEIGHTINGS, simplex_weights

__all__ = [
    "CLOSED_FORM_VARIANTS",
    "GELU_KINDS",
    "VARIANTS",
    "WEIGHTINGS",
    "JetPlan",
    "check_order",
    "closed_form_alignment",
    "collapse_matrix",
    "collapsed_alignment",
    "collapsed_head_reference",
    "collapsed_probability_jets",
    "dirichlet_moment",
    "logit_jets",
    "moment_tensor",
    "normalized_jets",
    "num_pairs",
    "num_simplices",
    "pair_index",
    "probability_jets",
    "second_moment",
    "simplex_expectations",
    "simplex_head_reference",
    "simplex_pairs",
    "simplex_vertices",
    "simplex_weights",
    "variant_coefficients",
]
