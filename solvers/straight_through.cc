#include "solvers/straight_through.h"

#include <ATen/ATen.h>

#include "solvers/error.h"

namespace rotq {
namespace {

// x + (q − x).detach(): the value of q, the gradient of x.
at::Tensor pass_through(const at::Tensor& x, const at::Tensor& q) {
  return x + (q - x.detach());  // q comes from detached values: the bracket has no gradient
}

// The activation convention's row scale as a differentiable function of the rows: the range
// [lo, hi] (widened to include 0 for whole rows), times the clip ratio, over the grid. Rows whose
// range is degenerate get the quantizer's fallback scale as a constant.
at::Tensor range_scale(const at::Tensor& rows, const QuantSpec& spec, bool include_zero) {
  const double maxq = detail::max_level(spec);
  at::Tensor lo = at::amin(rows, 1, /*keepdim=*/true), hi = at::amax(rows, 1, /*keepdim=*/true);
  if (include_zero) {
    lo = lo.clamp_max(0);
    hi = hi.clamp_min(0);
  }
  lo = lo * spec.clip_ratio;
  hi = hi * spec.clip_ratio;
  if (spec.symmetric) {
    hi = at::maximum(lo.abs(), hi);
    return at::where(hi == 0, at::ones_like(hi), hi / maxq);
  }
  const at::Tensor span = hi - lo;
  // Both zero: the quantizer widens to [-1, 1]; constant c: to [min(c, 0), max(c, 0)].
  const at::Tensor fallback = at::where(hi == 0, at::full_like(hi, 2.0), hi.abs()).detach() / maxq;
  return at::where(span == 0, fallback, span / maxq);
}

// q + (value 0, OSTQuant's gradient): ∂/∂x = mask, ∂/∂s = (q − mask·x)/s.
at::Tensor clipped(const at::Tensor& x, const QuantSpec& spec) {
  require(!spec.mse_clip,
          "the clipped straight-through estimator needs the activation "
          "convention, not the MSE-clipped weight quantizer");
  const bool grouped = spec.group > 0;
  const int64_t width = grouped ? spec.group : x.size(-1);
  const at::ScalarType ct = detail::compute_dtype(x, "fake_quantize_ste");
  const at::Tensor rows = x.to(ct).reshape({-1, width});
  const at::Tensor q = fake_quantize(x.detach(), spec).to(ct).reshape({-1, width});
  const at::Tensor s = range_scale(rows, spec, /*include_zero=*/!grouped);
  const at::Tensor sd = s.detach(), xd = rows.detach();
  // Not clamped: the unclamped level lands where the quantizer put the element.
  const at::Tensor mask = ((at::round(xd / sd) * sd - q).abs() < sd * 0.5).to(ct);
  const at::Tensor y = q + mask * (rows - xd) + (q - mask * xd) / sd * (s - sd);
  return y.reshape(x.sizes()).to(x.scalar_type());
}

}  // namespace

const char* straight_through_name(StraightThrough s) {
  switch (s) {
    case StraightThrough::kNone:
      return "none";
    case StraightThrough::kIdentity:
      return "identity";
    case StraightThrough::kClipped:
      return "clipped";
  }
  return "?";
}

at::Tensor fake_quantize_ste(const at::Tensor& x, const QuantSpec& spec, StraightThrough ste) {
  if (ste == StraightThrough::kNone || !x.requires_grad()) return fake_quantize(x, spec);
  if (!spec.enabled()) return x;
  if (ste == StraightThrough::kClipped) return clipped(x, spec);
  return pass_through(x, fake_quantize(x.detach(), spec));
}

at::Tensor rtn_quantize_weight_ste(const at::Tensor& w, const QuantSpec& spec) {
  if (!spec.enabled()) return w;
  const at::Tensor q = rtn_quantize_weight(w.detach(), spec);
  return w.requires_grad() ? pass_through(w, q) : q;
}

}  // namespace rotq
