"""vit_jets: fast Taylor-mode jets of open_clip ViT towers vs the generic torch.func path, pair vs collapsed.

Modes ``fwd`` / ``fwd+bwd`` time the embedding jets (m = 10) of a tower at the clean images; ``fwd+bwd`` adds
the backward pass of a fixed random linear functional of the jets to the tower's parameters (what training
does: third-order derivatives of the tower). Second-order streams per plan (spec §7b): ``pairs`` carries one
per vertex pair (19 at Q = 3, 27 at Q = 4), ``collapsed`` one per simplex (9 at Q = 3, 8 at Q = 4). Providers:

- ``generic``: :func:`advsimplex.embedding_jets` (torch.func nested jvp vmapped over the pair streams);
- ``pairs-<rules>`` / ``collapsed-<rules>``: :func:`advsimplex.vit_jets` with that plan and jet-rule backend
  (``reference`` PyTorch rules, ``cpp`` C++ CPU kernels, ``triton`` fused Triton kernels on CUDA);
  ``pairs-reference`` is the fast path as it was before collapsed jets and C++ rules;
- ``collapsed-<rules>-ckpt``: the same with per-block activation checkpointing.

Shapes: CPU: the ``micro`` ViT of the tests (8×8 pixels, width 16, 2 blocks) and the demo tower ``demo``
(``advsimplex-demo-vit``: 32×32, patch 8, width 96, 4 blocks) at batch 16, Q = 3 and 4; CUDA: ViT-B/32 at
batch 32 (every provider) and 128 (fast providers). Full training steps are in ``bench_train_step.py``.
"""

from __future__ import annotations

import functools

import pytest
import torch
from common import QUICK, bench_devices, measure, rounds

open_clip = pytest.importorskip("open_clip")

from advsimplex import JetOptions, JetPlan, embedding_jets, vit_jets  # noqa: E402
from advsimplex.zeroshot import preprocess_stats  # noqa: E402

M = 10
TOWERS = {
    "micro": dict(image_size=8, patch_size=4, width=16, layers=2, heads=2, mlp_ratio=2.0, output_dim=8),
    "demo": dict(image_size=32, patch_size=8, width=96, layers=4, heads=3, mlp_ratio=2.0, output_dim=64),
    "ViT-B-32": dict(image_size=224, patch_size=32, width=768, layers=12, heads=12, mlp_ratio=4.0, output_dim=512),
}
PROVIDERS = ["generic", "pairs-reference", "pairs-cpp", "collapsed-reference", "collapsed-cpp", "collapsed-cpp-ckpt",
             "pairs-triton", "collapsed-triton"]  # fmt: skip


def shapes(device: str) -> list[dict]:
    if device == "cpu":
        rows = [{"tower": "micro", "B": 8, "Q": 3}]
        return rows if QUICK else [*rows, {"tower": "demo", "B": 16, "Q": 3}, {"tower": "demo", "B": 16, "Q": 4}]
    return [{"tower": "ViT-B-32", "B": 32, "Q": 3}] + ([] if QUICK else [{"tower": "ViT-B-32", "B": 128, "Q": 3}])


def cases():
    for device in bench_devices():
        for shape in shapes(device):
            label = f"{device}-{shape['tower']}-B{shape['B']}-Q{shape['Q']}"
            for provider in PROVIDERS:
                for mode in ("fwd", "fwd+bwd"):
                    yield pytest.param(device, shape, provider, mode, id=f"{label}-{provider}-{mode}")


@functools.cache
def tower(name: str, device: str):
    from open_clip.transformer import VisionTransformer

    torch.manual_seed(0)
    return VisionTransformer(**TOWERS[name]).to(device).train()


def skip_reason(device: str, shape: dict, provider: str) -> str | None:
    if "triton" in provider and device != "cuda":
        return "the Triton rules are timed on CUDA only (the CPU interpreter is a correctness tool)"
    if "cpp" in provider and device != "cpu":
        return "the C++ rules are CPU kernels"
    if device == "cuda" and shape["B"] > 32 and provider == "generic":
        return "generic jets at batch 128 exceed the memory of one GPU (measured at batch 32)"
    if device == "cpu" and shape["tower"] != "micro" and provider == "generic" and shape["Q"] == 4:
        return "generic jets: measured at Q = 3 only (minutes per call)"
    return None


def inputs(shape: dict, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    size = TOWERS[shape["tower"]]["image_size"]
    g = torch.Generator().manual_seed(0)
    x = torch.rand(shape["B"], 3, size, size, generator=g)
    deltas = (torch.rand(shape["B"], M, 3, size, size, generator=g) - 0.5) * (4 / 255)
    return x.to(device), deltas.to(device)


def jet_fn(provider: str, module, x: torch.Tensor, deltas: torch.Tensor, order: int):
    """A zero-argument callable computing the jets of ``module`` (pixels normalised inside) by ``provider``."""
    mean, std = preprocess_stats(module)
    if provider == "generic":
        m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
        s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
        return lambda: embedding_jets(lambda px: module((px - m) / s), x, deltas, JetPlan.pairwise(M, order))
    kind, rules, *rest = provider.split("-")
    plan = JetPlan.collapsed(M, order) if kind == "collapsed" else JetPlan.pairwise(M, order, x.device)
    options = JetOptions(rules=rules, checkpoint=bool(rest))
    return lambda: vit_jets(module, x, deltas, plan, mean=mean, std=std, options=options)


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
    jets = jet_fn(provider, module, x, deltas, shape["Q"])
    fn = jets if mode == "fwd" else backward_fn(jets, module)
    label = f"{shape['tower']}xB={shape['B']}xm={M}xQ={shape['Q']}"
    measure(benchmark, fn, op="vit_jets", provider=provider, mode=mode, shape=label, dtype=torch.float32,
            device=device, rounds=rounds(10), warmup=1)  # fmt: skip
