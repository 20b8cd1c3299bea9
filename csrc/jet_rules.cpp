// advsimplex::jet_rules — schemas and C++ CPU kernels (forward and backward) of the second-order jet rules of
// GELU-type activations, LayerNorm and softmax (math spec §7, §7b; the oracle is advsimplex.reference.jet_rules).
//
// A jet is a tensor with S = 1 + m + N streams along `dim`: the primal x₀, m first-order streams x_k and N
// second-order streams x₂. The plan of the second-order streams is either
//   pairs:      left/right (N,) int64 vertex tables, stream n = D²x[δ_left[n], δ_right[n]]   (order = 0), or
//   collapsed:  left/right None, order Q ∈ {3, 4}, one stream per simplex s (vertices s .. s + W − 1, W = Q − 1),
//               N = m − W + 1, stream s = Σ_{k,l∈s} M_kl D²x[δ_k, δ_l].
// Every rule has the form y₂ = Dφ[x₂] + quad(B), B = D²φ the rule's symmetric bilinear form of first-order
// streams: quad = B(x_a, x_b) per pair, or, collapsed, with σ_s = Σ_{k∈s} x_k (JetPlan.quadratic)
//   quad_s = c (Σ_{k∈s} B(x_k, x_k) + B(σ_s, σ_s)),   c = 1/(Q(Q + 1)),
// so the collapsed kernels never form a term per pair.
//
// The contiguous jet is viewed as (G, S, M): G outer elements, M inner ones; the row rules (LayerNorm, softmax
// over the last dimension of F features) see M = R·F as R rows. One task owns a chunk of inner elements (GELU)
// or one row (LayerNorm, softmax) across all S streams: the primal coefficients (f', f'', f''', the mean/rstd,
// the softmax row) are computed once per task and reused by every stream; tasks run under at::parallel_for. The
// GELU rules take the transcendental values at the primal from ATen's vectorised kernels (gelu_basis).
// Arithmetic is float64 for float64 inputs, float32 otherwise (bfloat16/float16 are computed in float32 and
// cast back, as the reference does); row reductions accumulate in double.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/WrapDimUtils.h>
#include <ATen/record_function.h>
#include <torch/library.h>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <tuple>
#include <vector>

namespace advsimplex {
namespace {

using at::Tensor;
using OptTensor = c10::optional<Tensor>;

// ---- plan and layout ------------------------------------------------------------------------------

struct Plan {
  int64_t m = 0;  // first-order streams
  int64_t N = 0;  // second-order streams
  bool collapsed = false;
  int64_t W = 0;   // vertices per simplex (collapsed)
  double c = 0;    // 1/(Q(Q+1)) (collapsed)
  std::vector<int64_t> left, right;  // pair tables (pairs)
  int64_t S() const { return 1 + m + N; }
};

Plan make_plan(const char* op, const OptTensor& left, const OptTensor& right, int64_t m, int64_t order) {
  TORCH_CHECK(m >= 1, op, ": m (first-order streams) must be >= 1, got ", m);
  const bool has_left = left.has_value() && left->defined(), has_right = right.has_value() && right->defined();
  TORCH_CHECK(has_left == has_right, op, ": left and right must be given together (pairs plan) or both None "
              "(collapsed plan)");
  Plan pl;
  pl.m = m;
  if (!has_left) {
    TORCH_CHECK(order == 3 || order == 4, op, ": order of a collapsed plan must be 3 or 4, got ", order);
    TORCH_CHECK(m >= order - 1, op, ": m = ", m, " first-order streams have no simplex of order ", order,
                " (need m >= ", order - 1, ")");
    pl.collapsed = true;
    pl.W = order - 1;
    pl.N = m - pl.W + 1;
    pl.c = 1.0 / static_cast<double>(order * (order + 1));
    return pl;
  }
  TORCH_CHECK(order == 0, op, ": order must be 0 for a pairs plan (left/right given), got ", order);
  const auto check_table = [op](const char* name, const Tensor& t) {
    TORCH_CHECK(t.device().is_cpu(), op, ": ", name, " must be a CPU tensor, got ", t.device());
    TORCH_CHECK(t.dim() == 1, op, ": ", name, " must be 1-D (P,), got shape ", t.sizes());
    TORCH_CHECK(t.scalar_type() == at::kLong || t.scalar_type() == at::kInt, op, ": ", name,
                " must be an int64 or int32 tensor, got ", t.scalar_type());
  };
  check_table("left", *left);
  check_table("right", *right);
  TORCH_CHECK(left->size(0) == right->size(0), op, ": left and right must have the same length, got ",
              left->size(0), " and ", right->size(0));
  const Tensor l = left->to(at::kLong).contiguous(), r = right->to(at::kLong).contiguous();
  pl.N = l.size(0);
  pl.left.assign(l.data_ptr<int64_t>(), l.data_ptr<int64_t>() + pl.N);
  pl.right.assign(r.data_ptr<int64_t>(), r.data_ptr<int64_t>() + pl.N);
  for (int64_t p = 0; p < pl.N; ++p) {
    TORCH_CHECK(pl.left[p] >= 0 && pl.left[p] < m, op, ": left[", p, "] = ", pl.left[p], " is not a vertex 0 .. m-1 = ",
                m - 1);
    TORCH_CHECK(pl.right[p] >= 0 && pl.right[p] < m, op, ": right[", p, "] = ", pl.right[p],
                " is not a vertex 0 .. m-1 = ", m - 1);
  }
  return pl;
}

struct Layout {
  int64_t G = 1, S = 0, M = 1;  // (G, S, M) view of the contiguous jet
  int64_t F = 1, R = 1;         // row rules: M = R·F
};

at::ScalarType compute_type(const Tensor& x) { return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

// Checks x (device, dtype, stream count) and returns its layout; `rows`: the rule works on the last dimension.
Layout make_layout(const char* op, const Tensor& x, const Plan& pl, int64_t& dim, bool rows) {
  TORCH_CHECK(x.device().is_cpu(), op, ": x must be a CPU tensor, got ", x.device());
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), op, ": x must be a floating tensor, got ", x.scalar_type());
  TORCH_CHECK(x.dim() >= 2, op, ": x must have a stream and a feature dimension, got shape ", x.sizes());
  dim = at::maybe_wrap_dim(dim, x.dim());
  TORCH_CHECK(!rows || dim != x.dim() - 1, op, ": the stream dimension (dim=", dim,
              ") cannot be the last (feature) dimension");
  TORCH_CHECK(x.size(dim) == pl.S(), op, ": x has ", x.size(dim), " streams along dim ", dim, ", expected 1 + m + ",
              pl.collapsed ? "S" : "P", " = ", pl.S(), " (m = ", pl.m, ", ", pl.N,
              pl.collapsed ? " simplex streams)" : " pair streams)");
  Layout L;
  L.S = pl.S();
  for (int64_t i = 0; i < dim; ++i) L.G *= x.size(i);
  for (int64_t i = dim + 1; i < x.dim(); ++i) L.M *= x.size(i);
  if (rows) {
    L.F = x.size(-1);
    L.R = L.F ? L.M / L.F : 0;
  }
  return L;
}

void check_grad(const char* op, const Tensor& grad, const Tensor& x) {
  TORCH_CHECK(grad.device().is_cpu(), op, ": grad must be a CPU tensor, got ", grad.device());
  TORCH_CHECK(at::isFloatingType(grad.scalar_type()), op, ": grad must be a floating tensor, got ",
              grad.scalar_type());
  TORCH_CHECK(grad.sizes() == x.sizes(), op, ": grad must have the shape of x ", x.sizes(), ", got ", grad.sizes());
}

void check_affine(const char* op, const char* name, const OptTensor& t, int64_t features) {
  if (!t.has_value() || !t->defined()) return;
  TORCH_CHECK(t->device().is_cpu(), op, ": ", name, " must be a CPU tensor, got ", t->device());
  TORCH_CHECK(at::isFloatingType(t->scalar_type()), op, ": ", name, " must be a floating tensor, got ",
              t->scalar_type());
  TORCH_CHECK(t->dim() == 1 && t->size(0) == features, op, ": ", name, " must have shape (", features,
              ",) (the last dimension of x), got ", t->sizes());
}

bool present(const OptTensor& t) { return t.has_value() && t->defined(); }

// The checked plan and layout of an op's jet x, with x (and grad, for a backward op) contiguous in the compute type.
struct Inputs {
  Plan pl;
  Layout L;
  Tensor x, dy;
};

Inputs prepare(const char* op, const Tensor& x_in, const Tensor* grad_in, const OptTensor& left,
               const OptTensor& right, int64_t m, int64_t order, int64_t dim, bool rows) {
  Inputs in;
  in.pl = make_plan(op, left, right, m, order);
  in.L = make_layout(op, x_in, in.pl, dim, rows);
  const auto ct = compute_type(x_in);
  in.x = x_in.to(ct).contiguous();
  if (grad_in) {
    check_grad(op, *grad_in, x_in);
    in.dy = grad_in->to(ct).contiguous();
  }
  return in;
}

// ---- small vector helpers (n elements, contiguous) ---------------------------------------------------

template <typename T>
inline double sum(const T* __restrict__ x, int64_t n) {
  double acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < n; ++i) acc += x[i];
  return acc;
}

template <typename T>
inline double dot(const T* __restrict__ x, const T* __restrict__ y, int64_t n) {
  double acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < n; ++i) acc += static_cast<double>(x[i]) * y[i];
  return acc;
}

template <typename T>
inline void axpy(T alpha, const T* __restrict__ x, T* __restrict__ y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

// Collapsed window of simplex s over the first-order streams (stream k at first + k·stride):
// sigma = Σ_{k∈s} x_k; sq = Σ_{k∈s} x_k² (when sq is not null).
template <typename T>
inline void window(const Plan& pl, const T* first, int64_t stride, int64_t s, int64_t n, T* __restrict__ sigma,
                   T* __restrict__ sq) {
  const T* x = first + s * stride;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    sigma[i] = x[i];
    if (sq) sq[i] = x[i] * x[i];
  }
  for (int64_t j = 1; j < pl.W; ++j) {
    const T* xk = first + (s + j) * stride;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      sigma[i] += xk[i];
      if (sq) sq[i] += xk[i] * xk[i];
    }
  }
}

template <typename T>
const T* data_or_null(const Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

// An uninitialised contiguous output of x's shape and options. A block of 32 MiB or more lies above glibc's largest
// mmap threshold: every such allocation is a fresh mapping, faulted in 4 KiB page by page on its first write (9 000
// faults, ≈ 8 ms of an 18.5 ms GELU forward at the pair plan's bench shape on the 2-core CI machine). Its 2 MiB-aligned
// interior is advised MADV_HUGEPAGE before that write, so it is faulted 2 MiB at a time where transparent huge
// pages are set to "madvise" or "always"; elsewhere the advice is a no-op.
Tensor empty_output(const Tensor& x) {
  Tensor y = at::empty(x.sizes(), x.options());
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(2) << 20;
  constexpr size_t kThreshold = size_t(32) << 20;
  const size_t bytes = y.nbytes();
  if (bytes >= kThreshold) {
    const uintptr_t begin = reinterpret_cast<uintptr_t>(y.data_ptr());
    const uintptr_t lo = (begin + kHuge - 1) & ~(kHuge - 1), hi = (begin + bytes) & ~(kHuge - 1);
    if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);  // advice only: errors ignored
  }
#endif
  return y;
}

// ---- GELU-type activations ---------------------------------------------------------------------------
enum GeluKind : int64_t { kErf = 0, kTanh = 1, kQuick = 2 };

// The transcendental part of f at the primal x₀ is computed before the fused pass by ATen's vectorised
// elementwise kernels, on the primal stream only ((G, M), 1/S of the jet) and with the reference's operations
// (advsimplex.reference.jet_rules.gelu_coefficients), so that the fused pass is polynomial and vectorises:
//   erf   b1 = erf(x/√2), b2 = exp(−x²/2);   tanh  b1 = tanh(c(x + a x³));   quick  b1 = σ(kx).
struct GeluBasis {
  Tensor b1, b2;  // (G, M) contiguous; b2 only for kErf
};

constexpr double kTanhC = 0.79788456080286535588, kTanhA = 0.044715, kQuickK = 1.702;

GeluBasis gelu_basis(int64_t kind, const Tensor& x, const Layout& L) {
  const Tensor x0 = x.view({L.G, L.S, L.M}).select(1, 0).contiguous();  // (G, M): the kernels index it densely
  GeluBasis b;
  if (kind == kErf) {
    b.b1 = x0.mul(0.70710678118654752440).erf_();
    b.b2 = x0.square().mul_(-0.5).exp_();
  } else if (kind == kTanh) {
    b.b1 = x0.square().mul_(kTanhA).mul_(x0).add_(x0).mul_(kTanhC).tanh_();
  } else {
    b.b1 = x0.mul(kQuickK).sigmoid_();
  }
  return b;
}

// f and its derivatives from x₀ and its basis values (b2 is read by kErf only): kind 0 erf GELU (nn.GELU()),
// 1 tanh GELU (approximate='tanh'), 2 QuickGELU x·σ(1.702x).
template <int64_t Kind, typename T>
inline void gelu_coefficients(T x, T b1, [[maybe_unused]] T b2, T& f0, T& f1, T& f2, T& f3) {
  if constexpr (Kind == kErf) {  // f = xΦ, f' = Φ + xφ, f'' = φ(2 − x²), f''' = φ x (x² − 4)
    const T cdf = T(0.5) * (T(1) + b1);
    const T pdf = b2 * T(0.39894228040143267794);
    f0 = x * cdf;
    f1 = cdf + x * pdf;
    f2 = pdf * (T(2) - x * x);
    f3 = pdf * x * (x * x - T(4));
  } else if constexpr (Kind == kTanh) {  // f = ½x(1 + t), t = tanh w, w = c(x + a x³); q = 1 − t², w1 = w', w2 = w''
    constexpr T c = T(kTanhC), a = T(kTanhA), w3 = T(6) * c * a;
    const T x2 = x * x, t = b1;
    const T q = T(1) - t * t;
    const T w1 = c * (T(1) + T(3) * a * x2), w2 = w3 * x;
    f0 = T(0.5) * x * (T(1) + t);
    f1 = T(0.5) * (T(1) + t) + T(0.5) * x * q * w1;
    f2 = q * w1 - x * t * q * w1 * w1 + T(0.5) * x * q * w2;
    f3 = T(-3) * t * q * w1 * w1 + T(1.5) * q * w2 - x * q * w1 * w1 * w1 * (q - T(2) * t * t) -
         T(3) * x * t * q * w1 * w2 + T(0.5) * x * q * w3;
  } else {  // f = xs, s = σ(kx), u = s(1 − s): f' = s + kxu, f'' = u(2k + k²x(1 − 2s)),
            // f''' = 3k²u(1 − 2s) + k³xu(1 − 6s + 6s²)
    constexpr T k = T(kQuickK);
    const T s = b1;
    const T u = s * (T(1) - s);
    f0 = x * s;
    f1 = s + k * x * u;
    f2 = u * (T(2) * k + k * k * x * (T(1) - T(2) * s));
    f3 = T(3) * k * k * u * (T(1) - T(2) * s) + k * k * k * x * u * (T(1) - T(6) * s + T(6) * s * s);
  }
}

// Inner elements per GELU task: 8 KiB runs of each float32 stream (512 elements left the stream-wise loads
// waiting on memory: 12 % slower fwd+bwd at the bench shape), 96 KiB of float64 scratch at most.
constexpr int64_t kChunk = 2048;

// y₀ = f(x₀), y_k = f' x_k, y₂ = f' x₂ + f'' quad,  quad = x_a x_b  |  c(Σ_{k∈s} x_k² + σ_s²)
template <int64_t Kind, typename T>
void gelu_forward_impl(const Plan& pl, const Layout& L, const T* x, const T* b1, const T* b2, T* y) {
  const int64_t M = L.M, S = L.S, m = pl.m, chunks = (M + kChunk - 1) / kChunk;
  at::parallel_for(0, L.G * chunks, 1, [&](int64_t begin, int64_t end) {
    alignas(64) T f1[kChunk], f2[kChunk], sig[kChunk], quad[kChunk];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t i0 = (task % chunks) * kChunk, n = std::min(kChunk, M - i0);
      const T* xs = x + (task / chunks) * S * M + i0;  // stream k at xs + k·M
      T* ys = y + (task / chunks) * S * M + i0;
      const int64_t bi = (task / chunks) * M + i0;
      const T *__restrict__ c1 = b1 + bi, *__restrict__ c2 = b2 ? b2 + bi : c1;
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) {
        T f0, f3;
        gelu_coefficients<Kind>(xs[i], c1[i], c2[i], f0, f1[i], f2[i], f3);
        ys[i] = f0;
      }
      for (int64_t k = 1; k <= m; ++k) {
        const T* __restrict__ xk = xs + k * M;
        T* __restrict__ yk = ys + k * M;
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) yk[i] = f1[i] * xk[i];
      }
      for (int64_t s = 0; s < pl.N; ++s) {
        const T* __restrict__ x2 = xs + (1 + m + s) * M;
        T* __restrict__ y2 = ys + (1 + m + s) * M;
        if (pl.collapsed) {
          window(pl, xs + M, M, s, n, sig, quad);
          const T c = T(pl.c);
#pragma omp simd
          for (int64_t i = 0; i < n; ++i) y2[i] = f1[i] * x2[i] + f2[i] * (c * (quad[i] + sig[i] * sig[i]));
        } else {
          const T *__restrict__ xa = xs + (1 + pl.left[s]) * M, *__restrict__ xb = xs + (1 + pl.right[s]) * M;
#pragma omp simd
          for (int64_t i = 0; i < n; ++i) y2[i] = f1[i] * x2[i] + f2[i] * xa[i] * xb[i];
        }
      }
    }
  });
}

// dx₂ = f' dy₂;  dx_k = f' dy_k + f'' Σ dy₂ ∂quad/∂x_k;  dx₀ = f' dy₀ + f'' (Σ dy_k x_k + Σ dy₂ x₂) + f''' Σ dy₂ quad,
// ∂quad/∂x_k: pairs [a=k] x_b + [b=k] x_a; collapsed 2c (x_k + σ_s) for k ∈ s.
template <int64_t Kind, typename T>
void gelu_backward_impl(const Plan& pl, const Layout& L, const T* x, const T* b1, const T* b2, const T* dy,
                        T* dx) {
  const int64_t M = L.M, S = L.S, m = pl.m, chunks = (M + kChunk - 1) / kChunk;
  at::parallel_for(0, L.G * chunks, 1, [&](int64_t begin, int64_t end) {
    alignas(64) T f1[kChunk], f2[kChunk], f3[kChunk], acc[kChunk], sig[kChunk], quad[kChunk];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t i0 = (task % chunks) * kChunk, n = std::min(kChunk, M - i0), off = (task / chunks) * S * M + i0;
      const T *xs = x + off, *gs = dy + off;
      T* ds = dx + off;
      const int64_t bi = (task / chunks) * M + i0;
      const T *__restrict__ c1 = b1 + bi, *__restrict__ c2 = b2 ? b2 + bi : c1;
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) {
        T f0;
        gelu_coefficients<Kind>(xs[i], c1[i], c2[i], f0, f1[i], f2[i], f3[i]);
        acc[i] = f1[i] * gs[i];
      }
      for (int64_t k = 1; k <= m; ++k) {
        const T *__restrict__ xk = xs + k * M, *__restrict__ gk = gs + k * M;
        T* __restrict__ dk = ds + k * M;
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) {
          acc[i] += f2[i] * gk[i] * xk[i];
          dk[i] = f1[i] * gk[i];
        }
      }
      for (int64_t s = 0; s < pl.N; ++s) {
        const T *__restrict__ x2 = xs + (1 + m + s) * M, *__restrict__ g2 = gs + (1 + m + s) * M;
        T* __restrict__ d2 = ds + (1 + m + s) * M;
        if (pl.collapsed) {
          window(pl, xs + M, M, s, n, sig, quad);
          const T c = T(pl.c);
#pragma omp simd
          for (int64_t i = 0; i < n; ++i) {
            acc[i] += f2[i] * g2[i] * x2[i] + f3[i] * g2[i] * (c * (quad[i] + sig[i] * sig[i]));
            d2[i] = f1[i] * g2[i];
            quad[i] = T(2) * c * f2[i] * g2[i];  // reused: the weight of (x_k + σ_s)
          }
          for (int64_t j = 0; j < pl.W; ++j) {
            const T* __restrict__ xk = xs + (1 + s + j) * M;
            T* __restrict__ dk = ds + (1 + s + j) * M;
#pragma omp simd
            for (int64_t i = 0; i < n; ++i) dk[i] += quad[i] * (xk[i] + sig[i]);
          }
        } else {
          const int64_t a = pl.left[s], b = pl.right[s];
          const T *__restrict__ xa = xs + (1 + a) * M, *__restrict__ xb = xs + (1 + b) * M;
#pragma omp simd
          for (int64_t i = 0; i < n; ++i) {
            acc[i] += f2[i] * g2[i] * x2[i] + f3[i] * g2[i] * xa[i] * xb[i];
            d2[i] = f1[i] * g2[i];
            quad[i] = f2[i] * g2[i];
          }
          T *da = ds + (1 + a) * M, *db = ds + (1 + b) * M;  // may alias (a == b)
          for (int64_t i = 0; i < n; ++i) da[i] += quad[i] * xb[i];
          for (int64_t i = 0; i < n; ++i) db[i] += quad[i] * xa[i];
        }
      }
      for (int64_t i = 0; i < n; ++i) ds[i] = acc[i];
    }
  });
}

template <typename T, typename Fn>
void dispatch_kind(int64_t kind, Fn&& fn) {
  if (kind == kErf) fn(std::integral_constant<int64_t, kErf>{});
  else if (kind == kTanh) fn(std::integral_constant<int64_t, kTanh>{});
  else fn(std::integral_constant<int64_t, kQuick>{});
}

void check_kind(const char* op, int64_t kind) {
  TORCH_CHECK(kind == kErf || kind == kTanh || kind == kQuick, op,
              ": kind must be 0 (erf GELU), 1 (tanh GELU) or 2 (QuickGELU), got ", kind);
}

Tensor jet_gelu_forward_cpu(const Tensor& x_in, const OptTensor& left, const OptTensor& right, int64_t m,
                            int64_t order, int64_t kind, int64_t dim) {
  const char* op = "jet_gelu_forward";
  check_kind(op, kind);
  const Inputs in = prepare(op, x_in, nullptr, left, right, m, order, dim, false);
  Tensor y = empty_output(in.x);
  RECORD_FUNCTION("jet_rules::gelu_forward", std::vector<c10::IValue>());
  const GeluBasis basis = gelu_basis(kind, in.x, in.L);
  AT_DISPATCH_FLOATING_TYPES(in.x.scalar_type(), "jet_gelu_forward_cpu", [&] {
    dispatch_kind<scalar_t>(kind, [&](auto k) {
      gelu_forward_impl<decltype(k)::value, scalar_t>(in.pl, in.L, in.x.data_ptr<scalar_t>(),
                                                      basis.b1.data_ptr<scalar_t>(), data_or_null<scalar_t>(basis.b2),
                                                      y.data_ptr<scalar_t>());
    });
  });
  return y.to(x_in.scalar_type());
}

Tensor jet_gelu_backward_cpu(const Tensor& grad_in, const Tensor& x_in, const OptTensor& left,
                             const OptTensor& right, int64_t m, int64_t order, int64_t kind, int64_t dim) {
  const char* op = "jet_gelu_backward";
  check_kind(op, kind);
  const Inputs in = prepare(op, x_in, &grad_in, left, right, m, order, dim, false);
  Tensor dx = empty_output(in.x);
  RECORD_FUNCTION("jet_rules::gelu_backward", std::vector<c10::IValue>());
  const GeluBasis basis = gelu_basis(kind, in.x, in.L);
  AT_DISPATCH_FLOATING_TYPES(in.x.scalar_type(), "jet_gelu_backward_cpu", [&] {
    dispatch_kind<scalar_t>(kind, [&](auto k) {
      gelu_backward_impl<decltype(k)::value, scalar_t>(in.pl, in.L, in.x.data_ptr<scalar_t>(),
                                                       basis.b1.data_ptr<scalar_t>(),
                                                       data_or_null<scalar_t>(basis.b2), in.dy.data_ptr<scalar_t>(),
                                                       dx.data_ptr<scalar_t>());
    });
  });
  return dx.to(x_in.scalar_type());
}

// ---- LayerNorm ---------------------------------------------------------------------------------------
// Per row (⟨·⟩ the mean over the F features): r = (⟨(x₀ − ⟨x₀⟩)²⟩ + eps)^(-1/2), n = (x₀ − ⟨x₀⟩) r,
// t_k = (x_k − ⟨x_k⟩) r, α_k = ⟨n t_k⟩, n_k = t_k − n α_k, t₂ = (x₂ − ⟨x₂⟩) r, β = ⟨n t₂⟩ and
//   n₂ = t₂ − n β + quad(B),   B(a, b) = n (3 α_a α_b − ⟨t_a t_b⟩) − t_a α_b − t_b α_a,
// collapsed: quad_s = c [n (3 A_s − T_s) − 2 V_s], A_s = Σ α_k² + σ_α², T_s = Σ ⟨t_k²⟩ + ⟨σ_t²⟩,
// V_s = Σ α_k t_k + σ_α σ_t (sums over k ∈ s; σ_α, σ_t the window sums of α and t).
// y₀ = n w + b, y_k = n_k w, y₂ = n₂ w.

template <typename T>
struct RowWork {  // per-thread scratch of the row rules
  std::vector<T> n0, t, tbar, scratch;
  std::vector<double> alpha, abar, tsq;
  RowWork(int64_t m, int64_t F, int64_t buffers)
      : n0(F), t(m * F), tbar(m * F), scratch(buffers * F), alpha(m), abar(m), tsq(m) {}
  T* buf(int64_t i, int64_t F) { return scratch.data() + i * F; }
};

// n₀ (into n) and r of one primal row.
template <typename T>
T ln_primal(const T* x0, int64_t F, double eps, T* __restrict__ n) {
  const T mu = T(sum(x0, F) / F);
#pragma omp simd
  for (int64_t i = 0; i < F; ++i) n[i] = x0[i] - mu;
  const T r = T(1.0 / std::sqrt(dot(n, n, F) / F + eps));
#pragma omp simd
  for (int64_t i = 0; i < F; ++i) n[i] *= r;
  return r;
}

// t = (x − ⟨x⟩) r
template <typename T>
inline void centred(const T* __restrict__ x, int64_t F, T r, T* __restrict__ t) {
  const T mu = T(sum(x, F) / F);
#pragma omp simd
  for (int64_t i = 0; i < F; ++i) t[i] = (x[i] - mu) * r;
}

// The first-order streams of a row: t_k, α_k (and ⟨t_k²⟩ for collapsed plans).
template <typename T>
void ln_first(const Plan& pl, const T* row, int64_t stride, int64_t F, T r, RowWork<T>& ws) {
  for (int64_t k = 0; k < pl.m; ++k) {
    T* tk = ws.t.data() + k * F;
    centred(row + (1 + k) * stride, F, r, tk);
    ws.alpha[k] = dot(ws.n0.data(), tk, F) / F;
    if (pl.collapsed) ws.tsq[k] = dot(tk, tk, F) / F;
  }
}

// Collapsed LayerNorm window of simplex s: σ_t (into sig), V_s (into v), and returns (σ_α, A_s, T_s).
template <typename T>
std::tuple<double, double, double> ln_window(const Plan& pl, int64_t s, int64_t F, RowWork<T>& ws, T* sig, T* v) {
  window(pl, ws.t.data(), F, s, F, sig, static_cast<T*>(nullptr));
  double sa = 0, asq = 0, tsq = 0;
  for (int64_t j = 0; j < pl.W; ++j) {
    sa += ws.alpha[s + j];
    asq += ws.alpha[s + j] * ws.alpha[s + j];
    tsq += ws.tsq[s + j];
  }
  const T sa_t = T(sa);
#pragma omp simd
  for (int64_t i = 0; i < F; ++i) v[i] = sa_t * sig[i];
  for (int64_t j = 0; j < pl.W; ++j) axpy(T(ws.alpha[s + j]), ws.t.data() + (s + j) * F, v, F);
  return {sa, asq + sa * sa, tsq + dot(sig, sig, F) / F};
}

template <typename T>
void ln_forward_impl(const Plan& pl, const Layout& L, const T* x, const T* w, const T* b, double eps, T* y) {
  const int64_t F = L.F, R = L.R, S = L.S, m = pl.m, stride = L.M;
  at::parallel_for(0, L.G * R, 1, [&](int64_t begin, int64_t end) {
    RowWork<T> ws(m, F, 3);
    T *t2 = ws.buf(0, F), *sig = ws.buf(1, F), *v = ws.buf(2, F);
    const T* n0 = ws.n0.data();
    for (int64_t row = begin; row < end; ++row) {
      const int64_t off = (row / R) * S * stride + (row % R) * F;  // stream k of this row at off + k·stride
      const T* xr = x + off;
      T* yr = y + off;
      const T r = ln_primal(xr, F, eps, ws.n0.data());
#pragma omp simd
      for (int64_t i = 0; i < F; ++i) yr[i] = n0[i] * w[i] + (b ? b[i] : T(0));
      ln_first(pl, xr, stride, F, r, ws);
      for (int64_t k = 0; k < m; ++k) {
        const T* __restrict__ tk = ws.t.data() + k * F;
        T* __restrict__ yk = yr + (1 + k) * stride;
        const T ak = T(ws.alpha[k]);
#pragma omp simd
        for (int64_t i = 0; i < F; ++i) yk[i] = (tk[i] - n0[i] * ak) * w[i];
      }
      for (int64_t s = 0; s < pl.N; ++s) {
        T* __restrict__ y2 = yr + (1 + m + s) * stride;
        centred(xr + (1 + m + s) * stride, F, r, t2);
        const double beta = dot(n0, t2, F) / F;
        if (pl.collapsed) {
          const auto [sa, A, Tt] = ln_window(pl, s, F, ws, sig, v);
          const T cn = T(pl.c * (3 * A - Tt) - beta), cv = T(2 * pl.c);
#pragma omp simd
          for (int64_t i = 0; i < F; ++i) y2[i] = (t2[i] + n0[i] * cn - cv * v[i]) * w[i];
        } else {
          const int64_t a = pl.left[s], bb = pl.right[s];
          const T *ta = ws.t.data() + a * F, *tb = ws.t.data() + bb * F;
          const double aa = ws.alpha[a], ab = ws.alpha[bb];
          const T kappa = T(3 * aa * ab - dot(ta, tb, F) / F - beta), aa_t = T(aa), ab_t = T(ab);
#pragma omp simd
          for (int64_t i = 0; i < F; ++i) y2[i] = (t2[i] - ta[i] * ab_t - tb[i] * aa_t + n0[i] * kappa) * w[i];
        }
      }
    }
  });
}

// Reverse mode of one row (adjoints: n̄ from every output, t̄_k staged in ws.tbar, ᾱ_k in ws.abar, r̄ a scalar).
template <typename T>
void ln_backward_impl(const Plan& pl, const Layout& L, const T* x, const T* w, const T* dy, double eps, T* dx,
                      T* dw_rows) {
  const int64_t F = L.F, R = L.R, S = L.S, m = pl.m, stride = L.M;
  at::parallel_for(0, L.G * R, 1, [&](int64_t begin, int64_t end) {
    RowWork<T> ws(m, F, 5);
    T *t2 = ws.buf(0, F), *gb = ws.buf(1, F), *nbar = ws.buf(2, F), *sig = ws.buf(3, F), *v = ws.buf(4, F);
    const T* n0 = ws.n0.data();
    for (int64_t row = begin; row < end; ++row) {
      const int64_t off = (row / R) * S * stride + (row % R) * F;
      const T *xr = x + off, *gr = dy + off;
      T* dr = dx + off;
      T* dw = dw_rows ? dw_rows + row * F : nullptr;
      const T r = ln_primal(xr, F, eps, ws.n0.data());
      ln_first(pl, xr, stride, F, r, ws);
      double rbar = 0;
#pragma omp simd
      for (int64_t i = 0; i < F; ++i) nbar[i] = gr[i] * w[i];
      if (dw) {
#pragma omp simd
        for (int64_t i = 0; i < F; ++i) dw[i] = gr[i] * n0[i];
      }
      for (int64_t k = 0; k < m; ++k) {  // n_k = t_k − n α_k
        const T* __restrict__ gk = gr + (1 + k) * stride;
        const T* __restrict__ tk = ws.t.data() + k * F;
        T* __restrict__ tbar = ws.tbar.data() + k * F;
        const T ak = T(ws.alpha[k]);
        if (dw) {
#pragma omp simd
          for (int64_t i = 0; i < F; ++i) dw[i] += gk[i] * (tk[i] - n0[i] * ak);
        }
#pragma omp simd
        for (int64_t i = 0; i < F; ++i) {
          tbar[i] = gk[i] * w[i];
          nbar[i] -= ak * tbar[i];
        }
        ws.abar[k] = -dot(n0, tbar, F);
      }
      for (int64_t s = 0; s < pl.N; ++s) {  // n₂ = t₂ − n β + quad
        const T* __restrict__ g2 = gr + (1 + m + s) * stride;
        T* __restrict__ d2 = dr + (1 + m + s) * stride;
        centred(xr + (1 + m + s) * stride, F, r, t2);
        const double beta = dot(n0, t2, F) / F;
#pragma omp simd
        for (int64_t i = 0; i < F; ++i) gb[i] = g2[i] * w[i];
        const double kbar = dot(n0, gb, F);  // −β̄
        const T kN = T(kbar / F);
        if (pl.collapsed) {
          const auto [sa, A, Tt] = ln_window(pl, s, F, ws, sig, v);
          const T cn = T(pl.c * (3 * A - Tt) - beta), cv = T(2 * pl.c);
          if (dw) {
#pragma omp simd
            for (int64_t i = 0; i < F; ++i) dw[i] += g2[i] * (t2[i] + n0[i] * cn - cv * v[i]);
          }
          // quad_s = c [n (3A − T) − 2V]: Ā = 3K, T̄ = −K (K = c κ̄), V̄ = −2c ḡ
          const double K = pl.c * kbar, g_sig = dot(gb, sig, F);
          for (int64_t j = 0; j < pl.W; ++j) {
            const int64_t k = s + j;
            const T* __restrict__ tk = ws.t.data() + k * F;
            T* __restrict__ tbar = ws.tbar.data() + k * F;
            ws.abar[k] += 6 * K * (ws.alpha[k] + sa) - 2 * pl.c * (dot(gb, tk, F) + g_sig);
            const T ct = T(-2 * K / F), cg = T(-2 * pl.c * (ws.alpha[k] + sa));
#pragma omp simd
            for (int64_t i = 0; i < F; ++i) tbar[i] += ct * (tk[i] + sig[i]) + cg * gb[i];
          }
#pragma omp simd
          for (int64_t i = 0; i < F; ++i) nbar[i] += cn * gb[i] - kN * t2[i];
        } else {  // quad_p = n κ' − t_a α_b − t_b α_a,  κ' = 3 α_a α_b − ⟨t_a t_b⟩
          const int64_t a = pl.left[s], bb = pl.right[s];
          const T *ta = ws.t.data() + a * F, *tb = ws.t.data() + bb * F;
          const double aa = ws.alpha[a], ab = ws.alpha[bb];
          const T kappa = T(3 * aa * ab - dot(ta, tb, F) / F - beta), aa_t = T(aa), ab_t = T(ab);
          if (dw) {
#pragma omp simd
            for (int64_t i = 0; i < F; ++i) dw[i] += g2[i] * (t2[i] - ta[i] * ab_t - tb[i] * aa_t + n0[i] * kappa);
          }
#pragma omp simd
          for (int64_t i = 0; i < F; ++i) nbar[i] += kappa * gb[i] - kN * t2[i];
          ws.abar[a] += -dot(tb, gb, F) + 3 * ab * kbar;
          ws.abar[bb] += -dot(ta, gb, F) + 3 * aa * kbar;
          T *tba = ws.tbar.data() + a * F, *tbb = ws.tbar.data() + bb * F;  // may alias (a == b)
          for (int64_t i = 0; i < F; ++i) tba[i] -= ab_t * gb[i] + kN * tb[i];
          for (int64_t i = 0; i < F; ++i) tbb[i] -= aa_t * gb[i] + kN * ta[i];
        }
        // t̄₂ = ḡ − (κ̄/F) n (kept in gb), then t₂ = (x₂ − ⟨x₂⟩) r
#pragma omp simd
        for (int64_t i = 0; i < F; ++i) gb[i] -= kN * n0[i];
        rbar += dot(gb, t2, F) / r;
        const T mean_bar = T(sum(gb, F) / F);
#pragma omp simd
        for (int64_t i = 0; i < F; ++i) d2[i] = r * (gb[i] - mean_bar);
      }
      for (int64_t k = 0; k < m; ++k) {  // α_k = ⟨n t_k⟩, then t_k = (x_k − ⟨x_k⟩) r
        const T* __restrict__ tk = ws.t.data() + k * F;
        T* __restrict__ tbar = ws.tbar.data() + k * F;
        T* __restrict__ dk = dr + (1 + k) * stride;
        const T aN = T(ws.abar[k] / F);
#pragma omp simd
        for (int64_t i = 0; i < F; ++i) {
          tbar[i] += aN * n0[i];
          nbar[i] += aN * tk[i];
        }
        rbar += dot(tbar, tk, F) / r;
        const T mean_bar = T(sum(tbar, F) / F);
#pragma omp simd
        for (int64_t i = 0; i < F; ++i) dk[i] = r * (tbar[i] - mean_bar);
      }
      rbar += dot(nbar, n0, F) / r;  // n = (x₀ − ⟨x₀⟩) r
      const T mean_bar = T(sum(nbar, F) / F), cr = T(r * r * rbar / F);
#pragma omp simd
      for (int64_t i = 0; i < F; ++i) dr[i] = r * (nbar[i] - mean_bar) - cr * n0[i];
    }
  });
}

Tensor affine_or_ones(const OptTensor& t, at::ScalarType ct, int64_t F) {
  return present(t) ? t->to(ct).contiguous() : at::ones({F}, at::TensorOptions().dtype(ct));
}

Tensor jet_layer_norm_forward_cpu(const Tensor& x_in, const OptTensor& weight, const OptTensor& bias,
                                  const OptTensor& left, const OptTensor& right, int64_t m, int64_t order, double eps,
                                  int64_t dim) {
  const char* op = "jet_layer_norm_forward";
  const Inputs in = prepare(op, x_in, nullptr, left, right, m, order, dim, true);
  check_affine(op, "weight", weight, in.L.F);
  check_affine(op, "bias", bias, in.L.F);
  TORCH_CHECK(eps >= 0, op, ": eps must be >= 0, got ", eps);
  const auto ct = in.x.scalar_type();
  const Tensor w = affine_or_ones(weight, ct, in.L.F), b = present(bias) ? bias->to(ct).contiguous() : Tensor();
  Tensor y = empty_output(in.x);
  RECORD_FUNCTION("jet_rules::layer_norm_forward", std::vector<c10::IValue>());
  AT_DISPATCH_FLOATING_TYPES(ct, "jet_layer_norm_forward_cpu", [&] {
    ln_forward_impl<scalar_t>(in.pl, in.L, in.x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(),
                              data_or_null<scalar_t>(b), eps, y.data_ptr<scalar_t>());
  });
  return y.to(x_in.scalar_type());
}

std::tuple<Tensor, Tensor, Tensor> jet_layer_norm_backward_cpu(const Tensor& grad_in, const Tensor& x_in,
                                                               const OptTensor& weight, const OptTensor& left,
                                                               const OptTensor& right, int64_t m, int64_t order,
                                                               double eps, int64_t dim, bool weight_grad,
                                                               bool bias_grad) {
  const char* op = "jet_layer_norm_backward";
  const Inputs in = prepare(op, x_in, &grad_in, left, right, m, order, dim, true);
  const Layout& L = in.L;
  check_affine(op, "weight", weight, L.F);
  TORCH_CHECK(!weight_grad || present(weight), op, ": weight_grad asks for the gradient of a weight that is None");
  TORCH_CHECK(eps >= 0, op, ": eps must be >= 0, got ", eps);
  const auto ct = in.x.scalar_type();
  const Tensor w = affine_or_ones(weight, ct, L.F);
  Tensor dx = empty_output(in.x);
  Tensor dw_rows = weight_grad ? at::empty({L.G * L.R, L.F}, in.x.options()) : Tensor();
  RECORD_FUNCTION("jet_rules::layer_norm_backward", std::vector<c10::IValue>());
  AT_DISPATCH_FLOATING_TYPES(ct, "jet_layer_norm_backward_cpu", [&] {
    scalar_t* dw = dw_rows.defined() ? dw_rows.data_ptr<scalar_t>() : nullptr;
    ln_backward_impl<scalar_t>(in.pl, L, in.x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), in.dy.data_ptr<scalar_t>(),
                               eps, dx.data_ptr<scalar_t>(), dw);
  });
  // (0,) placeholders for gradients not asked for (distinct tensors: outputs must not alias)
  Tensor dweight = weight_grad ? dw_rows.sum(0).to(weight->scalar_type()) : at::empty({0}, x_in.options());
  // the bias shifts the primal only: dbias = Σ over the primal rows of dy₀ (in the dtype of x)
  Tensor dbias = bias_grad ? in.dy.view({L.G, L.S, L.M}).select(1, 0).reshape({-1, L.F}).sum(0).to(x_in.scalar_type())
                           : at::empty({0}, x_in.options());
  return {dx.to(x_in.scalar_type()), dweight, dbias};
}

// ---- softmax -----------------------------------------------------------------------------------------
// P = softmax(s₀), D_k = s_k − ⟨P, s_k⟩, P_k = P D_k, E₂ = s₂ + quad (pairs D_a D_b; collapsed
// c(Σ_{k∈s} D_k² + σ_s²)), P₂ = P (E₂ − ⟨P, E₂⟩); ⟨P, ·⟩ = Σ_i P_i ·_i.
// Softmax rows are short (attention: one row per token), so the kernels fuse their loops over a row: the
// window width W is a template parameter (0 for pairs plans) and every second-order stream takes two passes.

// Prefetches F elements from p (the same stream's span in the next row). A softmax row is short (200 bytes at 50
// tokens) and a row task walks it in 30 streams of x, of the gradient and of the output: too many interleaved
// streams for the hardware prefetcher, so each stream's next row is requested while this row's is computed
// (fwd+bwd at the bench's pair plan on the 2-core CI machine: 4.6–4.7 ms against 4.9–6.1 ms without, 4 runs each).
template <typename T>
inline void prefetch_span([[maybe_unused]] const T* p, [[maybe_unused]] int64_t F) {
#if defined(__GNUC__)
  for (int64_t i = 0; i < F; i += 64 / sizeof(T)) __builtin_prefetch(p + i);
  __builtin_prefetch(p + F - 1);
#endif
}

template <typename T>
void softmax_primal(const T* s0, int64_t F, T* __restrict__ p) {
  T mx = -std::numeric_limits<T>::infinity();
  for (int64_t i = 0; i < F; ++i) mx = std::max(mx, s0[i]);
  for (int64_t i = 0; i < F; ++i) p[i] = std::exp(s0[i] - mx);
  const T inv = T(1.0 / sum(p, F));
#pragma omp simd
  for (int64_t i = 0; i < F; ++i) p[i] *= inv;
}

// D_k = s_k − ⟨P, s_k⟩ of first-order stream k (into d).
template <typename T>
inline void softmax_centred(const T* __restrict__ sk, const T* __restrict__ p, int64_t F, T* __restrict__ d) {
  const T mean = T(dot(p, sk, F));
#pragma omp simd
  for (int64_t i = 0; i < F; ++i) d[i] = sk[i] - mean;
}

// E₂ of second-order stream s (into e; collapsed plans: σ_s into sig) and returns (⟨P, E₂⟩, ⟨P, g⟩) for a row g.
template <int W, typename T>
inline std::pair<T, T> softmax_second(const Plan& pl, int64_t s, const T* __restrict__ s2, const T* __restrict__ p,
                                      const T* __restrict__ g, int64_t F, const T* D, T* __restrict__ e,
                                      T* __restrict__ sig) {
  double pe = 0, pg = 0;
  if constexpr (W > 0) {
    const T c = T(pl.c);
    const T* Ds = D + s * F;
#pragma omp simd reduction(+ : pe, pg)
    for (int64_t i = 0; i < F; ++i) {
      T sigma = Ds[i], square = Ds[i] * Ds[i];
      for (int j = 1; j < W; ++j) {
        sigma += Ds[j * F + i];
        square += Ds[j * F + i] * Ds[j * F + i];
      }
      sig[i] = sigma;
      e[i] = s2[i] + c * (square + sigma * sigma);
      pe += static_cast<double>(p[i]) * e[i];
      pg += static_cast<double>(p[i]) * g[i];
    }
  } else {
    const T *Da = D + pl.left[s] * F, *Db = D + pl.right[s] * F;
#pragma omp simd reduction(+ : pe, pg)
    for (int64_t i = 0; i < F; ++i) {
      e[i] = s2[i] + Da[i] * Db[i];
      pe += static_cast<double>(p[i]) * e[i];
      pg += static_cast<double>(p[i]) * g[i];
    }
  }
  return {T(pe), T(pg)};
}

template <int W, typename T>
void softmax_forward_impl(const Plan& pl, const Layout& L, const T* x, T* y) {
  const int64_t F = L.F, R = L.R, S = L.S, m = pl.m, stride = L.M;
  at::parallel_for(0, L.G * R, 1, [&](int64_t begin, int64_t end) {
    RowWork<T> ws(m, F, 2);
    T *e = ws.buf(0, F), *sig = ws.buf(1, F), *D = ws.t.data();
    for (int64_t row = begin; row < end; ++row) {
      const int64_t off = (row / R) * S * stride + (row % R) * F;  // stream k of this row at off + k·stride
      const T* xr = x + off;
      T* yr = y + off;
      // the next row's offset from this one (0 on the last row: re-requests this row, harmless)
      const int64_t ahead = row + 1 < end ? ((row + 1) / R) * S * stride + ((row + 1) % R) * F - off : 0;
      T* __restrict__ p = yr;  // the primal output row holds P
      prefetch_span(xr + ahead, F);
      softmax_primal(xr, F, p);
      for (int64_t k = 0; k < m; ++k) {
        T* __restrict__ dk = D + k * F;
        T* __restrict__ yk = yr + (1 + k) * stride;
        prefetch_span(xr + (1 + k) * stride + ahead, F);
        softmax_centred(xr + (1 + k) * stride, p, F, dk);
#pragma omp simd
        for (int64_t i = 0; i < F; ++i) yk[i] = p[i] * dk[i];
      }
      for (int64_t s = 0; s < pl.N; ++s) {
        const T* s2 = xr + (1 + m + s) * stride;
        prefetch_span(s2 + ahead, F);
        const T pe = softmax_second<W>(pl, s, s2, p, s2, F, D, e, sig).first;
        T* __restrict__ y2 = yr + (1 + m + s) * stride;
#pragma omp simd
        for (int64_t i = 0; i < F; ++i) y2[i] = p[i] * (e[i] - pe);
      }
    }
  });
}

// Reverse mode of one row (P̄ in pbar, D̄_k staged in ws.tbar).
template <int W, typename T>
void softmax_backward_impl(const Plan& pl, const Layout& L, const T* x, const T* dy, T* dx) {
  const int64_t F = L.F, R = L.R, S = L.S, m = pl.m, stride = L.M;
  at::parallel_for(0, L.G * R, 1, [&](int64_t begin, int64_t end) {
    RowWork<T> ws(m, F, 3);
    T *p = ws.n0.data(), *e = ws.buf(0, F), *sig = ws.buf(1, F), *pbar = ws.buf(2, F);
    T *D = ws.t.data(), *Dbar = ws.tbar.data();
    for (int64_t row = begin; row < end; ++row) {
      const int64_t off = (row / R) * S * stride + (row % R) * F;
      const T *xr = x + off, *gr = dy + off;
      T* dr = dx + off;
      const int64_t ahead = row + 1 < end ? ((row + 1) / R) * S * stride + ((row + 1) % R) * F - off : 0;
      prefetch_span(xr + ahead, F);
      prefetch_span(gr + ahead, F);
      softmax_primal(xr, F, p);
#pragma omp simd
      for (int64_t i = 0; i < F; ++i) pbar[i] = gr[i];
      for (int64_t k = 0; k < m; ++k) {  // P_k = P D_k
        const T* __restrict__ gk = gr + (1 + k) * stride;
        prefetch_span(xr + (1 + k) * stride + ahead, F);
        prefetch_span(gk + ahead, F);
        T *__restrict__ dk = D + k * F, *__restrict__ dbar = Dbar + k * F;
        softmax_centred(xr + (1 + k) * stride, p, F, dk);
#pragma omp simd
        for (int64_t i = 0; i < F; ++i) {
          pbar[i] += gk[i] * dk[i];
          dbar[i] = p[i] * gk[i];
        }
      }
      for (int64_t s = 0; s < pl.N; ++s) {  // P₂ = P (E₂ − ⟨P, E₂⟩), E₂ = s₂ + quad
        const T* __restrict__ g2 = gr + (1 + m + s) * stride;
        T* __restrict__ d2 = dr + (1 + m + s) * stride;
        prefetch_span(xr + (1 + m + s) * stride + ahead, F);
        prefetch_span(g2 + ahead, F);
        const auto [pe, wp] = softmax_second<W>(pl, s, xr + (1 + m + s) * stride, p, g2, F, D, e, sig);
        if constexpr (W > 0) {  // ∂quad/∂D_k = 2c (D_k + σ_s), k ∈ s
          const T c2 = T(2 * pl.c);
          const T* Ds = D + s * F;
          T* Dbs = Dbar + s * F;
#pragma omp simd
          for (int64_t i = 0; i < F; ++i) {
            const T ebar = p[i] * (g2[i] - wp);
            pbar[i] += g2[i] * (e[i] - pe) - wp * e[i];
            d2[i] = ebar;  // s̄₂ = Ē₂
            for (int j = 0; j < W; ++j) Dbs[j * F + i] += c2 * ebar * (Ds[j * F + i] + sig[i]);
          }
        } else {
          const int64_t a = pl.left[s], b = pl.right[s];
          const T *Da = D + a * F, *Db = D + b * F;
          T *Dba = Dbar + a * F, *Dbb = Dbar + b * F;  // may alias (a == b): both updates run per element
#pragma omp simd
          for (int64_t i = 0; i < F; ++i) {
            const T ebar = p[i] * (g2[i] - wp);
            pbar[i] += g2[i] * (e[i] - pe) - wp * e[i];
            d2[i] = ebar;
            Dba[i] += ebar * Db[i];
            Dbb[i] += ebar * Da[i];
          }
        }
      }
      for (int64_t k = 0; k < m; ++k) {  // D_k = s_k − ⟨P, s_k⟩
        const T *__restrict__ sk = xr + (1 + k) * stride, *__restrict__ dbar = Dbar + k * F;
        T* __restrict__ dk = dr + (1 + k) * stride;
        const T total = T(sum(dbar, F));
#pragma omp simd
        for (int64_t i = 0; i < F; ++i) {
          dk[i] = dbar[i] - total * p[i];
          pbar[i] -= total * sk[i];
        }
      }
      const T pp = T(dot(p, pbar, F));
#pragma omp simd
      for (int64_t i = 0; i < F; ++i) dr[i] = p[i] * (pbar[i] - pp);
    }
  });
}

// Runs fn(std::integral_constant<int, W>) with the plan's window width W (0: pairs plan).
template <typename Fn>
void dispatch_width(const Plan& pl, Fn&& fn) {
  if (!pl.collapsed) fn(std::integral_constant<int, 0>{});
  else if (pl.W == 2) fn(std::integral_constant<int, 2>{});
  else fn(std::integral_constant<int, 3>{});
}

Tensor jet_softmax_forward_cpu(const Tensor& x_in, const OptTensor& left, const OptTensor& right, int64_t m,
                               int64_t order, int64_t dim) {
  const Inputs in = prepare("jet_softmax_forward", x_in, nullptr, left, right, m, order, dim, true);
  Tensor y = empty_output(in.x);
  RECORD_FUNCTION("jet_rules::softmax_forward", std::vector<c10::IValue>());
  AT_DISPATCH_FLOATING_TYPES(in.x.scalar_type(), "jet_softmax_forward_cpu", [&] {
    dispatch_width(in.pl, [&](auto w) {
      softmax_forward_impl<decltype(w)::value, scalar_t>(in.pl, in.L, in.x.data_ptr<scalar_t>(),
                                                         y.data_ptr<scalar_t>());
    });
  });
  return y.to(x_in.scalar_type());
}

Tensor jet_softmax_backward_cpu(const Tensor& grad_in, const Tensor& x_in, const OptTensor& left,
                                const OptTensor& right, int64_t m, int64_t order, int64_t dim) {
  const Inputs in = prepare("jet_softmax_backward", x_in, &grad_in, left, right, m, order, dim, true);
  Tensor dx = empty_output(in.x);
  RECORD_FUNCTION("jet_rules::softmax_backward", std::vector<c10::IValue>());
  AT_DISPATCH_FLOATING_TYPES(in.x.scalar_type(), "jet_softmax_backward_cpu", [&] {
    dispatch_width(in.pl, [&](auto w) {
      softmax_backward_impl<decltype(w)::value, scalar_t>(in.pl, in.L, in.x.data_ptr<scalar_t>(),
                                                          in.dy.data_ptr<scalar_t>(), dx.data_ptr<scalar_t>());
    });
  });
  return dx.to(x_in.scalar_type());
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(advsimplex, m) {
  m.def("jet_gelu_forward(Tensor x, Tensor? left, Tensor? right, int m, int order, int kind, int dim) -> Tensor");
  m.def(
      "jet_gelu_backward(Tensor grad, Tensor x, Tensor? left, Tensor? right, int m, int order, int kind, int dim) "
      "-> Tensor");
  m.def(
      "jet_layer_norm_forward(Tensor x, Tensor? weight, Tensor? bias, Tensor? left, Tensor? right, int m, int order, "
      "float eps, int dim) -> Tensor");
  m.def(
      "jet_layer_norm_backward(Tensor grad, Tensor x, Tensor? weight, Tensor? left, Tensor? right, int m, int order, "
      "float eps, int dim, bool weight_grad, bool bias_grad) -> (Tensor dx, Tensor dweight, Tensor dbias)");
  m.def("jet_softmax_forward(Tensor x, Tensor? left, Tensor? right, int m, int order, int dim) -> Tensor");
  m.def(
      "jet_softmax_backward(Tensor grad, Tensor x, Tensor? left, Tensor? right, int m, int order, int dim) "
      "-> Tensor");
}

TORCH_LIBRARY_IMPL(advsimplex, CPU, m) {
  m.impl("jet_gelu_forward", &jet_gelu_forward_cpu);
  m.impl("jet_gelu_backward", &jet_gelu_backward_cpu);
  m.impl("jet_layer_norm_forward", &jet_layer_norm_forward_cpu);
  m.impl("jet_layer_norm_backward", &jet_layer_norm_backward_cpu);
  m.impl("jet_softmax_forward", &jet_softmax_forward_cpu);
  m.impl("jet_softmax_backward", &jet_softmax_backward_cpu);
}

}  // namespace advsimplex
