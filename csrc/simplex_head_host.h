// advsimplex::simplex_head — the one checked entry point shared by every device (host code).
//
// simplex_head_host.cpp holds the op schemas, the argument checks (every check that guards memory: shapes,
// label range, dtypes, devices; the kernels then read contiguous copies in the compute dtype), the autocast
// policy and the orchestration: normalisation jets → GEMM onto T → class pass, and the backward mirror.
// A device supplies only its launches (DeviceKernels) and registers forward_op<&kernels>/backward_op<&kernels>
// under its dispatch key (csrc/simplex_head.cpp: CPU, csrc/cuda/simplex_head.cu: CUDA).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <limits>
#include <optional>
#include <tuple>

#include "simplex_head.h"

namespace advsimplex {
namespace head {

using at::Tensor;

// Sizes of one call. Row streams: K = 1 + m + P (clean, m first-order, P second-order streams: one per vertex
// pair, or one per simplex in the collapsed form, P = S).
struct Sizes {
  int64_t B, d, C, m, W, S, P, K;
  bool collapsed;
};

struct Options {
  double logit_scale, lam;
  double c_jp2, c_qsq, c_jpq, c_q2;  // the variant's coefficients (simplex_head.h)
  int64_t order;
  bool collapsed;  // F2 holds collapsed second-order jets, one per simplex (spec §7b)
};

// The variant coefficients as V (a scalar, or a SIMD pack of T).
template <typename V, typename T = V>
Coefficients<V> coefficients(const Options& o) {
  return {V(T(o.c_jp2)), V(T(o.c_qsq)), V(T(o.c_jpq)), V(T(o.c_q2))};
}

// The launches of one device. Every tensor is contiguous, in the compute dtype (float32, or float64 for float64
// inputs); labels are int64 in [0, C). Outputs are allocated by the caller.
struct DeviceKernels {
  const char* name;  // "CPU", "CUDA" (error messages)
  int64_t max_m;     // longest trajectory the kernels accept (kNoLimit: any)
  // normalized (B, K, d) = logit_scale · [n; n_a; n_j]
  void (*normalize_forward)(const Sizes&, const Tensor& f, const Tensor& F1, const Tensor& F2, double logit_scale,
                            Tensor& normalized);
  // loss (B), omega (B, S), stats (B, K + P) from logits (B, K, C)
  void (*class_forward)(const Sizes&, const Options&, const Tensor& logits, const Tensor& labels,
                        const Tensor& weights, Tensor& loss, Tensor& omega, Tensor& stats);
  // dlogits (B, K, C); grad_omega may be undefined (Ω unused)
  void (*class_backward)(const Sizes&, const Options&, const Tensor& logits, const Tensor& stats,
                         const Tensor& labels, const Tensor& weights, const Tensor& grad_loss,
                         const Tensor& grad_omega, Tensor& dlogits);
  // df (B, d), dF1 (B, m, d), dF2 (B, P, d) from grad_normalized = ∂L/∂N (B, K, d), N unscaled
  void (*normalize_backward)(const Sizes&, const Tensor& f, const Tensor& F1, const Tensor& F2,
                             const Tensor& grad_normalized, Tensor& df, Tensor& dF1, Tensor& dF2);
};

constexpr int64_t kNoLimit = std::numeric_limits<int64_t>::max();

using ForwardResult = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor>;
using BackwardResult = std::tuple<Tensor, Tensor, Tensor, Tensor>;

ForwardResult forward(
    const DeviceKernels& kernels, const Tensor& f, const Tensor& F1, const Tensor& F2, const Tensor& text,
    const Tensor& labels, const Tensor& weights, const Options& options);

BackwardResult backward(
    const DeviceKernels& kernels, const Tensor& grad_loss, const std::optional<Tensor>& grad_omega, const Tensor& f,
    const Tensor& F1, const Tensor& F2, const Tensor& text, const Tensor& labels, const Tensor& weights,
    const Tensor& logits, const Tensor& normalized, const Tensor& stats, const Options& options, bool text_grad);

// The registered kernels of a device (the op schemas' argument lists).
template <const DeviceKernels* Kernels>
ForwardResult forward_op(
    const Tensor& f, const Tensor& F1, const Tensor& F2, const Tensor& text, const Tensor& labels,
    const Tensor& weights, double logit_scale, double lam, double c_jp2, double c_qsq, double c_jpq, double c_q2,
    int64_t order, bool collapsed) {
  return forward(
      *Kernels, f, F1, F2, text, labels, weights,
      Options{logit_scale, lam, c_jp2, c_qsq, c_jpq, c_q2, order, collapsed});
}

template <const DeviceKernels* Kernels>
BackwardResult backward_op(
    const Tensor& grad_loss, const std::optional<Tensor>& grad_omega, const Tensor& f, const Tensor& F1,
    const Tensor& F2, const Tensor& text, const Tensor& labels, const Tensor& weights, const Tensor& logits,
    const Tensor& normalized, const Tensor& stats, double logit_scale, double lam, double c_jp2, double c_qsq,
    double c_jpq, double c_q2, int64_t order, bool collapsed, bool text_grad) {
  return backward(
      *Kernels, grad_loss, grad_omega, f, F1, F2, text, labels, weights, logits, normalized, stats,
      Options{logit_scale, lam, c_jp2, c_qsq, c_jpq, c_q2, order, collapsed}, text_grad);
}

}  // namespace head
}  // namespace advsimplex
