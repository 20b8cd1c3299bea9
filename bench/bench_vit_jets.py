"""vit_jets: fast Taylor-mode jets of open_clip ViT towers vs the generic torch.func path.

Modes ``fwd`` / ``fwd+bwd`` time the embedding jets (m = 10, Q = 3: 10 first-order and 19 pair streams) of
a tower at the clean images; ``fwd+bwd`` adds the backward pass of a fixed random linear functional of the
jets to the tower's parameters (what training does: third-order derivatives of the tower). Providers:

- ``generic``: :func:`advsimplex.embedding_jets` (torch.func nested jvp vmapped over the pair streams);
- ``fast``: :func:`advsimplex.vit_jets` with the PyTorch rules; ``fast-ckpt``: the same with per-block
  activation checkpointing; ``fast-triton``: the fused Triton rules (CUDA only).

Shapes: CPU: the ``micro`` ViT of the tests (8×8 pixels, width 16, 2 blocks) and a ``small`` ViT (32×32,
patch 8, width 64, 4 blocks) at batch 8; CUDA: ViT-B/32 at batch 32 (every provider) and 128 (fast
providers). Full training steps (AdvSimplex with fast or generic jets vs TeCoA vs ``sampled``) are in
``bench_train_step.py``.
"""

from __future__ import annotations

import functools

import pytest
import torch
from common import QUICK, bench_devices, measure, rounds

open_clip = pytest.importorskip("open_clip")

from advsimplex import embedding_jets, pair_index, vit_jets  # noqa: E402
from advsimplex.zeroshot import preprocess_stats  # noqa: E402

M, ORDER = 10, 3
TOWERS = {
    "micro": dict(image_size=8, patch_size=4, width=16, layers=2, heads=2, mlp_ratio=2.0, output_dim=8),
    "small": dict(image_size=32, patch_size=8, width=64, layers=4, heads=4, mlp_ratio=4.0, output_dim=32),
    "ViT-B-32": dict(image_size=224, patch_size=32, width=768, layers=12, heads=12, mlp_ratio=4.0, output_dim=512),
}
PROVIDERS = ["generic", "fast", "fast-ckpt", "fast-triton"]


def shapes(device: str) -> list[dict]:
    if device == "cpu":
        rows = [{"tower": "micro", "B": 8}]
        return rows if QUICK else [*rows, {"tower": "small", "B": 8}]
    return [{"tower": "ViT-B-32", "B": 32}] + ([] if QUICK else [{"tower": "ViT-B-32", "B": 128}])


def cases():
    for device in bench_devices():
        for shape in shapes(device):
            label = f"{device}-{shape['tower']}-B{shape['B']}"
            for provider in PROVIDERS:
                for mode in ("fwd", "fwd+bwd"):
                    yield pytest.param(device, shape, provider, mode, id=f"{label}-{provider}-{mode}")


@functools.cache
def tower(name: str, device: str):
    from open_clip.transformer import VisionTransformer

    torch.manual_seed(0)
    return VisionTransformer(**TOWERS[name]).to(device).train()


def skip_reason(device: str, shape: dict, provider: str) -> str | None:
    if provider == "fast-triton" and device != "cuda":
        return "the Triton rules are timed on CUDA only (the CPU interpreter is a correctness tool)"
    if device == "cuda" and shape["B"] > 32 and provider == "generic":
        return "generic jets at batch 128 exceed the memory of one GPU (measured at batch 32)"
    return None


def inputs(shape: dict, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    size = TOWERS[shape["tower"]]["image_size"]
    g = torch.Generator().manual_seed(0)
    x = torch.rand(shape["B"], 3, size, size, generator=g)
    deltas = (torch.rand(shape["B"], M, 3, size, size, generator=g) - 0.5) * (4 / 255)
    return x.to(device), deltas.to(device)


def jet_fn(provider: str, module, x: torch.Tensor, deltas: torch.Tensor):
    """A zero-argument callable computing the jets of ``module`` (pixels normalised inside) by ``provider``."""
    pairs = pair_index(M, ORDER)
    mean, std = preprocess_stats(module)
    if provider == "generic":
        m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
        s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
        return lambda: embedding_jets(lambda px: module((px - m) / s), x, deltas, pairs)
    kwargs = {"fast": {}, "fast-ckpt": {"checkpoint": True}, "fast-triton": {"kernels": "triton"}}[provider]
    return lambda: vit_jets(module, x, deltas, pairs, mean=mean, std=std, **kwargs)


def backward_fn(jets, module):
    """A callable running the jets and the backward pass of a fixed random linear functional of them."""
    probe = jets()
    g = torch.Generator().manual_seed(1)
    weights = [torch.randn(t.shape, generator=g).to(t) for t in (probe.value, probe.first, probe.second)]
    del probe
    params = list(module.parameters())

    def run():
        out = jets()
        total = sum((w * t).sum() for w, t in zip(weights, (out.value, out.first, out.second)))
        torch.autograd.grad(total, params)

    return run


@pytest.mark.parametrize(("device", "shape", "provider", "mode"), list(cases()))
def test_vit_jets(benchmark, device, shape, provider, mode):
    reason = skip_reason(device, shape, provider)
    if reason:
        pytest.skip(reason)
    module = tower(shape["tower"], device)
    x, deltas = inputs(shape, device)
    jets = jet_fn(provider, module, x, deltas)
    fn = jets if mode == "fwd" else backward_fn(jets, module)
    label = f"{shape['tower']}xB={shape['B']}xm={M}"
    measure(benchmark, fn, op="vit_jets", provider=provider, mode=mode, shape=label, dtype=torch.float32,
            device=device, rounds=rounds(10), warmup=1)  # fmt: skip
