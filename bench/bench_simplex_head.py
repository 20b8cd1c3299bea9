"""simplex_head: every provider side by side (eager reference, torch.compile of it, cpp, triton, cuda).

Shapes are the issue's targets: CPU B=64, m=10, C=100, d=512; GPU B=256, m=10, C=1000, d=512 (fp32),
plus a bf16 GPU row and a class-count sweep. ``gemm`` is the projection onto T alone (its three
GEMMs, forward and backward): the bound that no implementation can beat. The main CPU and GPU shapes also
run with collapsed second-order jets (``form=collapsed`` in the shape: variant paper, one stream per simplex,
spec §7b: K = 1 + m + (m − 1) = 20 logit streams per row at m = 10 instead of 30).
"""

from __future__ import annotations

import functools

import pytest
import torch
from common import QUICK, bench_devices, measure, rounds

from advsimplex import backends, pair_index, simplex_head

AVAILABLE = backends()
PROVIDERS = ["reference", "compile", "cpp", "triton", "cuda", "gemm"]
MODES = ["fwd", "bwd", "fwd+bwd"]


def shapes(device: str) -> list[dict]:
    if device == "cpu":
        rows = [{"B": 64, "m": 10, "C": 100, "d": 512}, {"B": 64, "m": 10, "C": 100, "d": 512, "form": "collapsed"}]
        if not QUICK:
            rows += [{"B": 64, "m": 10, "C": 1000, "d": 512}, {"B": 64, "m": 5, "C": 100, "d": 512}]
        return rows
    rows = [{"B": 256, "m": 10, "C": 1000, "d": 512}, {"B": 256, "m": 10, "C": 1000, "d": 512, "form": "collapsed"}]
    if not QUICK:
        rows += [{"B": 256, "m": 10, "C": c, "d": 512} for c in (100, 10000, 32768)]
        rows += [{"B": 256, "m": m, "C": 1000, "d": 512} for m in (5, 20)]
    return rows


def cases():
    for device in bench_devices():
        for shape in shapes(device):
            bf16 = device == "cuda" and shape["C"] == 1000 and "form" not in shape
            dtypes = [torch.float32] + ([torch.bfloat16] if bf16 else [])
            for dtype in dtypes:
                for provider in PROVIDERS:
                    for mode in MODES:
                        yield pytest.param(
                            device,
                            shape,
                            dtype,
                            provider,
                            mode,
                            id=f"{device}-{provider}-{mode}-"
                            + "-".join(f"{k}{v}" for k, v in shape.items())
                            + f"-{str(dtype)[6:]}",
                        )


def second_streams(shape: dict, order: int = 3) -> int:
    """Second-order streams per row: vertex pairs, or simplices for collapsed jets."""
    m = shape["m"]
    return m - order + 2 if shape.get("form") == "collapsed" else pair_index(m, order).shape[0]


def make_inputs(shape: dict, dtype: torch.dtype, device: str, order: int = 3):
    g = torch.Generator().manual_seed(0)
    b, m, c, d = shape["B"], shape["m"], shape["C"], shape["d"]
    p = second_streams(shape, order)

    def rnd(*size, scale=1.0):
        return (scale * torch.randn(*size, generator=g)).to(device=device, dtype=dtype).requires_grad_()

    text = torch.nn.functional.normalize(torch.randn(c, d, generator=g), dim=-1).to(device=device, dtype=dtype)
    return {
        "f": rnd(b, d),
        "F1": rnd(b, m, d, scale=0.05),
        "F2": rnd(b, p, d, scale=0.05),
        "text_features": text.requires_grad_(),
        "labels": torch.randint(0, c, (b,), generator=g).to(device),
        "weights": torch.rand(b, m - order + 2, generator=g).to(device=device, dtype=dtype),
    }


@functools.cache
def compiled_reference(collapsed: bool):
    return torch.compile(
        lambda **kw: simplex_head(**kw, logit_scale=100.0, backend="reference", collapsed=collapsed), dynamic=False
    )


def provider_fn(provider: str, device: str, collapsed: bool = False):
    if provider == "compile":
        return compiled_reference(collapsed)
    if provider in ("cpp", "cuda", "triton", "reference"):
        if provider != "reference" and not AVAILABLE[provider][0]:
            pytest.skip(AVAILABLE[provider][1])
        if (provider == "cpp" and device != "cpu") or (provider in ("cuda", "triton") and device != "cuda"):
            pytest.skip(f"{provider} does not run on {device}")
        return lambda **kw: simplex_head(**kw, logit_scale=100.0, backend=provider, collapsed=collapsed)
    raise ValueError(provider)


def traffic_bytes(shape: dict, dtype: torch.dtype, mode: str, order: int = 3) -> int:
    """Memory traffic of the fused head's algorithm, each tensor read or written once per use.

    Forward: read f, F1, F2 (B·K·d, input dtype) and T; write and read back Ns (B·K·d) and Z (B·K·C)
    around the GEMM (fp32); write loss, Ω and the row statistics. Backward: read Z and the statistics,
    write dZ, read it twice (the dN and dT GEMMs), read Ns, write and read gN, read f, F1, F2, write
    their gradients and dT. This is the floor of the two-pass design, not of every possible design.
    """
    b, m, c, d = shape["B"], shape["m"], shape["C"], shape["d"]
    p = second_streams(shape, order)
    k, s, es = 1 + m + p, m - order + 2, torch.finfo(dtype).bits // 8
    inputs = b * k * d * es + c * d * es + b * 8 + b * s * es
    fwd = inputs + 4 * (2 * b * k * d + 2 * b * k * c + b + b * s + b * (k + p))
    bwd = 4 * (b * k * c + b * (k + p) + 3 * b * k * c + b * k * d + 2 * b * k * d) + 2 * b * k * d * es + c * d * es
    return {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}[mode]


def gemm_inputs(x: dict):
    b, m, d = x["F1"].shape
    k = 1 + m + x["F2"].shape[1]
    normalized = torch.randn(b * k, d, device=x["f"].device, dtype=torch.float32, requires_grad=True)
    return normalized, x["text_features"].detach().float().requires_grad_()


@pytest.mark.parametrize(("device", "shape", "dtype", "provider", "mode"), list(cases()))
def test_simplex_head(benchmark, device, shape, dtype, provider, mode):
    x = make_inputs(shape, dtype, device)
    label = "x".join(f"{k}={v}" for k, v in shape.items())
    if provider == "gemm":  # Z = N Tᵀ; dN = dZ T; dT = dZᵀ N
        normalized, text = gemm_inputs(x)
        fwd = lambda: normalized @ text.t()
        seed = fwd().detach()
        dz = torch.randn_like(seed)
        fn = {
            "fwd": fwd,
            "bwd": lambda: (dz @ text, dz.t() @ normalized),
            "fwd+bwd": lambda: (fwd(), dz @ text, dz.t() @ normalized),
        }[mode]
    else:
        head = provider_fn(provider, device, collapsed=shape.get("form") == "collapsed")
        if mode == "fwd":
            fn = lambda: head(**x)
        elif mode == "fwd+bwd":
            fn = lambda: head(**x).sum().backward()
        else:
            loss = head(**x).sum()
            fn = lambda: loss.backward(retain_graph=True)
    traffic = None if provider == "gemm" else traffic_bytes(shape, dtype, mode)
    measure(benchmark, fn, op="simplex_head", provider=provider, mode=mode, shape=label, dtype=dtype, device=device,
            rounds=rounds(20), bytes_moved=traffic)  # fmt: skip
