#include "solvers/optrot.h"

#include <ATen/ATen.h>
#include <spdlog/spdlog.h>

#if defined(ROTQ_WITH_CUDA_KERNELS)
#include "solvers/cube_cuda.h"
#include "solvers/gemm_accumulate_cuda.h"
#endif

#include <atomic>
#include <chrono>
#include <cmath>
#include <limits>

#include "solvers/error.h"
#include "solvers/kernel_path.h"
#include "solvers/lap_clock.h"
#include "solvers/orthogonal.h"
#include "solvers/tf32_scope.h"

namespace rotq {

OptRotNorm parse_optrot_norm(const std::string& name) {
  if (name == "none") return OptRotNorm::kNone;
  if (name == "fro4") return OptRotNorm::kFrobenius4;
  if (name == "numel") return OptRotNorm::kNumel;
  fail("OptRot normalisation '", name, "' is not one of none, fro4, numel");
}

ManifoldOptimizer parse_manifold_optimizer(const std::string& name) {
  if (name == "cayley") return ManifoldOptimizer::kCayleySgd;
  if (name == "adam") return ManifoldOptimizer::kRiemannianAdam;
  fail("rotation optimizer '", name, "' is not one of cayley, adam");
}

int FourthPowerObjective::add_covariance(const at::Tensor& sigma) {
  require(sigma.dim() == 2 && sigma.size(0) == dim_ && sigma.size(1) == dim_,
          "OptRot+: a covariance of shape ", sigma.sizes(), " for a ", dim_, "x", dim_,
          " rotation");
  at::Tensor s = sigma.to(at::kDouble);
  s = (s + s.t()) / 2;
  const double tr = s.trace().item<double>();
  require(std::isfinite(tr) && tr > 0, "OptRot+: a covariance has trace ", tr,
          " (no calibration data reached this input?)");
  // φ is scale-free; dividing by the mean eigenvalue only keeps the numbers O(1).
  covariances_.push_back(s * (static_cast<double>(dim_) / tr));
  flops_ += 8.0 * std::pow(static_cast<double>(dim_), 3);
  return static_cast<int>(covariances_.size()) - 1;
}

void FourthPowerObjective::add(const at::Tensor& reader_form, double weight, int group) {
  require(group >= -1 && group < static_cast<int>(covariances_.size()), "OptRot: group ", group,
          " does not exist");
  require(reader_form.dim() == 2 && reader_form.size(1) == dim_, "OptRot: a matrix of shape ",
          reader_form.sizes(), " cannot be rotated by a ", dim_, "x", dim_, " rotation");
  const at::Tensor a = reader_form.to(at::kDouble);
  const double sq = a.pow(2).sum().item<double>();
  require(std::isfinite(sq), "OptRot: a matrix has NaN/Inf entries");
  double c = weight;
  if (norm_ == OptRotNorm::kFrobenius4 && sq > 0) c /= sq * sq;
  if (norm_ == OptRotNorm::kNumel && sq > 0) {
    const double n = static_cast<double>(a.numel());
    c /= n * (sq / n) * (sq / n);
  }
  terms_.push_back({reader_form, c, group});
  flops_ += 4.0 * static_cast<double>(a.size(0)) * dim_ * dim_;
}

double FourthPowerObjective::local_loss(const at::Tensor& r) const {
  double loss = 0;
  local_gradient(r, &loss, /*want_gradient=*/false);
  return loss;
}

namespace {

// x·y for the gradient's products. float32/float64 inputs: in their own type. bfloat16 inputs: the
// products of the bfloat16 values summed and returned in float32, as tensor cores do: on CUDA one
// cuBLAS call through mm's out_dtype overload where this LibTorch has it (ROTQ_HAVE_MM_OUT_DTYPE,
// found by CMake); elsewhere the same values multiplied in float32, which is the same sum up to
// its order (a bfloat16 value is a float32 one; their products are exact in float32).
at::Tensor product(const at::Tensor& x, const at::Tensor& y) {
  if (x.scalar_type() != at::kBFloat16) return at::matmul(x, y);
#if defined(ROTQ_HAVE_MM_OUT_DTYPE)
  // A GPU without bfloat16 GEMMs (before sm_80) refuses the overload: say so once and emulate.
  static std::atomic<bool> refused{false};
  if (x.is_cuda() && !refused.load()) {
    try {
      return at::mm(x, y, at::kFloat);
    } catch (const c10::Error& e) {
      if (!refused.exchange(true)) {
        spdlog::warn(
            "OptRot bf16: this GPU refuses bfloat16 GEMMs with float32 results ({}); "
            "running them as float32 GEMMs of the bfloat16 values",
            e.what_without_backtrace());
      }
    }
  }
#endif
  return at::mm(x.to(at::kFloat), y.to(at::kFloat));
}

// (AR)^∘3 as the gradient's second product reads it: in `compute` (bfloat16: the float32 cube
// rounded). `consume`: AR is not needed afterwards, so the float32 cube may overwrite it.
at::Tensor cube_for_product(at::Tensor& ar, at::ScalarType compute, bool consume) {
#if defined(ROTQ_WITH_CUDA_KERNELS)
  // One pass instead of pow's and the conversion's (cube_cuda.h); force_aten_kernels keeps the
  // ATen ops, which tests compare it with.
  if (compute == at::kBFloat16 && ar.is_cuda() && ar.scalar_type() == at::kFloat &&
      ar.is_contiguous() && !aten_kernels_forced()) {
    at::Tensor cube = at::empty(ar.sizes(), ar.options().dtype(at::kBFloat16));
    detail::cube_to_bf16_cuda(ar.data_ptr<float>(),
                              reinterpret_cast<uint16_t*>(cube.data_ptr<at::BFloat16>()),
                              ar.numel());
    return cube;
  }
#endif
  return (consume ? ar.pow_(3) : ar.pow(3)).to(compute);
}

// acc += alpha·aᵀ·y, or (`start`) acc = alpha·aᵀ·y in a new float32 tensor, by one cuBLAS call
// (gemm_accumulate_cuda.h) where that applies: CUDA, bfloat16 a and contiguous y, a row- or
// column-major, the ATen route not forced, and cuBLAS not refused before (the first refusal is
// logged). False: nothing was done.
bool gemm_accumulate_on_device(const at::Tensor& a, const at::Tensor& y, double alpha, bool start,
                               at::Tensor& acc) {
#if defined(ROTQ_WITH_CUDA_KERNELS)
  static std::atomic<bool> refused{false};
  const bool rows = a.stride(1) == 1 && a.stride(0) >= a.size(1);
  const bool columns = !rows && a.stride(0) == 1 && a.stride(1) >= a.size(0);
  if (!a.is_cuda() || a.scalar_type() != at::kBFloat16 || y.scalar_type() != at::kBFloat16 ||
      !y.is_contiguous() || !(start || (acc.is_contiguous() && acc.scalar_type() == at::kFloat)) ||
      !(rows || columns) || a.numel() == 0 || aten_kernels_forced() || refused.load()) {
    return false;
  }
  try {
    if (start) acc = at::empty({a.size(1), y.size(1)}, y.options().dtype(at::kFloat));
    detail::gemm_bf16_accumulate_cuda(reinterpret_cast<const uint16_t*>(a.data_ptr<at::BFloat16>()),
                                      columns, rows ? a.stride(0) : a.stride(1),
                                      reinterpret_cast<const uint16_t*>(y.data_ptr<at::BFloat16>()),
                                      a.size(0), a.size(1), static_cast<float>(alpha),
                                      start ? 0.0f : 1.0f, acc.data_ptr<float>());
    return true;
  } catch (const Error& e) {
    if (!refused.exchange(true)) {
      spdlog::warn(
          "OptRot bf16: cuBLAS refused the accumulating GEMM ({}); adding each product "
          "to the float32 sum as an ATen op",
          e.what());
    }
    return false;
  }
#else
  (void)a, (void)y, (void)alpha, (void)start, (void)acc;
  return false;
#endif
}

// Σ_k α_k·A_kᵀ·Y_k over one step's terms of one sum (the ungrouped terms, or one OptRot+ group),
// Y_k the term's cube as the second product reads it; the result in float64. float32 and float64
// products go into the float64 sum one by one. bfloat16 ones are summed in float32 over runs of
// kFloat32Run terms, each run then added to the float64 sum: the rounded cube already moves each
// product by up to 2⁻⁹ relative, eight float32 additions add at most 8·2⁻²⁴ ≈ 5e-7, and the
// float64 sum keeps that from growing with the number of terms (224 in a LLaMA-2-7B step). On CUDA
// the run is summed in the GEMMs' epilogue, so a term costs one pass over a float32 C×C
// instead of a float32 write and a float64 read-modify-write (≈ 50 GB less traffic per 7B step).
class ProductSum {
 public:
  explicit ProductSum(at::ScalarType compute) : compute_(compute) {}

  void add(const at::Tensor& a, const at::Tensor& y, double alpha) {
    if (compute_ != at::kBFloat16) {
      const at::Tensor g = product(a.t(), y);
      if (!total_.defined()) total_ = at::zeros(g.sizes(), g.options().dtype(at::kDouble));
      total_.add_(g, alpha);
      return;
    }
    const bool start = pending_ == 0;
    if (!gemm_accumulate_on_device(a, y, alpha, start, run_)) {
      at::Tensor g = product(a.t(), y);
      run_ = start ? g.mul_(alpha) : run_.add_(g, alpha);
    }
    if (++pending_ == kFloat32Run) flush();
  }

  // The float64 sum; undefined when no term was added.
  at::Tensor total() {
    if (pending_ > 0) flush();
    return total_;
  }

 private:
  static constexpr int kFloat32Run = 8;

  void flush() {
    if (total_.defined()) {
      total_.add_(run_);
    } else {
      total_ = run_.to(at::kDouble);
    }
    pending_ = 0;
  }

  at::ScalarType compute_;
  at::Tensor total_, run_;
  int pending_ = 0;
};

}  // namespace

bool bf16_products_on_tensor_cores() {
#if defined(ROTQ_HAVE_MM_OUT_DTYPE)
  return true;
#else
  return false;
#endif
}

at::Tensor FourthPowerObjective::local_gradient(const at::Tensor& r, double* loss,
                                                bool want_gradient, at::ScalarType compute) const {
  require(compute == at::kDouble || compute == at::kFloat || compute == at::kBFloat16,
          "OptRot: the gradient is computed in bfloat16, float32 or float64, got ", compute);
  const at::Tensor rd = r.to(at::kDouble);
  const at::Tensor rc = rd.to(compute);
  const size_t groups = covariances_.size();
  // Per group g: F_g and ∂F_g; the ungrouped terms go straight into the total.
  std::vector<double> f(groups, 0.0);
  ProductSum ungrouped(compute);
  std::vector<ProductSum> grouped(groups, ProductSum(compute));
  // R as the products saw it (for the sums read off the gradient), in float64.
  const at::Tensor r_seen = rc.to(at::kDouble);
  // Without the gradient: each term's Σ (A R)^∘4, kept where the products run and read once after
  // the loop (a read per term would wait for each term's kernels before queueing the next).
  const at::Tensor sums =
      want_gradient ? at::Tensor() : at::empty({static_cast<int64_t>(terms_.size())}, rd.options());
  for (size_t k = 0; k < terms_.size(); ++k) {
    const Term& t = terms_[k];
    // The products from `compute` inputs (bfloat16: float32 results, and the cube in float32,
    // rounded to bfloat16 only as the second product's input); sums and gradient in float64. The
    // term's value is Σ (AR)∘(AR)^∘3 with the cube as the second product reads it: Σ (AR)^∘4 in
    // float32 and float64, and within ~1e-5 of it in bfloat16 (the rounded cube).
    const at::Tensor a = t.a.to(compute);
    at::Tensor ar = product(a, rc);
    if (!want_gradient) {
      const at::Tensor cube = cube_for_product(ar, compute, /*consume=*/false);
      sums.select(0, static_cast<int64_t>(k)).copy_(at::sum(cube * ar, at::kDouble));
      continue;
    }
    // The cube overwrites AR: its value is read off the gradient below, not from AR (memory
    // traffic is what the elementwise work costs next to the two GEMMs).
    const at::Tensor cube = cube_for_product(ar, compute, /*consume=*/true);
    (t.group < 0 ? ungrouped : grouped[t.group]).add(a, cube, 4.0 * t.c);
  }
  at::Tensor grad = ungrouped.total();
  if (!grad.defined()) grad = at::zeros({dim_, dim_}, rd.options());
  std::vector<at::Tensor> df(groups);
  for (size_t g = 0; g < groups; ++g) df[g] = grouped[g].total();
  double total = 0;
  if (want_gradient) {
    // Σ_k c_k Σ (A_k R)^∘4 = ⟨R, Σ_k c_k A_kᵀ(A_k R)^∘3⟩ = ⟨R, ∂F⟩/4: the ungrouped total and each
    // group's F_g read off the accumulated gradients, one C×C product each instead of one per term;
    // all read back at once, as the sums below.
    const at::Tensor reads = at::zeros({static_cast<int64_t>(groups) + 1}, rd.options());
    const auto read_into = [&](int64_t i, const at::Tensor& acc) {
      reads.select(0, i).copy_(at::dot(r_seen.reshape({-1}), acc.reshape({-1})));
    };
    read_into(0, grad);
    for (size_t g = 0; g < groups; ++g) {
      if (df[g].defined()) read_into(static_cast<int64_t>(g) + 1, df[g]);
    }
    const at::Tensor host_reads = reads.cpu();
    const double* rp = host_reads.data_ptr<double>();
    total = rp[0] / 4.0;
    for (size_t g = 0; g < groups; ++g) f[g] = rp[g + 1] / 4.0;
  } else {
    const at::Tensor host_sums = sums.cpu();
    const double* sp = host_sums.data_ptr<double>();
    for (size_t k = 0; k < terms_.size(); ++k) {
      const double value = terms_[k].c * sp[k];
      if (terms_[k].group < 0) {
        total += value;
      } else {
        f[terms_[k].group] += value;
      }
    }
  }
  const double c = static_cast<double>(dim_);
  for (size_t g = 0; g < groups; ++g) {
    // φ = C·Q/P², Q = Σ M⁴, P = Σ M² (= tr Ŝ² on the group); ∂Q = 8 Ŝ R M³, ∂P = 4 Ŝ R M.
    const at::Tensor sr = at::matmul(covariances_[g], rd);
    const at::Tensor m = at::matmul(rd.t(), sr);
    const at::Tensor m3 = m.pow(3);
    const double q = at::sum(m3 * m).item<double>();
    const double p = at::sum(m * m).item<double>();
    const double phi = c * q / (p * p);
    total += phi * f[g];
    if (want_gradient) {
      if (df[g].defined()) grad.add_(df[g], phi);
      const at::Tensor dphi = at::matmul(sr, m3)
                                  .mul_(8.0 * c / (p * p))
                                  .sub_(at::matmul(sr, m), 8.0 * c * q / (p * p * p));
      grad.add_(dphi, f[g]);
    }
  }
  if (loss) *loss = total;
  return grad;
}

double fourth_power_loss(const FourthPowerObjective& obj, const at::Tensor& r, Comm* comm) {
  at::Tensor l = at::full({1}, obj.local_loss(r.to(at::kDouble)), at::kDouble);
  if (comm) comm->all_reduce(l, ReduceOp::kSum);
  return l.item<double>();
}

at::Tensor minimize_fourth_power(const FourthPowerObjective& obj, const at::Tensor& r0,
                                 const CayleySgdOptions& opts, Comm* comm, RotationTrace* trace) {
  require(r0.dim() == 2 && r0.size(0) == obj.dim() && r0.size(1) == obj.dim(),
          "OptRot: the initial rotation must be ", obj.dim(), "x", obj.dim());
  require(opts.steps >= 0 && opts.lr > 0, "OptRot: steps must be >= 0 and lr > 0");
  const auto t0 = std::chrono::steady_clock::now();
  at::Tensor r = r0.to(at::kDouble).clone();
  at::Tensor best = r.clone();
  double best_loss = std::numeric_limits<double>::infinity();
  at::Tensor velocity, second;  // momentum (SGD) or Adam's first moment; Adam's second moment
  std::vector<double> losses;
  LapClock laps;
  for (int64_t step = 0; step <= opts.steps; ++step) {
    double local = 0;
    at::Tensor grad;
    {
      const Tf32Scope tf32(opts.tf32 && opts.gradient_dtype == at::kFloat);
      grad = obj.local_gradient(r, &local, true, opts.gradient_dtype);
    }
    // One reduction for both: the gradient and, in an extra row, the loss.
    at::Tensor packed = at::cat({grad.reshape({-1}), at::full({1}, local, grad.options())});
    if (comm) comm->all_reduce(packed, ReduceOp::kSum);
    const double loss = packed[-1].item<double>();  // waits for the device: a step's end
    const double lap = laps.lap();
    if (step > 0 && trace) trace->step_seconds.push_back(lap);
    require(std::isfinite(loss), "OptRot: the loss became non-finite at step ", step,
            " (learning rate ", opts.lr, " too large?)");
    grad = packed.narrow(0, 0, obj.dim() * obj.dim()).view({obj.dim(), obj.dim()});
    losses.push_back(loss);
    if (loss < best_loss) {
      best_loss = loss;
      best.copy_(r);
    }
    if (opts.log_every > 0 && (step % opts.log_every == 0 || step == opts.steps)) {
      spdlog::info("optrot step {}/{}: loss {:.6g}", step, opts.steps, loss);
    }
    if (step == opts.steps) break;
    const at::Tensor skew = skew_gradient(r, grad);
    const double lr = opts.cosine ? cosine_decay(opts.lr, step, opts.steps) : opts.lr;
    at::Tensor direction;
    if (opts.method == ManifoldOptimizer::kRiemannianAdam) {
      if (!velocity.defined()) {
        velocity = at::zeros_like(skew);
        second = at::zeros_like(skew);
      }
      velocity.mul_(opts.adam_beta1).add_(skew, 1.0 - opts.adam_beta1);
      second.mul_(opts.adam_beta2).addcmul_(skew, skew, 1.0 - opts.adam_beta2);
      const double t = static_cast<double>(step + 1);
      const double c1 = 1.0 - std::pow(opts.adam_beta1, t), c2 = 1.0 - std::pow(opts.adam_beta2, t);
      direction = (velocity / c1) / ((second / c2).sqrt() + opts.adam_eps);
    } else {
      velocity =
          velocity.defined() && opts.momentum > 0 ? velocity.mul_(opts.momentum).add_(skew) : skew;
      direction = velocity;
    }
    r = cayley_retract(r, direction, lr);
  }
  if (trace) {
    trace->loss = losses;
    trace->seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double c3 = std::pow(static_cast<double>(obj.dim()), 3);
    trace->flops = static_cast<double>(losses.size()) * obj.gradient_flops() +
                   static_cast<double>(opts.steps) * 4.7 * c3;
  }
  return polar_project(best);
}

}  // namespace rotq
