"""advsimplex.protocol.scaling: the measurement behind the README's rule for λ against the logit scale s."""

import math

import pytest
import torch

from advsimplex.models import load_clip, save_clip
from advsimplex.protocol.scaling import measure

MICRO = "advsimplex-micro-vit"


@pytest.fixture(scope="module")
def micro_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("scaling") / "micro.safetensors"
    torch.manual_seed(0)
    model, _, _ = load_clip(MICRO)
    save_clip(path, model, MICRO)
    return str(path)


def test_small_scale_exponents_are_the_first_order_ones(micro_model):
    """Near uniform probabilities (small s) the alignment term and its parameter gradient grow like s² and the CE
    gradient like s, so the gradient ratio grows like s (the terms through the probabilities, one power of s
    more, vanish there); the fitted slopes must show it, and the reported ratio is the quotient of the norms."""
    result = measure(micro_model, dataset="cifar10", images=8, scales=[0.25, 0.5, 1.0], steps=3)
    rows = result["rows"]
    assert [r["logit_scale"] for r in rows] == [0.25, 0.5, 1.0]
    for r in rows:
        assert all(math.isfinite(r[k]) and r[k] > 0 for k in ("alignment", "grad_ce", "grad_alignment"))
        assert r["ratio"] == pytest.approx(r["grad_alignment"] / r["grad_ce"], rel=1e-12)
    e = result["exponents"]
    assert 1.7 < e["alignment"] < 2.3, e
    assert 0.8 < e["grad_ce"] < 1.2, e
    assert 1.7 < e["grad_alignment"] < 2.3, e
    assert 0.7 < e["ratio"] < 1.3, e
    assert e["ratio"] == pytest.approx(e["grad_alignment"] - e["grad_ce"], abs=1e-9)
