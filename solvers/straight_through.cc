#include "solvers/straight_through.h"

#include <ATen/ATen.h>

namespace rotq {
namespace {

// x + (q − x).detach(): the value of q, the gradient of x.
at::Tensor pass_through(const at::Tensor& x, const at::Tensor& q) {
  return x + (q - x.detach());  // q comes from detached values: the bracket has no gradient
}

}  // namespace

const char* straight_through_name(StraightThrough s) {
  switch (s) {
    case StraightThrough::kNone:
      return "none";
    case StraightThrough::kIdentity:
      return "identity";
  }
  return "?";
}

at::Tensor fake_quantize_ste(const at::Tensor& x, const QuantSpec& spec, StraightThrough ste) {
  if (ste == StraightThrough::kNone || !x.requires_grad()) return fake_quantize(x, spec);
  if (!spec.enabled()) return x;
  return pass_through(x, fake_quantize(x.detach(), spec));
}

at::Tensor rtn_quantize_weight_ste(const at::Tensor& w, const QuantSpec& spec) {
  if (!spec.enabled()) return w;
  const at::Tensor q = rtn_quantize_weight(w.detach(), spec);
  return w.requires_grad() ? pass_through(w, q) : q;
}

}  // namespace rotq
