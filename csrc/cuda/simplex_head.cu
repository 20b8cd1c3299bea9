// advsimplex::simplex_head — CUDA kernels (schemas, checks and orchestration: simplex_head_host.cpp).
//
// Same pipeline as the CPU kernels: normalisation jets (one block per row) → cuBLAS GEMM Z = Ns Tᵀ →
// class pass (one block per row, threads over classes; the per-class math is simplex_head.h, shared
// with the CPU kernels) → backward mirror. Row reductions: warp shuffles, then shared memory.
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
using head::Moments;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxM = 32;                  // longest trajectory the CUDA kernels accept
constexpr int kMaxP = 3 * kMaxM;           // pairs for order ≤ 4
constexpr int kMaxK = 1 + kMaxM + kMaxP;   // logit streams per row
constexpr int kMaxS = kMaxM;               // simplices per row
constexpr int kMaxR = kMaxM + 2 * kMaxP;   // values reduced at once across a block

struct DeviceLayout {
  int m, P, S, W, K;
};

// Pair list and band lookup of one row, built by thread 0 into shared memory.
struct SharedPairs {
  int pair_a[kMaxP], pair_b[kMaxP], lookup[kMaxM * 3];
};

__device__ void build_pairs(const DeviceLayout& L, SharedPairs& sp) {
  if (threadIdx.x == 0) {
    int p = 0;
    for (int k = 0; k < L.m; ++k)
      for (int o = 0; o < L.W; ++o) {
        if (k + o < L.m) {
          sp.lookup[k * L.W + o] = p;
          sp.pair_a[p] = k;
          sp.pair_b[p] = k + o;
          ++p;
        } else {
          sp.lookup[k * L.W + o] = -1;
        }
      }
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

template <typename T>
__global__ void normalize_forward_kernel(
    DeviceLayout L, const T* __restrict__ f_all, const T* __restrict__ F1_all, const T* __restrict__ F2_all, T s,
    int64_t d, T* __restrict__ out_all) {
  __shared__ SharedPairs sp;
  __shared__ T scratch[kWarps * kMaxR];
  __shared__ T sums[kMaxR];
  build_pairs(L, sp);
  const int64_t b = blockIdx.x;
  const T c = row_scale_of(f_all + b * d, d, scratch);
  const ScaledRow<T> f{f_all + b * d, c}, F1{F1_all + b * L.m * d, c}, F2{F2_all + b * L.P * d, c};
  T* out = out_all + b * L.K * d;
  T part[kMaxR];
  // pass 1: |f|², then n·f_a (needs ρ), then n·f_p and f_a·f_b.
  part[0] = 0;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) part[0] += f[i] * f[i];
  block_sum_many(part, 1, scratch, sums);
  const T rho = T(1) / sqrt(sums[0]);
  for (int a = 0; a < L.m; ++a) part[a] = 0;
  for (int p = 0; p < L.P; ++p) part[L.m + p] = part[L.m + L.P + p] = 0;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
    const T n = rho * f[i];
    for (int a = 0; a < L.m; ++a) part[a] += n * F1[a * d + i];
    for (int p = 0; p < L.P; ++p) {
      part[L.m + p] += n * F2[p * d + i];
      part[L.m + L.P + p] += F1[sp.pair_a[p] * d + i] * F1[sp.pair_b[p] * d + i];
    }
  }
  block_sum_many(part, L.m + 2 * L.P, scratch, sums);
  const T* alpha = sums;
  const T* beta = sums + L.m;
  const T* gamma = sums + L.m + L.P;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
    const T n = rho * f[i];
    out[i] = s * n;
    for (int a = 0; a < L.m; ++a) out[(1 + a) * d + i] = s * rho * (F1[a * d + i] - n * alpha[a]);
    for (int p = 0; p < L.P; ++p) {
      const int a = sp.pair_a[p], bb = sp.pair_b[p];
      const T cn = -rho * beta[p] - rho * rho * (gamma[p] - T(3) * alpha[a] * alpha[bb]);
      out[(1 + L.m + p) * d + i] =
          s * (rho * F2[p * d + i] + cn * n - rho * rho * (alpha[bb] * F1[a * d + i] + alpha[a] * F1[bb * d + i]));
    }
  }
}

template <typename T>
__global__ void normalize_backward_kernel(
    DeviceLayout L, const T* __restrict__ f_all, const T* __restrict__ F1_all, const T* __restrict__ F2_all,
    const T* __restrict__ gN_all, int64_t d, T* __restrict__ df_all, T* __restrict__ dF1_all,
    T* __restrict__ dF2_all) {
  __shared__ SharedPairs sp;
  __shared__ T scratch[kWarps * kMaxR];
  __shared__ T sums[kMaxR];
  __shared__ T dots[4 * kMaxP + 3 * kMaxM];
  __shared__ T alpha_bar[kMaxM], beta_bar[kMaxP], gamma_bar[kMaxP], coef_n[kMaxP], alpha_s[kMaxM], misc[2];
  build_pairs(L, sp);
  const int64_t b = blockIdx.x;
  const T c = row_scale_of(f_all + b * d, d, scratch);  // adjoints below are c times those at the scaled point
  const ScaledRow<T> f{f_all + b * d, c}, F1{F1_all + b * L.m * d, c}, F2{F2_all + b * L.P * d, c};
  const T* gN = gN_all + b * L.K * d;
  T *df = df_all + b * d, *dF1 = dF1_all + b * L.m * d, *dF2 = dF2_all + b * L.P * d;
  T part[kMaxR];
  part[0] = 0;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) part[0] += f[i] * f[i];
  block_sum_many(part, 1, scratch, sums);
  const T rho = T(1) / sqrt(sums[0]), rho2 = rho * rho;
  // dots, in chunks of at most kMaxR values: α_a, n·g_a, f_a·g_a | β_p, γ_p | n·g_p, f_a·g_p | f_b·g_p, f_p·g_p
  const int M = L.m, P = L.P;
  for (int a = 0; a < 3 * M; ++a) part[a] = 0;
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
  for (int i = threadIdx.x; i < 3 * M; i += blockDim.x) dots[i] = sums[i];
  __syncthreads();
  const T* alpha = dots;
  const T* t_a = dots + M;
  const T* fg_a = dots + 2 * M;
  T* pd = dots + 3 * M;  // 4P pair dots follow in two halves below, plus β and γ in sums
  for (int h = 0; h < 2; ++h) {
    for (int p = 0; p < 2 * P; ++p) part[p] = 0;
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
      const T n = rho * f[i];
      for (int p = 0; p < P; ++p) {
        const T fa = F1[sp.pair_a[p] * d + i], fb = F1[sp.pair_b[p] * d + i], fp = F2[p * d + i];
        const T gp = gN[(1 + M + p) * d + i];
        if (h == 0) {
          part[p] += n * gp;
          part[P + p] += fa * gp;
        } else {
          part[p] += fb * gp;
          part[P + p] += fp * gp;
        }
      }
    }
    block_sum_many(part, 2 * P, scratch, sums);
    for (int i = threadIdx.x; i < 2 * P; i += blockDim.x) pd[h * 2 * P + i] = sums[i];
    __syncthreads();
  }
  for (int p = 0; p < 2 * P; ++p) part[p] = 0;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
    const T n = rho * f[i];
    for (int p = 0; p < P; ++p) {
      part[p] += n * F2[p * d + i];
      part[P + p] += F1[sp.pair_a[p] * d + i] * F1[sp.pair_b[p] * d + i];
    }
  }
  block_sum_many(part, 2 * P, scratch, sums);
  const T* beta = sums;
  const T* gamma = sums + P;
  const T* t_p = pd;
  const T* fag = pd + P;
  const T* fbg = pd + 2 * P;
  const T* fpg = pd + 3 * P;
  // scalar adjoints (thread 0; O(m + P) work)
  if (threadIdx.x == 0) {
    T rho_bar = 0;
    for (int a = 0; a < M; ++a) {
      alpha_s[a] = alpha[a];
      alpha_bar[a] = -rho * t_a[a];
      rho_bar += fg_a[a] - alpha[a] * t_a[a];
    }
    for (int p = 0; p < P; ++p) {
      const int a = sp.pair_a[p], bb = sp.pair_b[p];
      const T e = gamma[p] - T(3) * alpha[a] * alpha[bb];
      beta_bar[p] = -rho * t_p[p];
      gamma_bar[p] = -rho2 * t_p[p];
      alpha_bar[a] += -rho2 * fbg[p] + T(3) * rho2 * alpha[bb] * t_p[p];
      alpha_bar[bb] += -rho2 * fag[p] + T(3) * rho2 * alpha[a] * t_p[p];
      rho_bar += fpg[p] - beta[p] * t_p[p] - T(2) * rho * (alpha[a] * fbg[p] + alpha[bb] * fag[p] + e * t_p[p]);
      coef_n[p] = -(rho * beta[p] + rho2 * e);
    }
    misc[0] = rho_bar;
  }
  __syncthreads();
  // nT = total adjoint of n; then df = ρ(nT − n(n·nT)) − ρ² ρ̄ n.
  part[0] = 0;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
    const T n = rho * f[i];
    T nT = gN[i];
    for (int a = 0; a < M; ++a) nT += -rho * alpha_s[a] * gN[(1 + a) * d + i] + alpha_bar[a] * F1[a * d + i];
    for (int p = 0; p < P; ++p) nT += coef_n[p] * gN[(1 + M + p) * d + i] + beta_bar[p] * F2[p * d + i];
    df[i] = nT;  // temporarily
    part[0] += n * nT;
  }
  block_sum_many(part, 1, scratch, sums);
  const T n_nT = sums[0];
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
    const T n = rho * f[i];
    df[i] = c * (rho * (df[i] - n * n_nT) - rho2 * misc[0] * n);
    for (int a = 0; a < M; ++a) dF1[a * d + i] = rho * gN[(1 + a) * d + i] + alpha_bar[a] * n;
    for (int p = 0; p < P; ++p) {
      const int a = sp.pair_a[p], bb = sp.pair_b[p];
      const T gp = gN[(1 + M + p) * d + i];
      dF2[p * d + i] = c * (rho * gp + beta_bar[p] * n);
      dF1[a * d + i] += -rho2 * alpha_s[bb] * gp + gamma_bar[p] * F1[bb * d + i];
      dF1[bb * d + i] += -rho2 * alpha_s[a] * gp + gamma_bar[p] * F1[a * d + i];
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
    const DeviceLayout& L, const SharedPairs& sp, const T* z, const T* stats, int64_t C, int64_t c,
    ClassState<T>& st) {
  const T g = exp(z[c] - stats[0]);
  for (int x = 1; x < L.K; ++x) st.zhat[x - 1] = z[x * C + c] - stats[x];
  head::class_derivatives<T>(
      g, st.zhat, st.zhat + L.m, stats + L.K, sp.pair_a, sp.pair_b, L.m, L.P, st.u, st.w, st.h);
  return g;
}

template <typename T, int W>
__global__ void class_forward_kernel(
    DeviceLayout L, Coefficients<T> cf, const T* __restrict__ Z, int64_t C, const int64_t* __restrict__ labels,
    const T* __restrict__ weights, T lam, T* __restrict__ loss, T* __restrict__ omega, T* __restrict__ stats_all) {
  __shared__ SharedPairs sp;
  __shared__ T scratch[kWarps * kMaxR];
  __shared__ T row[1 + kMaxK + kMaxP];  // lse, μ, ν (the stats row)
  __shared__ T sums[kMaxR];
  build_pairs(L, sp);
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
  for (int p = 0; p < L.P; ++p) part[p] = 0;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const T g = exp(z[c] - lse);
    for (int p = 0; p < L.P; ++p) {
      const int a = sp.pair_a[p], bb = sp.pair_b[p];
      part[p] += g * (z[(1 + a) * C + c] - row[1 + a]) * (z[(1 + bb) * C + c] - row[1 + bb]);
    }
  }
  block_sum_many(part, L.P, scratch, sums);
  for (int p = threadIdx.x; p < L.P; p += blockDim.x) row[L.K + p] = sums[p];
  __syncthreads();
  ClassState<T> st;
  T om[kMaxS];
  for (int s = 0; s < L.S; ++s) om[s] = 0;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    load_class(L, sp, z, row, C, c, st);
    head::class_omega<T, W, T>(M, cf, st.u, st.h, sp.lookup, L.S, om);
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
  __shared__ SharedPairs sp;
  __shared__ T scratch[kWarps * kMaxR];
  __shared__ T sums[kMaxR];
  __shared__ T Bp[kMaxP], Sa[kMaxM], G[kMaxS], misc[1];
  build_pairs(L, sp);
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
  for (int i = 0; i < L.P + L.m + 1; ++i) part[i] = 0;  // [B_p | S_a | GG]
  // pass A: α = g ū and β = g h̄ staged in dZ; row sums B_p, S_a, GG
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const T g = load_class(L, sp, z, stats, C, c, st);
    head::class_omega_grad<T, W>(M, cf, st.u, st.h, sp.lookup, L.S, L.m, L.P, G, ubar, hbar);
    head::class_stage_adjoints<T, T>(
        g, st.zhat, st.w, ubar, hbar, sp.pair_a, sp.pair_b, L.m, L.P, alpha, beta, part, part + L.P,
        part + L.P + L.m);
    for (int a = 0; a < L.m; ++a) dz[(1 + a) * C + c] = alpha[a];
    for (int p = 0; p < L.P; ++p) dz[(1 + L.m + p) * C + c] = beta[p];
  }
  block_sum_many(part, L.P + L.m + 1, scratch, sums);
  for (int p = threadIdx.x; p < L.P; p += blockDim.x) Bp[p] = sums[p];
  for (int a = threadIdx.x; a < L.m; a += blockDim.x) Sa[a] = sums[L.P + a];
  if (threadIdx.x == 0) {
    T total = sums[L.P + L.m];
    for (int p = 0; p < L.P; ++p) total -= sums[p] * stats[L.K + p];
    misc[0] = total;
  }
  __syncthreads();
  // pass B: final adjoints of every stream (ubar/hbar reused as z̄ scratch)
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const T g = load_class(L, sp, z, stats, C, c, st);
    for (int a = 0; a < L.m; ++a) alpha[a] = dz[(1 + a) * C + c];
    for (int p = 0; p < L.P; ++p) beta[p] = dz[(1 + L.m + p) * C + c];
    const T zbar0 = head::class_final_adjoints<T>(
        g, st.zhat, st.zhat + L.m, st.w, Bp, Sa, misc[0], sp.pair_a, sp.pair_b, L.m, L.P, alpha, beta, ubar, hbar);
    for (int a = 0; a < L.m; ++a) dz[(1 + a) * C + c] = ubar[a];
    for (int p = 0; p < L.P; ++p) dz[(1 + L.m + p) * C + c] = hbar[p];
    dz[c] = zbar0 + gl * (g - (c == y ? T(1) : T(0)));
  }
}

// ---- the CUDA launches (host code: simplex_head_host.cpp) -----------------------------------------

DeviceLayout device_layout(const head::Sizes& z) {
  return DeviceLayout{static_cast<int>(z.m), static_cast<int>(z.P), static_cast<int>(z.S), static_cast<int>(z.W),
                      static_cast<int>(z.K)};
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
