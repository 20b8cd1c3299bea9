// advsimplex::simplex_head — schemas and the C++ CPU kernels (at::parallel_for over rows).
//
// Forward:  Ns = s·[n; n_a; n_ab] (normalised-embedding jets, spec §4)  →  Z = Ns Tᵀ (one GEMM)
//           →  per row: softmax, centring, u/h, closed-form Ω per simplex, CE  (class pass, simplex_head.h)
// Backward: dZ (class pass)  →  dNs = dZ T, dT = dZᵀ Ns (two GEMMs)  →  df, dF1, dF2 (normalisation jets).
// The projection onto T is left to BLAS: it is the only O(B·K·d·C) step and BLAS runs it near peak;
// every other step is O(B·K·(d + C)) and fused here.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "simplex_head.h"

namespace advsimplex {
namespace {

using at::Tensor;
using head::Coefficients;
using head::Moments;

struct Layout {
  int m, P, S, W, K;
  std::vector<int> pair_a, pair_b, lookup;  // lookup[k * W + o] = index of pair (k, k + o)
};

Layout make_layout(int64_t m, int64_t order) {
  TORCH_CHECK(order == 3 || order == 4, "simplex_head: order must be 3 or 4, got ", order);
  TORCH_CHECK(m >= order - 1, "simplex_head: m = ", m, " steps has no simplex of order ", order);
  Layout L;
  L.m = static_cast<int>(m);
  L.W = static_cast<int>(order - 1);
  L.S = L.m - L.W + 1;
  L.lookup.assign(L.m * L.W, -1);
  for (int k = 0; k < L.m; ++k)
    for (int o = 0; o < L.W && k + o < L.m; ++o) {
      L.lookup[k * L.W + o] = static_cast<int>(L.pair_a.size());
      L.pair_a.push_back(k);
      L.pair_b.push_back(k + o);
    }
  L.P = static_cast<int>(L.pair_a.size());
  L.K = 1 + L.m + L.P;
  return L;
}

template <typename T>
inline T dot(const T* x, const T* y, int64_t n) {
  T acc = 0;
  for (int64_t i = 0; i < n; ++i) acc += x[i] * y[i];
  return acc;
}

template <typename T>
inline void axpy(T alpha, const T* x, T* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

// ---- normalisation jets --------------------------------------------------------------------
// n = f/r, n_a = ρ(f_a − n α_a),
// n_p = ρ f_p − ρ β_p n − ρ²(α_a f_b + α_b f_a) − ρ²(γ_p − 3 α_a α_b) n,
// ρ = 1/‖f‖, α_a = n·f_a, β_p = n·f_p, γ_p = f_a·f_b (equal to the spec's form with P = I − nnᵀ).
template <typename T>
void normalize_forward_row(const Layout& L, const T* f, const T* F1, const T* F2, T s, int64_t d, T* out) {
  const T rho = T(1) / std::sqrt(dot(f, f, d));
  T* n = out;  // row 0, scaled at the end
  for (int64_t i = 0; i < d; ++i) n[i] = rho * f[i];
  std::vector<T> alpha(L.m);
  for (int a = 0; a < L.m; ++a) {
    const T* fa = F1 + a * d;
    alpha[a] = dot(n, fa, d);
    T* na = out + (1 + a) * d;
    for (int64_t i = 0; i < d; ++i) na[i] = s * rho * (fa[i] - n[i] * alpha[a]);
  }
  for (int p = 0; p < L.P; ++p) {
    const int a = L.pair_a[p], b = L.pair_b[p];
    const T *fa = F1 + a * d, *fb = F1 + b * d, *fp = F2 + p * d;
    const T beta = dot(n, fp, d), gamma = dot(fa, fb, d);
    const T cn = -rho * beta - rho * rho * (gamma - T(3) * alpha[a] * alpha[b]);
    const T ca = -rho * rho * alpha[b], cb = -rho * rho * alpha[a];
    T* np = out + (1 + L.m + p) * d;
    for (int64_t i = 0; i < d; ++i) np[i] = s * (rho * fp[i] + cn * n[i] + ca * fa[i] + cb * fb[i]);
  }
  for (int64_t i = 0; i < d; ++i) n[i] *= s;
}

// Adjoints of (f, F1, F2) from gN = ∂L/∂N (N the unscaled normalised jets), recomputing the forward scalars.
template <typename T>
void normalize_backward_row(
    const Layout& L, const T* f, const T* F1, const T* F2, const T* gN, int64_t d, T* df, T* dF1, T* dF2) {
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
  for (int p = 0; p < L.P; ++p) {
    const int a = L.pair_a[p], b = L.pair_b[p];
    const T *fa = F1 + a * d, *fb = F1 + b * d, *fp = F2 + p * d, *gp = gN + (1 + L.m + p) * d;
    const T beta = dot(n.data(), fp, d), gamma = dot(fa, fb, d);
    const T t = dot(n.data(), gp, d), fa_g = dot(fa, gp, d), fb_g = dot(fb, gp, d), fp_g = dot(fp, gp, d);
    const T e = gamma - T(3) * alpha[a] * alpha[b];
    const T beta_bar = -rho * t, gamma_bar = -rho2 * t;
    alpha_bar[a] += -rho2 * fb_g + T(3) * rho2 * alpha[b] * t;
    alpha_bar[b] += -rho2 * fa_g + T(3) * rho2 * alpha[a] * t;
    rho_bar += fp_g - beta * t - T(2) * rho * (alpha[a] * fb_g + alpha[b] * fa_g + e * t);
    axpy(-(rho * beta + rho2 * e), gp, nT.data(), d);
    axpy(beta_bar, fp, nT.data(), d);
    T* dfp = dF2 + p * d;
    for (int64_t i = 0; i < d; ++i) dfp[i] = rho * gp[i] + beta_bar * n[i];
    T *dfa = dF1 + a * d, *dfb = dF1 + b * d;
    axpy(-rho2 * alpha[b], gp, dfa, d);
    axpy(-rho2 * alpha[a], gp, dfb, d);
    axpy(gamma_bar, fb, dfa, d);
    axpy(gamma_bar, fa, dfb, d);
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
}

// ---- class pass ----------------------------------------------------------------------------
// stats row: [lse, μ_1..μ_{K−1}, ν_1..ν_P]. Sums over the classes accumulate in double (Acc), so
// that long rows (C up to 32k and more) keep float32 results within 1e-5 of the exact values.
using Acc = double;

template <typename T>
struct RowScratch {
  std::vector<T> zhat, u, w, h, ubar, hbar, G;
  std::vector<Acc> omega, sums;
  explicit RowScratch(const Layout& L)
      : zhat(L.K - 1), u(L.m), w(L.P), h(L.P), ubar(L.m), hbar(L.P), G(L.S), omega(L.S), sums(L.K + L.P) {}
};

template <typename T>
void softmax_stats(const Layout& L, const T* z, int64_t C, T* stats, RowScratch<T>& R) {
  T mx = -INFINITY;
  for (int64_t c = 0; c < C; ++c) mx = std::max(mx, z[c]);
  Acc se = 0;
  for (int64_t c = 0; c < C; ++c) se += std::exp(z[c] - mx);
  const T lse = mx + T(std::log(se));
  stats[0] = lse;
  Acc* mu = R.sums.data();
  for (int x = 0; x < L.K - 1; ++x) mu[x] = 0;
  for (int64_t c = 0; c < C; ++c) {
    const T g = std::exp(z[c] - lse);
    for (int x = 1; x < L.K; ++x) mu[x - 1] += g * z[x * C + c];
  }
  for (int x = 1; x < L.K; ++x) stats[x] = T(mu[x - 1]);
  Acc* nu = R.sums.data() + L.K;
  for (int p = 0; p < L.P; ++p) nu[p] = 0;
  const T* m = stats + 1;
  for (int64_t c = 0; c < C; ++c) {
    const T g = std::exp(z[c] - lse);
    for (int p = 0; p < L.P; ++p)
      nu[p] += g * (z[(1 + L.pair_a[p]) * C + c] - m[L.pair_a[p]]) * (z[(1 + L.pair_b[p]) * C + c] - m[L.pair_b[p]]);
  }
  for (int p = 0; p < L.P; ++p) stats[L.K + p] = T(nu[p]);
}

// g, ẑ (vertex then pair streams), u, w, h of class c.
template <typename T>
inline T load_class(const Layout& L, const T* z, const T* stats, int64_t C, int64_t c, RowScratch<T>& R) {
  const T g = std::exp(z[c] - stats[0]);
  for (int x = 1; x < L.K; ++x) R.zhat[x - 1] = z[x * C + c] - stats[x];
  head::class_derivatives<T>(
      g, R.zhat.data(), R.zhat.data() + L.m, stats + L.K, L.pair_a.data(), L.pair_b.data(), L.m, L.P, R.u.data(),
      R.w.data(), R.h.data());
  return g;
}

template <typename T, int W>
void class_forward_row(
    const Layout& L, const Coefficients<T>& cf, const Moments<T, W>& M, const T* z, int64_t C, int64_t y,
    const T* weights, T lam, T* loss, T* omega, T* stats, RowScratch<T>& R) {
  softmax_stats(L, z, C, stats, R);
  for (int s = 0; s < L.S; ++s) R.omega[s] = 0;
  for (int64_t c = 0; c < C; ++c) {
    load_class(L, z, stats, C, c, R);
    head::class_omega<T, W, Acc>(M, cf, R.u.data(), R.h.data(), L.lookup.data(), L.S, R.omega.data());
  }
  Acc total = Acc(stats[0]) - Acc(z[y]);
  for (int s = 0; s < L.S; ++s) {
    omega[s] = T(R.omega[s]);
    total += Acc(lam) * Acc(weights[s]) * R.omega[s];
  }
  *loss = T(total);
}

template <typename T, int W>
void class_backward_row(
    const Layout& L, const Coefficients<T>& cf, const Moments<T, W>& M, const T* z, const T* stats, int64_t C,
    int64_t y, const T* weights, T lam, T gl, const T* gomega, T* dz, RowScratch<T>& R) {
  for (int s = 0; s < L.S; ++s) R.G[s] = (gomega ? gomega[s] : T(0)) + gl * lam * weights[s];
  const T* nu = stats + L.K;
  std::vector<Acc> Bp_acc(L.P, 0), Sa_acc(L.m, 0);
  Acc GG = 0;
  // pass A: α_a = g ū_a, β_p = g h̄_p into dz (scratch); row sums B_p, S_a, GG.
  for (int64_t c = 0; c < C; ++c) {
    const T g = load_class(L, z, stats, C, c, R);
    head::class_omega_grad<T, W>(
        M, cf, R.u.data(), R.h.data(), L.lookup.data(), L.S, L.m, L.P, R.G.data(), R.ubar.data(), R.hbar.data());
    head::class_stage_adjoints<T, Acc>(
        g, R.zhat.data(), R.w.data(), R.ubar.data(), R.hbar.data(), L.pair_a.data(), L.pair_b.data(), L.m, L.P,
        dz + c, C, Bp_acc.data(), Sa_acc.data(), &GG);
  }
  for (int p = 0; p < L.P; ++p) GG -= Bp_acc[p] * nu[p];
  const std::vector<T> Bp(Bp_acc.begin(), Bp_acc.end()), Sa(Sa_acc.begin(), Sa_acc.end());
  const T gg_total = T(GG);
  // pass B: final adjoints of every stream.
  for (int64_t c = 0; c < C; ++c) {
    const T g = load_class(L, z, stats, C, c, R);
    head::class_final_adjoints<T>(
        g, R.zhat.data(), R.zhat.data() + L.m, R.w.data(), Bp.data(), Sa.data(), gg_total, gl, c == y,
        L.pair_a.data(), L.pair_b.data(), L.m, L.P, R.ubar.data(), dz + c, C);
  }
}

template <typename T, int W>
void class_forward(
    const Layout& L, int64_t variant, double kappa, const Tensor& Z, const Tensor& labels, const Tensor& weights,
    double lam, Tensor& loss, Tensor& omega, Tensor& stats) {
  const auto cf = head::variant_coefficients<T>(variant, kappa);
  Moments<T, W> M;
  M.init();
  const int64_t B = Z.size(0), C = Z.size(2);
  const T* z = Z.data_ptr<T>();
  const int64_t* y = labels.data_ptr<int64_t>();
  const T* w = weights.data_ptr<T>();
  T *lo = loss.data_ptr<T>(), *om = omega.data_ptr<T>(), *st = stats.data_ptr<T>();
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    RowScratch<T> R(L);
    for (int64_t b = begin; b < end; ++b)
      class_forward_row<T, W>(
          L, cf, M, z + b * L.K * C, C, y[b], w + b * L.S, T(lam), lo + b, om + b * L.S, st + b * (L.K + L.P), R);
  });
}

template <typename T, int W>
void class_backward(
    const Layout& L, int64_t variant, double kappa, const Tensor& Z, const Tensor& stats, const Tensor& labels,
    const Tensor& weights, double lam, const Tensor& grad_loss, const c10::optional<Tensor>& grad_omega, Tensor& dZ) {
  const auto cf = head::variant_coefficients<T>(variant, kappa);
  Moments<T, W> M;
  M.init();
  const int64_t B = Z.size(0), C = Z.size(2);
  const T *z = Z.data_ptr<T>(), *st = stats.data_ptr<T>(), *w = weights.data_ptr<T>(), *gl = grad_loss.data_ptr<T>();
  const T* go = grad_omega.has_value() ? grad_omega->data_ptr<T>() : nullptr;
  const int64_t* y = labels.data_ptr<int64_t>();
  T* dz = dZ.data_ptr<T>();
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    RowScratch<T> R(L);
    for (int64_t b = begin; b < end; ++b)
      class_backward_row<T, W>(
          L, cf, M, z + b * L.K * C, st + b * (L.K + L.P), C, y[b], w + b * L.S, T(lam), gl[b],
          go ? go + b * L.S : nullptr, dz + b * L.K * C, R);
  });
}

at::ScalarType compute_type(const Tensor& f) {
  return f.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

void check_inputs(const Tensor& f, const Tensor& F1, const Tensor& F2, const Tensor& text, const Layout& L) {
  TORCH_CHECK(f.dim() == 2, "simplex_head: f must be (B, d), got ", f.sizes());
  TORCH_CHECK(F1.dim() == 3 && F1.size(0) == f.size(0) && F1.size(2) == f.size(1), "simplex_head: F1 must be (B, m, d)");
  TORCH_CHECK(F2.dim() == 3 && F2.size(0) == f.size(0) && F2.size(1) == L.P && F2.size(2) == f.size(1),
              "simplex_head: F2 must be (B, P, d) with P = ", L.P);
  TORCH_CHECK(text.dim() == 2 && text.size(1) == f.size(1), "simplex_head: text_features must be (C, d)");
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> simplex_head_forward_cpu(
    const Tensor& f_in, const Tensor& F1_in, const Tensor& F2_in, const Tensor& text_in, const Tensor& labels,
    const Tensor& weights_in, double logit_scale, double lam, int64_t variant, double kappa, int64_t order) {
  const Layout L = make_layout(F1_in.size(1), order);
  check_inputs(f_in, F1_in, F2_in, text_in, L);
  const auto ct = compute_type(f_in);
  const Tensor f = f_in.to(ct).contiguous(), F1 = F1_in.to(ct).contiguous(), F2 = F2_in.to(ct).contiguous();
  const Tensor text = text_in.to(ct).contiguous(), weights = weights_in.to(ct).contiguous();
  const Tensor y = labels.to(at::kLong).contiguous();
  const int64_t B = f.size(0), d = f.size(1), C = text.size(0);
  Tensor Ns = at::empty({B, L.K, d}, f.options());
  AT_DISPATCH_FLOATING_TYPES(ct, "simplex_head_normalize_cpu", [&] {
    const scalar_t *pf = f.data_ptr<scalar_t>(), *p1 = F1.data_ptr<scalar_t>(), *p2 = F2.data_ptr<scalar_t>();
    scalar_t* out = Ns.data_ptr<scalar_t>();
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b)
        normalize_forward_row<scalar_t>(
            L, pf + b * d, p1 + b * L.m * d, p2 + b * L.P * d, scalar_t(logit_scale), d, out + b * L.K * d);
    });
  });
  Tensor Z = at::mm(Ns.view({B * L.K, d}), text.t()).view({B, L.K, C});
  Tensor loss = at::empty({B}, f.options()), omega = at::empty({B, L.S}, f.options());
  Tensor stats = at::empty({B, L.K + L.P}, f.options());
  AT_DISPATCH_FLOATING_TYPES(ct, "simplex_head_class_forward_cpu", [&] {
    if (L.W == 2)
      class_forward<scalar_t, 2>(L, variant, kappa, Z, y, weights, lam, loss, omega, stats);
    else
      class_forward<scalar_t, 3>(L, variant, kappa, Z, y, weights, lam, loss, omega, stats);
  });
  return {loss, omega, Z, Ns, stats};
}

std::tuple<Tensor, Tensor, Tensor, Tensor> simplex_head_backward_cpu(
    const Tensor& grad_loss_in, const c10::optional<Tensor>& grad_omega_in, const Tensor& f_in, const Tensor& F1_in,
    const Tensor& F2_in, const Tensor& text_in, const Tensor& labels, const Tensor& weights_in, const Tensor& Z,
    const Tensor& Ns, const Tensor& stats, double logit_scale, double lam, int64_t variant, double kappa,
    int64_t order) {
  const Layout L = make_layout(F1_in.size(1), order);
  const auto ct = compute_type(f_in);
  const Tensor f = f_in.to(ct).contiguous(), F1 = F1_in.to(ct).contiguous(), F2 = F2_in.to(ct).contiguous();
  const Tensor text = text_in.to(ct).contiguous(), weights = weights_in.to(ct).contiguous();
  const Tensor y = labels.to(at::kLong).contiguous(), grad_loss = grad_loss_in.to(ct).contiguous();
  c10::optional<Tensor> grad_omega;
  if (grad_omega_in.has_value() && grad_omega_in->defined()) grad_omega = grad_omega_in->to(ct).contiguous();
  const int64_t B = f.size(0), d = f.size(1), C = text.size(0);
  Tensor dZ = at::empty_like(Z);
  AT_DISPATCH_FLOATING_TYPES(ct, "simplex_head_class_backward_cpu", [&] {
    if (L.W == 2)
      class_backward<scalar_t, 2>(L, variant, kappa, Z, stats, y, weights, lam, grad_loss, grad_omega, dZ);
    else
      class_backward<scalar_t, 3>(L, variant, kappa, Z, stats, y, weights, lam, grad_loss, grad_omega, dZ);
  });
  const Tensor dZ2 = dZ.view({B * L.K, C});
  // Z = Ns Tᵀ with Ns = s·N, so ∂L/∂N = s·(dZ T) and ∂L/∂T = dZᵀ Ns.
  Tensor gN = at::mm(dZ2, text).mul_(logit_scale).view({B, L.K, d});
  Tensor dtext = at::mm(dZ2.t(), Ns.view({B * L.K, d}));
  Tensor df = at::empty_like(f), dF1 = at::empty_like(F1), dF2 = at::empty_like(F2);
  AT_DISPATCH_FLOATING_TYPES(ct, "simplex_head_normalize_backward_cpu", [&] {
    const scalar_t *pf = f.data_ptr<scalar_t>(), *p1 = F1.data_ptr<scalar_t>(), *p2 = F2.data_ptr<scalar_t>();
    const scalar_t* pg = gN.data_ptr<scalar_t>();
    scalar_t *qf = df.data_ptr<scalar_t>(), *q1 = dF1.data_ptr<scalar_t>(), *q2 = dF2.data_ptr<scalar_t>();
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b)
        normalize_backward_row<scalar_t>(
            L, pf + b * d, p1 + b * L.m * d, p2 + b * L.P * d, pg + b * L.K * d, d, qf + b * d, q1 + b * L.m * d,
            q2 + b * L.P * d);
    });
  });
  return {df.to(f_in.scalar_type()), dF1.to(F1_in.scalar_type()), dF2.to(F2_in.scalar_type()),
          dtext.to(text_in.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(advsimplex, m) {
  m.def(
      "simplex_head_forward(Tensor f, Tensor F1, Tensor F2, Tensor text, Tensor labels, Tensor weights, "
      "float logit_scale, float lam, int variant, float kappa, int order) "
      "-> (Tensor loss, Tensor omega, Tensor logits, Tensor normalized, Tensor stats)");
  m.def(
      "simplex_head_backward(Tensor grad_loss, Tensor? grad_omega, Tensor f, Tensor F1, Tensor F2, Tensor text, "
      "Tensor labels, Tensor weights, Tensor logits, Tensor normalized, Tensor stats, float logit_scale, float lam, "
      "int variant, float kappa, int order) -> (Tensor df, Tensor dF1, Tensor dF2, Tensor dtext)");
}

TORCH_LIBRARY_IMPL(advsimplex, CPU, m) {
  m.impl("simplex_head_forward", &simplex_head_forward_cpu);
  m.impl("simplex_head_backward", &simplex_head_backward_cpu);
}

}  // namespace advsimplex
