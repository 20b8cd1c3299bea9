"""jet_rules: the second-order jet rules of GELU, LayerNorm and softmax: PyTorch reference vs fused kernels.

Shapes are those of the fast ViT jets (m = 10, Q = 3) in ViT-B/32 (50 tokens, width 768, MLP 3072, 12 heads):
LayerNorm (S, B, 50, 768), GELU (S, B, 50, 3072), softmax (B, 12, S, 50, 50), for the pair plan (S = 30 streams)
and the collapsed plan of the same m and Q (S = 20). CPU: batch 2, ``reference`` vs the C++ kernels (``cpp``);
CUDA: batch 128 (and 32), ``reference`` vs ``triton`` (the Triton interpreter on CPU is a correctness tool, not
timed). ``bytes_moved`` is the kernels' traffic lower bound (every stream read and written once, the first-order
streams re-read for each second-order stream).
"""

from __future__ import annotations

import pytest
import torch
from common import QUICK, bench_devices, measure, rounds

from advsimplex.ops import jet_gelu, jet_layer_norm, jet_softmax
from advsimplex.reference import JetPlan

M, ORDER = 10, 3
PROVIDERS = {"cpu": ["reference", "cpp"], "cuda": ["reference", "triton"]}
RULES = ["gelu", "quickgelu", "layer_norm", "softmax"]
PLANS = ["pairs", "collapsed"]


def shapes(device: str) -> list[int]:
    return [2] if device == "cpu" else ([128] if QUICK else [32, 128])


def cases():
    for device in bench_devices():
        for batch in shapes(device):
            dtypes = [torch.float32] + ([torch.bfloat16] if device == "cuda" else [])
            for dtype in dtypes:
                for plan in PLANS:
                    for rule in RULES:
                        for provider in PROVIDERS[device]:
                            for mode in ("fwd", "fwd+bwd"):
                                name = f"{device}-{rule}-{plan}-{provider}-{mode}-B{batch}-{str(dtype)[6:]}"
                                yield pytest.param(device, batch, dtype, plan, rule, provider, mode, id=name)


def make_plan(kind: str, device: str) -> JetPlan:
    return JetPlan.collapsed(M, ORDER) if kind == "collapsed" else JetPlan.pairwise(M, ORDER, device=device)


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


@pytest.mark.parametrize(("device", "batch", "dtype", "plan_kind", "rule", "provider", "mode"), list(cases()))
def test_jet_rules(benchmark, device, batch, dtype, plan_kind, rule, provider, mode):
    plan = make_plan(plan_kind, device)
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
    from advsimplex.triton_kernels.jet_rules import bytes_moved

    order = ORDER if plan.is_collapsed else None
    traffic = bytes_moved(grouped, M, order=order)
    if mode != "fwd":
        traffic += bytes_moved(grouped, M, backward=True, order=order)
    label = f"{rule}x{plan_kind}xB={batch}xS={plan.size}"
    measure(benchmark, fn, op="jet_rules", provider=provider, mode=mode, shape=label, dtype=dtype, device=device,
            rounds=rounds(10), bytes_moved=traffic)  # fmt: skip
