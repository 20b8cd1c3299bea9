// Per-class mathematics of the fused simplex head, shared by the C++ (CPU) and CUDA kernels.
//
// Notation (math spec §4–§6). One row b holds K = 1 + m + P logit streams z_x (x = 0: clean
// logits, 1..m: first-order jets z_a, 1+m..: second-order pair jets z_p), already scaled by s.
//   g = softmax(z_0)            μ_x = <g, z_x>          ẑ_x = z_x − μ_x
//   u_a = g ẑ_a                 ν_p = <g, ẑ_a ẑ_b>      w_p = ẑ_a ẑ_b − ν_p + ẑ_p     h_p = g w_p
// (h_p equals the spec's h_ab = u_b(z_a − <g,z_a>) + g(z_ab − <g,z_ab> − <u_b,z_a>).)
// Per simplex s with local vertices k = 0..W−1 (W = Q − 1) and U_k = u_{s+k}, H_kl = h_{pair(s+k,s+l)}:
//   φ_s = c_jp2 Σ M2 U U + c_qsq (Σ M2 H)² + c_jpq Σ M3 U H + c_q2 Σ M4 H H      Ω_s = Σ_c φ_s
// The coefficients of each variant are op arguments, from advsimplex.reference.variant_coefficients (the one
// definition).
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define ADVSIMPLEX_HD __host__ __device__ __forceinline__
#else
#define ADVSIMPLEX_HD inline
#endif

namespace advsimplex {
namespace head {

template <typename T>
struct Coefficients {
  T jp2, qsq, jpq, q2;
};

// A power of two c with max_i |c f_i| in [1, 2) (1 for rows of zeros or non-finite values; clamped to normal
// numbers). The head is invariant to a common scale of (f, F1, F2) (spec §4: only f/‖f‖ and its derivatives
// enter) and scaling by a power of two is exact, so the normalisation kernels work on c·(f, F1, F2): bit for
// bit the unscaled result wherever that neither overflows nor underflows, and finite for jets scaled by 1e20 or
// 1e-25. c is piecewise constant in f, so the adjoints of (f, F1, F2) are c times those at the scaled point.
template <typename T>
ADVSIMPLEX_HD T row_scale(T amax) {
  if (!(amax > T(0)) || amax - amax != T(0)) return T(1);
  const int limit = sizeof(T) == 4 ? 126 : 1022;
  int e = ::ilogb(static_cast<double>(amax));
  e = e < -limit ? -limit : (e > limit ? limit : e);
  return static_cast<T>(::ldexp(1.0, -e));
}

ADVSIMPLEX_HD double factorial(int n) {
  double r = 1;
  for (int i = 2; i <= n; ++i) r *= i;
  return r;
}

// E[Π_k β_k^{e_k}] over the W = Q − 1 non-origin Dirichlet(1..1) weights (spec §3).
ADVSIMPLEX_HD double dirichlet_moment(int W, const int* e) {
  int total = 0;
  double num = factorial(W);  // (Q − 1)!
  for (int k = 0; k < W; ++k) {
    total += e[k];
    num *= factorial(e[k]);
  }
  return num / factorial(W + total);
}

// Moment tensors M2, M3, M4 of one simplex order (W = Q − 1 ≤ 3).
template <typename T, int W>
struct Moments {
  T m2[W][W];
  T m3[W][W][W];
  T m4[W][W][W][W];

  ADVSIMPLEX_HD void init() {
    int e[3];
    for (int k = 0; k < W; ++k)
      for (int l = 0; l < W; ++l) {
        for (int i = 0; i < W; ++i) e[i] = (i == k) + (i == l);
        m2[k][l] = T(dirichlet_moment(W, e));
        for (int n = 0; n < W; ++n) {
          for (int i = 0; i < W; ++i) e[i] = (i == k) + (i == l) + (i == n);
          m3[k][l][n] = T(dirichlet_moment(W, e));
          for (int o = 0; o < W; ++o) {
            for (int i = 0; i < W; ++i) e[i] = (i == k) + (i == l) + (i == n) + (i == o);
            m4[k][l][n][o] = T(dirichlet_moment(W, e));
          }
        }
      }
  }
};

// Index of the canonical pair (k, k + o), o = 0..W−1, in the lexicographic band list of
// advsimplex.pair_index(m, Q): vertex k owns min(W, m − k) consecutive pairs.
ADVSIMPLEX_HD int band_pair_index(int k, int o, int m, int W) {
  int base = 0;
  for (int j = 0; j < k; ++j) base += (m - j < W) ? (m - j) : W;
  return base + o;
}

ADVSIMPLEX_HD int band_num_pairs(int m, int W) { return band_pair_index(m, 0, m, W); }

// φ_s for one class from the simplex-local U[W] and H[W][W] (spec §5).
template <typename T, int W>
ADVSIMPLEX_HD T simplex_phi(const Moments<T, W>& M, const T* U, const T (*H)[W], const Coefficients<T>& c) {
  T jp2 = T(0), q = T(0), jpq = T(0), q2 = T(0);
  for (int k = 0; k < W; ++k)
    for (int l = 0; l < W; ++l) {
      jp2 += M.m2[k][l] * U[k] * U[l];
      q += M.m2[k][l] * H[k][l];
      for (int n = 0; n < W; ++n) {
        jpq += M.m3[k][l][n] * U[k] * H[l][n];
        for (int o = 0; o < W; ++o) q2 += M.m4[k][l][n][o] * H[k][l] * H[n][o];
      }
    }
  return c.jp2 * jp2 + c.qsq * q * q + c.jpq * jpq + c.q2 * q2;
}

// Accumulates G · ∂φ_s/∂U into dU[W] and G · ∂φ_s/∂H into dH[W][W] (H entries as independent variables).
template <typename T, int W>
ADVSIMPLEX_HD void simplex_phi_grad(
    const Moments<T, W>& M, const T* U, const T (*H)[W], const Coefficients<T>& c, T G, T* dU, T (*dH)[W]) {
  T q = T(0);
  for (int k = 0; k < W; ++k)
    for (int l = 0; l < W; ++l) q += M.m2[k][l] * H[k][l];
  for (int k = 0; k < W; ++k) {
    T du = T(0);
    for (int l = 0; l < W; ++l) {
      du += T(2) * c.jp2 * M.m2[k][l] * U[l];
      for (int n = 0; n < W; ++n) du += c.jpq * M.m3[k][l][n] * H[l][n];
    }
    dU[k] += G * du;
  }
  for (int k = 0; k < W; ++k)
    for (int l = 0; l < W; ++l) {
      T dh = T(2) * c.qsq * q * M.m2[k][l];
      for (int n = 0; n < W; ++n) dh += c.jpq * M.m3[n][k][l] * U[n];
      for (int n = 0; n < W; ++n)
        for (int o = 0; o < W; ++o) dh += T(2) * c.q2 * M.m4[k][l][n][o] * H[n][o];
      dH[k][l] += G * dh;
    }
}

// The per-class u (m), w and h (P) of one row from the centred streams (see the header comment).
// zhat_v[a] = ẑ_a, zhat_p[p] = ẑ_p, pair_a/pair_b: the pair list.
template <typename T>
ADVSIMPLEX_HD void class_derivatives(
    T g, const T* zhat_v, const T* zhat_p, const T* nu, const int* pair_a, const int* pair_b, int m, int P, T* u,
    T* w, T* h) {
  for (int a = 0; a < m; ++a) u[a] = g * zhat_v[a];
  for (int p = 0; p < P; ++p) {
    w[p] = zhat_v[pair_a[p]] * zhat_v[pair_b[p]] - nu[p] + zhat_p[p];
    h[p] = g * w[p];
  }
}

// Adds φ_s of one class to omega[s] for every simplex s (Acc: the accumulator type of the row sums).
template <typename T, int W, typename Acc>
ADVSIMPLEX_HD void class_omega(
    const Moments<T, W>& M, const Coefficients<T>& c, const T* u, const T* h, const int* lookup, int S, Acc* omega) {
  T U[W], H[W][W];
  for (int s = 0; s < S; ++s) {
    for (int k = 0; k < W; ++k) {
      U[k] = u[s + k];
      for (int l = 0; l < W; ++l) {
        const int lo = k < l ? k : l, hi = k < l ? l : k;
        H[k][l] = h[lookup[(s + lo) * W + (hi - lo)]];
      }
    }
    omega[s] += simplex_phi<T, W>(M, U, H, c);
  }
}

// ū (m) and h̄ (P) for one class: Σ_s G_s ∂φ_s/∂u, ∂φ_s/∂h (zeroed here first).
template <typename T, int W>
ADVSIMPLEX_HD void class_omega_grad(
    const Moments<T, W>& M, const Coefficients<T>& c, const T* u, const T* h, const int* lookup, int S, int m, int P,
    const T* G, T* ubar, T* hbar) {
  for (int a = 0; a < m; ++a) ubar[a] = T(0);
  for (int p = 0; p < P; ++p) hbar[p] = T(0);
  T U[W], H[W][W], dU[W], dH[W][W];
  int idx[W][W];
  for (int s = 0; s < S; ++s) {
    for (int k = 0; k < W; ++k) {
      U[k] = u[s + k];
      dU[k] = T(0);
      for (int l = 0; l < W; ++l) {
        const int lo = k < l ? k : l, hi = k < l ? l : k;
        idx[k][l] = lookup[(s + lo) * W + (hi - lo)];
        H[k][l] = h[idx[k][l]];
        dH[k][l] = T(0);
      }
    }
    simplex_phi_grad<T, W>(M, U, H, c, G[s], dU, dH);
    for (int k = 0; k < W; ++k) {
      ubar[s + k] += dU[k];
      for (int l = 0; l < W; ++l) hbar[idx[k][l]] += dH[k][l];
    }
  }
}

// Backward pass A for one class: α_a = g ū_a and β_p = g h̄_p (written to alpha[m], beta[P]; the
// caller stages them in dZ) and the row sums B_p += β_p, S_a += α_a + Σ_{p∋a} β_p ẑ_other(p, a),
// GG += Σ_a α_a ẑ_a + Σ_p β_p w_p.
template <typename T, typename Acc>
ADVSIMPLEX_HD void class_stage_adjoints(
    T g, const T* zv, const T* w, const T* ubar, const T* hbar, const int* pair_a, const int* pair_b, int m, int P,
    T* alpha, T* beta, Acc* Bp, Acc* Sa, Acc* GG) {
  for (int a = 0; a < m; ++a) {
    alpha[a] = g * ubar[a];
    Sa[a] += alpha[a];
    *GG += alpha[a] * zv[a];
  }
  for (int p = 0; p < P; ++p) {
    beta[p] = g * hbar[p];
    Bp[p] += beta[p];
    Sa[pair_a[p]] += beta[p] * zv[pair_b[p]];
    Sa[pair_b[p]] += beta[p] * zv[pair_a[p]];
    *GG += beta[p] * w[p];
  }
}

// Backward pass B for one class: the final adjoints of every stream from the staged α (m), β (P) and the
// row sums (gg_total = GG − Σ_p B_p ν_p); the caller adds the cross-entropy term γ (g − [c = y]) to z̄_0.
//   z̄_a = α_a + Σ_{p∋a} (β_p − B_p g) ẑ_other − g S_a,   z̄_p = β_p − g B_p,
//   z̄_0 = Σ α ẑ + Σ β w − g (gg_total + Σ_a S_a ẑ_a + Σ_p B_p (ẑ_a ẑ_b + ẑ_p)).
template <typename T>
ADVSIMPLEX_HD T class_final_adjoints(
    T g, const T* zv, const T* zp, const T* w, const T* Bp, const T* Sa, T gg_total, const int* pair_a,
    const int* pair_b, int m, int P, const T* alpha, const T* beta, T* zbar_v, T* zbar_p) {
  T direct = T(0), centred = gg_total;
  for (int a = 0; a < m; ++a) {
    zbar_v[a] = alpha[a];
    direct += alpha[a] * zv[a];
    centred += Sa[a] * zv[a];
  }
  for (int p = 0; p < P; ++p) {
    const int a = pair_a[p], b = pair_b[p];
    direct += beta[p] * w[p];
    centred += Bp[p] * (zv[a] * zv[b] + zp[p]);
    const T coupling = beta[p] - Bp[p] * g;
    zbar_v[a] += coupling * zv[b];
    zbar_v[b] += coupling * zv[a];
    zbar_p[p] = beta[p] - g * Bp[p];
  }
  for (int a = 0; a < m; ++a) zbar_v[a] -= g * Sa[a];
  return direct - g * centred;
}

}  // namespace head
}  // namespace advsimplex
