"""The elementary decompositions reproduce the native functions' values (the derivatives are in test_traps)."""

import pytest
import torch
import torch.nn.functional as F

from advsimplex.jets import JetSafeMode
from advsimplex.jets import decompositions as dec

DT = torch.float64


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=DT)


def test_layer_norm_values():
    x, w, b = rand(3, 4, 6), rand(4, 6, seed=1), rand(4, 6, seed=2)
    torch.testing.assert_close(dec.layer_norm(x, (4, 6), w, b, 1e-5), F.layer_norm(x, (4, 6), w, b, 1e-5))
    torch.testing.assert_close(dec.layer_norm(x, 6), F.layer_norm(x, (6,)))


def test_batch_norm_eval_values_and_training_raises():
    x = rand(5, 3, 4, 4)
    mean, var, w, b = rand(3, seed=1), rand(3, seed=2).abs() + 0.1, rand(3, seed=3), rand(3, seed=4)
    torch.testing.assert_close(dec.batch_norm(x, mean, var, w, b), F.batch_norm(x, mean, var, w, b))
    with pytest.raises(NotImplementedError, match=r"encoder.eval\(\)"):
        dec.batch_norm(x, mean, var, w, b, training=True)


@pytest.mark.parametrize("p", [2.0, 3.0])
def test_normalize_values(p):
    x = rand(4, 5)
    torch.testing.assert_close(dec.normalize(x, p=p, dim=-1), F.normalize(x, p=p, dim=-1))


@pytest.mark.parametrize(("mask", "causal"), [(None, False), (None, True), ("bool", False), ("float", False)])
def test_sdpa_values(mask, causal):
    q, k, v = rand(2, 3, 5, 4), rand(2, 3, 5, 4, seed=1), rand(2, 3, 5, 4, seed=2)
    attn_mask = None
    if mask == "bool":
        attn_mask = rand(5, 5, seed=3) > -0.5
        attn_mask[:, 0] = True
    elif mask == "float":
        attn_mask = rand(5, 5, seed=3)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=causal, scale=0.7)
    got = dec.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=causal, scale=0.7)
    torch.testing.assert_close(got, expected)


def test_sdpa_gqa_and_dropout():
    q, k, v = rand(2, 4, 5, 3), rand(2, 2, 5, 3, seed=1), rand(2, 2, 5, 3, seed=2)
    expected = F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    torch.testing.assert_close(dec.scaled_dot_product_attention(q, k, v, enable_gqa=True), expected)
    with pytest.raises(NotImplementedError, match="dropout"):
        dec.scaled_dot_product_attention(q, q, q, dropout_p=0.1)


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("need_weights", [False, True])
@pytest.mark.parametrize("masks", ["none", "bool-attn", "float-attn", "3d-attn", "key-padding"])
def test_multihead_attention_values(batch_first, need_weights, masks):
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(8, 2, batch_first=batch_first).double().eval()
    x = rand(2, 5, 8) if batch_first else rand(5, 2, 8)
    kw = {}
    if masks == "bool-attn":
        kw["attn_mask"] = torch.triu(torch.ones(5, 5, dtype=torch.bool), diagonal=1)
    elif masks == "float-attn":
        kw["attn_mask"] = rand(5, 5, seed=4)
    elif masks == "3d-attn":
        kw["attn_mask"] = rand(4, 5, 5, seed=4)
    elif masks == "key-padding":
        kw["key_padding_mask"] = torch.tensor([[False] * 5, [False, False, False, True, True]])
    with torch.no_grad():
        expected = mha(x, x, x, need_weights=need_weights, **kw)
        with JetSafeMode():
            got = mha(x, x, x, need_weights=need_weights, **kw)
    torch.testing.assert_close(got[0], expected[0])
    if need_weights:
        torch.testing.assert_close(got[1], expected[1])


def test_multihead_attention_unbatched_and_separate_projections():
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(8, 2, kdim=6, vdim=4).double().eval()
    q, k, v = rand(5, 8), rand(7, 6, seed=1), rand(7, 4, seed=2)
    with torch.no_grad():
        expected = mha(q, k, v)
        with JetSafeMode():
            got = mha(q, k, v)
    torch.testing.assert_close(got[0], expected[0])
    torch.testing.assert_close(got[1], expected[1])


def test_multihead_attention_unsupported_features_raise():
    mha = torch.nn.MultiheadAttention(8, 2, add_bias_kv=True).double().eval()
    x = rand(5, 2, 8)
    with JetSafeMode(), pytest.raises(NotImplementedError, match="bias_k/bias_v"):
        mha(x, x, x)
