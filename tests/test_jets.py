"""Generic torch.func embedding jets and simplex_alignment against float64 finite differences.

Encoders: a small stock-``torch.nn`` transformer (LayerNorm, BatchNorm in eval, MultiheadAttention,
GELU) and the tiny open_clip ViT config ``advsimplex-micro-vit`` (GELU and QuickGELU), with random
weights. The "Done when" criterion of the foundation: ``simplex_alignment`` within 1e-6 relative of
finite-difference truth for every closed-form variant and Q = 3, 4.
"""

import pytest
import torch

import advsimplex
from advsimplex import ZeroShotModel, embedding_jets, pair_index, simplex_alignment
from advsimplex.reference import closed_form_alignment
from advsimplex.zeroshot import preprocess_stats
from helpers import fd_jets, layer_norm_encoder, micro_clip, rel_err, unit_rows

M = 4
TOL = 1e-6


def encoders():
    yield "layernorm-attention", layer_norm_encoder(), (3, 3, 3)
    for quick in (False, True):
        model = micro_clip(quick_gelu=quick)
        yield f"open_clip-micro-vit{'-quickgelu' if quick else ''}", model.visual, (3, 8, 8)


ENCODERS = {name: (enc, shape) for name, enc, shape in encoders()}


def inputs(shape, seed=0, batch=2):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, *shape, generator=g, dtype=torch.float64)
    deltas = (torch.rand(batch, M, *shape, generator=g, dtype=torch.float64) - 0.5) * (4 / 255)
    return x, deltas


@pytest.mark.parametrize("name", list(ENCODERS))
@pytest.mark.parametrize("order", [3, 4])
def test_embedding_jets_vs_fd(name, order):
    enc, shape = ENCODERS[name]
    x, deltas = inputs(shape)
    pairs = pair_index(M, order)
    jets = embedding_jets(enc, x, deltas, pairs)
    value, first, second = fd_jets(enc, x, deltas, pairs, h=0.5)  # steps of h·δ, |δ| ≤ 2/255
    assert rel_err(jets.value, value) < 1e-14
    assert rel_err(jets.first, first) < TOL
    assert rel_err(jets.second, second) < TOL


def is_open_clip(enc) -> bool:
    return type(enc).__module__.startswith("open_clip")


def pixel_encoder(enc):
    """The function of pixels that the zero-shot model of ``enc`` differentiates: an open_clip tower
    normalises pixels with its preprocessing mean/std first; a plain module is called as is."""
    if not is_open_clip(enc):
        return enc
    mean, std = (torch.tensor(v, dtype=torch.float64).view(1, 3, 1, 1) for v in preprocess_stats(enc))
    return lambda y: enc((y - mean) / std)


def zero_shot_model(enc, text, scale):
    """open_clip towers: their own preprocessing (and the fast jets); plain modules: the generic path."""
    if is_open_clip(enc):
        return ZeroShotModel.from_tower(enc, text, scale)
    return ZeroShotModel.from_encoder(enc, text, scale)


def zero_shot_probs(embeddings, text, scale):
    """``softmax(s · n(f) Tᵀ)``, written out independently of the package."""
    n = embeddings / embeddings.norm(dim=-1, keepdim=True)
    return torch.softmax(scale * (n @ text.t()), dim=-1)


@pytest.mark.parametrize("name", list(ENCODERS))
@pytest.mark.parametrize("order", [3, 4])
def test_simplex_alignment_vs_fd_truth(name, order):
    """Ω from AD jets + chain-rule head vs Ω from FD derivatives of the whole map x ↦ g(x).

    open_clip towers take the fast Taylor-mode jets (normalisation inside), the plain module the generic path.
    """
    enc, shape = ENCODERS[name]
    x, deltas = inputs(shape, seed=1)
    text = unit_rows(5, 8 if "open_clip" in name else 6)
    scale = 20.0
    pixel_enc = pixel_encoder(enc)
    probs = lambda y: zero_shot_probs(pixel_enc(y), text, scale)
    pairs = pair_index(M, order)
    _, u, h = fd_jets(probs, x, deltas, pairs, h=0.5)
    for variant in ("paper", "paper-cross", "taylor2"):
        truth = closed_form_alignment(u, h, variant=variant, kappa=1.3, order=order)
        model = zero_shot_model(enc, text, scale)
        got = simplex_alignment(model, x, deltas, variant=variant, kappa=1.3, order=order)
        assert got.shape == (2, M - order + 2)
        assert rel_err(got, truth) < TOL, (variant, rel_err(got, truth))


def test_jets_chunked_equal_unchunked():
    enc, shape = ENCODERS["layernorm-attention"]
    x, deltas = inputs(shape)
    pairs = pair_index(M, 3)
    a = embedding_jets(enc, x, deltas, pairs)
    b = embedding_jets(enc, x, deltas, pairs, chunk_size=2)
    for t, s in ((a.value, b.value), (a.first, b.first), (a.second, b.second)):
        torch.testing.assert_close(t, s, rtol=1e-13, atol=1e-15)


def test_jets_need_every_diagonal_pair():
    enc, shape = ENCODERS["layernorm-attention"]
    x, deltas = inputs(shape)
    with pytest.raises(ValueError, match="missing k"):
        embedding_jets(enc, x, deltas, torch.tensor([[0, 1], [1, 1]]))


def test_sampled_variant_tends_to_closed_form_taylor2_for_small_steps():
    """Oracle 5 of the spec: the sampled true alignment over the closed form tends to 1 as ε → 0."""
    enc, shape = ENCODERS["open_clip-micro-vit"]
    x, deltas = inputs(shape, seed=3)
    text = unit_rows(5, 8)
    deltas = deltas * 0.05
    model = zero_shot_model(enc, text, 20.0)
    exact = simplex_alignment(model, x, deltas, variant="taylor2")
    sampled = simplex_alignment(model, x, deltas, variant="sampled", samples=4000,
                                generator=torch.Generator().manual_seed(0))  # fmt: skip
    ratio = (sampled / exact).flatten()
    assert ((ratio - 1).abs() < 0.05).all(), ratio


def test_backends_report():
    report = advsimplex.backends()
    assert report["reference"][0] is True
    assert set(report) >= {"reference", "cpp", "cuda", "triton"}
    assert all(isinstance(v[1], str) and v[1] for v in report.values())
