"""Triton kernels of ``jet_rules``: fused second-order jet rules of GELU, LayerNorm and softmax.

Layout (see :mod:`advsimplex.reference.jet_rules`): a stacked jet is a contiguous tensor viewed as
``(G, S, M)`` where ``S = 1 + m + N`` streams sit between ``G`` outer and ``M`` inner elements
(primal, then m first-order streams, then N second-order streams). For the row rules (LayerNorm, softmax)
``M = R·F`` holds ``R`` rows of ``F`` features. The second-order streams follow a plan
(:class:`~advsimplex.reference.plan.JetPlan`):

- pairs: stream ``p`` combines first-order streams ``left[p]`` and ``right[p]``;
- collapsed (``left``/``right`` None, simplex order Q): stream ``s`` is the Dirichlet-weighted sum over simplex
  ``s`` (vertices ``s .. s + W − 1``, ``W = Q − 1``); with ``σ_s = Σ_{k∈s} x_k`` and ``c = 1/(Q(Q + 1))`` a rule's
  bilinear term is ``quad_s = c (Σ_{k∈s} B(x_k, x_k) + B(σ_s, σ_s))`` (spec §7b), never a term per pair.

One program owns a block of elements (GELU) or one row (LayerNorm, softmax) across **all** S
streams: the primal is loaded once, and the nonlinear coefficients (f', f'', mean/rstd, softmax
row) are computed once and reused by every tangent stream. The backward kernels accumulate the
adjoints of first-order streams that several second-order streams share in their output buffer
(read-modify-write by the owning program, separated by barriers). Arithmetic is float32 (float64 for
float64 inputs).

Formulas (derivations in the docstrings of :mod:`advsimplex.reference.jet_rules`; ``⟨·⟩`` the row mean):

- GELU-type ``f``: ``y_k = f' x_k``, ``y_2 = f' x_2 + f'' quad``; quad = ``x_a x_b`` or ``c (Σ x_k² + σ²)``.
- LayerNorm: ``t = (x_k − ⟨x_k⟩) r``, ``α = ⟨n t⟩``, ``n_k = t_k − n α_k``, ``n_2 = t_2 − n ⟨n t_2⟩ + quad`` with
  pairs ``quad = n (3 α_a α_b − ⟨t_a t_b⟩) − t_a α_b − t_b α_a``; collapsed ``quad = c [n (3 A − T) − 2 V]``,
  ``A = Σ α_k² + σ_α²``, ``T = Σ ⟨t_k²⟩ + ⟨σ_t²⟩``, ``V = Σ α_k t_k + σ_α σ_t``.
- softmax: ``D_k = s_k − ⟨P, s_k⟩``, ``P_k = P D_k``, ``E_2 = s_2 + quad`` (``D_a D_b`` or ``c (Σ D_k² + σ²)``),
  ``P_2 = P (E_2 − ⟨P, E_2⟩)``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

GELU_CODES = {"none": 0, "tanh": 1, "quick": 2}
ELEMENTWISE_BLOCK = 1024
MAX_ROW = 16384


def _compute_type(x: Tensor):
    return tl.float64 if x.dtype == torch.float64 else tl.float32


def _row_block(n: int) -> int:
    block = triton.next_power_of_2(n)
    if block > MAX_ROW:
        raise ValueError(f"jet_rules (triton): rows of {n} features exceed the kernel limit {MAX_ROW}")
    return block


def _warps(block: int) -> int:
    return max(1, min(8, block // 256))


# ------------------------------------------------------------------------------------------------
# GELU-type activations
# ------------------------------------------------------------------------------------------------


@triton.jit
def _element_tile(M, m, P, NBLOCKS, BLOCK: tl.constexpr):
    """This program's block of the inner axis: (offset of its group's primal, int64 stream stride, offsets, mask)."""
    pid = tl.program_id(0).to(tl.int64)
    g = pid // NBLOCKS
    offs = (pid % NBLOCKS) * BLOCK + tl.arange(0, BLOCK)
    stride = g * 0 + M  # int64: S·M may exceed 2**31
    return g * (1 + m + P) * stride, stride, offs, offs < M


@triton.jit
def _row_tile(R, N, m, P, BLOCK: tl.constexpr):
    """This program's row: (row index, offset of its primal row, int64 stream stride, columns, mask)."""
    row = tl.program_id(0).to(tl.int64)
    stride = row * 0 + R * N  # int64: S·R·N may exceed 2**31
    cols = tl.arange(0, BLOCK)
    return row, (row // R) * (1 + m + P) * stride + (row % R) * N, stride, cols, cols < N


@triton.jit
def _gelu_coefficients(x, KIND: tl.constexpr):
    """(f, f', f'', f''') at x (the compiler drops what a caller does not use)."""
    if KIND == 0:  # erf GELU: f = xΦ, f' = Φ + xφ, f'' = φ(2 − x²), f''' = φ x (x² − 4)
        cdf = 0.5 * (1.0 + tl.math.erf(x * 0.7071067811865476))
        pdf = tl.exp(-0.5 * x * x) * 0.3989422804014327
        f0 = x * cdf
        f1 = cdf + x * pdf
        f2 = pdf * (2.0 - x * x)
        f3 = pdf * x * (x * x - 4.0)
    elif KIND == 1:  # tanh GELU: f = ½x(1 + tanh w), w = c(x + 0.044715x³)
        x2 = x * x
        w = 0.7978845608028654 * (x + 0.044715 * x2 * x)
        t = 1.0 - 2.0 / (tl.exp(2.0 * w) + 1.0)
        q = 1.0 - t * t
        w1 = 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * x2)
        w2 = 0.21406444881780076 * x  # 6·c·0.044715
        f0 = 0.5 * x * (1.0 + t)
        f1 = 0.5 * (1.0 + t) + 0.5 * x * q * w1
        f2 = q * w1 - x * t * q * w1 * w1 + 0.5 * x * q * w2
        f3 = (
            -3.0 * t * q * w1 * w1
            + 1.5 * q * w2
            - x * q * w1 * w1 * w1 * (q - 2.0 * t * t)
            - 3.0 * x * t * q * w1 * w2
            + 0.5 * x * q * (0.21406444881780076)
        )
    else:  # QuickGELU: f = xσ(kx), k = 1.702
        s = 1.0 / (1.0 + tl.exp(-1.702 * x))
        u = s * (1.0 - s)
        f0 = x * s
        f1 = s + 1.702 * x * u
        f2 = u * (2.0 * 1.702 + 2.896804 * x * (1.0 - 2.0 * s))
        f3 = 3.0 * 2.896804 * u * (1.0 - 2.0 * s) + 4.930360408 * x * u * (1.0 - 6.0 * s + 6.0 * s * s)
    return f0, f1, f2, f3


@triton.jit
def _window(X, base, stride, offs, mask, s, WIDTH: tl.constexpr, COMPUTE: tl.constexpr):
    """(σ_s, Σ_{k∈s} x_k²) of collapsed simplex s over the first-order streams (elementwise)."""
    sigma = tl.load(X + base + (1 + s) * stride + offs, mask=mask, other=0.0).to(COMPUTE)
    square = sigma * sigma
    for j in tl.static_range(1, WIDTH):
        xk = tl.load(X + base + (1 + s + j) * stride + offs, mask=mask, other=0.0).to(COMPUTE)
        sigma += xk
        square += xk * xk
    return sigma, square


@triton.jit
def _gelu_forward_kernel(
    X, Y, LEFT, RIGHT, M, m, P, NBLOCKS, C,
    KIND: tl.constexpr, COLLAPSED: tl.constexpr, WIDTH: tl.constexpr, COMPUTE: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    base, M, offs, mask = _element_tile(M, m, P, NBLOCKS, BLOCK)
    x0 = tl.load(X + base + offs, mask=mask, other=0.0).to(COMPUTE)
    f0, f1, f2, _ = _gelu_coefficients(x0, KIND)
    tl.store(Y + base + offs, f0.to(Y.dtype.element_ty), mask=mask)
    for k in range(m):
        x1 = tl.load(X + base + (1 + k) * M + offs, mask=mask, other=0.0).to(COMPUTE)
        tl.store(Y + base + (1 + k) * M + offs, (f1 * x1).to(Y.dtype.element_ty), mask=mask)
    for p in range(P):
        if COLLAPSED:
            sigma, square = _window(X, base, M, offs, mask, p, WIDTH, COMPUTE)
            quad = C * (square + sigma * sigma)
        else:
            a = tl.load(LEFT + p)
            b = tl.load(RIGHT + p)
            xa = tl.load(X + base + (1 + a) * M + offs, mask=mask, other=0.0).to(COMPUTE)
            xb = tl.load(X + base + (1 + b) * M + offs, mask=mask, other=0.0).to(COMPUTE)
            quad = xa * xb
        x2 = tl.load(X + base + (1 + m + p) * M + offs, mask=mask, other=0.0).to(COMPUTE)
        tl.store(Y + base + (1 + m + p) * M + offs, (f1 * x2 + f2 * quad).to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _gelu_backward_kernel(
    X, DY, DX, LEFT, RIGHT, M, m, P, NBLOCKS, C,
    KIND: tl.constexpr, COLLAPSED: tl.constexpr, WIDTH: tl.constexpr, COMPUTE: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """dx_p = f' dy_p;  dx_k = f' dy_k + f'' Σ_p dy_p ∂quad_p/∂x_k;  dx_0 = f' dy_0 + f'' (Σ dy_k x_k + Σ dy_p x_p)
    + f''' Σ dy_p quad_p, with ∂quad_p/∂x_k = [a=k] x_b + [b=k] x_a (pairs) or 2c (x_k + σ_s) for k ∈ s."""
    base, M, offs, mask = _element_tile(M, m, P, NBLOCKS, BLOCK)
    x0 = tl.load(X + base + offs, mask=mask, other=0.0).to(COMPUTE)
    _, f1, f2, f3 = _gelu_coefficients(x0, KIND)
    acc0 = f1 * tl.load(DY + base + offs, mask=mask, other=0.0).to(COMPUTE)
    for k in range(m):
        row = base + (1 + k) * M + offs
        x1 = tl.load(X + row, mask=mask, other=0.0).to(COMPUTE)
        g1 = tl.load(DY + row, mask=mask, other=0.0).to(COMPUTE)
        acc0 += f2 * g1 * x1
        tl.store(DX + row, (f1 * g1).to(DX.dtype.element_ty), mask=mask)
    tl.debug_barrier()
    for p in range(P):
        row = base + (1 + m + p) * M + offs
        x2 = tl.load(X + row, mask=mask, other=0.0).to(COMPUTE)
        g2 = tl.load(DY + row, mask=mask, other=0.0).to(COMPUTE)
        tl.store(DX + row, (f1 * g2).to(DX.dtype.element_ty), mask=mask)
        if COLLAPSED:
            sigma, square = _window(X, base, M, offs, mask, p, WIDTH, COMPUTE)
            acc0 += f2 * g2 * x2 + f3 * g2 * C * (square + sigma * sigma)
            weight = 2.0 * C * f2 * g2
            for j in tl.static_range(WIDTH):
                rk = base + (1 + p + j) * M + offs
                xk = tl.load(X + rk, mask=mask, other=0.0).to(COMPUTE)
                dk = tl.load(DX + rk, mask=mask, other=0.0).to(COMPUTE)
                tl.store(DX + rk, (dk + weight * (xk + sigma)).to(DX.dtype.element_ty), mask=mask)
                tl.debug_barrier()
        else:
            a = tl.load(LEFT + p)
            b = tl.load(RIGHT + p)
            xa = tl.load(X + base + (1 + a) * M + offs, mask=mask, other=0.0).to(COMPUTE)
            xb = tl.load(X + base + (1 + b) * M + offs, mask=mask, other=0.0).to(COMPUTE)
            acc0 += f2 * g2 * x2 + f3 * g2 * xa * xb
            da = tl.load(DX + base + (1 + a) * M + offs, mask=mask, other=0.0).to(COMPUTE)
            tl.store(DX + base + (1 + a) * M + offs, (da + f2 * g2 * xb).to(DX.dtype.element_ty), mask=mask)
            tl.debug_barrier()
            db = tl.load(DX + base + (1 + b) * M + offs, mask=mask, other=0.0).to(COMPUTE)
            tl.store(DX + base + (1 + b) * M + offs, (db + f2 * g2 * xa).to(DX.dtype.element_ty), mask=mask)
            tl.debug_barrier()
    tl.store(DX + base + offs, acc0.to(DX.dtype.element_ty), mask=mask)


def _elementwise_grid(g: int, inner: int) -> tuple[int, int]:
    nblocks = triton.cdiv(inner, ELEMENTWISE_BLOCK)
    return g * nblocks, nblocks


def _plan_arguments(x: Tensor, left: Tensor | None, right: Tensor | None, m: int, order: int) -> tuple:
    """Kernel arguments of a plan: ((LEFT, RIGHT, P, C), {COLLAPSED, WIDTH}).

    Pairs plans pass their (P,) index tables; collapsed plans (``left``/``right`` None) the simplex order Q.
    """
    if left is None:
        if order not in (3, 4) or m < order - 1:
            raise ValueError(f"jet_rules (triton): a collapsed plan needs order 3 or 4 and m >= order - 1, got "
                             f"m={m}, order={order}")  # fmt: skip
        return (x, x, m - order + 2, 1.0 / (order * (order + 1))), {"COLLAPSED": True, "WIDTH": order - 1}
    return (left, right, int(left.shape[0]), 0.0), {"COLLAPSED": False, "WIDTH": 1}


def gelu_forward(x: Tensor, left: Tensor | None, right: Tensor | None, m: int, kind: str, order: int = 0) -> Tensor:
    """x: contiguous (G, S, M) stacked jet → y of the same shape (``left``/``right`` None: the collapsed plan of
    simplex order ``order``)."""
    g, _, inner = x.shape
    y = torch.empty_like(x)
    programs, nblocks = _elementwise_grid(g, inner)
    (lt, rt, p, c), flags = _plan_arguments(x, left, right, m, order)
    if programs:
        _gelu_forward_kernel[(programs,)](
            x, y, lt, rt, inner, m, p, nblocks, c,
            KIND=GELU_CODES[kind], COMPUTE=_compute_type(x), BLOCK=ELEMENTWISE_BLOCK, num_warps=4, **flags,
        )  # fmt: skip
    return y


def gelu_backward(
    x: Tensor, dy: Tensor, left: Tensor | None, right: Tensor | None, m: int, kind: str, order: int = 0
) -> Tensor:
    g, _, inner = x.shape
    dx = torch.empty_like(x)
    programs, nblocks = _elementwise_grid(g, inner)
    (lt, rt, p, c), flags = _plan_arguments(x, left, right, m, order)
    if programs:
        _gelu_backward_kernel[(programs,)](
            x, dy, dx, lt, rt, inner, m, p, nblocks, c,
            KIND=GELU_CODES[kind], COMPUTE=_compute_type(x), BLOCK=ELEMENTWISE_BLOCK, num_warps=4, **flags,
        )  # fmt: skip
    return dx


# ------------------------------------------------------------------------------------------------
# LayerNorm
# ------------------------------------------------------------------------------------------------


@triton.jit
def _centered(X, offset, cols, mask, N, r, COMPUTE: tl.constexpr):
    """(x − ⟨x⟩)·r of one row, zero outside the row."""
    x = tl.load(X + offset + cols, mask=mask, other=0.0).to(COMPUTE)
    return tl.where(mask, (x - tl.sum(x, axis=0) / N) * r, 0.0)


@triton.jit
def _ln_primal(X, base, cols, mask, N, eps, COMPUTE: tl.constexpr):
    x0 = tl.load(X + base + cols, mask=mask, other=0.0).to(COMPUTE)
    c0 = tl.where(mask, x0 - tl.sum(x0, axis=0) / N, 0.0)
    r = 1.0 / tl.sqrt(tl.sum(c0 * c0, axis=0) / N + eps)
    return c0 * r, r


@triton.jit
def _ln_window(X, base, stride, cols, mask, N, r, n0, s, WIDTH: tl.constexpr, COMPUTE: tl.constexpr):
    """Collapsed simplex s: (σ_t, V = Σ α_k t_k + σ_α σ_t, σ_α, A = Σ α_k² + σ_α², T = Σ ⟨t_k²⟩ + ⟨σ_t²⟩)."""
    sig = _centered(X, base + (1 + s) * stride, cols, mask, N, r, COMPUTE)
    sa = tl.sum(n0 * sig, axis=0) / N
    v = sa * sig
    asq = sa * sa
    tsq = tl.sum(sig * sig, axis=0) / N
    for j in tl.static_range(1, WIDTH):
        tk = _centered(X, base + (1 + s + j) * stride, cols, mask, N, r, COMPUTE)
        ak = tl.sum(n0 * tk, axis=0) / N
        sig += tk
        v += ak * tk
        sa += ak
        asq += ak * ak
        tsq += tl.sum(tk * tk, axis=0) / N
    return sig, v + sa * sig, sa, asq + sa * sa, tsq + tl.sum(sig * sig, axis=0) / N


@triton.jit
def _ln_pair(X, LEFT, RIGHT, base, stride, cols, mask, N, r, n0, p, COMPUTE: tl.constexpr):
    """Pair stream p = (a, b): (a, b, t_a, t_b, α_a, α_b, κ' = 3 α_a α_b − ⟨t_a t_b⟩)."""
    a = tl.load(LEFT + p)
    b = tl.load(RIGHT + p)
    ta = _centered(X, base + (1 + a) * stride, cols, mask, N, r, COMPUTE)
    tb = _centered(X, base + (1 + b) * stride, cols, mask, N, r, COMPUTE)
    aa = tl.sum(n0 * ta, axis=0) / N
    ab = tl.sum(n0 * tb, axis=0) / N
    return a, b, ta, tb, aa, ab, 3.0 * aa * ab - tl.sum(ta * tb, axis=0) / N


@triton.jit
def _ln_forward_kernel(
    X, W, B, Y, LEFT, RIGHT, R, N, m, P, eps, C,
    HAS_W: tl.constexpr, HAS_B: tl.constexpr, COLLAPSED: tl.constexpr, WIDTH: tl.constexpr,
    COMPUTE: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    _, base, stride, cols, mask = _row_tile(R, N, m, P, BLOCK)
    if HAS_W:
        w = tl.load(W + cols, mask=mask, other=0.0).to(COMPUTE)
    else:
        w = tl.full([BLOCK], 1.0, COMPUTE)
    n0, r = _ln_primal(X, base, cols, mask, N, eps, COMPUTE)
    y0 = n0 * w
    if HAS_B:
        y0 += tl.load(B + cols, mask=mask, other=0.0).to(COMPUTE)
    tl.store(Y + base + cols, y0.to(Y.dtype.element_ty), mask=mask)
    for k in range(m):
        t1 = _centered(X, base + (1 + k) * stride, cols, mask, N, r, COMPUTE)
        alpha = tl.sum(n0 * t1, axis=0) / N
        tl.store(Y + base + (1 + k) * stride + cols, ((t1 - n0 * alpha) * w).to(Y.dtype.element_ty), mask=mask)
    for p in range(P):
        t2 = _centered(X, base + (1 + m + p) * stride, cols, mask, N, r, COMPUTE)
        beta = tl.sum(n0 * t2, axis=0) / N
        if COLLAPSED:
            _, v, _, A, T = _ln_window(X, base, stride, cols, mask, N, r, n0, p, WIDTH, COMPUTE)
            n2 = t2 + n0 * (C * (3.0 * A - T) - beta) - 2.0 * C * v
        else:
            _, _, ta, tb, aa, ab, kappa = _ln_pair(X, LEFT, RIGHT, base, stride, cols, mask, N, r, n0, p, COMPUTE)
            n2 = t2 - ta * ab - tb * aa + n0 * (kappa - beta)
        tl.store(Y + base + (1 + m + p) * stride + cols, (n2 * w).to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _ln_backward_kernel(
    X, W, DY, DX, DW, LEFT, RIGHT, R, N, m, P, eps, C,
    HAS_W: tl.constexpr, COLLAPSED: tl.constexpr, WIDTH: tl.constexpr, COMPUTE: tl.constexpr,
    BLOCK: tl.constexpr, BLOCK_M: tl.constexpr,
):  # fmt: skip
    """Reverse mode of the LayerNorm jet for one row (adjoints: n̄ = dy·w; t̄ staged in DX; ᾱ in registers)."""
    row, base, stride, cols, mask = _row_tile(R, N, m, P, BLOCK)
    ks = tl.arange(0, BLOCK_M)
    if HAS_W:
        w = tl.load(W + cols, mask=mask, other=0.0).to(COMPUTE)
    else:
        w = tl.full([BLOCK], 1.0, COMPUTE)
    n0, r = _ln_primal(X, base, cols, mask, N, eps, COMPUTE)
    g0 = tl.load(DY + base + cols, mask=mask, other=0.0).to(COMPUTE)
    dw = g0 * n0
    nbar = g0 * w
    abar = tl.zeros([BLOCK_M], dtype=COMPUTE)
    rbar = tl.sum(n0 * 0.0, axis=0)  # a zero of the compute type (loop-carried)
    for k in range(m):  # n_k = t_k − n α_k
        off = base + (1 + k) * stride
        t1 = _centered(X, off, cols, mask, N, r, COMPUTE)
        alpha = tl.sum(n0 * t1, axis=0) / N
        g1 = tl.load(DY + off + cols, mask=mask, other=0.0).to(COMPUTE)
        dw += g1 * (t1 - n0 * alpha)
        gb = g1 * w
        nbar -= alpha * gb
        abar = tl.where(ks == k, abar - tl.sum(n0 * gb, axis=0), abar)
        tl.store(DX + off + cols, gb.to(DX.dtype.element_ty), mask=mask)  # t̄_k, completed below
    tl.debug_barrier()
    for p in range(P):  # n_p = t_p − n β_p + quad_p,  β_p = ⟨n t_p⟩
        off = base + (1 + m + p) * stride
        t2 = _centered(X, off, cols, mask, N, r, COMPUTE)
        beta = tl.sum(n0 * t2, axis=0) / N
        g2 = tl.load(DY + off + cols, mask=mask, other=0.0).to(COMPUTE)
        gb = g2 * w
        kbar = tl.sum(n0 * gb, axis=0)
        if COLLAPSED:  # quad = c [n (3A − T) − 2V]: Ā = 3K, T̄ = −K (K = c κ̄), V̄ = −2c ḡ
            sig, v, sa, A, T = _ln_window(X, base, stride, cols, mask, N, r, n0, p, WIDTH, COMPUTE)
            cn = C * (3.0 * A - T) - beta
            dw += g2 * (t2 + n0 * cn - 2.0 * C * v)
            K = C * kbar
            g_sig = tl.sum(gb * sig, axis=0)
            for j in tl.static_range(WIDTH):
                ok = base + (1 + p + j) * stride
                tk = _centered(X, ok, cols, mask, N, r, COMPUTE)
                ak = tl.sum(n0 * tk, axis=0) / N
                abar = tl.where(ks == p + j, abar + 6.0 * K * (ak + sa) - 2.0 * C * (tl.sum(gb * tk, axis=0) + g_sig),
                                abar)  # fmt: skip
                dk = tl.load(DX + ok + cols, mask=mask, other=0.0).to(COMPUTE)
                dk += (-2.0 * K / N) * (tk + sig) - 2.0 * C * (ak + sa) * gb
                tl.store(DX + ok + cols, dk.to(DX.dtype.element_ty), mask=mask)
                tl.debug_barrier()
        else:  # quad = n κ' − t_a α_b − t_b α_a,  κ' = 3 α_a α_b − ⟨t_a t_b⟩
            a, b, ta, tb, aa, ab, kappa = _ln_pair(X, LEFT, RIGHT, base, stride, cols, mask, N, r, n0, p, COMPUTE)
            cn = kappa - beta
            dw += g2 * (t2 - ta * ab - tb * aa + n0 * cn)
            abar = tl.where(ks == a, abar - tl.sum(tb * gb, axis=0) + 3.0 * ab * kbar, abar)
            abar = tl.where(ks == b, abar - tl.sum(ta * gb, axis=0) + 3.0 * aa * kbar, abar)
            da = tl.load(DX + base + (1 + a) * stride + cols, mask=mask, other=0.0).to(COMPUTE)
            tl.store(DX + base + (1 + a) * stride + cols, (da - ab * gb - (kbar / N) * tb).to(DX.dtype.element_ty),
                     mask=mask)  # fmt: skip
            tl.debug_barrier()
            db = tl.load(DX + base + (1 + b) * stride + cols, mask=mask, other=0.0).to(COMPUTE)
            tl.store(DX + base + (1 + b) * stride + cols, (db - aa * gb - (kbar / N) * ta).to(DX.dtype.element_ty),
                     mask=mask)  # fmt: skip
            tl.debug_barrier()
        nbar += cn * gb - (kbar / N) * t2
        t2bar = gb - (kbar / N) * n0
        rbar += tl.sum(t2bar * t2, axis=0) / r
        dx2 = r * tl.where(mask, t2bar - tl.sum(t2bar, axis=0) / N, 0.0)
        tl.store(DX + off + cols, dx2.to(DX.dtype.element_ty), mask=mask)
    for k in range(m):  # α_k = ⟨n t_k⟩, then t_k = (x_k − ⟨x_k⟩) r
        off = base + (1 + k) * stride
        t1 = _centered(X, off, cols, mask, N, r, COMPUTE)
        ak = tl.sum(tl.where(ks == k, abar, 0.0), axis=0)
        t1bar = tl.load(DX + off + cols, mask=mask, other=0.0).to(COMPUTE) + (ak / N) * n0
        nbar += (ak / N) * t1
        rbar += tl.sum(t1bar * t1, axis=0) / r
        tl.store(DX + off + cols, (r * tl.where(mask, t1bar - tl.sum(t1bar, axis=0) / N, 0.0)).to(DX.dtype.element_ty),
                 mask=mask)  # fmt: skip
    rbar += tl.sum(nbar * n0, axis=0) / r
    dx0 = r * tl.where(mask, nbar - tl.sum(nbar, axis=0) / N, 0.0) - (r * r * rbar / N) * n0
    tl.store(DX + base + cols, dx0.to(DX.dtype.element_ty), mask=mask)
    if HAS_W:
        tl.store(DW + row * N + cols, dw.to(DW.dtype.element_ty), mask=mask)


def layer_norm_forward(
    x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float, left: Tensor | None, right: Tensor | None,
    m: int, order: int = 0,
) -> Tensor:  # fmt: skip
    """x: contiguous (G, S, R, N) stacked jet (LayerNorm over N) → y of the same shape."""
    g, _, rows, n = x.shape
    y = torch.empty_like(x)
    block = _row_block(n)
    (lt, rt, p, c), flags = _plan_arguments(x, left, right, m, order)
    if g * rows:
        _ln_forward_kernel[(g * rows,)](
            x, weight if weight is not None else x, bias if bias is not None else x, y, lt, rt,
            rows, n, m, p, float(eps), c,
            HAS_W=weight is not None, HAS_B=bias is not None, COMPUTE=_compute_type(x), BLOCK=block,
            num_warps=_warps(block), **flags,
        )  # fmt: skip
    return y


def layer_norm_backward(
    x: Tensor, weight: Tensor | None, dy: Tensor, eps: float, left: Tensor | None, right: Tensor | None, m: int,
    order: int = 0,
) -> tuple[Tensor, Tensor | None]:  # fmt: skip
    """(dx, dweight) of the LayerNorm jet; dbias is ``dy[:, 0].sum()`` over rows (done by the caller)."""
    g, _, rows, n = x.shape
    dx = torch.empty_like(x)
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    dw_rows = torch.empty((g * rows, n), dtype=acc, device=x.device) if weight is not None else None
    block = _row_block(n)
    (lt, rt, p, c), flags = _plan_arguments(x, left, right, m, order)
    if g * rows:
        _ln_backward_kernel[(g * rows,)](
            x, weight if weight is not None else x, dy, dx, dw_rows if dw_rows is not None else dx, lt, rt,
            rows, n, m, p, float(eps), c,
            HAS_W=weight is not None, COMPUTE=_compute_type(x), BLOCK=block,
            BLOCK_M=triton.next_power_of_2(max(m, 1)), num_warps=_warps(block), **flags,
        )  # fmt: skip
    dw = dw_rows.sum(dim=0).to(weight.dtype) if weight is not None else None
    return dx, dw


# ------------------------------------------------------------------------------------------------
# softmax
# ------------------------------------------------------------------------------------------------


@triton.jit
def _softmax_primal(X, base, cols, mask, COMPUTE: tl.constexpr):
    s0 = tl.load(X + base + cols, mask=mask, other=-float("inf")).to(COMPUTE)
    e = tl.exp(s0 - tl.max(s0, axis=0))
    e = tl.where(mask, e, 0.0)
    return e / tl.sum(e, axis=0)


@triton.jit
def _softmax_centered(X, offset, cols, mask, prob, COMPUTE: tl.constexpr):
    """D = s − ⟨P, s⟩ of one tangent row (and s itself)."""
    s = tl.load(X + offset + cols, mask=mask, other=0.0).to(COMPUTE)
    return s - tl.sum(prob * s, axis=0), s


@triton.jit
def _softmax_second(
    X, LEFT, RIGHT, base, stride, cols, mask, prob, m, p, C,
    COLLAPSED: tl.constexpr, WIDTH: tl.constexpr, COMPUTE: tl.constexpr,
):  # fmt: skip
    """E_p = s_p + quad_p of second-order stream p with what its backward needs: (E, D_a, D_b) for pairs,
    (E, σ_p, σ_p) for collapsed plans (σ_p the window sum of the D_k)."""
    s2 = tl.load(X + base + (1 + m + p) * stride + cols, mask=mask, other=0.0).to(COMPUTE)
    if COLLAPSED:
        sig, _ = _softmax_centered(X, base + (1 + p) * stride, cols, mask, prob, COMPUTE)
        square = sig * sig
        for j in tl.static_range(1, WIDTH):
            dk, _ = _softmax_centered(X, base + (1 + p + j) * stride, cols, mask, prob, COMPUTE)
            sig += dk
            square += dk * dk
        e = s2 + C * (square + sig * sig)
        da = sig
        db = sig
    else:
        a = tl.load(LEFT + p)
        b = tl.load(RIGHT + p)
        da, _ = _softmax_centered(X, base + (1 + a) * stride, cols, mask, prob, COMPUTE)
        db, _ = _softmax_centered(X, base + (1 + b) * stride, cols, mask, prob, COMPUTE)
        e = s2 + da * db
    return e, da, db


@triton.jit
def _softmax_forward_kernel(
    X, Y, LEFT, RIGHT, R, N, m, P, C,
    COLLAPSED: tl.constexpr, WIDTH: tl.constexpr, COMPUTE: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    _, base, stride, cols, mask = _row_tile(R, N, m, P, BLOCK)
    prob = _softmax_primal(X, base, cols, mask, COMPUTE)
    tl.store(Y + base + cols, prob.to(Y.dtype.element_ty), mask=mask)
    for k in range(m):
        d1, _ = _softmax_centered(X, base + (1 + k) * stride, cols, mask, prob, COMPUTE)
        tl.store(Y + base + (1 + k) * stride + cols, (prob * d1).to(Y.dtype.element_ty), mask=mask)
    for p in range(P):
        e, _, _ = _softmax_second(X, LEFT, RIGHT, base, stride, cols, mask, prob, m, p, C, COLLAPSED, WIDTH, COMPUTE)
        y2 = prob * (e - tl.sum(prob * e, axis=0))
        tl.store(Y + base + (1 + m + p) * stride + cols, y2.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _softmax_backward_kernel(
    X, DY, DX, LEFT, RIGHT, R, N, m, P, C,
    COLLAPSED: tl.constexpr, WIDTH: tl.constexpr, COMPUTE: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """Reverse mode of the softmax jet for one row (P̄ in registers, D̄_k staged in DX)."""
    _, base, stride, cols, mask = _row_tile(R, N, m, P, BLOCK)
    prob = _softmax_primal(X, base, cols, mask, COMPUTE)
    pbar = tl.load(DY + base + cols, mask=mask, other=0.0).to(COMPUTE)
    for k in range(m):  # P_k = P D_k
        off = base + (1 + k) * stride
        d1, _ = _softmax_centered(X, off, cols, mask, prob, COMPUTE)
        g1 = tl.load(DY + off + cols, mask=mask, other=0.0).to(COMPUTE)
        pbar += g1 * d1
        tl.store(DX + off + cols, (prob * g1).to(DX.dtype.element_ty), mask=mask)  # D̄_k, completed below
    tl.debug_barrier()
    for p in range(P):  # P_p = P (E_p − ⟨P, E_p⟩), E_p = s_p + quad_p
        off = base + (1 + m + p) * stride
        e, da, db = _softmax_second(X, LEFT, RIGHT, base, stride, cols, mask, prob, m, p, C, COLLAPSED, WIDTH, COMPUTE)
        g2 = tl.load(DY + off + cols, mask=mask, other=0.0).to(COMPUTE)
        wp = tl.sum(g2 * prob, axis=0)
        ebar = prob * (g2 - wp)
        pbar += g2 * (e - tl.sum(prob * e, axis=0)) - wp * e
        tl.store(DX + off + cols, ebar.to(DX.dtype.element_ty), mask=mask)
        if COLLAPSED:  # ∂quad/∂D_k = 2c (D_k + σ_p) for k ∈ simplex p (da holds σ_p)
            for j in tl.static_range(WIDTH):
                ok = base + (1 + p + j) * stride
                dk, _ = _softmax_centered(X, ok, cols, mask, prob, COMPUTE)
                gk = tl.load(DX + ok + cols, mask=mask, other=0.0).to(COMPUTE)
                tl.store(DX + ok + cols, (gk + 2.0 * C * ebar * (dk + da)).to(DX.dtype.element_ty), mask=mask)
                tl.debug_barrier()
        else:
            a = tl.load(LEFT + p)
            b = tl.load(RIGHT + p)
            ga = tl.load(DX + base + (1 + a) * stride + cols, mask=mask, other=0.0).to(COMPUTE)
            tl.store(DX + base + (1 + a) * stride + cols, (ga + ebar * db).to(DX.dtype.element_ty), mask=mask)
            tl.debug_barrier()
            gb = tl.load(DX + base + (1 + b) * stride + cols, mask=mask, other=0.0).to(COMPUTE)
            tl.store(DX + base + (1 + b) * stride + cols, (gb + ebar * da).to(DX.dtype.element_ty), mask=mask)
            tl.debug_barrier()
    for k in range(m):  # D_k = s_k − ⟨P, s_k⟩
        off = base + (1 + k) * stride
        _, s1 = _softmax_centered(X, off, cols, mask, prob, COMPUTE)
        dbar = tl.load(DX + off + cols, mask=mask, other=0.0).to(COMPUTE)
        cbar = -tl.sum(dbar, axis=0)
        pbar += cbar * s1
        tl.store(DX + off + cols, (dbar + cbar * prob).to(DX.dtype.element_ty), mask=mask)
    dx0 = prob * (pbar - tl.sum(prob * pbar, axis=0))
    tl.store(DX + base + cols, dx0.to(DX.dtype.element_ty), mask=mask)


def softmax_forward(x: Tensor, left: Tensor | None, right: Tensor | None, m: int, order: int = 0) -> Tensor:
    """x: contiguous (G, S, R, N) stacked jet (softmax over N) → y of the same shape."""
    g, _, rows, n = x.shape
    y = torch.empty_like(x)
    block = _row_block(n)
    (lt, rt, p, c), flags = _plan_arguments(x, left, right, m, order)
    if g * rows:
        _softmax_forward_kernel[(g * rows,)](
            x, y, lt, rt, rows, n, m, p, c,
            COMPUTE=_compute_type(x), BLOCK=block, num_warps=_warps(block), **flags,
        )  # fmt: skip
    return y


def softmax_backward(
    x: Tensor, dy: Tensor, left: Tensor | None, right: Tensor | None, m: int, order: int = 0
) -> Tensor:
    g, _, rows, n = x.shape
    dx = torch.empty_like(x)
    block = _row_block(n)
    (lt, rt, p, c), flags = _plan_arguments(x, left, right, m, order)
    if g * rows:
        _softmax_backward_kernel[(g * rows,)](
            x, dy, dx, lt, rt, rows, n, m, p, c,
            COMPUTE=_compute_type(x), BLOCK=block, num_warps=_warps(block), **flags,
        )  # fmt: skip
    return dx


def bytes_moved(x: Tensor, m: int, backward: bool = False, order: int | None = None) -> int:
    """Lower bound of the global-memory traffic of one call: every stream read once and written once
    (backward: x and dy read, dx written), plus the first-order re-reads of each second-order stream
    (two per pair stream; W = Q − 1 per simplex stream of a collapsed plan of order ``order``)."""
    s = x.shape[1]
    p = s - 1 - m
    per_stream = x.numel() // s * x.element_size()
    rereads = 2 * p if order is None else (order - 1) * p
    return per_stream * ((3 if backward else 2) * s + rereads)
