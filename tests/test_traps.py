"""Regression tests for the PyTorch traps of math spec §7, and proof that our path is immune.

Each ``test_trap_*_still_present`` asserts that the pinned torch still has the bug. When one of
them fails, PyTorch fixed the trap: re-check the workaround and update this file and the spec.
"""

import pytest
import torch
import torch.nn.functional as F
from torch.func import grad, jvp

from advsimplex.jets import JetSafeMode
from advsimplex.jets import decompositions as dec
from helpers import fd_second, rel_err

DT = torch.float64


def nested_jvp(fn, x, a, b):
    return jvp(lambda y: jvp(fn, (y,), (a,))[1], (x,), (b,))[1]


@pytest.fixture
def xab():
    g = torch.Generator().manual_seed(0)
    return tuple(torch.randn(4, 8, generator=g, dtype=DT) for _ in range(3))


def affine(seed=1, n=8):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=g, dtype=DT), torch.randn(n, generator=g, dtype=DT)


def test_trap_1_layer_norm_nested_forward_ad_still_wrong(xab):
    x, a, b = xab
    w, bias = affine()
    fn = lambda y: F.layer_norm(y, (8,), w, bias)
    truth = fd_second(fn, x, a, b, 1e-3)
    assert rel_err(nested_jvp(fn, x, a, b), truth) > 1e-2, "trap 1 (layer_norm) fixed in this torch"
    with JetSafeMode():
        assert rel_err(nested_jvp(fn, x, a, b), truth) < 1e-8


@pytest.mark.parametrize("module", ["functional", "nn.LayerNorm", "torch.layer_norm"])
def test_jet_safe_mode_reroutes_every_layer_norm_entry(xab, module):
    x, a, b = xab
    ln = torch.nn.LayerNorm(8).double()
    fns = {
        "functional": lambda y: F.layer_norm(y, (8,)),
        "nn.LayerNorm": ln,
        "torch.layer_norm": lambda y: torch.layer_norm(y, [8]),
    }
    fn = fns[module]
    truth = fd_second(fn, x, a, b, 1e-3)
    with JetSafeMode():
        assert rel_err(nested_jvp(fn, x, a, b), truth) < 1e-8


def test_trap_1b_batch_norm_training_nested_forward_ad_still_wrong(xab):
    """Training-mode batch_norm: nested forward AD is wrong; under JetSafeMode it raises a clear error."""
    x, a, b = xab
    w, bias = affine()
    fn = lambda y: torch.tanh(F.batch_norm(y, None, None, w, bias, training=True))
    truth = fd_second(fn, x, a, b, 1e-3)
    assert rel_err(nested_jvp(fn, x, a, b), truth) > 1e-2, "trap 1b (batch_norm) fixed in this torch"
    with JetSafeMode(), pytest.raises(NotImplementedError, match=r"encoder.eval\(\)"):
        nested_jvp(fn, x, a, b)


def test_batch_norm_eval_is_rerouted_and_correct(xab):
    """Eval-mode batch_norm is right natively in torch 2.14.1; the decomposition is right as well."""
    x, a, b = xab
    w, bias = affine()
    mean, var = affine(seed=2)
    fn = lambda y: torch.tanh(F.batch_norm(y, mean, var.abs() + 0.5, w, bias, training=False))
    truth = fd_second(fn, x, a, b, 1e-3)
    with JetSafeMode():
        assert rel_err(nested_jvp(fn, x, a, b), truth) < 1e-8


def test_trap_2_layer_norm_third_order_reverse_still_wrong():
    """Reverse-over-reverse through native layer_norm: right H, wrong d/dθ of bᵀHa when the LN input depends on θ."""
    g = torch.Generator().manual_seed(0)
    x, a, b = (torch.randn(3, 6, generator=g, dtype=DT) for _ in range(3))
    w_out = torch.randn(6, 6, generator=g, dtype=DT)
    theta = torch.randn(6, 6, generator=g, dtype=DT)
    v = torch.randn(6, 6, generator=g, dtype=DT)

    def mixed(norm, th):
        y = x.clone().requires_grad_(True)
        out = (torch.tanh(norm(y @ th)) @ w_out).sum()
        (g1,) = torch.autograd.grad(out, y, create_graph=True)
        (g2,) = torch.autograd.grad((g1 * a).sum(), y, create_graph=True)
        return (g2 * b).sum()

    def check(norm):
        th = theta.clone().requires_grad_(True)
        (gt,) = torch.autograd.grad(mixed(norm, th), th)
        ad = (gt * v).sum().item()
        shifted = lambda s: (mixed(norm, theta + s * v) - mixed(norm, theta - s * v)).item() / (2 * s)
        fd = (4 * shifted(1e-5) - shifted(2e-5)) / 3
        return abs(ad - fd) / abs(fd)

    native = lambda y: F.layer_norm(y, (6,))
    elementary = lambda y: dec.layer_norm(y, (6,))
    assert check(native) > 1e-4, "trap 2 (layer_norm third order) fixed in this torch"
    assert check(elementary) < 1e-7


def test_trap_3_fused_sdpa_has_no_forward_ad():
    g = torch.Generator().manual_seed(0)
    q, t = (torch.randn(2, 2, 5, 4, generator=g, dtype=DT) for _ in range(2))
    fn = lambda y: F.scaled_dot_product_attention(y, y, y)
    with pytest.raises(RuntimeError, match="forward AD"):
        jvp(fn, (q,), (t,))
    with JetSafeMode():
        truth = fd_second(fn, q, t, t.flip(0), 1e-3)
        assert rel_err(nested_jvp(fn, q, t, t.flip(0)), truth) < 1e-8


def test_trap_3b_multihead_attention_has_no_forward_ad():
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(8, 2, batch_first=True).double().eval()
    fn = lambda y: mha(y, y, y, need_weights=False)[0]
    g = torch.Generator().manual_seed(1)
    x, a, b = (torch.randn(2, 5, 8, generator=g, dtype=DT) for _ in range(3))
    with pytest.raises(RuntimeError, match="forward AD"):
        nested_jvp(fn, x, a, b)
    with JetSafeMode():
        assert rel_err(nested_jvp(fn, x, a, b), fd_second(fn, x, a, b, 1e-3)) < 1e-8


def test_trap_4_custom_op_jvp_silently_zero():
    @torch.library.custom_op("advsimplex_test::square", mutates_args=())
    def square(x: torch.Tensor) -> torch.Tensor:
        return x * x

    square.register_fake(lambda x: torch.empty_like(x))
    square.register_autograd(
        lambda ctx, g: 2 * g * ctx.saved_tensors[0],
        setup_context=lambda ctx, inputs, output: ctx.save_for_backward(*inputs),
    )
    x = torch.randn(3, dtype=DT)
    _, tangent = jvp(square, (x,), (torch.ones_like(x),))
    assert torch.count_nonzero(tangent) == 0, "trap 4 (custom_op under jvp) fixed in this torch"
    with pytest.raises(RuntimeError):
        grad(lambda y: square(y).sum())(x)
