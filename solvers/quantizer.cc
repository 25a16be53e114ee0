#include "solvers/quantizer.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <type_traits>
#include <vector>

#include "solvers/error.h"
#include "solvers/kernel_path.h"
#include "solvers/mse_kernel.h"

namespace rotq {

namespace {

// GPTQ's find_params(mse=True) constants: shrink factors 1, 0.99, ..., 0.21 of the range, error
// measured as sum |Q(x) - x|^2.4 per row.
constexpr int kMseGrid = 100;
constexpr double kMseMaxShrink = 0.8;
constexpr double kMseNorm = 2.4;

// WeightQuantizer's floor on the range, so that a (near) zero row gets a finite scale.
constexpr double kMinRange = 1e-5;

enum class Convention { kWeight, kActivation };

void require_float(const at::Tensor& x, const std::string& what) {
  require(x.defined(), what, ": tensor is undefined");
  const auto t = x.scalar_type();
  require(t == at::kFloat || t == at::kDouble || t == at::kBFloat16 || t == at::kHalf, what,
          ": expected a floating-point tensor (f32/f64/bf16/f16), got ", t);
}

// Per-row parameters from a row's [lo, hi], following the convention's rules (see quantizer.h).
// T is the compute type: every operation is done in T, as the reference does in float32.
template <typename T>
struct RangeRule {
  bool symmetric;
  Convention convention;
  bool include_zero;  // the activation convention's groups use the raw [min, max]
  T clip;
  T maxq;

  // Normalises the raw [mn, mx] into the range the parameters (and the MSE search) start from.
  void range(T mn, T mx, T* lo, T* hi) const {
    T a = include_zero ? std::min(mn, T(0)) : mn;
    T b = include_zero ? std::max(mx, T(0)) : mx;
    if (clip != T(1)) {
      a *= clip;
      b *= clip;
    }
    if (symmetric) {
      b = std::max(std::abs(a), b);
      if (convention == Convention::kWeight) b = std::max(b, T(kMinRange));
    } else if (a == T(0) && b == T(0)) {
      a = T(-1);
      b = T(1);
    } else if (a == b) {
      // A constant non-zero group (activation groups only): the reference divides by a zero
      // scale (NaN); widening to include 0 represents the constant exactly.
      a = std::min(a, T(0));
      b = std::max(b, T(0));
    }
    *lo = a;
    *hi = b;
  }

  void params(T lo, T hi, T* scale, T* zero) const {
    if (symmetric) {
      *scale = hi / maxq;
      if (convention == Convention::kActivation && hi == T(0)) *scale = T(1);
      *zero = T(0);
      return;
    }
    T span = hi - lo;
    if (convention == Convention::kWeight) span = std::max(span, T(kMinRange));
    *scale = span / maxq;
    *zero = std::nearbyint(-lo / *scale);
  }

  // The MSE search's candidate: like params() but on the shrunk range, without the floors.
  void shrunk_params(T lo, T hi, T p, T* scale, T* zero) const {
    const T lo1 = p * lo;
    const T hi1 = p * hi;
    if (symmetric) {
      *scale = hi1 / maxq;
      *zero = T(0);
    } else {
      *scale = (hi1 - lo1) / maxq;
      *zero = std::nearbyint(-lo1 / *scale);
    }
  }
};

template <typename T>
RangeRule<T> make_rule(const QuantSpec& spec, Convention convention, bool include_zero) {
  return RangeRule<T>{spec.symmetric, convention, include_zero, static_cast<T>(spec.clip_ratio),
                      static_cast<T>(detail::max_level(spec))};
}

// Parameters per row of x [rows, cols] (contiguous, compute dtype).
template <typename T>
QuantParams row_params(const at::Tensor& x, const QuantSpec& spec, Convention convention,
                       bool include_zero) {
  const RangeRule<T> rule = make_rule<T>(spec, convention, include_zero);
  const int64_t rows = x.size(0);
  at::Tensor mn, mx;
  std::tie(mn, mx) = at::aminmax(x, 1);
  const T* mnp = mn.data_ptr<T>();
  const T* mxp = mx.data_ptr<T>();
  QuantParams p{at::empty({rows, 1}, x.options()), at::empty({rows, 1}, x.options())};
  T* sp = p.scale.data_ptr<T>();
  T* zp = p.zero.data_ptr<T>();
  std::vector<T> lo(rows), hi(rows);
  for (int64_t r = 0; r < rows; ++r) {
    rule.range(mnp[r], mxp[r], &lo[r], &hi[r]);
    rule.params(lo[r], hi[r], &sp[r], &zp[r]);
  }
  if (!spec.mse_clip || rows == 0) return p;
  if constexpr (std::is_same_v<T, float>) {
    detail::mse_search_f32(x.data_ptr<float>(), rows, x.size(1), lo.data(), hi.data(),
                           spec.symmetric, rule.maxq, static_cast<int>(kMseMaxShrink * kMseGrid),
                           kMseGrid, sp, zp);
  } else {
    detail::mse_search_f64(x.data_ptr<double>(), rows, x.size(1), lo.data(), hi.data(),
                           spec.symmetric, rule.maxq, static_cast<int>(kMseMaxShrink * kMseGrid),
                           kMseGrid, sp, zp);
  }
  return p;
}

// row_params from ATen ops alone, for tensors off the CPU (row_params reads host memory): the same
// rules in the same type and order, the MSE search one grid point at a time over all rows.
QuantParams row_params_generic(const at::Tensor& x, const QuantSpec& spec, Convention convention,
                               bool include_zero) {
  const bool weight = convention == Convention::kWeight;
  const double maxq = detail::max_level(spec);
  // Scalars enter in the compute type, as RangeRule<T> holds them.
  const auto in_type = [&](double v) {
    return x.scalar_type() == at::kDouble ? v : static_cast<double>(static_cast<float>(v));
  };
  at::Tensor mn, mx;
  std::tie(mn, mx) = at::aminmax(x, 1, /*keepdim=*/true);
  at::Tensor lo = include_zero ? mn.clamp_max(0) : mn;
  at::Tensor hi = include_zero ? mx.clamp_min(0) : mx;
  if (spec.clip_ratio != 1.0) {
    lo = lo * in_type(spec.clip_ratio);
    hi = hi * in_type(spec.clip_ratio);
  }
  QuantParams p;
  if (spec.symmetric) {
    hi = at::maximum(lo.abs(), hi);
    if (weight) hi = hi.clamp_min(in_type(kMinRange));
    p.scale = hi / in_type(maxq);
    if (!weight) p.scale = at::where(hi == 0, at::ones_like(hi), p.scale);
    p.zero = at::zeros_like(hi);
  } else {
    const at::Tensor both_zero = (lo == 0) & (hi == 0);
    lo = at::where(both_zero, at::full_like(lo, -1), lo);
    hi = at::where(both_zero, at::ones_like(hi), hi);
    const at::Tensor constant = lo == hi;
    lo = at::where(constant, lo.clamp_max(0), lo);
    hi = at::where(constant, hi.clamp_min(0), hi);
    at::Tensor span = hi - lo;
    if (weight) span = span.clamp_min(in_type(kMinRange));
    p.scale = span / in_type(maxq);
    p.zero = at::round(lo.neg() / p.scale);
  }
  if (!spec.mse_clip || x.size(0) == 0) return p;
  at::Tensor best = at::full_like(lo, std::numeric_limits<double>::infinity());
  at::Tensor q = at::empty_like(x);
  const int steps = static_cast<int>(kMseMaxShrink * kMseGrid);
  for (int i = 0; i < steps; ++i) {
    const double shrink = in_type(1.0 - static_cast<double>(i) / kMseGrid);
    const at::Tensor lo1 = lo * shrink, hi1 = hi * shrink;
    at::Tensor s1, z1;
    if (spec.symmetric) {
      s1 = hi1 / in_type(maxq);
      z1 = at::zeros_like(s1);
    } else {
      s1 = (hi1 - lo1) / in_type(maxq);
      z1 = at::round(lo1.neg() / s1);
    }
    detail::quant_dequant_out(q, x, s1, z1, spec);
    q.sub_(x).abs_().log_().mul_(kMseNorm).exp_();
    const at::Tensor err = q.sum(1, /*keepdim=*/true);
    const at::Tensor better = err < best;  // strict: the first of equals wins
    best = at::where(better, err, best);
    p.scale = at::where(better, s1, p.scale);
    p.zero = at::where(better, z1, p.zero);
  }
  return p;
}

QuantParams params_for(const at::Tensor& x, const QuantSpec& spec, Convention convention,
                       bool include_zero) {
  if (use_aten_kernels(x)) {
    return row_params_generic(x, spec, convention, include_zero);
  }
  if (x.scalar_type() == at::kDouble) return row_params<double>(x, spec, convention, include_zero);
  return row_params<float>(x, spec, convention, include_zero);
}

// x as a contiguous [rows, cols] matrix in the compute dtype (no copy when it already is one).
at::Tensor as_compute_rows(const at::Tensor& x, int64_t cols, const std::string& what) {
  return x.to(detail::compute_dtype(x, what)).reshape({-1, cols}).contiguous();
}

at::Tensor dequantized_rows(const at::Tensor& rows, const QuantParams& p, const QuantSpec& spec) {
  at::Tensor out = at::empty_like(rows);
  detail::quant_dequant_out(out, rows, p.scale, p.zero, spec);
  return out;
}

void require_groups_divide(int64_t cols, const QuantSpec& spec, const std::string& what) {
  require(spec.group == 0 || cols % spec.group == 0, what, ": last dimension ", cols,
          " is not divisible by the quantization group size ", spec.group);
}

}  // namespace

std::string QuantSpec::describe() const {
  if (!enabled()) return "none";
  std::string s = "int" + std::to_string(bits) + (symmetric ? " sym" : " asym");
  if (group > 0) s += " g" + std::to_string(group);
  if (clip_ratio != 1.0) {
    char buf[32];
    std::snprintf(buf, sizeof buf, " clip%.2f", clip_ratio);
    s += buf;
  }
  if (mse_clip) s += " mse";
  return s;
}

void validate(const QuantSpec& spec, const std::string& what) {
  require(spec.bits >= 1 && spec.bits <= 16, what, ": quantization bits must be in [1, 16], got ",
          spec.bits);
  require(!spec.enabled() || !spec.symmetric || spec.bits >= 2, what,
          ": symmetric quantization needs at least 2 bits, got ", spec.bits);
  require(spec.group >= 0, what, ": quantization group size must be >= 0 (0: per row), got ",
          spec.group);
  require(spec.clip_ratio > 0.0 && spec.clip_ratio <= 1.0, what,
          ": clip ratio must be in (0, 1], got ", spec.clip_ratio);
}

namespace detail {

double max_level(const QuantSpec& spec) {
  return spec.symmetric ? std::ldexp(1.0, spec.bits - 1) - 1 : std::ldexp(1.0, spec.bits) - 1;
}

double min_level(const QuantSpec& spec) { return spec.symmetric ? -(max_level(spec) + 1) : 0.0; }

void quant_dequant_out(at::Tensor& out, const at::Tensor& x, const at::Tensor& scale,
                       const at::Tensor& zero, const QuantSpec& spec) {
  at::div_out(out, x, scale);
  out.round_();
  if (spec.symmetric) {
    out.clamp_(min_level(spec), max_level(spec)).mul_(scale);
  } else {
    out.add_(zero).clamp_(0.0, max_level(spec)).sub_(zero).mul_(scale);
  }
}

at::ScalarType compute_dtype(const at::Tensor& x, const std::string& what) {
  require_float(x, what);
  return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

}  // namespace detail

at::Tensor fake_quantize(const at::Tensor& x, const QuantSpec& spec) {
  validate(spec, "fake_quantize");
  require_float(x, "fake_quantize");
  if (!spec.enabled() || x.numel() == 0) return x.clone();
  require(x.dim() >= 1, "fake_quantize: expected a tensor with at least 1 dimension");
  const int64_t cols = x.size(-1);
  require_groups_divide(cols, spec, "fake_quantize");
  if (spec.mse_clip) return rtn_quantize_weight(x.reshape({-1, cols}), spec).view(x.sizes());
  const bool grouped = spec.group > 0;
  const at::Tensor rows = as_compute_rows(x, grouped ? spec.group : cols, "fake_quantize");
  const QuantParams p = params_for(rows, spec, Convention::kActivation, /*include_zero=*/!grouped);
  return dequantized_rows(rows, p, spec).view(x.sizes()).to(x.scalar_type());
}

QuantParams find_quant_params(const at::Tensor& w2d, const QuantSpec& spec) {
  validate(spec, "find_quant_params");
  require(spec.enabled(), "find_quant_params: spec '", spec.describe(), "' quantizes nothing");
  require_float(w2d, "find_quant_params");
  require(w2d.dim() == 2, "find_quant_params: expected a 2-D matrix, got ", w2d.dim(), " dims");
  const at::Tensor rows = as_compute_rows(w2d, w2d.size(1), "find_quant_params");
  return params_for(rows, spec, Convention::kWeight, /*include_zero=*/true);
}

at::Tensor quantize_dequantize(const at::Tensor& w2d, const QuantParams& p, const QuantSpec& spec) {
  validate(spec, "quantize_dequantize");
  require(w2d.dim() == 2, "quantize_dequantize: expected a 2-D matrix, got ", w2d.dim(), " dims");
  require(p.scale.defined() && p.zero.defined() && p.scale.numel() == w2d.size(0) &&
              p.zero.numel() == w2d.size(0),
          "quantize_dequantize: expected scale and zero with ", w2d.size(0), " rows");
  if (!spec.enabled()) return w2d.clone();
  const at::ScalarType t = detail::compute_dtype(w2d, "quantize_dequantize");
  const at::Tensor x = w2d.to(t);
  const at::Tensor scale = p.scale.to(t).reshape({-1, 1}), zero = p.zero.to(t).reshape({-1, 1});
  return dequantized_rows(x, {scale, zero}, spec).to(w2d.scalar_type());
}

at::Tensor rtn_quantize_weight(const at::Tensor& w, const QuantSpec& spec) {
  validate(spec, "rtn_quantize_weight");
  require_float(w, "rtn_quantize_weight");
  require(w.dim() == 2, "rtn_quantize_weight: expected a 2-D weight [out, in], got ", w.dim(),
          " dims");
  if (!spec.enabled() || w.numel() == 0) return w.clone();
  require_groups_divide(w.size(1), spec, "rtn_quantize_weight");
  // A group of one output channel is a row of its own: GPTQ's per-group find_params does the same.
  const int64_t cols = spec.group > 0 ? spec.group : w.size(1);
  const at::Tensor rows = as_compute_rows(w, cols, "rtn_quantize_weight");
  const QuantParams p = params_for(rows, spec, Convention::kWeight, /*include_zero=*/true);
  return dequantized_rows(rows, p, spec).view(w.sizes()).to(w.scalar_type());
}

}  // namespace rotq
