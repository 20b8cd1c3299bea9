"""Triton kernels of ``simplex_head`` (one program per batch row; fp32 in, fp32 accumulation).

Pipeline (the same as the C++/CUDA kernels, see ``csrc/simplex_head.cpp``):

1. ``normalize_forward``: normalised-embedding jets ``Ns = s·[n; n_a; n_j]`` (B, K, d), spec §4, §7b.
2. (torch.mm) ``Z = Ns Tᵀ`` (B, K, C): the projection onto the class embeddings is a GEMM.
3. ``class_forward``: per row, over class tiles: log-sum-exp, centring means μ, covariances ν,
   then u = g ẑ_a, h = g w_j and the per-row Gram matrices Σ_c u uᵀ, Σ_c u hᵀ, Σ_c h hᵀ and Σ_c q²
   (tl.dot over the class axis); Ω_s are their contractions with the constant moment-incidence
   tensors A, Bm, D, E (``layout``: built by the ops layer, ``advsimplex/ops/_simplex_head_layout.py``).
4. ``class_backward``: ū = M_uu u + M_uh h, h̄ = M_uhᵀ u + M_hh h with per-row matrices built from the
   simplex adjoints G_s; then the softmax/centring chain rule in two passes (α, β staged in dZ).
5. ``normalize_backward``: adjoints of f, F1, F2 from ∂L/∂N.

The P second-order streams j (vertex pairs, or simplices for collapsed jets) are quadratic forms of the
first-order directions (``csrc/simplex_head.h``, Form): ``Π_j(x) = Σ_t coef[t, j] x_{ta[t, j]} x_{tb[t, j]}``
with TERMS terms per stream (1 for a pair (a, b): x_a x_b; W(W+1)/2 for a simplex: Σ M_kl x_k x_l); w_j =
Π_j(ẑ) − ν_j + ẑ_j. For collapsed jets A is the identity (q_s = h_s) and D = E = 0 (variant ``paper``).

Tile sizes pad m, P and S to powers of two ≥ 16 (``tl.dot`` minimum). Dot products use
``input_precision="ieee"`` (no TF32).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.library import wrap_triton

BLOCK_C = 32
MAX_BLOCK_D = 16384


def _block_d(d: int) -> int:
    block = triton.next_power_of_2(d)
    if block > MAX_BLOCK_D:
        raise ValueError(f"simplex_head (triton): embedding dimension d={d} exceeds {MAX_BLOCK_D}")
    return block


def _as_f32(*tensors: Tensor) -> list[Tensor]:
    return [t.to(torch.float32).contiguous() for t in tensors]


def forward(
    f: Tensor, F1: Tensor, F2: Tensor, text: Tensor, labels: Tensor, weights: Tensor,
    logit_scale: float, lam: float, c_jp2: float, c_qsq: float, c_jpq: float, c_q2: float, order: int,
    *, layout: dict[str, Tensor | int],
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """Host side of the forward op: (loss (B,), omega (B,S), logits (B,K,C), normalized (B,K,d), stats (B,K+P)).

    The arguments are those the registered op checked (``advsimplex/ops/_simplex_head_checks.py``): shapes,
    dtypes, devices, labels int64 in [0, C); ``layout`` holds the padded moment-incidence tensors and the
    terms of the second-order forms of (m, Q) (pairs or collapsed) on the inputs' device
    (``advsimplex/ops/_simplex_head_layout.py``)."""
    f, F1, F2, text, weights = _as_f32(f, F1, F2, text, weights)
    b, m, d = F1.shape
    p, c = F2.shape[1], text.shape[0]
    lay = layout
    k, s = 1 + m + p, m - order + 2
    normalized = torch.empty((b, k, d), device=f.device, dtype=torch.float32)
    wrap_triton(normalize_forward_kernel)[(b,)](
        f, F1, F2, lay["ta"], lay["tb"], lay["tc"], normalized, logit_scale, m, p, d,
        P_PAD=lay["P_PAD"], TERMS=lay["TERMS"], BLOCK_D=_block_d(d),
    )  # fmt: skip
    logits = torch.mm(normalized.view(b * k, d), text.t()).view(b, k, c)
    loss = torch.empty((b,), device=f.device, dtype=torch.float32)
    omega = torch.empty((b, s), device=f.device, dtype=torch.float32)
    stats = torch.empty((b, k + p), device=f.device, dtype=torch.float32)
    wrap_triton(class_forward_kernel)[(b,)](
        logits, stats, loss, omega, labels, weights, lay["ta"], lay["tb"], lay["tc"], lay["A"], lay["Bm"], lay["D"],
        lay["E"], m, p, s, c, lam, c_jp2, c_qsq, c_jpq, c_q2,
        M_PAD=lay["M_PAD"], P_PAD=lay["P_PAD"], S_PAD=lay["S_PAD"], TERMS=lay["TERMS"], BLOCK_C=BLOCK_C,
    )  # fmt: skip
    return loss, omega, logits, normalized, stats


def backward(
    grad_loss: Tensor, grad_omega: Tensor | None, f: Tensor, F1: Tensor, F2: Tensor, text: Tensor, labels: Tensor,
    weights: Tensor, logits: Tensor, normalized: Tensor, stats: Tensor,
    logit_scale: float, lam: float, c_jp2: float, c_qsq: float, c_jpq: float, c_q2: float, order: int,
    text_grad: bool, *, layout: dict[str, Tensor | int],
) -> tuple[Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """Host side of the backward op: (df, dF1, dF2, dtext) in the inputs' dtypes (dtext empty unless text_grad)."""
    dtypes = (f.dtype, F1.dtype, F2.dtype, text.dtype)
    f, F1, F2, text, weights, grad_loss = _as_f32(f, F1, F2, text, weights, grad_loss)
    logits, normalized, stats = logits.contiguous(), normalized.contiguous(), stats.contiguous()
    labels = labels.to(torch.int64).contiguous()
    b, m, d = F1.shape
    p, c = F2.shape[1], text.shape[0]
    lay = layout
    k, s = 1 + m + p, m - order + 2
    has_go = grad_omega is not None
    go = grad_omega.to(torch.float32).contiguous() if has_go else weights
    dlogits = torch.empty_like(logits)
    wrap_triton(class_backward_kernel)[(b,)](
        logits, stats, dlogits, labels, weights, grad_loss, go, lay["ta"], lay["tb"], lay["tc"], lay["A"], lay["Bm"],
        lay["D"], lay["E"], m, p, s, c, lam, c_jp2, c_qsq, c_jpq, c_q2, HAS_GRAD_OMEGA=has_go,
        M_PAD=lay["M_PAD"], P_PAD=lay["P_PAD"], S_PAD=lay["S_PAD"], TERMS=lay["TERMS"], BLOCK_C=BLOCK_C,
    )  # fmt: skip
    flat = dlogits.view(b * k, c)
    grad_n = (flat @ text).mul_(logit_scale).view(b, k, d)
    dtext = flat.t() @ normalized.view(b * k, d) if text_grad else text.new_empty((0,))
    df, dF1, dF2 = torch.empty_like(f), torch.empty_like(F1), torch.empty_like(F2)
    wrap_triton(normalize_backward_kernel)[(b,)](
        f, F1, F2, grad_n, lay["ta"], lay["tb"], lay["tc"], df, dF1, dF2, m, p, d,
        M_PAD=lay["M_PAD"], P_PAD=lay["P_PAD"], TERMS=lay["TERMS"], BLOCK_D=_block_d(d),
    )  # fmt: skip
    return tuple(t.to(dt) for t, dt in zip((df, dF1, dF2, dtext), dtypes))


@triton.jit
def _row_scale(amax):
    """A power of two c with c·amax in [1, 2) (1 for 0 or non-finite amax; clamped to normal float32): the
    normalisation kernels work on c·(f, F1, F2), exactly as csrc/simplex_head.h row_scale describes."""
    biased = (amax.to(tl.int32, bitcast=True) >> 23) & 0xFF
    ok = (amax > 0.0) & (biased < 255)
    biased = tl.minimum(tl.maximum(biased, 1), 253)
    return tl.where(ok, ((254 - biased) << 23).to(tl.float32, bitcast=True), 1.0)


@triton.jit
def _term_rows(ta_ptr, tb_ptr, tc_ptr, F1, c, t, p, offs, mask, d, P_PAD: tl.constexpr):
    """Term t of stream p's form: its vertices a, b, coefficient, and the scaled rows c·f_a, c·f_b."""
    ia = tl.load(ta_ptr + t * P_PAD + p)
    ib = tl.load(tb_ptr + t * P_PAD + p)
    coef = tl.load(tc_ptr + t * P_PAD + p)
    fa = c * tl.load(F1 + ia * d + offs, mask=mask, other=0.0)
    fb = c * tl.load(F1 + ib * d + offs, mask=mask, other=0.0)
    return ia, ib, coef, fa, fb


@triton.jit
def normalize_forward_kernel(
    f_ptr, F1_ptr, F2_ptr, ta_ptr, tb_ptr, tc_ptr, out_ptr, scale, m, P, d,
    P_PAD: tl.constexpr, TERMS: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0).to(tl.int64)
    K = 1 + m + P
    offs = tl.arange(0, BLOCK_D)
    mask = offs < d
    f = tl.load(f_ptr + b * d + offs, mask=mask, other=0.0)
    c = _row_scale(tl.max(tl.abs(f)))
    f = c * f
    rho = 1.0 / tl.sqrt(tl.sum(f * f))
    n = rho * f
    out = out_ptr + b * K * d
    F1 = F1_ptr + b * m * d
    F2 = F2_ptr + b * P * d
    tl.store(out + offs, scale * n, mask=mask)
    for a in range(m):
        fa = c * tl.load(F1 + a * d + offs, mask=mask, other=0.0)
        alpha = tl.sum(n * fa)
        tl.store(out + (1 + a) * d + offs, scale * rho * (fa - n * alpha), mask=mask)
    for p in range(P):
        fp = c * tl.load(F2 + p * d + offs, mask=mask, other=0.0)
        beta = tl.sum(n * fp)
        e = tl.sum(tl.zeros([BLOCK_D], dtype=tl.float32))  # Σ coef (γ − 3 α_a α_b)
        cross = tl.zeros([BLOCK_D], dtype=tl.float32)  # Σ coef (α_b f_a + α_a f_b)
        for t in tl.static_range(TERMS):
            _, _, coef, fa, fb = _term_rows(ta_ptr, tb_ptr, tc_ptr, F1, c, t, p, offs, mask, d, P_PAD)
            alpha_a = tl.sum(n * fa)
            alpha_b = tl.sum(n * fb)
            e += coef * (tl.sum(fa * fb) - 3.0 * alpha_a * alpha_b)
            cross += coef * (alpha_b * fa + alpha_a * fb)
        cn = -rho * beta - rho * rho * e
        value = rho * fp + cn * n - rho * rho * cross
        tl.store(out + (1 + m + p) * d + offs, scale * value, mask=mask)


@triton.jit
def normalize_backward_kernel(
    f_ptr, F1_ptr, F2_ptr, gN_ptr, ta_ptr, tb_ptr, tc_ptr, df_ptr, dF1_ptr, dF2_ptr, m, P, d,
    M_PAD: tl.constexpr, P_PAD: tl.constexpr, TERMS: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0).to(tl.int64)
    K = 1 + m + P
    offs = tl.arange(0, BLOCK_D)
    mask = offs < d
    mi = tl.arange(0, M_PAD)
    f = tl.load(f_ptr + b * d + offs, mask=mask, other=0.0)
    c = _row_scale(tl.max(tl.abs(f)))  # inputs read as c·x; the adjoints are c times those at the scaled point
    f = c * f
    rho = 1.0 / tl.sqrt(tl.sum(f * f))
    rho2 = rho * rho
    n = rho * f
    F1 = F1_ptr + b * m * d
    F2 = F2_ptr + b * P * d
    gN = gN_ptr + b * K * d
    dF1 = dF1_ptr + b * m * d
    dF2 = dF2_ptr + b * P * d
    nT = tl.load(gN + offs, mask=mask, other=0.0)
    alphas = tl.zeros([M_PAD], dtype=tl.float32)
    alpha_bar = tl.zeros([M_PAD], dtype=tl.float32)
    rho_bar = tl.sum(tl.zeros([BLOCK_D], dtype=tl.float32))
    for a in range(m):
        fa = c * tl.load(F1 + a * d + offs, mask=mask, other=0.0)
        ga = tl.load(gN + (1 + a) * d + offs, mask=mask, other=0.0)
        alpha = tl.sum(n * fa)
        t = tl.sum(n * ga)
        rho_bar += tl.sum(fa * ga) - alpha * t
        alphas = tl.where(mi == a, alpha, alphas)
        alpha_bar = tl.where(mi == a, -rho * t, alpha_bar)
        nT += -rho * alpha * ga
        tl.store(dF1 + a * d + offs, rho * ga, mask=mask)
    tl.debug_barrier()
    for p in range(P):
        fp = c * tl.load(F2 + p * d + offs, mask=mask, other=0.0)
        gp = tl.load(gN + (1 + m + p) * d + offs, mask=mask, other=0.0)
        beta = tl.sum(n * fp)
        t = tl.sum(n * gp)
        fp_g = tl.sum(fp * gp)
        beta_bar = -rho * t
        gamma_bar = -rho2 * t
        e = tl.sum(tl.zeros([BLOCK_D], dtype=tl.float32))  # Σ coef (γ − 3 α_a α_b)
        cross = tl.sum(tl.zeros([BLOCK_D], dtype=tl.float32))  # Σ coef (α_a f_b·g + α_b f_a·g)
        for q in tl.static_range(TERMS):
            ia, ib, coef, fa, fb = _term_rows(ta_ptr, tb_ptr, tc_ptr, F1, c, q, p, offs, mask, d, P_PAD)
            alpha_a = tl.sum(tl.where(mi == ia, alphas, 0.0))
            alpha_b = tl.sum(tl.where(mi == ib, alphas, 0.0))
            fa_g = tl.sum(fa * gp)
            fb_g = tl.sum(fb * gp)
            e += coef * (tl.sum(fa * fb) - 3.0 * alpha_a * alpha_b)
            cross += coef * (alpha_a * fb_g + alpha_b * fa_g)
            alpha_bar += tl.where(mi == ia, coef * (-rho2 * fb_g + 3.0 * rho2 * alpha_b * t), 0.0)
            alpha_bar += tl.where(mi == ib, coef * (-rho2 * fa_g + 3.0 * rho2 * alpha_a * t), 0.0)
            dfa = tl.load(dF1 + ia * d + offs, mask=mask, other=0.0)
            tl.store(dF1 + ia * d + offs, dfa + coef * (-rho2 * alpha_b * gp + gamma_bar * fb), mask=mask)
            tl.debug_barrier()
            dfb = tl.load(dF1 + ib * d + offs, mask=mask, other=0.0)
            tl.store(dF1 + ib * d + offs, dfb + coef * (-rho2 * alpha_a * gp + gamma_bar * fa), mask=mask)
            tl.debug_barrier()
        rho_bar += fp_g - beta * t - 2.0 * rho * (cross + e * t)
        nT += -(rho * beta + rho2 * e) * gp + beta_bar * fp
        tl.store(dF2 + p * d + offs, c * (rho * gp + beta_bar * n), mask=mask)
    for a in range(m):
        fa = c * tl.load(F1 + a * d + offs, mask=mask, other=0.0)
        abar = tl.sum(tl.where(mi == a, alpha_bar, 0.0))
        dfa = tl.load(dF1 + a * d + offs, mask=mask, other=0.0)
        tl.store(dF1 + a * d + offs, c * (dfa + abar * n), mask=mask)
        nT += abar * fa
    n_nT = tl.sum(n * nT)
    tl.store(df_ptr + b * d + offs, c * (rho * (nT - n * n_nT) - rho2 * rho_bar * n), mask=mask)


@triton.jit
def _row_indices(m, P, S, M_PAD: tl.constexpr, P_PAD: tl.constexpr, S_PAD: tl.constexpr):
    """Index vectors over vertices, second-order streams and simplices, and their masks."""
    mi = tl.arange(0, M_PAD)
    pi = tl.arange(0, P_PAD)
    si = tl.arange(0, S_PAD)
    return mi, pi, si, mi < m, pi < P, si < S


@triton.jit
def _moment_tensors(Bm_ptr, D_ptr, E_ptr, mi, pi, si, M_PAD: tl.constexpr, P_PAD: tl.constexpr):
    """The padded moment-incidence tensors Bm (S, M, M), D (S, M, P), E (S, P, P)."""
    Bm = tl.load(Bm_ptr + si[:, None, None] * M_PAD * M_PAD + mi[None, :, None] * M_PAD + mi[None, None, :])
    D = tl.load(D_ptr + si[:, None, None] * M_PAD * P_PAD + mi[None, :, None] * P_PAD + pi[None, None, :])
    E = tl.load(E_ptr + si[:, None, None] * P_PAD * P_PAD + pi[None, :, None] * P_PAD + pi[None, None, :])
    return Bm, D, E


@triton.jit
def _rows(z, rows, row_mask, c0, cols, C):
    """Tile (len(rows), BLOCK_C) of a row-major (K, C) block; zeros outside the masks."""
    cmask = (c0 + cols) < C
    ptrs = z + rows[:, None].to(tl.int64) * C + (c0 + cols)[None, :]
    return tl.load(ptrs, mask=row_mask[:, None] & cmask[None, :], other=0.0)


@triton.jit
def _softmax_tile(z, lse, c0, cols, C):
    cmask = (c0 + cols) < C
    z0 = tl.load(z + c0 + cols, mask=cmask, other=float("-inf"))
    return tl.where(cmask, tl.exp(z0 - lse), 0.0)


@triton.jit
def _term(ta_ptr, tb_ptr, tc_ptr, st, t, pi, pmask, P_PAD: tl.constexpr):
    """Term t of every stream's form: vertices a, b (P,), coefficient (P,; 0 where absent), their means μ."""
    ka = tl.load(ta_ptr + t * P_PAD + pi, mask=pmask, other=0)
    kb = tl.load(tb_ptr + t * P_PAD + pi, mask=pmask, other=0)
    coef = tl.load(tc_ptr + t * P_PAD + pi, mask=pmask, other=0.0)
    mu_a = tl.load(st + 1 + ka, mask=pmask, other=0.0)
    mu_b = tl.load(st + 1 + kb, mask=pmask, other=0.0)
    return ka, kb, coef, mu_a, mu_b


@triton.jit
def _term_tiles(z, ka, kb, mu_a, mu_b, pmask, c0, cols, C):
    """ẑ_a, ẑ_b (P, BLOCK_C) of one term of every form over one class tile (zero where masked)."""
    pm = pmask[:, None] & ((c0 + cols) < C)[None, :]
    za = tl.where(pm, _rows(z, 1 + ka, pmask, c0, cols, C) - mu_a[:, None], 0.0)
    zb = tl.where(pm, _rows(z, 1 + kb, pmask, c0, cols, C) - mu_b[:, None], 0.0)
    return za, zb


@triton.jit
def _quad_tile(
    z, st, ta_ptr, tb_ptr, tc_ptr, pi, pmask, c0, cols, C,
    P_PAD: tl.constexpr, TERMS: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Π_j(ẑ) (P, BLOCK_C): every second-order form at the centred first-order streams of one class tile."""
    quad = tl.zeros([P_PAD, BLOCK_C], dtype=tl.float32)
    for t in tl.static_range(TERMS):
        ka, kb, coef, mu_a, mu_b = _term(ta_ptr, tb_ptr, tc_ptr, st, t, pi, pmask, P_PAD)
        za, zb = _term_tiles(z, ka, kb, mu_a, mu_b, pmask, c0, cols, C)
        quad += coef[:, None] * za * zb
    return quad


@triton.jit
def _centred_tiles(
    z, st, lse, mi, vmask, pi, pmask, ta_ptr, tb_ptr, tc_ptr, mu_v, mu_p, nu, m, c0, cols, C,
    P_PAD: tl.constexpr, TERMS: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """g (C,), ẑ_v (M, C), ẑ_p (P, C), Π(ẑ) (P, C) and w = Π − ν + ẑ_p (P, C) of one class tile."""
    g = _softmax_tile(z, lse, c0, cols, C)
    cmask = (c0 + cols) < C
    vm = vmask[:, None] & cmask[None, :]
    pm = pmask[:, None] & cmask[None, :]
    zv = tl.where(vm, _rows(z, 1 + mi, vmask, c0, cols, C) - mu_v[:, None], 0.0)
    zp = tl.where(pm, _rows(z, 1 + m + pi, pmask, c0, cols, C) - mu_p[:, None], 0.0)
    quad = _quad_tile(z, st, ta_ptr, tb_ptr, tc_ptr, pi, pmask, c0, cols, C, P_PAD, TERMS, BLOCK_C)
    w = tl.where(pm, quad - nu[:, None] + zp, 0.0)
    return g, zv, zp, quad, w


@triton.jit
def class_forward_kernel(
    Z_ptr, stats_ptr, loss_ptr, omega_ptr, labels_ptr, weights_ptr, ta_ptr, tb_ptr, tc_ptr, A_ptr, Bm_ptr, D_ptr,
    E_ptr, m, P, S, C, lam, c_jp2, c_qsq, c_jpq, c_q2,
    M_PAD: tl.constexpr, P_PAD: tl.constexpr, S_PAD: tl.constexpr, TERMS: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0).to(tl.int64)
    K = 1 + m + P
    z = Z_ptr + b * K * C
    st = stats_ptr + b * (K + P)
    cols = tl.arange(0, BLOCK_C)
    mi, pi, si, vmask, pmask, smask = _row_indices(m, P, S, M_PAD, P_PAD, S_PAD)
    # log-sum-exp of the clean logits (per-lane online maximum, merged at the end)
    lane_max = tl.full([BLOCK_C], -1e30, tl.float32)  # finite sentinel: no inf − inf in the rescaling
    lane_sum = tl.zeros([BLOCK_C], dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        cmask = (c0 + cols) < C
        z0 = tl.load(z + c0 + cols, mask=cmask, other=-1e30)
        new_max = tl.maximum(lane_max, z0)
        lane_sum = lane_sum * tl.exp(lane_max - new_max) + tl.where(cmask, tl.exp(z0 - new_max), 0.0)
        lane_max = new_max
    mx = tl.max(lane_max)
    lse = mx + tl.log(tl.sum(lane_sum * tl.exp(lane_max - mx)))
    # centring means μ of every jet stream
    mu_v = tl.zeros([M_PAD], dtype=tl.float32)
    mu_p = tl.zeros([P_PAD], dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        g = _softmax_tile(z, lse, c0, cols, C)
        mu_v += tl.sum(_rows(z, 1 + mi, vmask, c0, cols, C) * g[None, :], axis=1)
        mu_p += tl.sum(_rows(z, 1 + m + pi, pmask, c0, cols, C) * g[None, :], axis=1)
    tl.store(st, lse)
    tl.store(st + 1 + mi, mu_v, mask=vmask)
    tl.store(st + 1 + m + pi, mu_p, mask=pmask)
    tl.debug_barrier()
    # covariances ν_j = <g, Π_j(ẑ)>
    nu = tl.zeros([P_PAD], dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        g = _softmax_tile(z, lse, c0, cols, C)
        quad = _quad_tile(z, st, ta_ptr, tb_ptr, tc_ptr, pi, pmask, c0, cols, C, P_PAD, TERMS, BLOCK_C)
        nu += tl.sum(quad * g[None, :], axis=1)
    nu = tl.where(pmask, nu, 0.0)
    tl.store(st + K + pi, nu, mask=pmask)
    # Gram matrices over the classes
    A = tl.load(A_ptr + si[:, None] * P_PAD + pi[None, :])
    g_uu = tl.zeros([M_PAD, M_PAD], dtype=tl.float32)
    g_uh = tl.zeros([M_PAD, P_PAD], dtype=tl.float32)
    g_hh = tl.zeros([P_PAD, P_PAD], dtype=tl.float32)
    qsq = tl.zeros([S_PAD], dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        g, zv, _, _, w = _centred_tiles(
            z, st, lse, mi, vmask, pi, pmask, ta_ptr, tb_ptr, tc_ptr, mu_v, mu_p, nu, m, c0, cols, C,
            P_PAD, TERMS, BLOCK_C,
        )  # fmt: skip
        u = zv * g[None, :]
        h = w * g[None, :]
        g_uu += tl.dot(u, tl.trans(u), input_precision="ieee")
        g_uh += tl.dot(u, tl.trans(h), input_precision="ieee")
        g_hh += tl.dot(h, tl.trans(h), input_precision="ieee")
        q = tl.dot(A, h, input_precision="ieee")
        qsq += tl.sum(q * q, axis=1)
    Bm, D, E = _moment_tensors(Bm_ptr, D_ptr, E_ptr, mi, pi, si, M_PAD, P_PAD)
    jp2 = tl.sum(tl.sum(Bm * g_uu[None, :, :], axis=2), axis=1)
    jpq = tl.sum(tl.sum(D * g_uh[None, :, :], axis=2), axis=1)
    q2 = tl.sum(tl.sum(E * g_hh[None, :, :], axis=2), axis=1)
    omega = c_jp2 * jp2 + c_qsq * qsq + c_jpq * jpq + c_q2 * q2
    tl.store(omega_ptr + b * S + si, omega, mask=smask)
    y = tl.load(labels_ptr + b)  # checked on the host; the mask keeps a stray label from reading out of bounds
    weights = tl.load(weights_ptr + b * S + si, mask=smask, other=0.0)
    z_label = tl.load(z + y, mask=(y >= 0) & (y < C), other=float("nan"))
    loss = lse - z_label + lam * tl.sum(tl.where(smask, weights * omega, 0.0))
    tl.store(loss_ptr + b, loss)


@triton.jit
def class_backward_kernel(
    Z_ptr, stats_ptr, dZ_ptr, labels_ptr, weights_ptr, grad_loss_ptr, grad_omega_ptr, ta_ptr, tb_ptr, tc_ptr,
    A_ptr, Bm_ptr, D_ptr, E_ptr, m, P, S, C, lam, c_jp2, c_qsq, c_jpq, c_q2,
    HAS_GRAD_OMEGA: tl.constexpr, M_PAD: tl.constexpr, P_PAD: tl.constexpr, S_PAD: tl.constexpr,
    TERMS: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0).to(tl.int64)
    K = 1 + m + P
    z = Z_ptr + b * K * C
    dz = dZ_ptr + b * K * C
    st = stats_ptr + b * (K + P)
    cols = tl.arange(0, BLOCK_C)
    mi, pi, si, vmask, pmask, smask = _row_indices(m, P, S, M_PAD, P_PAD, S_PAD)
    lse = tl.load(st)
    mu_v = tl.load(st + 1 + mi, mask=vmask, other=0.0)
    mu_p = tl.load(st + 1 + m + pi, mask=pmask, other=0.0)
    nu = tl.load(st + K + pi, mask=pmask, other=0.0)
    gl = tl.load(grad_loss_ptr + b)
    G = gl * lam * tl.load(weights_ptr + b * S + si, mask=smask, other=0.0)
    if HAS_GRAD_OMEGA:
        G += tl.load(grad_omega_ptr + b * S + si, mask=smask, other=0.0)
    # per-row matrices: ū = M_uu u + M_uh h, h̄ = M_uhᵀ u + M_hh h
    A = tl.load(A_ptr + si[:, None] * P_PAD + pi[None, :])
    Bm, D, E = _moment_tensors(Bm_ptr, D_ptr, E_ptr, mi, pi, si, M_PAD, P_PAD)
    m_uu = 2.0 * c_jp2 * tl.sum(G[:, None, None] * Bm, axis=0)
    m_uh = c_jpq * tl.sum(G[:, None, None] * D, axis=0)
    m_hh = 2.0 * c_qsq * tl.dot(tl.trans(A * G[:, None]), A, input_precision="ieee")
    m_hh += 2.0 * c_q2 * tl.sum(G[:, None, None] * E, axis=0)
    m_uh_t = tl.trans(m_uh)
    # pass A: α = g ū and β = g h̄ staged in dZ; row sums B_j, S_a = Σ_c (α_a + Σ_j β_j ∂Π_j/∂ẑ_a), GG
    b_p = tl.zeros([P_PAD], dtype=tl.float32)
    s_a = tl.zeros([M_PAD], dtype=tl.float32)
    gg = tl.zeros([BLOCK_C], dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        g, zv, _, _, w = _centred_tiles(
            z, st, lse, mi, vmask, pi, pmask, ta_ptr, tb_ptr, tc_ptr, mu_v, mu_p, nu, m, c0, cols, C,
            P_PAD, TERMS, BLOCK_C,
        )  # fmt: skip
        u = zv * g[None, :]
        h = w * g[None, :]
        ubar = tl.dot(m_uu, u, input_precision="ieee") + tl.dot(m_uh, h, input_precision="ieee")
        hbar = tl.dot(m_uh_t, u, input_precision="ieee") + tl.dot(m_hh, h, input_precision="ieee")
        alpha = ubar * g[None, :]
        beta = hbar * g[None, :]
        cmask = (c0 + cols) < C
        tl.store(dz + (1 + mi)[:, None] * C + (c0 + cols)[None, :], alpha, mask=vmask[:, None] & cmask[None, :])
        tl.store(dz + (1 + m + pi)[:, None] * C + (c0 + cols)[None, :], beta, mask=pmask[:, None] & cmask[None, :])
        b_p += tl.sum(beta, axis=1)
        s_a += tl.sum(alpha, axis=1)
        for t in tl.static_range(TERMS):  # Σ_c β_j coef ẑ_b onto vertex a, and ẑ_a onto vertex b
            ka, kb, coef, mu_a, mu_b = _term(ta_ptr, tb_ptr, tc_ptr, st, t, pi, pmask, P_PAD)
            za, zb = _term_tiles(z, ka, kb, mu_a, mu_b, pmask, c0, cols, C)
            r_b = tl.sum(beta * zb, axis=1) * coef
            r_a = tl.sum(beta * za, axis=1) * coef
            s_a += tl.sum(tl.where((mi[:, None] == ka[None, :]) & pmask[None, :], r_b[None, :], 0.0), axis=1)
            s_a += tl.sum(tl.where((mi[:, None] == kb[None, :]) & pmask[None, :], r_a[None, :], 0.0), axis=1)
        gg += tl.sum(alpha * zv, axis=0) + tl.sum(beta * w, axis=0)
    gg_total = tl.sum(gg) - tl.sum(b_p * nu)
    tl.debug_barrier()
    # pass B: final adjoints of every stream
    y = tl.load(labels_ptr + b)
    for c0 in range(0, C, BLOCK_C):
        g, zv, zp, quad, w = _centred_tiles(
            z, st, lse, mi, vmask, pi, pmask, ta_ptr, tb_ptr, tc_ptr, mu_v, mu_p, nu, m, c0, cols, C,
            P_PAD, TERMS, BLOCK_C,
        )  # fmt: skip
        cmask = (c0 + cols) < C
        vm = vmask[:, None] & cmask[None, :]
        pm = pmask[:, None] & cmask[None, :]
        alpha = tl.load(dz + (1 + mi)[:, None] * C + (c0 + cols)[None, :], mask=vm, other=0.0)
        beta = tl.load(dz + (1 + m + pi)[:, None] * C + (c0 + cols)[None, :], mask=pm, other=0.0)
        coupling = beta - b_p[:, None] * g[None, :]
        zbar_v = alpha
        for t in tl.static_range(TERMS):  # Σ_j (β_j − B_j g) ∂Π_j/∂ẑ_a
            ka, kb, coef, mu_a, mu_b = _term(ta_ptr, tb_ptr, tc_ptr, st, t, pi, pmask, P_PAD)
            za, zb = _term_tiles(z, ka, kb, mu_a, mu_b, pmask, c0, cols, C)
            weighted = coupling * coef[:, None]
            inc_a = tl.where((mi[:, None] == ka[None, :]) & pmask[None, :], 1.0, 0.0)  # (M, P) one-hot of vertex a
            inc_b = tl.where((mi[:, None] == kb[None, :]) & pmask[None, :], 1.0, 0.0)
            zbar_v += tl.dot(inc_a, weighted * zb, input_precision="ieee")
            zbar_v += tl.dot(inc_b, weighted * za, input_precision="ieee")
        direct = tl.sum(alpha * zv, axis=0) + tl.sum(beta * w, axis=0)
        centred = gg_total + tl.sum(s_a[:, None] * zv, axis=0) + tl.sum(b_p[:, None] * (quad + zp), axis=0)
        onehot = tl.where((c0 + cols) == y, 1.0, 0.0)
        tl.store(dz + (1 + mi)[:, None] * C + (c0 + cols)[None, :], zbar_v - g[None, :] * s_a[:, None], mask=vm)
        tl.store(dz + (1 + m + pi)[:, None] * C + (c0 + cols)[None, :], beta - g[None, :] * b_p[:, None], mask=pm)
        tl.store(dz + c0 + cols, direct - g * centred + gl * (g - onehot), mask=cmask)
