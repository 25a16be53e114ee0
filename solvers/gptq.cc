#include "solvers/gptq.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <utility>
#include <vector>

#include "solvers/error.h"
#include "solvers/kernel_path.h"

namespace rotq {

namespace {

bool is_float(const at::Tensor& x) {
  const auto t = x.scalar_type();
  return t == at::kFloat || t == at::kDouble || t == at::kBFloat16 || t == at::kHalf;
}

// NaN and Inf survive a sum (so would entries near FLT_MAX / n, garbage anyway): one pass with no
// temporary, where isfinite().all() or a float64 sum take ~1 s on a 4096² matrix here.
bool all_finite(const at::Tensor& x) { return std::isfinite(at::sum(x).item<double>()); }

void check_inputs(const at::Tensor& w, const at::Tensor& h, const QuantSpec& spec,
                  const GptqOptions& opts, const std::string& what) {
  validate(spec, "GPTQ of " + what);
  require(w.defined() && w.dim() == 2 && is_float(w), "GPTQ of ", what,
          ": expected a 2-D floating-point weight [rows, cols]");
  const int64_t cols = w.size(1);
  require(h.defined() && h.dim() == 2 && h.size(0) == cols && h.size(1) == cols && is_float(h),
          "GPTQ of ", what, ": expected a floating-point Hessian [", cols, ", ", cols, "], got ",
          h.sizes());
  require(opts.percdamp >= 0 && std::isfinite(opts.percdamp), "GPTQ of ", what,
          ": percdamp must be a finite number >= 0, got ", opts.percdamp);
  require(opts.blocksize >= 1, "GPTQ of ", what, ": blocksize must be >= 1, got ", opts.blocksize);
  require(spec.group == 0 || cols % spec.group == 0, "GPTQ of ", what, ": ", cols,
          " columns are not divisible by the quantization group size ", spec.group);
}

std::vector<int64_t> to_vector(const at::Tensor& idx) {
  const at::Tensor c = idx.to(at::kCPU, at::kLong).contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

// Dead inputs (never active in the calibration data) carry no information: the reference gives them
// H_ii = 1 so that H stays invertible, and zeroes their weights. Returns their indices.
std::vector<int64_t> fix_dead_columns(at::Tensor& h) {
  const at::Tensor dead = h.diagonal() == 0;
  std::vector<int64_t> idx = to_vector(at::nonzero(dead).view({-1}));
  if (!idx.empty()) h.diagonal().masked_fill_(dead, 1);
  return idx;
}

// Row permutations in place (new row c = old row perm[c]), following the permutation's cycles
// with one row of scratch: the 64 MB copies they replace cost ~0.25 s each in fresh pages.
template <typename T>
void permute_rows_inplace(at::Tensor& m, const std::vector<int64_t>& perm) {
  const int64_t n = m.size(0), len = m.size(1);
  T* base = m.data_ptr<T>();
  std::vector<T> scratch(len);
  std::vector<char> done(n, 0);
  for (int64_t start = 0; start < n; ++start) {
    if (done[start] || perm[start] == start) continue;
    std::copy(base + start * len, base + (start + 1) * len, scratch.begin());
    int64_t c = start;
    while (perm[c] != start) {
      std::copy(base + perm[c] * len, base + (perm[c] + 1) * len, base + c * len);
      done[c] = 1;
      c = perm[c];
    }
    std::copy(scratch.begin(), scratch.end(), base + c * len);
    done[c] = 1;
  }
}

// Columns of every row gathered in place: new m[r][c] = old m[r][perm[c]].
template <typename T>
void permute_columns_inplace(at::Tensor& m, const std::vector<int64_t>& perm) {
  const int64_t n = m.size(0), len = m.size(1);
  T* base = m.data_ptr<T>();
  std::vector<T> scratch(len);
  for (int64_t r = 0; r < n; ++r) {
    T* row = base + r * len;
    for (int64_t c = 0; c < len; ++c) scratch[c] = row[perm[c]];
    std::copy(scratch.begin(), scratch.end(), row);
  }
}

template <typename Fn>
void dispatch_float_double(const at::Tensor& m, const Fn& fn) {
  if (m.scalar_type() == at::kDouble) {
    fn(double{});
  } else {
    fn(float{});
  }
}

at::Tensor index_tensor(const std::vector<int64_t>& idx, const at::Tensor& like) {
  return at::tensor(idx, at::kLong).to(like.device());
}

void permute_rows(at::Tensor& m, const std::vector<int64_t>& perm) {
  if (use_aten_kernels(m)) {
    m = m.index_select(0, index_tensor(perm, m));
    return;
  }
  dispatch_float_double(m, [&](auto t) { permute_rows_inplace<decltype(t)>(m, perm); });
}

// P·H·Pᵀ in place.
void permute_symmetric(at::Tensor& h, const std::vector<int64_t>& perm) {
  if (use_aten_kernels(h)) {
    const at::Tensor p = index_tensor(perm, h);
    h = h.index_select(0, p).index_select(1, p);
    return;
  }
  dispatch_float_double(h, [&](auto t) {
    permute_rows_inplace<decltype(t)>(h, perm);
    permute_columns_inplace<decltype(t)>(h, perm);
  });
}

std::vector<int64_t> inverse_permutation(const std::vector<int64_t>& perm) {
  std::vector<int64_t> inv(perm.size());
  for (size_t c = 0; c < perm.size(); ++c) inv[perm[c]] = static_cast<int64_t>(c);
  return inv;
}

void require_cholesky_ok(const at::Tensor& info, const std::string& what, const char* stage,
                         double percdamp) {
  const int64_t bad = info.item<int64_t>();
  require(bad == 0, "GPTQ of ", what, ": ", stage, " is not positive definite even after damping",
          " (percdamp ", percdamp, "; leading minor ", bad,
          " fails): the calibration inputs do not", " determine this layer's Hessian");
}

// The upper Cholesky factor of (H + damp·I)⁻¹, computed as the reference does. Damps h in place.
at::Tensor inverse_upper_factor(at::Tensor& h, double percdamp, const std::string& what) {
  // damp in H's dtype, as `percdamp * torch.mean(torch.diag(H))` in the reference.
  const at::Tensor damp = h.diagonal().mean().mul(percdamp);
  h.diagonal().add_(damp);
  at::Tensor l, info;
  std::tie(l, info) = at::linalg_cholesky_ex(h, /*upper=*/false, /*check_errors=*/false);
  require_cholesky_ok(info, what, "the Hessian", percdamp);
  const at::Tensor hinv = at::cholesky_inverse(l, /*upper=*/false);
  l.reset();
  at::Tensor u;
  std::tie(u, info) = at::linalg_cholesky_ex(hinv, /*upper=*/true, /*check_errors=*/false);
  require_cholesky_ok(info, what, "the inverse Hessian", percdamp);
  return u;
}

// Where each column's (scale, zero) [rows] come from, column c counted in processing order.
class ColumnParams {
 public:
  ColumnParams(const QuantSpec& spec, const GptqOptions& opts, at::ScalarType dtype)
      : spec_(spec), dynamic_(spec.group > 0 && !opts.static_groups), dtype_(dtype) {}

  bool dynamic_groups() const { return dynamic_; }

  // Act-order: processing position c holds original column perm[c].
  void set_order(std::vector<int64_t> perm) { perm_ = std::move(perm); }

  // Per channel: params of the whole original W (the reference takes them before zeroing the
  // dead columns).
  void set_per_channel(const at::Tensor& w) {
    const QuantParams p = find_quant_params(w, spec_);
    scale_ = as_vector(p.scale);
    zero_ = as_vector(p.zero);
  }

  // Static groups: params of every original column group of W (dead columns zeroed), kept as
  // [groups, rows].
  void set_static_groups(const at::Tensor& w) {
    const int64_t rows = w.size(0), groups = w.size(1) / spec_.group;
    const QuantParams p = find_quant_params(w.reshape({rows * groups, spec_.group}), spec_);
    group_scale_ = p.scale.to(dtype_).view({rows, groups}).t().contiguous();
    group_zero_ = p.zero.to(dtype_).view({rows, groups}).t().contiguous();
  }

  // wt: the current (updated) W transposed, [cols, rows] in processing order.
  std::pair<at::Tensor, at::Tensor> at_column(int64_t c, const at::Tensor& wt) {
    if (spec_.group == 0) return {scale_, zero_};
    if (!dynamic_) {
      const int64_t g = (perm_.empty() ? c : perm_[c]) / spec_.group;
      return {group_scale_[g], group_zero_[g]};
    }
    if (c % spec_.group == 0) {
      const QuantParams p = find_quant_params(wt.narrow(0, c, spec_.group).t(), spec_);
      scale_ = as_vector(p.scale);
      zero_ = as_vector(p.zero);
    }
    return {scale_, zero_};
  }

 private:
  at::Tensor as_vector(const at::Tensor& t) const {
    return t.to(dtype_).reshape({-1}).contiguous();
  }

  QuantSpec spec_;
  bool dynamic_;
  at::ScalarType dtype_;
  std::vector<int64_t> perm_;
  at::Tensor scale_, zero_;
  at::Tensor group_scale_, group_zero_;
};

// A lazy block ends after `blocksize` columns, and (dynamic groups) at the next group start.
int64_t block_end(int64_t i1, int64_t cols, const QuantSpec& spec, const GptqOptions& opts,
                  bool dynamic_groups) {
  int64_t i2 = std::min(i1 + opts.blocksize, cols);
  if (dynamic_groups) i2 = std::min(i2, (i1 / spec.group + 1) * spec.group);
  return i2;
}

// One column of W (a row of wt) quantized in place, with its error (w - q) / d written to err.
// Same operations, in the same order and type, as detail::quant_dequant_out (QuaRot's
// quantizers); a plain loop because 4096 columns × 6 tiny ATen ops would cost more than the
// arithmetic.
template <typename T>
void quantize_column(T* w, const T* scale, const T* zero, T* err, int64_t n, T d,
                     const QuantSpec& spec) {
  const T maxq = static_cast<T>(detail::max_level(spec));
  const T minq = static_cast<T>(detail::min_level(spec));
  for (int64_t r = 0; r < n; ++r) {
    const T x = w[r], s = scale[r];
    T q = std::nearbyint(x / s);
    if (spec.symmetric) {
      q = std::min(std::max(q, minq), maxq) * s;
    } else {
      q = (std::min(std::max(q + zero[r], T(0)), maxq) - zero[r]) * s;
    }
    err[r] = (x - q) / d;
    w[r] = q;
  }
}

// quantize_column from ATen ops, for columns off the CPU: the same operations in the same order
// (detail::quant_dequant_out), q being a reused [rows] buffer.
void quantize_column_aten(at::Tensor w, const at::Tensor& scale, const at::Tensor& zero,
                          at::Tensor err, at::Tensor& q, double d, const QuantSpec& spec) {
  detail::quant_dequant_out(q, w, scale, zero, spec);
  at::sub_out(err, w, q).div_(d);
  w.copy_(q);
}

struct Factor {
  at::Tensor u;              // upper Cholesky factor of H⁻¹, [cols, cols]
  std::vector<double> diag;  // its diagonal
};

// Quantizes the columns [i1, i2) of wt in place, spreading each column's error over the block's
// later columns; the error rows land in err [i2 - i1, rows]. Returns the FLOPs of the updates.
template <typename T>
double quantize_block(at::Tensor& wt, at::Tensor& err, const Factor& f, int64_t i1, int64_t i2,
                      ColumnParams& params, const QuantSpec& spec) {
  const int64_t rows = wt.size(1);
  const bool aten = use_aten_kernels(wt);
  at::Tensor q = aten ? at::empty({rows}, wt.options()) : at::Tensor();
  double flops = 0;
  for (int64_t c = i1; c < i2; ++c) {
    const auto p = params.at_column(c, wt);
    at::Tensor e = err.select(0, c - i1);
    if (aten) {
      // The divisor in T, as the host loop uses it.
      quantize_column_aten(wt.select(0, c), p.first, p.second, e, q,
                           static_cast<double>(static_cast<T>(f.diag[c])), spec);
    } else {
      quantize_column<T>(wt.select(0, c).data_ptr<T>(), p.first.data_ptr<T>(),
                         p.second.data_ptr<T>(), e.data_ptr<T>(), rows, static_cast<T>(f.diag[c]),
                         spec);
    }
    const int64_t rest = i2 - c - 1;
    if (rest > 0) {
      wt.narrow(0, c + 1, rest).addr_(f.u.select(0, c).narrow(0, c + 1, rest), e, 1, -1);
      flops += 2.0 * rows * rest;
    }
  }
  return flops;
}

// The lazy-batch GPTQ loop over wt [cols, rows] (W transposed, processing order), in place.
template <typename T>
double quantize_columns(at::Tensor& wt, const Factor& f, ColumnParams& params,
                        const QuantSpec& spec, const GptqOptions& opts) {
  const int64_t cols = wt.size(0), rows = wt.size(1);
  at::Tensor err = at::empty({std::min(opts.blocksize, cols), rows}, wt.options());
  double flops = 0;
  for (int64_t i1 = 0; i1 < cols;) {
    const int64_t i2 = block_end(i1, cols, spec, opts, params.dynamic_groups());
    const int64_t count = i2 - i1;
    at::Tensor block_err = err.narrow(0, 0, count);
    flops += quantize_block<T>(wt, block_err, f, i1, i2, params, spec);
    if (i2 < cols) {
      wt.narrow(0, i2, cols - i2)
          .addmm_(f.u.narrow(0, i1, count).narrow(1, i2, cols - i2).t(), block_err, 1, -1);
      flops += 2.0 * rows * count * (cols - i2);
    }
    i1 = i2;
  }
  return flops;
}

double factorization_flops(int64_t n) {
  // Cholesky (n³/3), cholesky_inverse (≈ 2n³/3), Cholesky of the inverse (n³/3).
  return 4.0 / 3.0 * std::pow(static_cast<double>(n), 3);
}

}  // namespace

HessianAccumulator::HessianAccumulator(int64_t cols, at::ScalarType dtype, at::Device device)
    : cols_(cols) {
  require(cols > 0, "HessianAccumulator: column count must be positive, got ", cols);
  require(dtype == at::kFloat || dtype == at::kDouble,
          "HessianAccumulator: accumulation dtype must be float32 or float64, got ", dtype);
  sum_ = at::zeros({cols, cols}, at::TensorOptions().dtype(dtype).device(device));
}

void HessianAccumulator::add(const at::Tensor& x) {
  require(x.defined() && x.dim() >= 1 && is_float(x) && x.size(-1) == cols_,
          "HessianAccumulator: expected floating-point inputs [..., ", cols_, "]");
  const at::Tensor rows = x.reshape({-1, cols_}).to(sum_.scalar_type());
  sum_.addmm_(rows.t(), rows);
  count_ += rows.size(0);
}

void HessianAccumulator::merge(const at::Tensor& sum, int64_t count) {
  require(sum.defined() && sum.dim() == 2 && sum.size(0) == cols_ && sum.size(1) == cols_,
          "HessianAccumulator::merge: expected a sum [", cols_, ", ", cols_, "]");
  require(count >= 0, "HessianAccumulator::merge: row count must be >= 0, got ", count);
  sum_.add_(sum.to(sum_.scalar_type()));
  count_ += count;
}

void HessianAccumulator::all_reduce(Comm& comm) {
  comm.all_reduce(sum_, ReduceOp::kSum);
  at::Tensor count = at::full({1}, count_, at::kLong);
  comm.all_reduce(count, ReduceOp::kSum);
  count_ = count.item<int64_t>();
}

at::Tensor HessianAccumulator::hessian() const {
  require(count_ > 0, "HessianAccumulator: no calibration rows were added");
  return sum_.mul(2.0 / static_cast<double>(count_));
}

GptqResult gptq_quantize(const at::Tensor& w, const at::Tensor& hessian, const QuantSpec& spec,
                         const GptqOptions& opts, const std::string& what) {
  const auto t0 = std::chrono::steady_clock::now();
  check_inputs(w, hessian, spec, opts, what);
  GptqResult result;
  if (!spec.enabled() || w.numel() == 0) {
    result.weight = w.clone();
    return result;
  }
  const at::ScalarType dtype =
      w.scalar_type() == at::kDouble || hessian.scalar_type() == at::kDouble ? at::kDouble
                                                                             : at::kFloat;
  const int64_t rows = w.size(0), cols = w.size(1);
  at::Tensor h = hessian.to(dtype, /*non_blocking=*/false, /*copy=*/true).contiguous();
  require(all_finite(h), "GPTQ of ", what, ": the Hessian has NaN or Inf entries");
  const at::Tensor wf = w.to(dtype);

  ColumnParams params(spec, opts, dtype);
  if (spec.group == 0) params.set_per_channel(wf);
  const std::vector<int64_t> dead = fix_dead_columns(h);
  at::Tensor dead_idx = index_tensor(dead, wf);
  if (spec.group > 0 && opts.static_groups) {
    params.set_static_groups(dead.empty() ? wf : wf.index_fill(1, dead_idx, 0));
  }

  // Transposed, so that a column of W is a contiguous row; the dead columns zeroed.
  at::Tensor wt = at::empty({cols, rows}, wf.options());
  wt.copy_(wf.t());
  wt.index_fill_(0, dead_idx, 0);
  std::vector<int64_t> perm;
  if (opts.act_order) {
    // After the dead-column fix-up, as the reference: dead columns sort with H_ii = 1.
    perm = to_vector(at::argsort(h.diagonal(), /*stable=*/true, 0, /*descending=*/true));
    permute_symmetric(h, perm);
    permute_rows(wt, perm);
    params.set_order(perm);
  }
  Factor f;
  f.u = inverse_upper_factor(h, opts.percdamp, what);
  h.reset();
  const at::Tensor d = f.u.diagonal().to(at::kCPU, at::kDouble).contiguous();
  f.diag.assign(d.data_ptr<double>(), d.data_ptr<double>() + cols);

  double flops = factorization_flops(cols);
  dispatch_float_double(
      wt, [&](auto t) { flops += quantize_columns<decltype(t)>(wt, f, params, spec, opts); });
  if (!perm.empty()) permute_rows(wt, inverse_permutation(perm));
  result.weight = at::empty({rows, cols}, w.options());
  result.weight.copy_(wt.t());
  require(all_finite(result.weight), "GPTQ of ", what, ": NaN or Inf in the quantized weight");
  result.flops = flops;
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return result;
}

}  // namespace rotq
