// advsimplex::simplex_head — CUDA kernels (schemas, checks and orchestration: simplex_head_host.cpp).
//
// Same pipeline as the CPU kernels: normalisation jets (one block per row) → cuBLAS GEMM Z = Ns Tᵀ →
// class pass (one block per row, threads over classes; the per-class math is simplex_head.h, shared
// with the CPU kernels) → backward mirror. Row reductions: warp shuffles, then shared memory. The
// second-order streams (vertex pairs, or simplices for collapsed jets) are the quadratic forms of
// simplex_head.h (head::Form), built per block by thread 0 with the same code as on the CPU.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cmath>

#include "../simplex_head.h"
#include "../simplex_head_host.h"

namespace advsimplex {
namespace {

using at::Tensor;
using head::Coefficients;
using head::Form;
using head::Moments;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxM = 32;                                // longest trajectory the CUDA kernels accept
constexpr int kMaxP = 3 * kMaxM;                         // second-order streams (pairs for order ≤ 4)
constexpr int kMaxK = 1 + kMaxM + kMaxP;                 // logit streams per row
constexpr int kMaxS = kMaxM;                             // simplices per row
constexpr int kMaxR = kMaxM + 2 * kMaxP;                 // values reduced at once across a block
constexpr int kMaxTerms = kMaxS * head::kMaxTerms;       // terms of all forms (≥ kMaxP: one per pair)
static_assert(kMaxTerms <= kMaxR && kMaxP * 2 <= kMaxR, "reductions must fit the scratch rows");

struct DeviceLayout {
  int m, P, S, W, K;
  bool collapsed;
};

// The row's second-order forms (and, for the pair form's Ω, the band pair lookup), built by thread 0.
// term0[j]: index of stream j's first term in the row's term list (term0[P] = the number of terms).
template <typename T>
struct SharedForms {
  Form<T> forms[kMaxP];
  int term0[kMaxP + 1];
  int lookup[kMaxM * 3], pair_a[kMaxP], pair_b[kMaxP];
};

template <typename T>
__device__ void build_forms(const DeviceLayout& L, SharedForms<T>& sf) {
  if (threadIdx.x == 0) {
    head::build_band_pairs(L.m, L.W, sf.pair_a, sf.pair_b, sf.lookup);
    head::build_forms(L.m, L.W, L.collapsed, sf.forms);
    sf.term0[0] = 0;
    for (int j = 0; j < L.P; ++j) sf.term0[j + 1] = sf.term0[j] + sf.forms[j].terms;
  }
  __syncthreads();
}

template <typename T>
__device__ T warp_sum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  return v;
}

// out[i] = Σ over the block's threads of vals[i], i < count (count ≤ kMaxR); ends with a barrier.
template <typename T>
__device__ void block_sum_many(const T* vals, int count, T* scratch /*[kWarps * kMaxR]*/, T* out) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int i = 0; i < count; ++i) {
    const T v = warp_sum(vals[i]);
    if (lane == 0) scratch[warp * kMaxR + i] = v;
  }
  __syncthreads();
  for (int i = threadIdx.x; i < count; i += blockDim.x) {
    T s = 0;
    for (int w = 0; w < kWarps; ++w) s += scratch[w * kMaxR + i];
    out[i] = s;
  }
  __syncthreads();
}

template <typename T>
__device__ T block_max(T v, T* scratch) {
  for (int o = 16; o > 0; o >>= 1) v = fmax(v, __shfl_down_sync(0xffffffffu, v, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  T r = scratch[0];
  for (int w = 1; w < kWarps; ++w) r = fmax(r, scratch[w]);
  __syncthreads();
  return r;
}

// ---- normalisation jets (see normalize_forward_row in simplex_head.cpp for the formulas) ----

// Row inputs read as c·x, c = head::row_scale(max |f|) (see simplex_head.h): x[i] reads like a pointer.
template <typename T>
struct ScaledRow {
  const T* __restrict__ p;
  T c;
  __device__ T operator[](int64_t i) const { return c * p[i]; }
};

template <typename T>
__device__ T row_scale_of(const T* f, int64_t d, T* scratch) {
  T amax = 0;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) amax = fmax(amax, fabs(f[i]));
  return head::row_scale(block_max(amax, scratch));
}

// γ_t = f_a·f_b for every term t of the row's forms, reduced into gamma[term0[P]].
template <typename T>
__device__ void term_dots(const DeviceLayout& L, const SharedForms<T>& sf, const ScaledRow<T>& F1, int64_t d,
                          T* part, T* scratch, T* gamma) {
  const int terms = sf.term0[L.P];
  for (int t = 0; t < terms; ++t) part[t] = 0;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x)
    for (int j = 0, t = 0; j < L.P; ++j) {
      const Form<T>& form = sf.forms[j];
      for (int q = 0; q < form.terms; ++q, ++t)
        part[t] += F1[form.v[form.ta[q]] * d + i] * F1[form.v[form.tb[q]] * d + i];
    }
  block_sum_many(part, terms, scratch, gamma);
}

template <typename T>
__global__ void normalize_forward_kernel(
    DeviceLayout L, const T* __restrict__ f_all, const T* __restrict__ F1_all, const T* __restrict__ F2_all, T s,
    int64_t d, T* __restrict__ out_all) {
  __shared__ SharedForms<T> sf;
  __shared__ T scratch[kWarps * kMaxR];
  __shared__ T sums[kMaxR];
  __shared__ T gamma[kMaxTerms];
  __shared__ T cn[kMaxP], vc[kMaxP][head::kMaxSlots];
  build_forms(L, sf);
  const int64_t b = blockIdx.x;
  const T c = row_scale_of(f_all + b * d, d, scratch);
  const ScaledRow<T> f{f_all + b * d, c}, F1{F1_all + b * L.m * d, c}, F2{F2_all + b * L.P * d, c};
  T* out = out_all + b * L.K * d;
  T part[kMaxR];
  // |f|², then α_a = n·f_a and β_j = n·f_j (need ρ), then γ of every term.
  part[0] = 0;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) part[0] += f[i] * f[i];
  block_sum_many(part, 1, scratch, sums);
  const T rho = T(1) / sqrt(sums[0]), rho2 = rho * rho;
  for (int x = 0; x < L.m + L.P; ++x) part[x] = 0;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
    const T n = rho * f[i];
    for (int a = 0; a < L.m; ++a) part[a] += n * F1[a * d + i];
    for (int j = 0; j < L.P; ++j) part[L.m + j] += n * F2[j * d + i];
  }
  block_sum_many(part, L.m + L.P, scratch, sums);
  const T* alpha = sums;
  const T* beta = sums + L.m;
  term_dots(L, sf, F1, d, part, scratch, gamma);
  if (threadIdx.x == 0)  // n_j = ρ f_j + cn_j n + Σ_k vc_jk f_{slot k}
    for (int j = 0, t = 0; j < L.P; ++j) {
      const Form<T>& form = sf.forms[j];
      T e = 0;
      for (int k = 0; k < head::kMaxSlots; ++k) vc[j][k] = 0;
      for (int q = 0; q < form.terms; ++q, ++t) {
        const int a = form.v[form.ta[q]], bb = form.v[form.tb[q]];
        e += form.coef[q] * (gamma[t] - T(3) * alpha[a] * alpha[bb]);
        vc[j][form.ta[q]] += -rho2 * form.coef[q] * alpha[bb];
        vc[j][form.tb[q]] += -rho2 * form.coef[q] * alpha[a];
      }
      cn[j] = -rho * beta[j] - rho2 * e;
    }
  __syncthreads();
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
    const T n = rho * f[i];
    out[i] = s * n;
    for (int a = 0; a < L.m; ++a) out[(1 + a) * d + i] = s * rho * (F1[a * d + i] - n * alpha[a]);
    for (int j = 0; j < L.P; ++j) {
      const Form<T>& form = sf.forms[j];
      T acc = rho * F2[j * d + i] + cn[j] * n;
      for (int k = 0; k < form.slots; ++k) acc += vc[j][k] * F1[form.v[k] * d + i];
      out[(1 + L.m + j) * d + i] = s * acc;
    }
  }
}

template <typename T>
__global__ void normalize_backward_kernel(
    DeviceLayout L, const T* __restrict__ f_all, const T* __restrict__ F1_all, const T* __restrict__ F2_all,
    const T* __restrict__ gN_all, int64_t d, T* __restrict__ df_all, T* __restrict__ dF1_all,
    T* __restrict__ dF2_all) {
  __shared__ SharedForms<T> sf;
  __shared__ T scratch[kWarps * kMaxR];
  __shared__ T sums[kMaxR];
  __shared__ T alpha[kMaxM], t_a[kMaxM], fg_a[kMaxM], alpha_bar[kMaxM];
  __shared__ T beta[kMaxP], t_j[kMaxP], fjg[kMaxP], coef_n[kMaxP], beta_bar[kMaxP];
  __shared__ T fg[kMaxP][head::kMaxSlots], vc[kMaxP][head::kMaxSlots];
  __shared__ T gterm[kMaxTerms];  // γ of each term, then coef · γ̄_j
  __shared__ T misc[1];
  build_forms(L, sf);
  const int64_t b = blockIdx.x;
  const T c = row_scale_of(f_all + b * d, d, scratch);  // adjoints below are c times those at the scaled point
  const ScaledRow<T> f{f_all + b * d, c}, F1{F1_all + b * L.m * d, c}, F2{F2_all + b * L.P * d, c};
  const T* gN = gN_all + b * L.K * d;
  T *df = df_all + b * d, *dF1 = dF1_all + b * L.m * d, *dF2 = dF2_all + b * L.P * d;
  const int M = L.m, P = L.P;
  T part[kMaxR];
  part[0] = 0;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) part[0] += f[i] * f[i];
  block_sum_many(part, 1, scratch, sums);
  const T rho = T(1) / sqrt(sums[0]), rho2 = rho * rho;
  // dots in chunks of at most kMaxR values: α_a, n·g_a, f_a·g_a | β_j, n·g_j | f_j·g_j | f_slot·g_j | γ_t
  // (each chunk's results are copied out of `sums` before the next reduction writes it, after its barrier)
  for (int x = 0; x < 3 * M; ++x) part[x] = 0;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
    const T n = rho * f[i];
    for (int a = 0; a < M; ++a) {
      const T fa = F1[a * d + i], ga = gN[(1 + a) * d + i];
      part[a] += n * fa;
      part[M + a] += n * ga;
      part[2 * M + a] += fa * ga;
    }
  }
  block_sum_many(part, 3 * M, scratch, sums);
  for (int a = threadIdx.x; a < M; a += blockDim.x) alpha[a] = sums[a], t_a[a] = sums[M + a], fg_a[a] = sums[2 * M + a];
  for (int x = 0; x < 2 * P; ++x) part[x] = 0;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
    const T n = rho * f[i];
    for (int j = 0; j < P; ++j) {
      const T gj = gN[(1 + M + j) * d + i];
      part[j] += n * F2[j * d + i];
      part[P + j] += n * gj;
    }
  }
  block_sum_many(part, 2 * P, scratch, sums);
  for (int j = threadIdx.x; j < P; j += blockDim.x) beta[j] = sums[j], t_j[j] = sums[P + j];
  for (int j = 0; j < P; ++j) part[j] = 0;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x)
    for (int j = 0; j < P; ++j) part[j] += F2[j * d + i] * gN[(1 + M + j) * d + i];
  block_sum_many(part, P, scratch, sums);
  for (int j = threadIdx.x; j < P; j += blockDim.x) fjg[j] = sums[j];
  int slots = 0;  // f_slot·g_j, numbered stream by stream (≤ 2·kMaxP ≤ kMaxR)
  for (int j = 0; j < P; ++j) slots += sf.forms[j].slots;
  for (int x = 0; x < slots; ++x) part[x] = 0;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x)
    for (int j = 0, k0 = 0; j < P; k0 += sf.forms[j].slots, ++j) {
      const T gj = gN[(1 + M + j) * d + i];
      for (int k = 0; k < sf.forms[j].slots; ++k) part[k0 + k] += F1[sf.forms[j].v[k] * d + i] * gj;
    }
  block_sum_many(part, slots, scratch, sums);
  for (int j = threadIdx.x; j < P; j += blockDim.x) {
    int k0 = 0;
    for (int jj = 0; jj < j; ++jj) k0 += sf.forms[jj].slots;
    for (int k = 0; k < sf.forms[j].slots; ++k) fg[j][k] = sums[k0 + k];
  }
  term_dots(L, sf, F1, d, part, scratch, gterm);
  // scalar adjoints (thread 0; O(m + terms) work)
  if (threadIdx.x == 0) {
    T rho_bar = 0;
    for (int a = 0; a < M; ++a) {
      alpha_bar[a] = -rho * t_a[a];
      rho_bar += fg_a[a] - alpha[a] * t_a[a];
    }
    for (int j = 0, t = 0; j < P; ++j) {
      const Form<T>& form = sf.forms[j];
      const T tj = t_j[j], gamma_bar = -rho2 * tj;
      T e = 0, cross = 0;
      for (int k = 0; k < head::kMaxSlots; ++k) vc[j][k] = 0;
      for (int q = 0; q < form.terms; ++q, ++t) {
        const int ka = form.ta[q], kb = form.tb[q], a = form.v[ka], bb = form.v[kb];
        const T coef = form.coef[q];
        e += coef * (gterm[t] - T(3) * alpha[a] * alpha[bb]);
        cross += coef * (alpha[a] * fg[j][kb] + alpha[bb] * fg[j][ka]);
        alpha_bar[a] += coef * (-rho2 * fg[j][kb] + T(3) * rho2 * alpha[bb] * tj);
        alpha_bar[bb] += coef * (-rho2 * fg[j][ka] + T(3) * rho2 * alpha[a] * tj);
        vc[j][ka] += -rho2 * coef * alpha[bb];
        vc[j][kb] += -rho2 * coef * alpha[a];
        gterm[t] = coef * gamma_bar;
      }
      rho_bar += fjg[j] - beta[j] * tj - T(2) * rho * (cross + e * tj);
      beta_bar[j] = -rho * tj;
      coef_n[j] = -(rho * beta[j] + rho2 * e);
    }
    misc[0] = rho_bar;
  }
  __syncthreads();
  // nT = total adjoint of n; then df = ρ(nT − n(n·nT)) − ρ² ρ̄ n.
  part[0] = 0;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
    const T n = rho * f[i];
    T nT = gN[i];
    for (int a = 0; a < M; ++a) nT += -rho * alpha[a] * gN[(1 + a) * d + i] + alpha_bar[a] * F1[a * d + i];
    for (int j = 0; j < P; ++j) nT += coef_n[j] * gN[(1 + M + j) * d + i] + beta_bar[j] * F2[j * d + i];
    df[i] = nT;  // temporarily
    part[0] += n * nT;
  }
  block_sum_many(part, 1, scratch, sums);
  const T n_nT = sums[0];
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
    const T n = rho * f[i];
    df[i] = c * (rho * (df[i] - n * n_nT) - rho2 * misc[0] * n);
    for (int a = 0; a < M; ++a) dF1[a * d + i] = rho * gN[(1 + a) * d + i] + alpha_bar[a] * n;
    for (int j = 0, t = 0; j < P; ++j) {
      const Form<T>& form = sf.forms[j];
      const T gj = gN[(1 + M + j) * d + i];
      dF2[j * d + i] = c * (rho * gj + beta_bar[j] * n);
      for (int k = 0; k < form.slots; ++k) dF1[form.v[k] * d + i] += vc[j][k] * gj;
      for (int q = 0; q < form.terms; ++q, ++t) {
        const int a = form.v[form.ta[q]], bb = form.v[form.tb[q]];
        dF1[a * d + i] += gterm[t] * F1[bb * d + i];
        dF1[bb * d + i] += gterm[t] * F1[a * d + i];
      }
    }
    for (int a = 0; a < M; ++a) dF1[a * d + i] *= c;
  }
}

// ---- class pass -----------------------------------------------------------------------------

template <typename T>
struct ClassState {
  T zhat[kMaxK], u[kMaxM], w[kMaxP], h[kMaxP];
};

template <typename T>
__device__ T load_class(
    const DeviceLayout& L, const SharedForms<T>& sf, const T* z, const T* stats, int64_t C, int64_t c,
    ClassState<T>& st) {
  const T g = exp(z[c] - stats[0]);
  for (int x = 1; x < L.K; ++x) st.zhat[x - 1] = z[x * C + c] - stats[x];
  head::class_derivatives(g, st.zhat, st.zhat + L.m, stats + L.K, sf.forms, L.m, L.P, st.u, st.w, st.h);
  return g;
}

template <typename T, int W>
__global__ void class_forward_kernel(
    DeviceLayout L, Coefficients<T> cf, const T* __restrict__ Z, int64_t C, const int64_t* __restrict__ labels,
    const T* __restrict__ weights, T lam, T* __restrict__ loss, T* __restrict__ omega, T* __restrict__ stats_all) {
  __shared__ SharedForms<T> sf;
  __shared__ T scratch[kWarps * kMaxR];
  __shared__ T row[1 + kMaxK + kMaxP];  // lse, μ, ν (the stats row)
  __shared__ T sums[kMaxR];
  build_forms(L, sf);
  Moments<T, W> M;
  M.init();
  const int64_t b = blockIdx.x;
  const T* z = Z + b * L.K * C;
  T mx = -INFINITY;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) mx = fmax(mx, z[c]);
  mx = block_max(mx, scratch);
  T part[kMaxR];
  part[0] = 0;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) part[0] += exp(z[c] - mx);
  block_sum_many(part, 1, scratch, sums);
  const T lse = mx + log(sums[0]);
  for (int x = 1; x < L.K; ++x) part[x - 1] = 0;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const T g = exp(z[c] - lse);
    for (int x = 1; x < L.K; ++x) part[x - 1] += g * z[x * C + c];
  }
  block_sum_many(part, L.K - 1, scratch, sums);
  for (int x = threadIdx.x; x < L.K - 1; x += blockDim.x) row[1 + x] = sums[x];
  if (threadIdx.x == 0) row[0] = lse;
  __syncthreads();
  T zc[kMaxM];  // ν_j = <g, Π_j(ẑ)>
  for (int j = 0; j < L.P; ++j) part[j] = 0;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const T g = exp(z[c] - lse);
    for (int a = 0; a < L.m; ++a) zc[a] = z[(1 + a) * C + c] - row[1 + a];
    for (int j = 0; j < L.P; ++j) part[j] += g * head::quad(sf.forms[j], zc);
  }
  block_sum_many(part, L.P, scratch, sums);
  for (int j = threadIdx.x; j < L.P; j += blockDim.x) row[L.K + j] = sums[j];
  __syncthreads();
  ClassState<T> st;
  T om[kMaxS];
  for (int s = 0; s < L.S; ++s) om[s] = 0;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    load_class(L, sf, z, row, C, c, st);
    if (L.collapsed)
      head::class_omega_collapsed<T, W, T>(M, cf, st.u, st.h, L.S, om);
    else
      head::class_omega<T, W, T>(M, cf, st.u, st.h, sf.lookup, L.S, om);
  }
  block_sum_many(om, L.S, scratch, sums);
  T* stats = stats_all + b * (L.K + L.P);
  for (int i = threadIdx.x; i < L.K + L.P; i += blockDim.x) stats[i] = row[i];
  for (int s = threadIdx.x; s < L.S; s += blockDim.x) omega[b * L.S + s] = sums[s];
  if (threadIdx.x == 0) {
    T total = lse - z[labels[b]];
    for (int s = 0; s < L.S; ++s) total += lam * weights[b * L.S + s] * sums[s];
    loss[b] = total;
  }
}

template <typename T, int W>
__global__ void class_backward_kernel(
    DeviceLayout L, Coefficients<T> cf, const T* __restrict__ Z, const T* __restrict__ stats_all, int64_t C,
    const int64_t* __restrict__ labels, const T* __restrict__ weights, T lam, const T* __restrict__ grad_loss,
    const T* __restrict__ grad_omega, T* __restrict__ dZ) {
  __shared__ SharedForms<T> sf;
  __shared__ T scratch[kWarps * kMaxR];
  __shared__ T sums[kMaxR];
  __shared__ T Bp[kMaxP], Sa[kMaxM], G[kMaxS], misc[1];
  build_forms(L, sf);
  Moments<T, W> M;
  M.init();
  const int64_t b = blockIdx.x;
  const T* z = Z + b * L.K * C;
  const T* stats = stats_all + b * (L.K + L.P);
  T* dz = dZ + b * L.K * C;
  const T gl = grad_loss[b];
  const int64_t y = labels[b];
  for (int s = threadIdx.x; s < L.S; s += blockDim.x)
    G[s] = (grad_omega ? grad_omega[b * L.S + s] : T(0)) + gl * lam * weights[b * L.S + s];
  __syncthreads();
  ClassState<T> st;
  T ubar[kMaxM], hbar[kMaxP], alpha[kMaxM], beta[kMaxP], part[kMaxR];
  for (int i = 0; i < L.P + L.m + 1; ++i) part[i] = 0;  // [B_j | S_a | GG]
  // pass A: α = g ū and β = g h̄ staged in dZ; row sums B_j, S_a, GG
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const T g = load_class(L, sf, z, stats, C, c, st);
    if (L.collapsed)
      head::class_omega_grad_collapsed<T, W>(M, cf, st.u, st.h, L.S, L.m, G, ubar, hbar);
    else
      head::class_omega_grad<T, W>(M, cf, st.u, st.h, sf.lookup, L.S, L.m, L.P, G, ubar, hbar);
    head::class_stage_adjoints(
        g, st.zhat, st.w, ubar, hbar, sf.forms, L.m, L.P, alpha, beta, part, part + L.P, part + L.P + L.m);
    for (int a = 0; a < L.m; ++a) dz[(1 + a) * C + c] = alpha[a];
    for (int j = 0; j < L.P; ++j) dz[(1 + L.m + j) * C + c] = beta[j];
  }
  block_sum_many(part, L.P + L.m + 1, scratch, sums);
  for (int j = threadIdx.x; j < L.P; j += blockDim.x) Bp[j] = sums[j];
  for (int a = threadIdx.x; a < L.m; a += blockDim.x) Sa[a] = sums[L.P + a];
  if (threadIdx.x == 0) {
    T total = sums[L.P + L.m];
    for (int j = 0; j < L.P; ++j) total -= sums[j] * stats[L.K + j];
    misc[0] = total;
  }
  __syncthreads();
  // pass B: final adjoints of every stream (ubar/hbar reused as z̄ scratch)
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const T g = load_class(L, sf, z, stats, C, c, st);
    for (int a = 0; a < L.m; ++a) alpha[a] = dz[(1 + a) * C + c];
    for (int j = 0; j < L.P; ++j) beta[j] = dz[(1 + L.m + j) * C + c];
    const T zbar0 = head::class_final_adjoints(
        g, st.zhat, st.zhat + L.m, st.w, Bp, Sa, misc[0], sf.forms, L.m, L.P, alpha, beta, ubar, hbar);
    for (int a = 0; a < L.m; ++a) dz[(1 + a) * C + c] = ubar[a];
    for (int j = 0; j < L.P; ++j) dz[(1 + L.m + j) * C + c] = hbar[j];
    dz[c] = zbar0 + gl * (g - (c == y ? T(1) : T(0)));
  }
}

// ---- the CUDA launches (host code: simplex_head_host.cpp) -----------------------------------------

DeviceLayout device_layout(const head::Sizes& z) {
  return DeviceLayout{static_cast<int>(z.m), static_cast<int>(z.P), static_cast<int>(z.S), static_cast<int>(z.W),
                      static_cast<int>(z.K), z.collapsed};
}

void normalize_forward(const head::Sizes& z, const Tensor& f, const Tensor& F1, const Tensor& F2, double scale,
                       Tensor& out) {
  const c10::cuda::CUDAGuard guard(f.device());
  const DeviceLayout L = device_layout(z);
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "simplex_head_normalize_cuda", [&] {
    normalize_forward_kernel<scalar_t><<<z.B, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        L, f.data_ptr<scalar_t>(), F1.data_ptr<scalar_t>(), F2.data_ptr<scalar_t>(), scalar_t(scale), z.d,
        out.data_ptr<scalar_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void class_forward(const head::Sizes& z, const head::Options& o, const Tensor& Z, const Tensor& labels,
                   const Tensor& weights, Tensor& loss, Tensor& omega, Tensor& stats) {
  const c10::cuda::CUDAGuard guard(Z.device());
  const DeviceLayout L = device_layout(z);
  AT_DISPATCH_FLOATING_TYPES(Z.scalar_type(), "simplex_head_class_forward_cuda", [&] {
    const auto cf = head::coefficients<scalar_t>(o);
    auto launch = [&](auto kernel) {
      kernel<<<z.B, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
          L, cf, Z.data_ptr<scalar_t>(), z.C, labels.data_ptr<int64_t>(), weights.data_ptr<scalar_t>(),
          scalar_t(o.lam), loss.data_ptr<scalar_t>(), omega.data_ptr<scalar_t>(), stats.data_ptr<scalar_t>());
    };
    if (L.W == 2)
      launch(class_forward_kernel<scalar_t, 2>);
    else
      launch(class_forward_kernel<scalar_t, 3>);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void class_backward(const head::Sizes& z, const head::Options& o, const Tensor& Z, const Tensor& stats,
                    const Tensor& labels, const Tensor& weights, const Tensor& grad_loss, const Tensor& grad_omega,
                    Tensor& dZ) {
  const c10::cuda::CUDAGuard guard(Z.device());
  const DeviceLayout L = device_layout(z);
  AT_DISPATCH_FLOATING_TYPES(Z.scalar_type(), "simplex_head_class_backward_cuda", [&] {
    const auto cf = head::coefficients<scalar_t>(o);
    const scalar_t* go = grad_omega.defined() ? grad_omega.data_ptr<scalar_t>() : nullptr;
    auto launch = [&](auto kernel) {
      kernel<<<z.B, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
          L, cf, Z.data_ptr<scalar_t>(), stats.data_ptr<scalar_t>(), z.C, labels.data_ptr<int64_t>(),
          weights.data_ptr<scalar_t>(), scalar_t(o.lam), grad_loss.data_ptr<scalar_t>(), go,
          dZ.data_ptr<scalar_t>());
    };
    if (L.W == 2)
      launch(class_backward_kernel<scalar_t, 2>);
    else
      launch(class_backward_kernel<scalar_t, 3>);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void normalize_backward(const head::Sizes& z, const Tensor& f, const Tensor& F1, const Tensor& F2,
                        const Tensor& gN, Tensor& df, Tensor& dF1, Tensor& dF2) {
  const c10::cuda::CUDAGuard guard(f.device());
  const DeviceLayout L = device_layout(z);
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "simplex_head_normalize_backward_cuda", [&] {
    normalize_backward_kernel<scalar_t><<<z.B, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        L, f.data_ptr<scalar_t>(), F1.data_ptr<scalar_t>(), F2.data_ptr<scalar_t>(), gN.data_ptr<scalar_t>(), z.d,
        df.data_ptr<scalar_t>(), dF1.data_ptr<scalar_t>(), dF2.data_ptr<scalar_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

constexpr head::DeviceKernels kCudaKernels{
    "CUDA", kMaxM, &normalize_forward, &class_forward, &class_backward, &normalize_backward};

}  // namespace

TORCH_LIBRARY_IMPL(advsimplex, CUDA, m) {
  m.impl("simplex_head_forward", &head::forward_op<&kCudaKernels>);
  m.impl("simplex_head_backward", &head::backward_op<&kCudaKernels>);
}

}  // namespace advsimplex
