"""Parameter gradients of Ω (third-order derivatives of the tower) against float64 finite differences.

``d/dθ Ω`` flows through second-order jets, so it is a third-order derivative of the encoder.
Truth: a central difference (with one Richardson step) of Ω along a random parameter direction,
compared with the autograd directional derivative ⟨∇_θ Ω, v⟩.
"""

import pytest
import torch
from torch.func import functional_call

from advsimplex import ZeroShotModel, simplex_alignment
from helpers import layer_norm_encoder, micro_clip, unit_rows

M = 3


def cases():
    yield "layernorm-attention", layer_norm_encoder(seed=3), (3, 3, 3), 6
    yield "open_clip-micro-vit", micro_clip(seed=3).visual, (3, 8, 8), 8
    yield "open_clip-micro-vit-quickgelu", micro_clip(quick_gelu=True, seed=3).visual, (3, 8, 8), 8


CASES = {name: rest for name, *rest in cases()}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize(("variant", "order"), [("paper", 3), ("paper-cross", 3), ("taylor2", 3), ("taylor2", 4)])
def test_parameter_gradient_vs_fd(name, variant, order):
    enc, shape, dim = CASES[name]
    g = torch.Generator().manual_seed(7)
    x = torch.rand(2, *shape, generator=g, dtype=torch.float64)
    deltas = (torch.rand(2, M, *shape, generator=g, dtype=torch.float64) - 0.5) * (8 / 255)
    text = unit_rows(4, dim)
    weights = torch.rand(2, M - order + 2, generator=g, dtype=torch.float64)
    params = {k: v.detach() for k, v in enc.named_parameters()}
    direction = {k: torch.randn(v.shape, generator=g, dtype=torch.float64) for k, v in params.items()}

    def objective(p):
        encode = lambda y: functional_call(enc, p, (y,))
        model = ZeroShotModel.from_encoder(encode, text, 20.0)
        omega = simplex_alignment(model, x, deltas, variant=variant, kappa=1.5, order=order)
        return (weights * omega).sum()

    leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    grads = torch.autograd.grad(objective(leaves), list(leaves.values()))
    ad = sum((gr * direction[k]).sum() for gr, k in zip(grads, leaves)).item()

    def shifted(step):
        with torch.no_grad():
            plus = objective({k: v + step * direction[k] for k, v in params.items()})
            minus = objective({k: v - step * direction[k] for k, v in params.items()})
        return (plus - minus).item() / (2 * step)

    h = 1e-5  # Ω is strongly curved in θ: small steps, Richardson-corrected
    fd = (4 * shifted(h) - shifted(2 * h)) / 3
    assert abs(ad - fd) <= 1e-6 * abs(fd), (ad, fd, abs(ad - fd) / abs(fd))
