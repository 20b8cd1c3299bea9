// Per-class mathematics of the fused simplex head, shared by the C++ (CPU) and CUDA kernels.
//
// Notation (math spec §4–§6, §7b). One row b holds K = 1 + m + N logit streams z_x (x = 0: clean logits,
// 1..m: first-order jets z_a, 1+m..: N second-order jets z_j), already scaled by s. A second-order stream j is
// either a vertex pair p = (a, b) (pair form, z_p = D²z[δ_a, δ_b]) or a simplex s (collapsed form,
// z̄_s = Σ_{k,l∈s} M_kl D²z[δ_k, δ_l]); both are second derivatives along a quadratic form Π_j of the first-order
// directions (Form below: Π_p(x) = x_a x_b, Π_s(x) = Σ_{k,l∈s} M_kl x_k x_l).
//   g = softmax(z_0)            μ_x = <g, z_x>          ẑ_x = z_x − μ_x
//   u_a = g ẑ_a                 ν_j = <g, Π_j(ẑ)>       w_j = Π_j(ẑ) − ν_j + ẑ_j     h_j = g w_j
// (h_p equals the spec's h_ab = u_b(z_a − <g,z_a>) + g(z_ab − <g,z_ab> − <u_b,z_a>); h_s = E_p D²g[p,p], §7b.)
// Per simplex s with local vertices k = 0..W−1 (W = Q − 1) and U_k = u_{s+k}, H_kl = h_{pair(s+k,s+l)}:
//   φ_s = c_jp2 Σ M2 U U + c_qsq (Σ M2 H)² + c_jpq Σ M3 U H + c_q2 Σ M4 H H      Ω_s = Σ_c φ_s
// and in the collapsed form (c_jpq = c_q2 = 0: variant paper) φ_s = c_jp2 Σ M2 U U + c_qsq h_s².
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

// The band pair list: pair p = (pair_a[p], pair_b[p]) in the order of advsimplex.pair_index(m, Q), and
// lookup[k * W + o] = the index of pair (k, k + o), or −1 past the last vertex. Arrays of m·W entries; returns P.
ADVSIMPLEX_HD int build_band_pairs(int m, int W, int* pair_a, int* pair_b, int* lookup) {
  int p = 0;
  for (int k = 0; k < m; ++k)
    for (int o = 0; o < W; ++o) {
      lookup[k * W + o] = k + o < m ? p : -1;
      if (k + o < m) {
        pair_a[p] = k;
        pair_b[p] = k + o;
        ++p;
      }
    }
  return p;
}

// ---- second-order streams as quadratic forms -------------------------------------------------------
constexpr int kMaxSlots = 3;  // first-order streams a form involves (W ≤ 3)
constexpr int kMaxTerms = 6;  // its terms (W(W+1)/2 ≤ 6)

// Π_j(x) = Σ_t coef_t · x_{v[ta_t]} · x_{v[tb_t]} over the form's slots v (first-order stream indices).
//   pair form, stream p = (a, b):          slots (a, b), one term (0, 1, 1):  Π = x_a x_b  (a = b allowed)
//   collapsed form, simplex s (spec §7b):  slots s .. s+W−1, terms (k, l, 2c) for k ≤ l, c = 1/(Q(Q+1)):
//                                          Π = Σ_{k,l∈s} M_kl x_k x_l,  M_kk = 2c, M_kl = c (k ≠ l)
template <typename T>
struct Form {
  int slots, terms;
  int v[kMaxSlots];
  int ta[kMaxTerms], tb[kMaxTerms];
  T coef[kMaxTerms];
};

// The N forms of a row (pairs in the band order of advsimplex.pair_index(m, Q); simplices s = 0..m−W);
// `forms` holds room for m·W (pairs) or m − W + 1 (simplices) entries. Returns N.
template <typename T>
ADVSIMPLEX_HD int build_forms(int m, int W, bool collapsed, Form<T>* forms) {
  int n = 0;
  if (!collapsed) {
    for (int k = 0; k < m; ++k)
      for (int o = 0; o < W && k + o < m; ++o, ++n) {
        Form<T>& f = forms[n];
        f.slots = 2;
        f.terms = 1;
        f.v[0] = k;
        f.v[1] = k + o;
        f.ta[0] = 0;
        f.tb[0] = 1;
        f.coef[0] = T(1);
      }
    return n;
  }
  const T twice_c = T(2.0 / ((W + 1) * (W + 2)));  // 2c = 2/(Q(Q+1)), Q = W + 1
  for (; n < m - W + 1; ++n) {
    Form<T>& f = forms[n];
    f.slots = W;
    f.terms = 0;
    for (int k = 0; k < W; ++k) {
      f.v[k] = n + k;
      for (int l = k; l < W; ++l, ++f.terms) {
        f.ta[f.terms] = k;
        f.tb[f.terms] = l;
        f.coef[f.terms] = twice_c;
      }
    }
  }
  return n;
}

// Π_j(x) for x indexed by first-order stream (V: a scalar, or a pack of classes).
template <typename V, typename C>
ADVSIMPLEX_HD V quad(const Form<C>& f, const V* x) {
  V r = V(C(0));
  for (int t = 0; t < f.terms; ++t) r += V(f.coef[t]) * x[f.v[f.ta[t]]] * x[f.v[f.tb[t]]];
  return r;
}

// gx[k] += g ∂Π_j/∂x_k (Acc: the accumulator type of gx).
template <typename V, typename C, typename Acc>
ADVSIMPLEX_HD void quad_grad(const Form<C>& f, const V* x, V g, Acc* gx) {
  for (int t = 0; t < f.terms; ++t) {
    const int a = f.v[f.ta[t]], b = f.v[f.tb[t]];
    const V gc = g * V(f.coef[t]);
    gx[a] += gc * x[b];
    gx[b] += gc * x[a];
  }
}

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

// The per-class u (m), w and h (N) of one row from the centred streams (see the header comment).
// zhat_v[a] = ẑ_a, zhat_p[j] = ẑ_j, forms: the N second-order streams.
template <typename T, typename C>
ADVSIMPLEX_HD void class_derivatives(
    T g, const T* zhat_v, const T* zhat_p, const T* nu, const Form<C>* forms, int m, int N, T* u, T* w, T* h) {
  for (int a = 0; a < m; ++a) u[a] = g * zhat_v[a];
  for (int j = 0; j < N; ++j) {
    w[j] = quad(forms[j], zhat_v) - nu[j] + zhat_p[j];
    h[j] = g * w[j];
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

// Collapsed form: adds φ_s = c_jp2 Σ M2 U U + c_qsq h_s² of one class to omega[s] (h_s: simplex s's stream).
template <typename T, int W, typename Acc>
ADVSIMPLEX_HD void class_omega_collapsed(
    const Moments<T, W>& M, const Coefficients<T>& c, const T* u, const T* h, int S, Acc* omega) {
  for (int s = 0; s < S; ++s) {
    T jp2 = T(0);
    for (int k = 0; k < W; ++k)
      for (int l = 0; l < W; ++l) jp2 += M.m2[k][l] * u[s + k] * u[s + l];
    omega[s] += c.jp2 * jp2 + c.qsq * h[s] * h[s];
  }
}

// Collapsed form: ū (m) and h̄ (S) for one class (zeroed here first).
template <typename T, int W>
ADVSIMPLEX_HD void class_omega_grad_collapsed(
    const Moments<T, W>& M, const Coefficients<T>& c, const T* u, const T* h, int S, int m, const T* G, T* ubar,
    T* hbar) {
  for (int a = 0; a < m; ++a) ubar[a] = T(0);
  for (int s = 0; s < S; ++s) {
    for (int k = 0; k < W; ++k) {
      T du = T(0);
      for (int l = 0; l < W; ++l) du += T(2) * c.jp2 * M.m2[k][l] * u[s + l];
      ubar[s + k] += G[s] * du;
    }
    hbar[s] = G[s] * (T(2) * c.qsq * h[s]);
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

// Backward pass A for one class: α_a = g ū_a and β_j = g h̄_j (written to alpha[m], beta[N]; the
// caller stages them in dZ) and the row sums B_j += β_j, S_a += α_a + Σ_j β_j ∂Π_j/∂ẑ_a,
// GG += Σ_a α_a ẑ_a + Σ_j β_j w_j.
template <typename T, typename C, typename Acc>
ADVSIMPLEX_HD void class_stage_adjoints(
    T g, const T* zv, const T* w, const T* ubar, const T* hbar, const Form<C>* forms, int m, int N, T* alpha,
    T* beta, Acc* Bp, Acc* Sa, Acc* GG) {
  for (int a = 0; a < m; ++a) {
    alpha[a] = g * ubar[a];
    Sa[a] += alpha[a];
    *GG += alpha[a] * zv[a];
  }
  for (int j = 0; j < N; ++j) {
    beta[j] = g * hbar[j];
    Bp[j] += beta[j];
    quad_grad(forms[j], zv, beta[j], Sa);
    *GG += beta[j] * w[j];
  }
}

// Backward pass B for one class: the final adjoints of every stream from the staged α (m), β (N) and the
// row sums (gg_total = GG − Σ_j B_j ν_j); the caller adds the cross-entropy term γ (g − [c = y]) to z̄_0.
//   z̄_a = α_a + Σ_j (β_j − B_j g) ∂Π_j/∂ẑ_a − g S_a,   z̄_j = β_j − g B_j,
//   z̄_0 = Σ α ẑ + Σ β w − g (gg_total + Σ_a S_a ẑ_a + Σ_j B_j (Π_j(ẑ) + ẑ_j)).
template <typename T, typename C>
ADVSIMPLEX_HD T class_final_adjoints(
    T g, const T* zv, const T* zp, const T* w, const T* Bp, const T* Sa, T gg_total, const Form<C>* forms, int m,
    int N, const T* alpha, const T* beta, T* zbar_v, T* zbar_p) {
  T direct = T(0), centred = gg_total;
  for (int a = 0; a < m; ++a) {
    zbar_v[a] = alpha[a];
    direct += alpha[a] * zv[a];
    centred += Sa[a] * zv[a];
  }
  for (int j = 0; j < N; ++j) {
    direct += beta[j] * w[j];
    centred += Bp[j] * (quad(forms[j], zv) + zp[j]);
    quad_grad(forms[j], zv, beta[j] - Bp[j] * g, zbar_v);
    zbar_p[j] = beta[j] - g * Bp[j];
  }
  for (int a = 0; a < m; ++a) zbar_v[a] -= g * Sa[a];
  return direct - g * centred;
}

}  // namespace head
}  // namespace advsimplex
