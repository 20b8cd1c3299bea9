"""Fast Taylor-mode jets of open_clip ViT towers (advsimplex.jets.vit) and their integration.

Truth: float64 central finite differences (tests/helpers.py) and the generic torch.func path (itself
FD-tested in test_jets.py). Towers: the tiny open_clip configs ``advsimplex-micro-vit[-quickgelu]`` and
directly built ``VisionTransformer`` variants (LayerScale, ``avg`` pooling, ``final_ln_after_pool``,
no ``ln_pre``, tanh GELU, output tokens, visual prompts), all with random float64 weights.
"""

from __future__ import annotations

import functools
import warnings

import pytest
import torch
from torch import nn

import advsimplex
from advsimplex import AdvSimplexLoss, JetOptions, ZeroShotModel, embedding_jets, pair_index, simplex_alignment
from advsimplex.jets import (
    FastJetsFallbackWarning,
    UnsupportedTowerError,
    vit_jets,
    vit_support,
)
from advsimplex.jets import vit as vit_module
from advsimplex.vpt import PromptedVisionTransformer
from advsimplex.zeroshot import preprocess_stats
from helpers import fd_jets, micro_clip, rel_err, unit_rows

M = 4


def randomize(module: nn.Module, seed: int = 0) -> nn.Module:
    """LayerNorm affine parameters away from (1, 0) and LayerScale away from its constant init."""
    from open_clip.transformer import LayerScale

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, nn.LayerNorm):
                sub.weight.copy_(torch.rand(sub.weight.shape, generator=g, dtype=sub.weight.dtype) + 0.5)
                sub.bias.copy_(0.4 * torch.rand(sub.bias.shape, generator=g, dtype=sub.bias.dtype) - 0.2)
            if isinstance(sub, LayerScale):
                sub.gamma.copy_(torch.rand(sub.gamma.shape, generator=g, dtype=sub.gamma.dtype) + 0.25)
    return module


def vit(seed: int = 0, **kwargs) -> nn.Module:
    from open_clip.transformer import VisionTransformer

    torch.manual_seed(seed)
    cfg = dict(image_size=8, patch_size=4, width=16, layers=2, heads=2, mlp_ratio=2.0, output_dim=8)
    cfg.update(kwargs)
    return randomize(VisionTransformer(**cfg).double().eval(), seed)


def prompted(pool: str) -> nn.Module:
    tower = micro_clip(seed=5).visual
    tower.pool_type = pool
    torch.manual_seed(1)
    return PromptedVisionTransformer(tower, num_prompts=3, init_std=0.5).eval()


TOWERS = {
    "micro-gelu": lambda: micro_clip().visual,
    "micro-quickgelu": lambda: micro_clip(quick_gelu=True).visual,
    "layerscale-avg": lambda: vit(1, ls_init_value=0.5, pool_type="avg"),
    "final-ln-after-pool-avg": lambda: vit(2, pool_type="avg", final_ln_after_pool=True),
    "final-ln-after-pool-tok": lambda: vit(3, final_ln_after_pool=True, heads=4),
    "no-ln-pre-tanh-gelu": lambda: vit(4, no_ln_pre=True, act_layer=functools.partial(nn.GELU, approximate="tanh")),
    "odd-shapes": lambda: vit(6, image_size=(6, 9), patch_size=3, width=12, heads=3, layers=3, output_dim=5),
    "vpt-tok": lambda: prompted("tok"),
    "vpt-avg": lambda: prompted("avg"),
}


@functools.cache
def tower(name: str) -> nn.Module:
    return TOWERS[name]()


def inputs(module: nn.Module, batch: int = 2, m: int = M, seed: int = 0, dtype=torch.float64):
    h, w = getattr(module, "image_size", (8, 8))
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, h, w, generator=g, dtype=dtype)
    deltas = (torch.rand(batch, m, 3, h, w, generator=g, dtype=dtype) - 0.5) * (4 / 255)
    return x, deltas


def pixel_fn(module: nn.Module):
    """The tower as a function of pixels in [0, 1] (its preprocessing normalisation first)."""
    mean, std = (torch.tensor(v, dtype=torch.float64).view(1, 3, 1, 1) for v in preprocess_stats(module))
    return lambda px: module((px - mean) / std)


def fast(module: nn.Module, x, deltas, pairs, **options):
    mean, std = preprocess_stats(module)
    return vit_jets(module, x, deltas, pairs, mean=mean, std=std, options=JetOptions(**options))


@pytest.mark.parametrize("name", list(TOWERS))
def test_fast_jets_equal_generic_and_fd(name):
    module = tower(name)
    x, deltas = inputs(module)
    orders = (4, 3) if name.startswith("micro") else (3,)
    for order in orders:  # order 3 last: `got` below holds its jets
        pairs = pair_index(M, order)
        got = fast(module, x, deltas, pairs)
        ref = embedding_jets(pixel_fn(module), x, deltas, pairs)
        assert got.first.shape == (2, M, ref.value.shape[1]) and got.second.shape == (2, len(pairs), ref.value.shape[1])
        assert rel_err(got.value, ref.value) < 1e-13
        assert rel_err(got.first, ref.first) < 1e-12
        assert rel_err(got.second, ref.second) < 1e-12
    # FD on vertices 0, 1 and their pairs (0,0), (0,1), (1,1) = the first three of pair_index(M, 3); steps
    # of h·δ/std (std ≈ 0.27): the O(h⁴) truncation is ~1e-9 relative at h = 1/16
    value, first, second = fd_jets(pixel_fn(module), x, deltas[:, :2], pair_index(2, 3), h=0.0625)
    assert rel_err(got.value, value) < 1e-14
    assert rel_err(got.first[:, :2], first) < 1e-9, rel_err(got.first[:, :2], first)
    assert rel_err(got.second[:, :3], second) < 1e-8, rel_err(got.second[:, :3], second)


def test_output_tokens_tower_returns_the_pooled_embedding():
    module = vit(7, output_tokens=True)
    x, deltas = inputs(module)
    pairs = pair_index(M, 3)
    got = fast(module, x, deltas, pairs)
    ref = embedding_jets(lambda px: pixel_fn(module)(px)[0], x, deltas, pairs)
    assert rel_err(got.second, ref.second) < 1e-12


@pytest.mark.parametrize("quick", [False, True])
def test_simplex_alignment_with_a_model_uses_fast_jets(quick, monkeypatch):
    model = micro_clip(quick_gelu=quick, seed=1)
    x, deltas = inputs(model.visual, seed=2)
    text = unit_rows(5, 8)
    calls = []
    original = vit_module.vit_jets
    monkeypatch.setattr("advsimplex.zeroshot.vit_jets", lambda *a, **k: calls.append(1) or original(*a, **k))
    expected = simplex_alignment(ZeroShotModel.from_encoder(pixel_fn(model.visual), text, 20.0), x, deltas,
                                 variant="taylor2")  # fmt: skip
    assert not calls
    for zs in (ZeroShotModel.from_clip(model, text, 20.0), ZeroShotModel.from_tower(model.visual, text, 20.0)):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # covered: no fallback warning
            got = simplex_alignment(zs, x, deltas, variant="taylor2")
        assert zs.fast_jets and rel_err(got, expected) < 1e-12
    assert len(calls) == 2
    generic_model = ZeroShotModel.from_clip(model, text, 20.0, jets=JetOptions(mode="generic"))
    generic = simplex_alignment(generic_model, x, deltas, variant="taylor2")
    assert len(calls) == 2 and not generic_model.fast_jets and rel_err(generic, expected) < 1e-13


def parameter_objective(module, x, deltas, text, weights, order, **options):
    model = ZeroShotModel.from_tower(module, text, 20.0, jets=JetOptions(mode="fast", **options))
    omega = simplex_alignment(model, x, deltas, variant="paper-cross", kappa=1.5, order=order)
    return (weights * omega).sum()


@pytest.mark.parametrize(("name", "order"), [("micro-gelu", 3), ("micro-quickgelu", 4), ("vpt-avg", 3)])
def test_third_order_parameter_gradient_vs_fd(name, order):
    """⟨∇_θ Σ ω·Ω, v⟩ by reverse mode through the fast jets (third order in the tower) vs central FD in θ."""
    module = TOWERS[name]()
    g = torch.Generator().manual_seed(7)
    x, _ = inputs(module, seed=3)
    deltas = (torch.rand(2, 3, 3, 8, 8, generator=g, dtype=torch.float64) - 0.5) * (8 / 255)
    text = unit_rows(4, 8)
    weights = torch.rand(2, 3 - order + 2, generator=g, dtype=torch.float64)
    params = [p for p in module.parameters() if p.requires_grad]
    for trial in range(2):
        direction = [torch.randn(p.shape, generator=g, dtype=torch.float64) for p in params]
        module.zero_grad()
        parameter_objective(module, x, deltas, text, weights, order).backward()
        ad = sum((p.grad * v).sum() for p, v in zip(params, direction)).item()

        def shifted(step, direction=direction):
            with torch.no_grad():
                for p, v in zip(params, direction):
                    p.add_(step * v)
                value = parameter_objective(module, x, deltas, text, weights, order).item()
                for p, v in zip(params, direction):
                    p.sub_(step * v)
            return value

        h = 1e-5
        fd = (4 * (shifted(h) - shifted(-h)) / (2 * h) - (shifted(2 * h) - shifted(-2 * h)) / (4 * h)) / 3
        assert abs(ad - fd) <= 1e-8 * abs(fd), (trial, ad, fd, abs(ad - fd) / abs(fd))  # measured 1e-12 .. 6e-11


def gradients(module, **kwargs):
    x, deltas = inputs(module, batch=3, seed=4)
    module.zero_grad()
    jets = fast(module, x, deltas, pair_index(M, 3), **kwargs)
    g = torch.Generator().manual_seed(0)
    weights = [torch.randn(t.shape, generator=g, dtype=t.dtype) for t in (jets.value, jets.first, jets.second)]
    sum((w * t).sum() for w, t in zip(weights, (jets.value, jets.first, jets.second))).backward()
    return jets, [p.grad.clone() for p in module.parameters()]


@pytest.mark.parametrize("name", ["micro-gelu", "vpt-tok", "layerscale-avg"])
def test_checkpointing_and_micro_batching(name):
    module = tower(name)
    plain, grads = gradients(module, checkpoint=False)
    ckpt, ckpt_grads = gradients(module, checkpoint=True)
    for a, b in zip((plain.value, plain.first, plain.second), (ckpt.value, ckpt.first, ckpt.second)):
        assert torch.equal(a, b)
    assert all(torch.equal(a, b) for a, b in zip(grads, ckpt_grads))
    micro, micro_grads = gradients(module, checkpoint=True, micro_batch=2)
    for a, b in zip((plain.value, plain.first, plain.second), (micro.value, micro.first, micro.second)):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-16)
    for a, b in zip(grads, micro_grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)


def test_checkpoint_auto_threshold(monkeypatch):
    module = micro_clip().visual
    x, deltas = inputs(module)
    pairs = pair_index(M, 3)
    used = []
    original = vit_module.activation_checkpoint
    monkeypatch.setattr(vit_module, "activation_checkpoint", lambda *a, **k: used.append(1) or original(*a, **k))
    fast(module, x, deltas, pairs)
    assert not used  # tiny: below the threshold
    monkeypatch.setattr(vit_module, "CHECKPOINT_AUTO_BYTES", 0)
    with torch.no_grad():
        fast(module, x, deltas, pairs)
    assert not used  # nothing to recompute without gradients
    fast(module, x, deltas, pairs)
    assert len(used) == len(module.transformer.resblocks)


def test_float32_fast_matches_float64():
    module = micro_clip(seed=2).visual
    x, deltas = inputs(module)
    pairs = pair_index(M, 3)
    ref = fast(module, x, deltas, pairs)
    got = fast(module.float(), x.float(), deltas.float(), pairs)
    module.double()
    assert got.second.dtype == torch.float32
    assert rel_err(got.first.double(), ref.first) < 1e-4
    assert rel_err(got.second.double(), ref.second) < 1e-3


def tiny_resnet():
    from open_clip.modified_resnet import ModifiedResNet

    torch.manual_seed(0)
    return ModifiedResNet(layers=(1, 1, 1, 1), output_dim=8, heads=2, image_size=32, width=8).double().eval()


def test_uncovered_tower_falls_back_with_a_warning():
    module = tiny_resnet()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 32, generator=g, dtype=torch.float64)
    deltas = (torch.rand(2, 2, 3, 32, 32, generator=g, dtype=torch.float64) - 0.5) * (4 / 255)
    text = unit_rows(3, 8)
    with pytest.warns(FastJetsFallbackWarning, match="ModifiedResNet"):
        model = ZeroShotModel.from_tower(module, text, 20.0)  # decided once, at construction
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = simplex_alignment(model, x, deltas)
    expected = simplex_alignment(ZeroShotModel.from_encoder(pixel_fn(module), text, 20.0), x, deltas)
    assert rel_err(got, expected) < 1e-12
    with pytest.raises(UnsupportedTowerError, match="ModifiedResNet"):
        ZeroShotModel.from_tower(module, text, 20.0, jets=JetOptions(mode="fast"))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda v: setattr(v, "pool_type", "none"), "pool_type='none'"),
        (lambda v: setattr(v.transformer.resblocks[1].mlp, "gelu", nn.SiLU()), r"resblocks\[1\].mlp.gelu is a SiLU"),
        (lambda v: setattr(v.transformer.resblocks[0], "ln_1", nn.Identity()), r"resblocks\[0\].ln_1 is a Identity"),
        (lambda v: setattr(v, "ln_post", nn.RMSNorm(16)), "ln_post is a RMSNorm"),
    ],
)
def test_vit_support_names_what_is_not_covered(change, reason):
    module = micro_clip().visual
    change(module)
    found, why = vit_support(module)
    assert found is None and why
    with pytest.raises(UnsupportedTowerError, match=reason):
        vit_jets(module, *inputs(module), pair_index(M, 3))


def test_random_towers_are_refused():
    model = micro_clip()
    model.train()  # CLIP ViTs have no dropout: training mode is fine
    x, deltas = inputs(model.visual)
    zs = ZeroShotModel.from_clip(model, unit_rows(3, 8), 10.0)
    assert zs.fast_jets
    simplex_alignment(zs, x, deltas)
    model.visual.transformer.resblocks[0].attn.dropout = 0.1
    with pytest.raises(ValueError, match=r"random function in training mode .*attn"):
        simplex_alignment(zs, x, deltas)
    model.eval()
    simplex_alignment(zs, x, deltas)
    patchy = vit(8, patch_dropout=0.5).train()
    with pytest.warns(FastJetsFallbackWarning, match="patch dropout"):
        patchy_model = ZeroShotModel.from_tower(patchy, unit_rows(3, 8), 10.0)
    with pytest.raises(ValueError, match="PatchDropout"):
        patchy_model.jets(x, deltas, pair_index(M, 3))


def test_bad_arguments():
    module = micro_clip().visual
    x, deltas = inputs(module)
    pairs = pair_index(M, 3)
    with pytest.raises(UnsupportedTowerError, match=r"fast embedding jets do not cover .*: a plain callable"):
        ZeroShotModel.from_encoder(lambda px: px.flatten(1), unit_rows(3, 8), 10.0, jets=JetOptions(mode="fast"))
    with pytest.raises(ValueError, match="jets mode must be one of"):
        JetOptions(mode="fastest")
    with pytest.raises(ValueError, match=r"spatial size \(4, 4\)"):
        vit_jets(module, x[..., :4, :4], deltas[..., :4, :4], pairs)
    with pytest.raises(TypeError, match=r"dtype torch\.float32 but the tower's parameters are torch\.float64"):
        vit_jets(module, x.float(), deltas.float(), pairs)
    with pytest.raises(ValueError, match="micro_batch"):
        fast(module, x, deltas, pairs, micro_batch=0)
    with pytest.raises(ValueError, match="jet rules must be one of"):
        fast(module, x, deltas, pairs, rules="cuda")
    with pytest.raises(ValueError, match="pairs must index vertices"):
        vit_jets(module, x, deltas, torch.tensor([[0, M]]))
    with pytest.raises(ValueError, match=r"deltas must have shape \(B, m, 3, H, W\)"):
        vit_jets(module, x, deltas[:1], pairs)
    with pytest.raises(TypeError, match="options must be a JetOptions"):
        vit_jets(module, x, deltas, pairs, options={"micro_batch": 2})
    with pytest.raises(ValueError, match="micro_batch"):
        JetOptions(micro_batch=-2)


def test_loss_with_a_model_equals_the_generic_loss(monkeypatch):
    """AdvSimplexLoss(model): PGD on normalised pixels and fast jets by default; same loss as the generic path."""
    model = micro_clip(seed=6)
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(3, 3, 8, 8, generator=g, dtype=torch.float64), torch.tensor([0, 2, 1])
    text = unit_rows(3, 8)
    calls = []
    original = vit_module.vit_jets
    monkeypatch.setattr("advsimplex.zeroshot.vit_jets", lambda *a, **k: calls.append(k) or original(*a, **k))
    loss_fn = AdvSimplexLoss(steps=4, eps=4 / 255, alpha=2 / 255, variant="taylor2")
    zs = ZeroShotModel.from_clip(model, text, 20.0, jets=JetOptions(micro_batch=2, checkpoint=True))
    fast_loss, fast_details = loss_fn(zs, x, y, generator=torch.Generator().manual_seed(1), return_details=True)
    options = calls[0]["options"]
    assert len(calls) == 1 and options.micro_batch == 2 and options.checkpoint is True
    generic_loss, generic_details = loss_fn(
        ZeroShotModel.from_encoder(pixel_fn(model.visual), text, 20.0), x, y,
        generator=torch.Generator().manual_seed(1), return_details=True,
    )  # fmt: skip
    assert len(calls) == 1
    torch.testing.assert_close(fast_details.vertex_probs, generic_details.vertex_probs, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(fast_details.omega, generic_details.omega, rtol=1e-11, atol=1e-16)
    torch.testing.assert_close(fast_loss, generic_loss, rtol=1e-12, atol=1e-14)
    fast_loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.visual.parameters())


def test_public_exports():
    for name in ("vit_jets", "FastJetsFallbackWarning", "UnsupportedTowerError"):
        assert hasattr(advsimplex, name)


def test_bf16_autocast():
    """Under bf16 autocast (the trainer's CUDA default) the fast jets run and agree to bf16 precision."""
    module = micro_clip(seed=1).visual.float()
    x, deltas = inputs(module, batch=4, dtype=torch.float32)
    pairs = pair_index(M, 3)
    ref = fast(module, x, deltas, pairs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = fast(module, x, deltas, pairs)
    assert got.second.dtype == torch.bfloat16
    for field, tol in (("value", 3e-2), ("first", 3e-2), ("second", 6e-2)):
        assert rel_err(getattr(got, field).float(), getattr(ref, field)) < tol
    got.second.float().square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in module.parameters())
