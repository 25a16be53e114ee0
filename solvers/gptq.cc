#include "solvers/gptq.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#include "solvers/blas.h"
#include "solvers/error.h"
#include "solvers/gptq_kernel.h"
#include "solvers/kernel_path.h"
#include "solvers/tf32_scope.h"
#if defined(ROTQ_WITH_CUDA_KERNELS)
#include "solvers/gptq_cuda.h"
#endif

namespace rotq {

namespace {

using Clock = std::chrono::steady_clock;

// Seconds since t, after the device's queue has drained (a scalar read waits for it).
double seconds_since(Clock::time_point t, const at::Tensor& on) {
  if (!on.device().is_cpu()) on.view({-1})[0].item<double>();
  return std::chrono::duration<double>(Clock::now() - t).count();
}

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

// LAPACK's Cholesky and triangular inverse where the process already has them (OpenBLAS's or
// MKL's LAPACK, loaded with LibTorch): looked up at run time, so rotq links no LAPACK itself and
// falls back to ATen's factorizations where none is found (or off the CPU).
template <typename T>
struct Lapack {
  using Potrf = void (*)(const char*, const int*, T*, const int*, int*, size_t);
  using Trtri = void (*)(const char*, const char*, const int*, T*, const int*, int*, size_t,
                         size_t);
  Potrf potrf = nullptr;
  Trtri trtri = nullptr;

  static const Lapack& get() {
    static const Lapack l = [] {
      const bool f32 = std::is_same_v<T, float>;
      Lapack r;
      r.potrf = blas_symbol<Potrf>(f32 ? "spotrf_" : "dpotrf_");
      r.trtri = blas_symbol<Trtri>(f32 ? "strtri_" : "dtrtri_");
      return r;
    }();
    return l;
  }
};

void require_cholesky_ok(int64_t bad, const std::string& what, const char* stage, double percdamp) {
  require(bad == 0, "GPTQ of ", what, ": ", stage, " is not positive definite even after damping",
          " (percdamp ", percdamp, "; minor ", bad, " fails): the calibration inputs do not",
          " determine this layer's Hessian");
}

// With J the order reversal, J·H·J = L'L'ᵀ gives H = (J L' J)(J L' J)ᵀ with J L' J upper, so
//   H⁻¹ = Uᵀ U,  U = J L'⁻¹ J:
// the reference's upper factor of H⁻¹ from one Cholesky and one triangular inverse (2n³/3 FLOPs)
// in place of its Cholesky, inverse and second Cholesky (4n³/3). The factor is unique, so the two
// differ by rounding only. Reversing a row-major matrix is reversing its storage; LAPACK's
// column-major 'U' is row-major lower. Returns false when LAPACK is not available.
template <typename T>
bool inverse_upper_factor_lapack(at::Tensor& h, double percdamp, const std::string& what) {
  const Lapack<T>& lp = Lapack<T>::get();
  if (!lp.potrf || !lp.trtri || h.size(0) > std::numeric_limits<int>::max()) return false;
  const int n = static_cast<int>(h.size(0));
  T* a = h.data_ptr<T>();
  const int64_t len = static_cast<int64_t>(n) * n;
  std::reverse(a, a + len);
  int info = 0;
  const char upper = 'U', non_unit = 'N';
  lp.potrf(&upper, &n, a, &n, &info, 1);
  require_cholesky_ok(info, what, "the Hessian", percdamp);
  lp.trtri(&upper, &non_unit, &n, a, &n, &info, 1, 1);
  require(info == 0, "GPTQ of ", what, ": the Cholesky factor is singular at ", info);
  std::reverse(a, a + len);
  h.triu_();  // the other triangle still holds H's entries
  return true;
}

struct Factor {
  at::Tensor u;              // upper Cholesky factor of H⁻¹, [cols, cols]
  std::vector<double> diag;  // its diagonal
  double flops = 0;
};

// The upper Cholesky factor of (H + damp·I)⁻¹. Damps h in place (and reuses its storage on the
// host path).
Factor inverse_upper_factor(at::Tensor& h, double percdamp, const std::string& what) {
  // damp in H's dtype, as `percdamp * torch.mean(torch.diag(H))` in the reference.
  const at::Tensor damp = h.diagonal().mean().mul(percdamp);
  h.diagonal().add_(damp);
  const double n3 = std::pow(static_cast<double>(h.size(0)), 3);
  Factor f;
  bool done = false;
  if (!use_aten_kernels(h)) {
    dispatch_float_double(
        h, [&](auto t) { done = inverse_upper_factor_lapack<decltype(t)>(h, percdamp, what); });
  }
  if (done) {
    f.u = h;
    f.flops = 2.0 / 3.0 * n3;  // potrf n³/3 + trtri n³/3
  } else {
    // The reference's own sequence.
    at::Tensor l, info;
    std::tie(l, info) = at::linalg_cholesky_ex(h, /*upper=*/false, /*check_errors=*/false);
    require_cholesky_ok(info.item<int64_t>(), what, "the Hessian", percdamp);
    const at::Tensor hinv = at::cholesky_inverse(l, /*upper=*/false);
    l.reset();
    std::tie(f.u, info) = at::linalg_cholesky_ex(hinv, /*upper=*/true, /*check_errors=*/false);
    require_cholesky_ok(info.item<int64_t>(), what, "the inverse Hessian", percdamp);
    f.u = f.u.contiguous();    // the upper factor may come back as a transposed view
    f.flops = 4.0 / 3.0 * n3;  // Cholesky n³/3, cholesky_inverse ≈ 2n³/3, Cholesky n³/3
  }
  const at::Tensor d = f.u.diagonal().to(at::kCPU, at::kDouble).contiguous();
  f.diag.assign(d.data_ptr<double>(), d.data_ptr<double>() + d.numel());
  return f;
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

// One column of W (a row of wt) quantized in place from ATen ops, for columns off the CPU: the
// same operations in the same order as the host kernel (detail::quant_dequant_out), q being a
// reused [rows] buffer.
void quantize_column_aten(at::Tensor w, const at::Tensor& scale, const at::Tensor& zero,
                          at::Tensor err, at::Tensor& q, double d, const QuantSpec& spec) {
  detail::quant_dequant_out(q, w, scale, zero, spec);
  at::sub_out(err, w, q).div_(d);
  w.copy_(q);
}

#if defined(ROTQ_WITH_CUDA_KERNELS)
// The block on the GPU in one kernel (gptq_cuda.cu): the divisors are U's diagonal where it lies
// (in T, as the host kernel uses them); each column's params are gathered into one device array
// (params shared by the whole block are passed once).
template <typename T>
void quantize_block_cuda(at::Tensor& wt, at::Tensor& err, const Factor& f, int64_t i1, int64_t i2,
                         ColumnParams& params, const QuantSpec& spec) {
  const int64_t count = i2 - i1;
  const at::Tensor dt = f.u.diagonal().narrow(0, i1, count).contiguous();
  std::vector<at::Tensor> scales, zeros;
  bool shared = true;
  for (int64_t c = i1; c < i2; ++c) {
    const auto p = params.at_column(c, wt);
    shared = shared && (scales.empty() || (p.first.data_ptr() == scales[0].data_ptr() &&
                                           p.second.data_ptr() == zeros[0].data_ptr()));
    scales.push_back(p.first);
    zeros.push_back(p.second);
  }
  const at::Tensor scale = shared ? scales[0].contiguous() : at::stack(scales).contiguous();
  const at::Tensor zero = shared ? zeros[0].contiguous() : at::stack(zeros).contiguous();
  detail::GptqBlockDevice<T> b;
  b.wt = wt.data_ptr<T>();
  b.ld = wt.size(1);
  b.i1 = i1;
  b.count = count;
  b.err = err.data_ptr<T>();
  b.u = f.u.data_ptr<T>();
  b.u_ld = f.u.size(1);
  b.d = dt.data_ptr<T>();
  b.scale = scale.data_ptr<T>();
  b.zero = zero.data_ptr<T>();
  b.p_stride = shared ? 0 : b.ld;
  b.symmetric = spec.symmetric;
  b.minq = static_cast<T>(detail::min_level(spec));
  b.maxq = static_cast<T>(detail::max_level(spec));
  // The temporaries above may be freed on return: the caching allocator hands their memory only
  // to later work on the same (default) stream, which runs after this kernel.
  detail::gptq_block_cuda(b);
}
#endif

// Quantizes the columns [i1, i2) of wt in place, spreading each column's error over the block's
// later columns; the error rows land in err [i2 - i1, rows]. Returns the FLOPs of the updates.
template <typename T>
double quantize_block(at::Tensor& wt, at::Tensor& err, const Factor& f, int64_t i1, int64_t i2,
                      ColumnParams& params, const QuantSpec& spec) {
  const int64_t rows = wt.size(1), count = i2 - i1;
  const double flops = static_cast<double>(rows) * static_cast<double>(count * (count - 1));
  if (!use_aten_kernels(wt)) {
    // The fused host kernel: params first (a dynamic group's come from the block's first column,
    // which is up to date), then the whole block tile by tile.
    detail::GptqBlock<T> b;
    b.wt = wt.data_ptr<T>();
    b.ld = rows;
    b.err = err.data_ptr<T>();
    b.u = f.u.data_ptr<T>();
    b.u_ld = f.u.size(1);
    b.i1 = i1;
    b.i2 = i2;
    b.symmetric = spec.symmetric;
    b.minq = static_cast<T>(detail::min_level(spec));
    b.maxq = static_cast<T>(detail::max_level(spec));
    std::vector<at::Tensor> keep;  // the params' storage while the kernel reads it
    for (int64_t c = i1; c < i2; ++c) {
      const auto p = params.at_column(c, wt);
      keep.push_back(p.first);
      keep.push_back(p.second);
      b.d.push_back(static_cast<T>(f.diag[c]));
      b.scale.push_back(p.first.data_ptr<T>());
      b.zero.push_back(p.second.data_ptr<T>());
    }
    detail::gptq_block(b);
    return flops;
  }
#if defined(ROTQ_WITH_CUDA_KERNELS)
  if (wt.is_cuda() && !aten_kernels_forced()) {
    quantize_block_cuda<T>(wt, err, f, i1, i2, params, spec);
    return flops;
  }
#endif
  at::Tensor q = at::empty({rows}, wt.options());
  for (int64_t c = i1; c < i2; ++c) {
    const auto p = params.at_column(c, wt);
    at::Tensor e = err.select(0, c - i1);
    // The divisor in T, as the host kernel uses it.
    quantize_column_aten(wt.select(0, c), p.first, p.second, e, q,
                         static_cast<double>(static_cast<T>(f.diag[c])), spec);
    const int64_t rest = i2 - c - 1;
    if (rest > 0)
      wt.narrow(0, c + 1, rest).addr_(f.u.select(0, c).narrow(0, c + 1, rest), e, 1, -1);
  }
  return flops;
}

// The lazy-batch GPTQ loop over wt [cols, rows] (W transposed, processing order), in place.
template <typename T>
void quantize_columns(at::Tensor& wt, const Factor& f, ColumnParams& params, const QuantSpec& spec,
                      const GptqOptions& opts, GptqStages& st) {
  const int64_t cols = wt.size(0), rows = wt.size(1);
  at::Tensor err = at::empty({std::min(opts.blocksize, cols), rows}, wt.options());
  for (int64_t i1 = 0; i1 < cols;) {
    const int64_t i2 = block_end(i1, cols, spec, opts, params.dynamic_groups());
    const int64_t count = i2 - i1;
    at::Tensor block_err = err.narrow(0, 0, count);
    auto t = Clock::now();
    st.column_flops += quantize_block<T>(wt, block_err, f, i1, i2, params, spec);
    st.column_seconds += seconds_since(t, wt);
    if (i2 < cols) {
      t = Clock::now();
      wt.narrow(0, i2, cols - i2)
          .addmm_(f.u.narrow(0, i1, count).narrow(1, i2, cols - i2).t(), block_err, 1, -1);
      st.update_flops += 2.0 * rows * count * (cols - i2);
      st.update_seconds += seconds_since(t, wt);
    }
    i1 = i2;
  }
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
  // bfloat16/float16 inputs have at most TF32's 10 mantissa bits, so TF32 tensor cores multiply
  // them exactly (accumulating in float32): the float32 sum is the same, several times faster.
  const auto in = x.scalar_type();
  const Tf32Scope tf32(sum_.scalar_type() == at::kFloat &&
                       (in == at::kBFloat16 || in == at::kHalf));
  if (gram_lower_add_(sum_, rows)) {
    lower_only_ = true;
  } else {
    symmetrize();  // after a full update on a lower-only sum, the lower triangle is the right one
  }
  count_ += rows.size(0);
}

void HessianAccumulator::symmetrize() const {
  if (!lower_only_) return;
  // The strict upper triangle is overwritten by the lower one's transpose.
  const at::Tensor strict_lower = sum_.tril(-1);
  sum_.tril_().add_(strict_lower.t());
  lower_only_ = false;
}

at::Tensor HessianAccumulator::sum() const {
  symmetrize();
  return sum_;
}

void HessianAccumulator::merge(const at::Tensor& sum, int64_t count) {
  require(sum.defined() && sum.dim() == 2 && sum.size(0) == cols_ && sum.size(1) == cols_,
          "HessianAccumulator::merge: expected a sum [", cols_, ", ", cols_, "]");
  require(count >= 0, "HessianAccumulator::merge: row count must be >= 0, got ", count);
  symmetrize();
  sum_.add_(sum.to(sum_.scalar_type()));
  count_ += count;
}

void HessianAccumulator::all_reduce(Comm& comm) {
  symmetrize();
  comm.all_reduce(sum_, ReduceOp::kSum);
  at::Tensor count = at::full({1}, count_, at::kLong);
  comm.all_reduce(count, ReduceOp::kSum);
  count_ = count.item<int64_t>();
}

at::Tensor HessianAccumulator::hessian() const {
  require(count_ > 0, "HessianAccumulator: no calibration rows were added");
  symmetrize();
  return sum_.mul(2.0 / static_cast<double>(count_));
}

GptqResult gptq_quantize(const at::Tensor& w, const at::Tensor& hessian, const QuantSpec& spec,
                         const GptqOptions& opts, const std::string& what) {
  const auto t0 = Clock::now();
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
  GptqStages& st = result.stages;
  at::Tensor h = hessian.to(dtype, /*non_blocking=*/false, /*copy=*/true).contiguous();
  require(all_finite(h), "GPTQ of ", what, ": the Hessian has NaN or Inf entries");
  const at::Tensor wf = w.to(dtype);

  auto t = Clock::now();
  ColumnParams params(spec, opts, dtype);
  if (spec.group == 0) params.set_per_channel(wf);
  const std::vector<int64_t> dead = fix_dead_columns(h);
  at::Tensor dead_idx = index_tensor(dead, wf);
  if (spec.group > 0 && opts.static_groups) {
    params.set_static_groups(dead.empty() ? wf : wf.index_fill(1, dead_idx, 0));
  }
  st.params_seconds = seconds_since(t, wf);

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
  t = Clock::now();
  const Factor f = inverse_upper_factor(h, opts.percdamp, what);
  h.reset();
  st.factor_seconds = seconds_since(t, f.u);
  st.factor_flops = f.flops;

  dispatch_float_double(
      wt, [&](auto t) { quantize_columns<decltype(t)>(wt, f, params, spec, opts, st); });
  if (!perm.empty()) permute_rows(wt, inverse_permutation(perm));
  result.weight = at::empty({rows, cols}, w.options());
  result.weight.copy_(wt.t());
  require(all_finite(result.weight), "GPTQ of ", what, ": NaN or Inf in the quantized weight");
  result.flops = st.factor_flops + st.column_flops + st.update_flops;
  result.seconds = seconds_since(t0, result.weight);
  return result;
}

}  // namespace rotq
