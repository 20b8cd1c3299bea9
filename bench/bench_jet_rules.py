"""jet_rules: the second-order jet rules of GELU, LayerNorm and softmax, PyTorch reference vs fused Triton.

Shapes are those of the fast ViT jets (m = 10, Q = 3: S = 30 streams) in ViT-B/32 at batch 128 on CUDA
(LayerNorm (S, B, 50, 768), GELU (S, B, 50, 3072), softmax (B, 12, S, 50, 50)); on CPU the same at
batch 2 for the reference only (the Triton interpreter is a correctness tool, not timed). ``bytes_moved``
is the kernels' traffic lower bound (every stream read and written once, pair streams re-read twice).
"""

from __future__ import annotations

import pytest
import torch
from common import QUICK, bench_devices, measure, rounds

from advsimplex import pair_index
from advsimplex.ops import jet_gelu, jet_layer_norm, jet_softmax
from advsimplex.reference import JetPlan

M, ORDER = 10, 3
PROVIDERS = ["reference", "triton"]
RULES = ["gelu", "quickgelu", "layer_norm", "softmax"]


def shapes(device: str) -> list[int]:
    return [2] if device == "cpu" else ([128] if QUICK else [32, 128])


def cases():
    for device in bench_devices():
        for batch in shapes(device):
            dtypes = [torch.float32] + ([torch.bfloat16] if device == "cuda" else [])
            for dtype in dtypes:
                for rule in RULES:
                    for provider in PROVIDERS:
                        for mode in ("fwd", "fwd+bwd"):
                            name = f"{device}-{rule}-{provider}-{mode}-B{batch}-{str(dtype)[6:]}"
                            yield pytest.param(device, batch, dtype, rule, provider, mode, id=name)


def make(rule: str, batch: int, plan: JetPlan, dtype: torch.dtype, device: str):
    """(stacked input, function of it) for one rule at ViT-B/32 sizes."""
    s, tokens, width, heads = plan.size, 50, 768, 12
    g = torch.Generator().manual_seed(0)
    if rule == "softmax":
        x = torch.randn(batch, heads, s, tokens, tokens, generator=g)
        return x, lambda t, backend: jet_softmax(t, plan, dim=2, backend=backend)
    if rule == "layer_norm":
        x = torch.randn(s, batch, tokens, width, generator=g)
        weight = torch.rand(width, generator=g).to(device, dtype).requires_grad_()
        bias = torch.randn(width, generator=g).to(device, dtype).requires_grad_()
        return x, lambda t, backend: jet_layer_norm(t, plan, weight, bias, 1e-5, backend=backend)
    x = torch.randn(s, batch, tokens, 4 * width, generator=g)
    kind = "quick" if rule == "quickgelu" else "none"
    return x, lambda t, backend: jet_gelu(t, plan, kind, backend=backend)


@pytest.mark.parametrize(("device", "batch", "dtype", "rule", "provider", "mode"), list(cases()))
def test_jet_rules(benchmark, device, batch, dtype, rule, provider, mode):
    if provider == "triton" and device != "cuda":
        pytest.skip("the Triton rules are timed on CUDA only (the CPU interpreter is a correctness tool)")
    plan = JetPlan.from_pairs(pair_index(M, ORDER), M, device=device)
    x, op = make(rule, batch, plan, dtype, device)
    x = x.to(device, dtype)
    grouped = x.movedim(2, 1) if rule == "softmax" else x.movedim(0, 1)  # (G, S, ...): the kernels' view
    grouped = grouped.reshape(grouped.shape[0], plan.size, -1)
    with torch.no_grad():  # tangents smaller than the primal, as in the jets
        (x[:, :, 1:] if rule == "softmax" else x[1:]).mul_(0.1)
    x.requires_grad_(mode != "fwd")
    if mode == "fwd":
        fn = lambda: op(x, provider)
    else:
        grad = torch.randn_like(x)
        fn = lambda: torch.autograd.grad(op(x, provider), x, grad)
    from simplex_kernels.jet_rules import bytes_moved

    traffic = bytes_moved(grouped, M) + (bytes_moved(grouped, M, backward=True) if mode != "fwd" else 0)
    label = f"{rule}xB={batch}xS={plan.size}"
    measure(benchmark, fn, op="jet_rules", provider=provider, mode=mode, shape=label, dtype=dtype, device=device,
            rounds=rounds(10), bytes_moved=traffic)  # fmt: skip
