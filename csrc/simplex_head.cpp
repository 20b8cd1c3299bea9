// advsimplex::simplex_head — the C++ CPU kernels (at::parallel_for over rows); schemas, checks and the
// orchestration shared with the CUDA kernels: simplex_head_host.cpp.
//
// Forward:  Ns = s·[n; n_a; n_ab] (normalised-embedding jets, spec §4)  →  Z = Ns Tᵀ (one GEMM)
//           →  per row: softmax, centring, u/h, closed-form Ω per simplex, CE  (class pass, simplex_head.h)
// Backward: dZ (class pass)  →  dNs = dZ T, dT = dZᵀ Ns (two GEMMs)  →  df, dF1, dF2 (normalisation jets).
// The projection onto T is left to BLAS: it is the only O(B·K·d·C) step and BLAS runs it near peak;
// every other step is O(B·K·(d + C)) and fused here.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <torch/library.h>

#include <cmath>
#include <type_traits>
#include <vector>

#include "simplex_head.h"
#include "simplex_head_host.h"

namespace advsimplex {
namespace {

using at::Tensor;
using head::Coefficients;
using head::Moments;

struct Layout {
  int m, P, S, W, K;                        // P: second-order streams (pairs, or simplices when collapsed)
  bool collapsed;
  std::vector<head::Form<double>> forms;    // the P second-order streams as quadratic forms (simplex_head.h)
  std::vector<int> lookup;                  // lookup[k * W + o] = index of the band pair (k, k + o) (pair form)
};

// The row layout of an m-step trajectory, simplices of W + 1 vertices (sizes checked by the host code).
Layout make_layout(int64_t m, int64_t W, bool collapsed) {
  Layout L;
  L.m = static_cast<int>(m);
  L.W = static_cast<int>(W);
  L.S = L.m - L.W + 1;
  L.collapsed = collapsed;
  L.lookup.resize(L.m * L.W);
  std::vector<int> pair_a(L.m * L.W), pair_b(L.m * L.W);
  head::build_band_pairs(L.m, L.W, pair_a.data(), pair_b.data(), L.lookup.data());
  L.forms.resize(L.m * L.W);
  L.P = head::build_forms(L.m, L.W, collapsed, L.forms.data());
  L.forms.resize(L.P);
  L.K = 1 + L.m + L.P;
  return L;
}

template <typename T>
inline T dot(const T* x, const T* y, int64_t n) {
  T acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < n; ++i) acc += x[i] * y[i];
  return acc;
}

template <typename T>
inline void axpy(T alpha, const T* x, T* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

// ---- normalisation jets --------------------------------------------------------------------
// n = f/r, n_a = ρ(f_a − n α_a), and per second-order stream j with form Π_j = Σ_t coef_t x_a x_b:
// n_j = ρ f_j − ρ β_j n + Σ_t coef_t [−ρ²(α_a f_b + α_b f_a) − ρ²(γ_ab − 3 α_a α_b) n],
// ρ = 1/‖f‖, α_a = n·f_a, β_j = n·f_j, γ_ab = f_a·f_b (the spec's n_ab with P = I − nnᵀ for a pair; its
// Σ M_kl-weighted sum, E[n_pp], for a simplex, §7b).
// The row's inputs scaled by c = row_scale(max |f|) (simplex_head.h): copies in `buffer` when c ≠ 1.
template <typename T>
T scale_row(const Layout& L, const T*& f, const T*& F1, const T*& F2, int64_t d, std::vector<T>& buffer) {
  T amax = 0;
  for (int64_t i = 0; i < d; ++i) amax = std::max(amax, std::abs(f[i]));
  const T c = head::row_scale(amax);
  if (c == T(1)) return c;
  buffer.resize((1 + L.m + L.P) * d);
  T* out = buffer.data();
  for (int64_t i = 0; i < d; ++i) out[i] = c * f[i];
  for (int64_t i = 0; i < L.m * d; ++i) out[d + i] = c * F1[i];
  for (int64_t i = 0; i < L.P * d; ++i) out[(1 + L.m) * d + i] = c * F2[i];
  f = out;
  F1 = out + d;
  F2 = out + (1 + L.m) * d;
  return c;
}

// out = s·(ρ f_j + cn n + Σ_k vc_k f_{slot k}), one pass.
template <int Slots, typename T>
void combine(T* out, T s, T rho, const T* fj, T cn, const T* n, const T* const* fs, const T* vc, int64_t d) {
  for (int64_t i = 0; i < d; ++i) {
    T acc = rho * fj[i] + cn * n[i];
    for (int k = 0; k < Slots; ++k) acc += vc[k] * fs[k][i];
    out[i] = s * acc;
  }
}

template <typename T>
void normalize_forward_row(const Layout& L, const T* f, const T* F1, const T* F2, T s, int64_t d, T* out) {
  std::vector<T> scaled;
  scale_row(L, f, F1, F2, d, scaled);
  const T rho = T(1) / std::sqrt(dot(f, f, d));
  const T rho2 = rho * rho;
  T* n = out;  // row 0, scaled at the end
  for (int64_t i = 0; i < d; ++i) n[i] = rho * f[i];
  std::vector<T> alpha(L.m);
  for (int a = 0; a < L.m; ++a) {
    const T* fa = F1 + a * d;
    alpha[a] = dot(n, fa, d);
    T* na = out + (1 + a) * d;
    for (int64_t i = 0; i < d; ++i) na[i] = s * rho * (fa[i] - n[i] * alpha[a]);
  }
  for (int j = 0; j < L.P; ++j) {
    const head::Form<double>& form = L.forms[j];
    const T* fj = F2 + j * d;
    T e = 0, vc[head::kMaxSlots] = {};  // Σ coef (γ − 3αα); coefficient of each slot's f_a
    for (int t = 0; t < form.terms; ++t) {
      const int a = form.v[form.ta[t]], b = form.v[form.tb[t]];
      const T coef = T(form.coef[t]);
      e += coef * (dot(F1 + a * d, F1 + b * d, d) - T(3) * alpha[a] * alpha[b]);
      vc[form.ta[t]] += -rho2 * coef * alpha[b];
      vc[form.tb[t]] += -rho2 * coef * alpha[a];
    }
    const T cn = -rho * dot(n, fj, d) - rho2 * e;
    const T* fs[head::kMaxSlots] = {};
    for (int k = 0; k < form.slots; ++k) fs[k] = F1 + form.v[k] * d;
    T* nj = out + (1 + L.m + j) * d;
    if (form.slots == 2)
      combine<2>(nj, s, rho, fj, cn, n, fs, vc, d);
    else if (form.slots == 3)
      combine<3>(nj, s, rho, fj, cn, n, fs, vc, d);
    else
      combine<1>(nj, s, rho, fj, cn, n, fs, vc, d);
  }
  for (int64_t i = 0; i < d; ++i) n[i] *= s;
}

// Adjoints of (f, F1, F2) from gN = ∂L/∂N (N the unscaled normalised jets), recomputing the forward scalars.
template <typename T>
void normalize_backward_row(
    const Layout& L, const T* f, const T* F1, const T* F2, const T* gN, int64_t d, T* df, T* dF1, T* dF2) {
  std::vector<T> scaled;
  const T c = scale_row(L, f, F1, F2, d, scaled);
  const T rho = T(1) / std::sqrt(dot(f, f, d));
  const T rho2 = rho * rho;
  std::vector<T> n(d), nT(gN, gN + d);  // nT: total adjoint of n
  for (int64_t i = 0; i < d; ++i) n[i] = rho * f[i];
  std::vector<T> alpha(L.m), alpha_bar(L.m, T(0));
  T rho_bar = 0;
  for (int a = 0; a < L.m; ++a) {
    const T *fa = F1 + a * d, *ga = gN + (1 + a) * d;
    alpha[a] = dot(n.data(), fa, d);
    const T t = dot(n.data(), ga, d);
    rho_bar += dot(fa, ga, d) - alpha[a] * t;
    alpha_bar[a] += -rho * t;
    axpy(-rho * alpha[a], ga, nT.data(), d);
  }
  for (int64_t i = 0; i < L.m * d; ++i) dF1[i] = 0;
  for (int j = 0; j < L.P; ++j) {
    const head::Form<double>& form = L.forms[j];
    const T *fj = F2 + j * d, *gj = gN + (1 + L.m + j) * d;
    const T beta = dot(n.data(), fj, d), t = dot(n.data(), gj, d), fj_g = dot(fj, gj, d);
    T fg[head::kMaxSlots], vc[head::kMaxSlots] = {};  // f_slot · g_j; coefficient of g_j in each slot's dF1
    for (int k = 0; k < form.slots; ++k) fg[k] = dot(F1 + form.v[k] * d, gj, d);
    const T gamma_bar = -rho2 * t;
    T e = 0, cross = 0;  // Σ coef (γ − 3αα); Σ coef (α_a f_b·g + α_b f_a·g)
    for (int q = 0; q < form.terms; ++q) {
      const int ka = form.ta[q], kb = form.tb[q], a = form.v[ka], b = form.v[kb];
      const T coef = T(form.coef[q]);
      e += coef * (dot(F1 + a * d, F1 + b * d, d) - T(3) * alpha[a] * alpha[b]);
      cross += coef * (alpha[a] * fg[kb] + alpha[b] * fg[ka]);
      alpha_bar[a] += coef * (-rho2 * fg[kb] + T(3) * rho2 * alpha[b] * t);
      alpha_bar[b] += coef * (-rho2 * fg[ka] + T(3) * rho2 * alpha[a] * t);
      vc[ka] += -rho2 * coef * alpha[b];
      vc[kb] += -rho2 * coef * alpha[a];
    }
    rho_bar += fj_g - beta * t - T(2) * rho * (cross + e * t);
    const T beta_bar = -rho * t;
    axpy(-(rho * beta + rho2 * e), gj, nT.data(), d);
    axpy(beta_bar, fj, nT.data(), d);
    T* dfj = dF2 + j * d;
    for (int64_t i = 0; i < d; ++i) dfj[i] = rho * gj[i] + beta_bar * n[i];
    for (int k = 0; k < form.slots; ++k) axpy(vc[k], gj, dF1 + form.v[k] * d, d);
    for (int q = 0; q < form.terms; ++q) {
      const int a = form.v[form.ta[q]], b = form.v[form.tb[q]];
      const T w = T(form.coef[q]) * gamma_bar;
      axpy(w, F1 + b * d, dF1 + a * d, d);
      axpy(w, F1 + a * d, dF1 + b * d, d);
    }
  }
  for (int a = 0; a < L.m; ++a) {
    const T *fa = F1 + a * d, *ga = gN + (1 + a) * d;
    T* dfa = dF1 + a * d;
    axpy(rho, ga, dfa, d);
    axpy(alpha_bar[a], n.data(), dfa, d);
    axpy(alpha_bar[a], fa, nT.data(), d);
  }
  const T n_nT = dot(n.data(), nT.data(), d);
  for (int64_t i = 0; i < d; ++i) df[i] = rho * (nT[i] - n[i] * n_nT) - rho2 * rho_bar * n[i];
  if (c != T(1)) {  // adjoints at the scaled point, times c
    for (int64_t i = 0; i < d; ++i) df[i] *= c;
    for (int64_t i = 0; i < L.m * d; ++i) dF1[i] *= c;
    for (int64_t i = 0; i < L.P * d; ++i) dF2[i] *= c;
  }
}

// ---- class pass ----------------------------------------------------------------------------
// stats row: [lse, μ_1..μ_{K−1}, ν_1..ν_P]. Classes are processed kLanes at a time: the per-class math
// of simplex_head.h is instantiated on Pack (kLanes values, one per class), which the compiler turns
// into SIMD code; the last C mod kLanes classes use the same code on scalars. Sums over the classes
// are flushed into double accumulators every kFlush packs, so that long rows (C up to 32k and more)
// keep float32 results within 1e-5 of the exact values.
using Acc = double;
constexpr int kLanes = 8;
constexpr int kFlush = 64;

template <typename S, int N>
struct Pack {
  S v[N];
  Pack() = default;
  Pack(S x) {  // NOLINT: implicit broadcast, as the scalar code's T(…) constants need
    for (int i = 0; i < N; ++i) v[i] = x;
  }
  static Pack load(const S* p) {
    Pack r;
    for (int i = 0; i < N; ++i) r.v[i] = p[i];
    return r;
  }
  void store(S* p) const {
    for (int i = 0; i < N; ++i) p[i] = v[i];
  }
  Pack& operator+=(const Pack& b) {
    for (int i = 0; i < N; ++i) v[i] += b.v[i];
    return *this;
  }
  Pack& operator-=(const Pack& b) {
    for (int i = 0; i < N; ++i) v[i] -= b.v[i];
    return *this;
  }
  friend Pack operator+(Pack a, const Pack& b) { return a += b; }
  friend Pack operator-(Pack a, const Pack& b) { return a -= b; }
  friend Pack operator*(Pack a, const Pack& b) {
    for (int i = 0; i < N; ++i) a.v[i] *= b.v[i];
    return a;
  }
};

// Lane access for scalars (one class) and packs (kLanes classes).
template <typename V>
struct Lanes {
  using S = V;
  static constexpr int N = 1;
  static V load(const S* p) { return *p; }
  static void store(S* p, const V& v) { *p = v; }
  static V exp(const V& v) { return std::exp(v); }
  static Acc sum(const V& v) { return Acc(v); }
  static V onehot(int64_t c0, int64_t y) { return c0 == y ? V(1) : V(0); }
};

template <typename S, int N>
struct Lanes<Pack<S, N>> {
  using V = Pack<S, N>;
  static constexpr int kN = N;
  static V load(const S* p) { return V::load(p); }
  static void store(S* p, const V& v) { v.store(p); }
  static V exp(V v) {
    for (int i = 0; i < N; ++i) v.v[i] = std::exp(v.v[i]);
    return v;
  }
  static Acc sum(const V& v) {
    Acc r = 0;
    for (int i = 0; i < N; ++i) r += v.v[i];
    return r;
  }
  static V onehot(int64_t c0, int64_t y) {
    V r(S(0));
    if (y >= c0 && y < c0 + N) r.v[y - c0] = S(1);
    return r;
  }
};

template <typename V>
constexpr int lane_count() {
  if constexpr (std::is_arithmetic_v<V>)
    return 1;
  else
    return Lanes<V>::kN;
}

template <typename T>
void softmax_stats(const Layout& L, const T* z, int64_t C, T* stats, std::vector<T>& g) {
  T mx = -INFINITY;
  for (int64_t c = 0; c < C; ++c) mx = std::max(mx, z[c]);
  Acc se = 0;
#pragma omp simd reduction(+ : se)
  for (int64_t c = 0; c < C; ++c) se += std::exp(z[c] - mx);
  const T lse = mx + T(std::log(se));
  stats[0] = lse;
  for (int64_t c = 0; c < C; ++c) g[c] = std::exp(z[c] - lse);
  for (int x = 1; x < L.K; ++x) {
    const T* zx = z + x * C;
    Acc mu = 0;
#pragma omp simd reduction(+ : mu)
    for (int64_t c = 0; c < C; ++c) mu += g[c] * zx[c];
    stats[x] = T(mu);
  }
  for (int j = 0; j < L.P; ++j) {  // ν_j = <g, Π_j(ẑ)> = Σ_t coef_t <g, ẑ_a ẑ_b>
    const head::Form<double>& form = L.forms[j];
    Acc nu = 0;
    for (int t = 0; t < form.terms; ++t) {
      const int a = form.v[form.ta[t]], b = form.v[form.tb[t]];
      const T *za = z + (1 + a) * C, *zb = z + (1 + b) * C;
      const T ma = stats[1 + a], mb = stats[1 + b];
      Acc part = 0;
#pragma omp simd reduction(+ : part)
      for (int64_t c = 0; c < C; ++c) part += g[c] * (za[c] - ma) * (zb[c] - mb);
      nu += form.coef[t] * part;
    }
    stats[L.K + j] = T(nu);
  }
}

// Per-row, per-lane-type state: broadcast row statistics and per-class scratch.
template <typename T, typename V, int W>
struct RowState {
  const Layout& L;
  std::vector<head::Form<T>> forms;  // L.forms with coefficients in T
  Coefficients<V> cf;
  Moments<V, W> M;
  V lse;
  std::vector<V> mu, nu, zhat, u, w, h, ubar, hbar, G, alpha, beta, zbar_v, zbar_p;
  RowState(const Layout& layout, const head::Options& o)
      : L(layout), forms(L.P), cf(head::coefficients<V, T>(o)), lse(T(0)), mu(L.K - 1), nu(L.P), zhat(L.K - 1),
        u(L.m), w(L.P), h(L.P), ubar(L.m), hbar(L.P), G(L.S), alpha(L.m), beta(L.P), zbar_v(L.m), zbar_p(L.P) {
    M.init();
    for (int j = 0; j < L.P; ++j) {
      const head::Form<double>& from = L.forms[j];
      head::Form<T>& to = forms[j];
      to.slots = from.slots;
      to.terms = from.terms;
      for (int k = 0; k < head::kMaxSlots; ++k) to.v[k] = from.v[k];
      for (int t = 0; t < head::kMaxTerms; ++t) {
        to.ta[t] = from.ta[t];
        to.tb[t] = from.tb[t];
        to.coef[t] = T(from.coef[t]);
      }
    }
  }
  void set_row(const T* stats) {
    lse = V(stats[0]);
    for (int x = 1; x < L.K; ++x) mu[x - 1] = V(stats[x]);
    for (int p = 0; p < L.P; ++p) nu[p] = V(stats[L.K + p]);
  }
  // g, ẑ, u, w, h of the classes c..c+lanes−1.
  V load(const T* z, int64_t C, int64_t c) {
    const V g = Lanes<V>::exp(Lanes<V>::load(z + c) - lse);
    for (int x = 1; x < L.K; ++x) zhat[x - 1] = Lanes<V>::load(z + x * C + c) - mu[x - 1];
    head::class_derivatives(g, zhat.data(), zhat.data() + L.m, nu.data(), forms.data(), L.m, L.P, u.data(), w.data(),
                            h.data());
    return g;
  }
};

// Σ over classes [c0, c1) of φ_s, added to omega (double).
template <typename T, typename V, int W>
void omega_range(RowState<T, V, W>& R, const T* z, int64_t C, int64_t c0, int64_t c1, Acc* omega) {
  constexpr int N = lane_count<V>();
  const Layout& L = R.L;
  std::vector<V> part(L.S, V(T(0)));
  int packs = 0;
  for (int64_t c = c0; c + N <= c1; c += N) {
    R.load(z, C, c);
    if (L.collapsed)
      head::class_omega_collapsed<V, W, V>(R.M, R.cf, R.u.data(), R.h.data(), L.S, part.data());
    else
      head::class_omega<V, W, V>(R.M, R.cf, R.u.data(), R.h.data(), L.lookup.data(), L.S, part.data());
    if (++packs == kFlush || c + 2 * N > c1) {
      for (int s = 0; s < L.S; ++s) {
        omega[s] += Lanes<V>::sum(part[s]);
        part[s] = V(T(0));
      }
      packs = 0;
    }
  }
}

template <typename T, int W>
void class_forward_row(
    const Layout& L, const head::Options& o, const T* z, int64_t C, int64_t y, const T* weights, T lam,
    T* loss, T* omega, T* stats, std::vector<T>& g) {
  softmax_stats(L, z, C, stats, g);
  std::vector<Acc> om(L.S, 0);
  const int64_t vec_end = C - C % kLanes;
  RowState<T, Pack<T, kLanes>, W> RV(L, o);
  RV.set_row(stats);
  omega_range(RV, z, C, 0, vec_end, om.data());
  RowState<T, T, W> RS(L, o);
  RS.set_row(stats);
  omega_range(RS, z, C, vec_end, C, om.data());
  Acc total = Acc(stats[0]) - Acc(z[y]);
  for (int s = 0; s < L.S; ++s) {
    omega[s] = T(om[s]);
    total += Acc(lam) * Acc(weights[s]) * om[s];
  }
  *loss = T(total);
}

// Backward pass A over classes [c0, c1): stage α, β in dz, accumulate B_p, S_a, GG (double).
template <typename T, typename V, int W>
void stage_range(
    RowState<T, V, W>& R, const T* z, int64_t C, int64_t c0, int64_t c1, T* dz, Acc* Bp, Acc* Sa, Acc* GG) {
  constexpr int N = lane_count<V>();
  const Layout& L = R.L;
  std::vector<V> bp(L.P, V(T(0))), sa(L.m, V(T(0)));
  V gg(T(0));
  int packs = 0;
  for (int64_t c = c0; c + N <= c1; c += N) {
    const V g = R.load(z, C, c);
    if (L.collapsed)
      head::class_omega_grad_collapsed<V, W>(
          R.M, R.cf, R.u.data(), R.h.data(), L.S, L.m, R.G.data(), R.ubar.data(), R.hbar.data());
    else
      head::class_omega_grad<V, W>(
          R.M, R.cf, R.u.data(), R.h.data(), L.lookup.data(), L.S, L.m, L.P, R.G.data(), R.ubar.data(),
          R.hbar.data());
    head::class_stage_adjoints(
        g, R.zhat.data(), R.w.data(), R.ubar.data(), R.hbar.data(), R.forms.data(), L.m, L.P, R.alpha.data(),
        R.beta.data(), bp.data(), sa.data(), &gg);
    for (int a = 0; a < L.m; ++a) Lanes<V>::store(dz + (1 + a) * C + c, R.alpha[a]);
    for (int p = 0; p < L.P; ++p) Lanes<V>::store(dz + (1 + L.m + p) * C + c, R.beta[p]);
    if (++packs == kFlush || c + 2 * N > c1) {
      for (int p = 0; p < L.P; ++p) Bp[p] += Lanes<V>::sum(bp[p]), bp[p] = V(T(0));
      for (int a = 0; a < L.m; ++a) Sa[a] += Lanes<V>::sum(sa[a]), sa[a] = V(T(0));
      *GG += Lanes<V>::sum(gg);
      gg = V(T(0));
      packs = 0;
    }
  }
}

// Backward pass B over classes [c0, c1): the final adjoints of every stream.
template <typename T, typename V, int W>
void final_range(
    RowState<T, V, W>& R, const T* z, int64_t C, int64_t c0, int64_t c1, int64_t y, T gl, const std::vector<V>& Bp,
    const std::vector<V>& Sa, V gg_total, T* dz) {
  constexpr int N = lane_count<V>();
  const Layout& L = R.L;
  for (int64_t c = c0; c + N <= c1; c += N) {
    const V g = R.load(z, C, c);
    for (int a = 0; a < L.m; ++a) R.alpha[a] = Lanes<V>::load(dz + (1 + a) * C + c);
    for (int p = 0; p < L.P; ++p) R.beta[p] = Lanes<V>::load(dz + (1 + L.m + p) * C + c);
    const V zbar0 = head::class_final_adjoints(
        g, R.zhat.data(), R.zhat.data() + L.m, R.w.data(), Bp.data(), Sa.data(), gg_total, R.forms.data(), L.m, L.P,
        R.alpha.data(), R.beta.data(), R.zbar_v.data(), R.zbar_p.data());
    for (int a = 0; a < L.m; ++a) Lanes<V>::store(dz + (1 + a) * C + c, R.zbar_v[a]);
    for (int p = 0; p < L.P; ++p) Lanes<V>::store(dz + (1 + L.m + p) * C + c, R.zbar_p[p]);
    Lanes<V>::store(dz + c, zbar0 + V(gl) * (g - Lanes<V>::onehot(c, y)));
  }
}

template <typename T, int W>
void class_backward_row(
    const Layout& L, const head::Options& o, const T* z, const T* stats, int64_t C, int64_t y,
    const T* weights, T lam, T gl, const T* gomega, T* dz) {
  using VP = Pack<T, kLanes>;
  RowState<T, VP, W> RV(L, o);
  RowState<T, T, W> RS(L, o);
  RV.set_row(stats);
  RS.set_row(stats);
  for (int s = 0; s < L.S; ++s) {
    const T G = (gomega ? gomega[s] : T(0)) + gl * lam * weights[s];
    RV.G[s] = VP(G);
    RS.G[s] = G;
  }
  const int64_t vec_end = C - C % kLanes;
  std::vector<Acc> Bp(L.P, 0), Sa(L.m, 0);
  Acc GG = 0;
  stage_range(RV, z, C, 0, vec_end, dz, Bp.data(), Sa.data(), &GG);
  stage_range(RS, z, C, vec_end, C, dz, Bp.data(), Sa.data(), &GG);
  for (int p = 0; p < L.P; ++p) GG -= Bp[p] * Acc(stats[L.K + p]);
  std::vector<T> bp(Bp.begin(), Bp.end()), sa(Sa.begin(), Sa.end());
  std::vector<VP> bpv(bp.begin(), bp.end()), sav(sa.begin(), sa.end());
  final_range(RV, z, C, 0, vec_end, y, gl, bpv, sav, VP(T(GG)), dz);
  final_range(RS, z, C, vec_end, C, y, gl, bp, sa, T(GG), dz);
}

// ---- the CPU launches (host code: simplex_head_host.cpp) -----------------------------------------

void normalize_forward(const head::Sizes& z, const Tensor& f, const Tensor& F1, const Tensor& F2, double scale,
                       Tensor& out) {
  RECORD_FUNCTION("simplex_head::normalize_forward", std::vector<c10::IValue>());
  const Layout L = make_layout(z.m, z.W, z.collapsed);
  const int64_t d = z.d;
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "simplex_head_normalize_cpu", [&] {
    const scalar_t *pf = f.data_ptr<scalar_t>(), *p1 = F1.data_ptr<scalar_t>(), *p2 = F2.data_ptr<scalar_t>();
    scalar_t* po = out.data_ptr<scalar_t>();
    at::parallel_for(0, z.B, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b)
        normalize_forward_row<scalar_t>(
            L, pf + b * d, p1 + b * L.m * d, p2 + b * L.P * d, scalar_t(scale), d, po + b * L.K * d);
    });
  });
}

void class_forward(const head::Sizes& z, const head::Options& o, const Tensor& Z, const Tensor& labels,
                   const Tensor& weights, Tensor& loss, Tensor& omega, Tensor& stats) {
  RECORD_FUNCTION("simplex_head::class_forward", std::vector<c10::IValue>());
  const Layout L = make_layout(z.m, z.W, z.collapsed);
  const int64_t C = z.C;
  AT_DISPATCH_FLOATING_TYPES(Z.scalar_type(), "simplex_head_class_forward_cpu", [&] {
    using T = scalar_t;
    const T *pz = Z.data_ptr<T>(), *w = weights.data_ptr<T>();
    const int64_t* y = labels.data_ptr<int64_t>();
    T *lo = loss.data_ptr<T>(), *om = omega.data_ptr<T>(), *st = stats.data_ptr<T>();
    auto rows = [&](auto width) {
      constexpr int W = decltype(width)::value;
      at::parallel_for(0, z.B, 1, [&](int64_t begin, int64_t end) {
        std::vector<T> g(C);
        for (int64_t b = begin; b < end; ++b)
          class_forward_row<T, W>(
              L, o, pz + b * L.K * C, C, y[b], w + b * L.S, T(o.lam), lo + b, om + b * L.S,
              st + b * (L.K + L.P), g);
      });
    };
    if (L.W == 2)
      rows(std::integral_constant<int, 2>());
    else
      rows(std::integral_constant<int, 3>());
  });
}

void class_backward(const head::Sizes& z, const head::Options& o, const Tensor& Z, const Tensor& stats,
                    const Tensor& labels, const Tensor& weights, const Tensor& grad_loss, const Tensor& grad_omega,
                    Tensor& dZ) {
  RECORD_FUNCTION("simplex_head::class_backward", std::vector<c10::IValue>());
  const Layout L = make_layout(z.m, z.W, z.collapsed);
  const int64_t C = z.C;
  AT_DISPATCH_FLOATING_TYPES(Z.scalar_type(), "simplex_head_class_backward_cpu", [&] {
    using T = scalar_t;
    const T *pz = Z.data_ptr<T>(), *st = stats.data_ptr<T>(), *w = weights.data_ptr<T>();
    const T *gl = grad_loss.data_ptr<T>(), *go = grad_omega.defined() ? grad_omega.data_ptr<T>() : nullptr;
    const int64_t* y = labels.data_ptr<int64_t>();
    T* dz = dZ.data_ptr<T>();
    auto rows = [&](auto width) {
      constexpr int W = decltype(width)::value;
      at::parallel_for(0, z.B, 1, [&](int64_t begin, int64_t end) {
        for (int64_t b = begin; b < end; ++b)
          class_backward_row<T, W>(
              L, o, pz + b * L.K * C, st + b * (L.K + L.P), C, y[b], w + b * L.S, T(o.lam), gl[b],
              go ? go + b * L.S : nullptr, dz + b * L.K * C);
      });
    };
    if (L.W == 2)
      rows(std::integral_constant<int, 2>());
    else
      rows(std::integral_constant<int, 3>());
  });
}

void normalize_backward(const head::Sizes& z, const Tensor& f, const Tensor& F1, const Tensor& F2,
                        const Tensor& gN, Tensor& df, Tensor& dF1, Tensor& dF2) {
  RECORD_FUNCTION("simplex_head::normalize_backward", std::vector<c10::IValue>());
  const Layout L = make_layout(z.m, z.W, z.collapsed);
  const int64_t d = z.d;
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "simplex_head_normalize_backward_cpu", [&] {
    const scalar_t *pf = f.data_ptr<scalar_t>(), *p1 = F1.data_ptr<scalar_t>(), *p2 = F2.data_ptr<scalar_t>();
    const scalar_t* pg = gN.data_ptr<scalar_t>();
    scalar_t *qf = df.data_ptr<scalar_t>(), *q1 = dF1.data_ptr<scalar_t>(), *q2 = dF2.data_ptr<scalar_t>();
    at::parallel_for(0, z.B, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b)
        normalize_backward_row<scalar_t>(
            L, pf + b * d, p1 + b * L.m * d, p2 + b * L.P * d, pg + b * L.K * d, d, qf + b * d, q1 + b * L.m * d,
            q2 + b * L.P * d);
    });
  });
}

constexpr head::DeviceKernels kCpuKernels{
    "CPU", head::kNoLimit, &normalize_forward, &class_forward, &class_backward, &normalize_backward};

}  // namespace

TORCH_LIBRARY_IMPL(advsimplex, CPU, m) {
  m.impl("simplex_head_forward", &head::forward_op<&kCpuKernels>);
  m.impl("simplex_head_backward", &head::backward_op<&kCpuKernels>);
}

}  // namespace advsimplex
