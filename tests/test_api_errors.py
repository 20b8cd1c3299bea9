"""Bad inputs to the public API give clear errors naming the argument, shape, dtype or device at fault."""

import pytest
import torch

from advsimplex import ZeroShotModel, pair_index, simplex_alignment, simplex_head
from helpers import micro_clip, unit_rows

ENC = micro_clip(seed=0).visual.double()
X = torch.rand(2, 3, 8, 8, dtype=torch.float64)
DELTAS = torch.zeros(2, 3, 3, 8, 8, dtype=torch.float64)
TEXT = unit_rows(4, 8)


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"deltas": DELTAS[:1]}, ValueError, r"deltas must have shape \(B, m, \*x.shape\[1:\]\)"),
        ({"deltas": DELTAS[:, :, :, :4]}, ValueError, r"deltas must have shape"),
        ({"deltas": DELTAS.float()}, TypeError, r"deltas \(torch.float32\) must have the dtype of x"),
        ({"deltas": DELTAS[:, :1]}, ValueError, r"m=1 steps has no simplex of order 3"),
        ({"order": 4, "deltas": DELTAS[:, :2]}, ValueError, "need m >= order - 1 = 3"),
        ({"text_features": 3 * TEXT}, ValueError, "text_features must hold unit-norm rows"),
        ({"text_features": unit_rows(4, 5)}, ValueError, "5-dimensional|embeddings"),
        ({"x": X.to("meta")}, ValueError, "x is on meta"),
        ({"x": X.long()}, TypeError, "x must have a floating dtype"),
        ({"variant": "exact"}, ValueError, "variant must be one of"),
        ({"logit_scale": 0.0}, ValueError, "logit_scale must be a positive number"),
    ],
)
def test_simplex_alignment_bad_inputs(change, error, match):
    args = {"x": X, "deltas": DELTAS, "text_features": TEXT, "logit_scale": 10.0, "variant": "paper", "order": 3}
    args.update(change)
    with pytest.raises(error, match=match):
        model = ZeroShotModel.from_tower(ENC, args.pop("text_features"), args.pop("logit_scale"))
        simplex_alignment(model, args.pop("x"), args.pop("deltas"), **args)


def head_args(b=2, m=4, d=8, c=5, order=3, dtype=torch.float32):
    p = pair_index(m, order).shape[0]
    g = torch.Generator().manual_seed(0)
    return {
        "f": torch.randn(b, d, generator=g, dtype=dtype),
        "F1": torch.randn(b, m, d, generator=g, dtype=dtype),
        "F2": torch.randn(b, p, d, generator=g, dtype=dtype),
        "text_features": unit_rows(c, d, dtype=dtype),
        "labels": torch.tensor([0, c - 1][:b] + [0] * max(0, b - 2)),
        "weights": torch.ones(b, m - order + 2, dtype=dtype),
    }


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"F1": torch.zeros(2, 4, 7)}, ValueError, r"F1 must have shape \(B, m, d\)"),
        ({"F2": torch.zeros(2, 6, 8)}, ValueError, r"F2 must have shape \(B, P, d\) with P = 7"),
        ({"weights": torch.ones(2, 4)}, ValueError, r"weights must have shape \(B, S\)"),
        ({"labels": torch.tensor([0, 5])}, ValueError, r"labels must lie in \[0, C\) = \[0, 5\)"),
        ({"labels": torch.tensor([0.0, 1.0])}, TypeError, "labels must be an integer tensor"),
        ({"f": torch.zeros(2, 8, dtype=torch.float64)}, TypeError, "f is torch.float64"),
        ({"text_features": 2 * unit_rows(5, 8, dtype=torch.float32)}, ValueError, "unit-norm"),
        ({"weights": torch.ones(2, 3, device="meta")}, ValueError, "weights on meta"),
        ({"F1": torch.zeros(2, 1, 8)}, ValueError, "m=1 steps has no simplex"),
    ],
)
def test_simplex_head_bad_inputs(change, error, match):
    args = head_args()
    args.update(change)
    with pytest.raises(error, match=match):
        simplex_head(**args, logit_scale=10.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"variant": "sampled"}, "variant must be one of"), ({"kappa": -1.0}, "kappa must be >= 0"),
     ({"backend": "tpu"}, "backend must be one of"), ({"logit_scale": -2.0}, "logit_scale")],
)  # fmt: skip
def test_simplex_head_bad_options(kwargs, match):
    options = {"logit_scale": 10.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        simplex_head(**head_args(), **options)
