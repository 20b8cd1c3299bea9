// advsimplex::simplex_head — op schemas, argument checks, autocast policy and the device-independent
// orchestration (see simplex_head_host.h). The checks run inside the op, so that a direct call of the
// registered op, or a call from a torch.compile graph (where the Python checks do not run), cannot make a
// kernel read out of bounds: each failure names the argument (TypeError for dtypes, ValueError otherwise).
#include "simplex_head_host.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/DeviceGuard.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include "simplex_head.h"

namespace advsimplex {
namespace head {
namespace {

bool is_floating(at::ScalarType t) {
  return t == at::kDouble || t == at::kFloat || t == at::kBFloat16 || t == at::kHalf;
}

at::ScalarType compute_type(const Tensor& f) {
  return f.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// "(B, m, d) = (3, 5, 7)": the expected shape in words and in numbers (-1: any size, printed "?").
std::string spell(const char* what, const std::vector<int64_t>& expected) {
  std::ostringstream out;
  out << what << " = (";
  for (size_t i = 0; i < expected.size(); ++i) {
    if (i) out << ", ";
    if (expected[i] < 0)
      out << "?";
    else
      out << expected[i];
  }
  out << (expected.size() == 1 ? ",)" : ")");
  return out.str();
}

void check_shape(const char* name, const Tensor& t, const std::vector<int64_t>& expected, const char* what,
                 const char* note = "") {
  bool ok = t.dim() == static_cast<int64_t>(expected.size());
  for (size_t i = 0; ok && i < expected.size(); ++i) ok = expected[i] < 0 || t.size(i) == expected[i];
  TORCH_CHECK_VALUE(ok, "simplex_head: ", name, " must have shape ", spell(what, expected), note, ", got ",
                    t.sizes());
}

void check_floating(const char* name, const Tensor& t) {
  TORCH_CHECK_TYPE(is_floating(t.scalar_type()), "simplex_head: ", name,
                   " must have a floating dtype (float64, float32, bfloat16, float16), got ", t.scalar_type());
}

void check_dtype(const char* name, const Tensor& t, at::ScalarType expected, const char* why) {
  TORCH_CHECK_TYPE(t.scalar_type() == expected, "simplex_head: ", name, " has dtype ", t.scalar_type(),
                   " but must be ", expected, " (", why, ")");
}

void check_device(const char* name, const Tensor& t, const Tensor& f) {
  TORCH_CHECK_VALUE(t.device() == f.device(), "simplex_head: ", name, " is on ", t.device(), " but f is on ",
                    f.device(), " (every tensor argument must be on one device)");
}

void check_options(const Options& o) {
  TORCH_CHECK_VALUE(o.order == 3 || o.order == 4, "simplex_head: order must be 3 or 4, got ", o.order);
  TORCH_CHECK_VALUE(std::isfinite(o.logit_scale) && o.logit_scale > 0,
                    "simplex_head: logit_scale must be a finite positive number, got ", o.logit_scale);
  TORCH_CHECK_VALUE(std::isfinite(o.lam), "simplex_head: lam must be a finite number, got ", o.lam);
  for (const auto& [name, value] : {std::pair<const char*, double>{"c_jp2", o.c_jp2}, {"c_qsq", o.c_qsq},
                                    {"c_jpq", o.c_jpq}, {"c_q2", o.c_q2}})
    TORCH_CHECK_VALUE(std::isfinite(value), "simplex_head: the variant coefficient ", name,
                      " must be a finite number, got ", value);
  TORCH_CHECK_VALUE(!o.collapsed || (o.c_jpq == 0 && o.c_q2 == 0),
                    "simplex_head: collapsed second-order jets carry only E_p D²f[p, p] per simplex: the variant "
                    "coefficients c_jpq and c_q2 must be 0 (variant 'paper'), got c_jpq = ",
                    o.c_jpq, ", c_q2 = ", o.c_q2);
}

// Shapes, dtypes and devices of the forward inputs; returns the sizes of the call.
Sizes check_inputs(const DeviceKernels& kernels, const Tensor& f, const Tensor& F1, const Tensor& F2,
                   const Tensor& text, const Tensor& labels, const Tensor& weights, const Options& o) {
  check_options(o);
  check_floating("f", f);
  check_shape("f", f, {-1, -1}, "(B, d)");
  Sizes z{};
  z.B = f.size(0);
  z.d = f.size(1);
  TORCH_CHECK_VALUE(z.d >= 1, "simplex_head: f must have an embedding dimension d >= 1, got shape ", f.sizes());
  TORCH_CHECK_VALUE(F1.dim() == 3, "simplex_head: F1 must have shape (B, m, d), got ", F1.sizes());
  z.m = F1.size(1);
  z.W = o.order - 1;
  TORCH_CHECK_VALUE(z.m >= z.W, "simplex_head: F1 holds m = ", z.m, " steps: no simplex of order ", o.order,
                    " (need m >= ", z.W, ")");
  TORCH_CHECK_VALUE(z.m <= kernels.max_m, "simplex_head: m = ", z.m, " steps exceed the ", kernels.name,
                    " kernels' limit of ", kernels.max_m, "; use backend='triton' or 'reference'");
  check_shape("F1", F1, {z.B, z.m, z.d}, "(B, m, d)");
  z.S = z.m - z.W + 1;
  z.collapsed = o.collapsed;
  z.P = o.collapsed ? z.S : band_num_pairs(static_cast<int>(z.m), static_cast<int>(z.W));
  z.K = 1 + z.m + z.P;
  std::ostringstream streams;
  if (o.collapsed)
    streams << " with S = " << z.S << " simplices for m = " << z.m << ", order = " << o.order
            << " (collapsed jets)";
  else
    streams << " with P = " << z.P << " vertex pairs for m = " << z.m << ", order = " << o.order;
  check_shape("F2", F2, {z.B, z.P, z.d}, o.collapsed ? "(B, S, d)" : "(B, P, d)", streams.str().c_str());
  check_shape("text", text, {-1, z.d}, "(C, d)");
  z.C = text.size(0);
  TORCH_CHECK_VALUE(z.C >= 1, "simplex_head: text must hold at least one class embedding (C >= 1), got ",
                    text.sizes());
  for (const auto& [name, t] : {std::pair<const char*, const Tensor&>{"F1", F1}, {"F2", F2}, {"text", text}})
    check_dtype(name, t, f.scalar_type(), "f, F1, F2 and text share one dtype");
  check_floating("weights", weights);
  check_shape("weights", weights, {z.B, z.S}, "(B, S)", " with S = m - order + 2");
  TORCH_CHECK_TYPE(labels.scalar_type() == at::kLong || labels.scalar_type() == at::kInt,
                   "simplex_head: labels must be an int64 or int32 tensor of class indices, got ",
                   labels.scalar_type());
  check_shape("labels", labels, {z.B}, "(B,)");
  for (const auto& [name, t] : {std::pair<const char*, const Tensor&>{"F1", F1}, {"F2", F2}, {"text", text},
                                {"labels", labels}, {"weights", weights}})
    check_device(name, t, f);
  return z;
}

// Labels index the logits (z[y]): their range is checked on the host, so on CUDA this costs one
// synchronisation per forward call (two scalars copied back).
void check_label_range(const Tensor& labels, int64_t C) {
  if (labels.numel() == 0) return;
  const auto [lo, hi] = at::aminmax(labels);
  const Tensor bounds = at::stack({lo, hi}).to(at::kLong).cpu();
  const int64_t* b = bounds.const_data_ptr<int64_t>();
  TORCH_CHECK_VALUE(b[0] >= 0 && b[1] < C, "simplex_head: labels must lie in [0, C) = [0, ", C,
                    "); got values in [", b[0], ", ", b[1], "]");
}

// The tensors the forward saved for the backward, and the incoming gradients.
void check_saved(const Sizes& z, const Tensor& f, const Tensor& grad_loss, const std::optional<Tensor>& grad_omega,
                 const Tensor& logits, const Tensor& normalized, const Tensor& stats) {
  const auto ct = compute_type(f);
  check_floating("grad_loss", grad_loss);
  check_shape("grad_loss", grad_loss, {z.B}, "(B,)");
  check_device("grad_loss", grad_loss, f);
  if (grad_omega.has_value() && grad_omega->defined()) {
    check_floating("grad_omega", *grad_omega);
    check_shape("grad_omega", *grad_omega, {z.B, z.S}, "(B, S)");
    check_device("grad_omega", *grad_omega, f);
  }
  const char* why = "the forward op's output: float32, or float64 for float64 inputs";
  for (const auto& [name, t, shape, what] :
       {std::tuple<const char*, const Tensor&, std::vector<int64_t>, const char*>{
            "logits", logits, {z.B, z.K, z.C}, "(B, K, C)"},
        {"normalized", normalized, {z.B, z.K, z.d}, "(B, K, d)"},
        {"stats", stats, {z.B, z.K + z.P}, "(B, K + P)"}}) {
    check_shape(name, t, shape, what, " with K = 1 + m + P");
    check_dtype(name, t, ct, why);
    check_device(name, t, f);
  }
}

Tensor compute(const Tensor& t, at::ScalarType ct) { return t.to(ct).contiguous(); }

}  // namespace

ForwardResult forward(
    const DeviceKernels& kernels, const Tensor& f_in, const Tensor& F1_in, const Tensor& F2_in, const Tensor& text_in,
    const Tensor& labels, const Tensor& weights_in, const Options& o) {
  const Sizes z = check_inputs(kernels, f_in, F1_in, F2_in, text_in, labels, weights_in, o);
  check_label_range(labels, z.C);
  const c10::OptionalDeviceGuard guard(at::device_of(f_in));
  const auto ct = compute_type(f_in);
  const Tensor f = compute(f_in, ct), F1 = compute(F1_in, ct), F2 = compute(F2_in, ct);
  const Tensor text = compute(text_in, ct), weights = compute(weights_in, ct);
  const Tensor y = labels.to(at::kLong).contiguous();
  const auto options = f.options();
  Tensor normalized = at::empty({z.B, z.K, z.d}, options);
  Tensor loss = at::empty({z.B}, options), omega = at::empty({z.B, z.S}, options);
  Tensor stats = at::empty({z.B, z.K + z.P}, options);
  if (z.B == 0) return {loss, omega, at::empty({z.B, z.K, z.C}, options), normalized, stats};
  kernels.normalize_forward(z, f, F1, F2, o.logit_scale, normalized);
  // The projection onto T is left to BLAS/cuBLAS: the only O(B·K·d·C) step, run near peak there.
  Tensor logits = at::mm(normalized.view({z.B * z.K, z.d}), text.t()).view({z.B, z.K, z.C});
  kernels.class_forward(z, o, logits, y, weights, loss, omega, stats);
  return {loss, omega, logits, normalized, stats};
}

BackwardResult backward(
    const DeviceKernels& kernels, const Tensor& grad_loss_in, const std::optional<Tensor>& grad_omega_in,
    const Tensor& f_in, const Tensor& F1_in, const Tensor& F2_in, const Tensor& text_in, const Tensor& labels,
    const Tensor& weights_in, const Tensor& logits_in, const Tensor& normalized_in, const Tensor& stats_in,
    const Options& o, bool text_grad) {
  const Sizes z = check_inputs(kernels, f_in, F1_in, F2_in, text_in, labels, weights_in, o);
  check_saved(z, f_in, grad_loss_in, grad_omega_in, logits_in, normalized_in, stats_in);
  const c10::OptionalDeviceGuard guard(at::device_of(f_in));
  const auto ct = compute_type(f_in);
  const Tensor f = compute(f_in, ct), F1 = compute(F1_in, ct), F2 = compute(F2_in, ct);
  const Tensor text = compute(text_in, ct), weights = compute(weights_in, ct);
  const Tensor logits = logits_in.contiguous(), normalized = normalized_in.contiguous(), stats = stats_in.contiguous();
  const Tensor y = labels.to(at::kLong).contiguous(), grad_loss = compute(grad_loss_in, ct);
  Tensor grad_omega;
  if (grad_omega_in.has_value() && grad_omega_in->defined()) grad_omega = compute(*grad_omega_in, ct);
  const auto options = f.options();
  Tensor df = at::empty_like(f), dF1 = at::empty_like(F1), dF2 = at::empty_like(F2);
  Tensor dtext = text_grad ? at::zeros_like(text) : at::empty({0}, options);
  if (z.B > 0) {
    Tensor dlogits = at::empty({z.B, z.K, z.C}, options);
    kernels.class_backward(z, o, logits, stats, y, weights, grad_loss, grad_omega, dlogits);
    const Tensor flat = dlogits.view({z.B * z.K, z.C});
    // Z = Ns Tᵀ with Ns = s·N, so ∂L/∂N = s·(dZ T) and ∂L/∂T = dZᵀ Ns (only when T needs a gradient).
    const Tensor grad_normalized = at::mm(flat, text).mul_(o.logit_scale).view({z.B, z.K, z.d});
    if (text_grad) dtext = at::mm(flat.t(), normalized.view({z.B * z.K, z.d}));
    kernels.normalize_backward(z, f, F1, F2, grad_normalized, df, dF1, dF2);
  }
  return {df.to(f_in.scalar_type()), dF1.to(F1_in.scalar_type()), dF2.to(F2_in.scalar_type()),
          dtext.to(text_in.scalar_type())};
}

namespace {

// ---- autocast policy ---------------------------------------------------------------------------
// The head always computes in float32 (float64 inputs in float64), whatever autocast asks for: its GEMM
// feeds a softmax and second-order differences of logits that bf16/fp16 cannot resolve. Under autocast
// (CPU or CUDA) the ops cast bfloat16/float16 tensors to float32, leave float32/float64 as they are, and
// redispatch with every autocast key excluded, so that the GEMMs inside the kernels run in the compute
// dtype too (torch.library.register_autocast(op, device, torch.float32) does the same for the Triton ops).
// Through autograd, the gradients of cast inputs come back in the inputs' own dtypes.
Tensor autocast_input(const Tensor& t) {
  return t.defined() && (t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16) ? t.to(at::kFloat) : t;
}

std::optional<Tensor> autocast_input(const std::optional<Tensor>& t) {
  return t.has_value() ? std::optional<Tensor>(autocast_input(*t)) : t;
}

using ForwardSignature = ForwardResult(
    const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, double, double, double,
    double, double, double, int64_t, bool);
using BackwardSignature = BackwardResult(
    const Tensor&, const std::optional<Tensor>&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
    const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, double, double, double, double, double,
    double, int64_t, bool, bool);

ForwardResult forward_autocast(
    const Tensor& f, const Tensor& F1, const Tensor& F2, const Tensor& text, const Tensor& labels,
    const Tensor& weights, double logit_scale, double lam, double c_jp2, double c_qsq, double c_jpq, double c_q2,
    int64_t order, bool collapsed) {
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("advsimplex::simplex_head_forward", "")
                             .typed<ForwardSignature>();
  return op.call(
      autocast_input(f), autocast_input(F1), autocast_input(F2), autocast_input(text), labels, autocast_input(weights),
      logit_scale, lam, c_jp2, c_qsq, c_jpq, c_q2, order, collapsed);
}

BackwardResult backward_autocast(
    const Tensor& grad_loss, const std::optional<Tensor>& grad_omega, const Tensor& f, const Tensor& F1,
    const Tensor& F2, const Tensor& text, const Tensor& labels, const Tensor& weights, const Tensor& logits,
    const Tensor& normalized, const Tensor& stats, double logit_scale, double lam, double c_jp2, double c_qsq,
    double c_jpq, double c_q2, int64_t order, bool collapsed, bool text_grad) {
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("advsimplex::simplex_head_backward", "")
                             .typed<BackwardSignature>();
  return op.call(
      autocast_input(grad_loss), autocast_input(grad_omega), autocast_input(f), autocast_input(F1),
      autocast_input(F2), autocast_input(text), labels, autocast_input(weights), logits, normalized, stats,
      logit_scale, lam, c_jp2, c_qsq, c_jpq, c_q2, order, collapsed, text_grad);
}

}  // namespace
}  // namespace head

TORCH_LIBRARY_FRAGMENT(advsimplex, m) {
  m.def(
      "simplex_head_forward(Tensor f, Tensor F1, Tensor F2, Tensor text, Tensor labels, Tensor weights, "
      "float logit_scale, float lam, float c_jp2, float c_qsq, float c_jpq, float c_q2, int order, bool collapsed) "
      "-> (Tensor loss, Tensor omega, Tensor logits, Tensor normalized, Tensor stats)");
  m.def(
      "simplex_head_backward(Tensor grad_loss, Tensor? grad_omega, Tensor f, Tensor F1, Tensor F2, Tensor text, "
      "Tensor labels, Tensor weights, Tensor logits, Tensor normalized, Tensor stats, float logit_scale, float lam, "
      "float c_jp2, float c_qsq, float c_jpq, float c_q2, int order, bool collapsed, bool text_grad) "
      "-> (Tensor df, Tensor dF1, Tensor dF2, Tensor dtext)");
}

TORCH_LIBRARY_IMPL(advsimplex, AutocastCPU, m) {
  m.impl("simplex_head_forward", &head::forward_autocast);
  m.impl("simplex_head_backward", &head::backward_autocast);
}

TORCH_LIBRARY_IMPL(advsimplex, AutocastCUDA, m) {
  m.impl("simplex_head_forward", &head::forward_autocast);
  m.impl("simplex_head_backward", &head::backward_autocast);
}

}  // namespace advsimplex
