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
#include <memory>
#include <numeric>
#include <string>

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
  slot_of_group_.push_back(0);
  flops_ += 8.0 * std::pow(static_cast<double>(dim_), 3);
  return static_cast<int>(covariances_.size()) - 1;
}

int FourthPowerObjective::slot_of(int group) {
  if (group < 0) return 0;
  int& slot = slot_of_group_[static_cast<size_t>(group)];
  if (slot == 0) {
    group_of_slot_.push_back(group);
    slot = static_cast<int>(group_of_slot_.size());
  }
  return slot;
}

void FourthPowerObjective::set_group_batch_bytes(int64_t bytes) {
  require(bytes > 0, "OptRot+: the group batch must be positive, got ", bytes, " bytes");
  group_batch_bytes_ = bytes;
}

double FourthPowerObjective::weight_of(double weight, double sq, double numel) const {
  if (norm_ == OptRotNorm::kFrobenius4 && sq > 0) return weight / (sq * sq);
  if (norm_ == OptRotNorm::kNumel && sq > 0) return weight / (numel * (sq / numel) * (sq / numel));
  return weight;
}

void FourthPowerObjective::require_group(int group) const {
  require(group >= -1 && group < static_cast<int>(covariances_.size()), "OptRot: group ", group,
          " does not exist");
}

void FourthPowerObjective::add(const at::Tensor& reader_form, double weight, int group) {
  require_group(group);
  require(reader_form.dim() == 2 && reader_form.size(1) == dim_, "OptRot: a matrix of shape ",
          reader_form.sizes(), " cannot be rotated by a ", dim_, "x", dim_, " rotation");
  const at::Tensor a = reader_form.to(at::kDouble);
  const double sq = a.pow(2).sum().item<double>();
  require(std::isfinite(sq), "OptRot: a matrix has NaN/Inf entries");
  terms_.push_back(
      {reader_form, weight_of(weight, sq, static_cast<double>(a.numel())), slot_of(group)});
  flops_ += 4.0 * static_cast<double>(a.size(0)) * dim_ * dim_;
}

namespace {

// Orders the dtypes a stack may be kept in and its products computed in: bfloat16 < float32 <
// float64 (0: none of them; float16 is not one: its range ends at 65504, and bfloat16 products of
// float16 values would round the problem twice).
int precision_rank(at::ScalarType t) {
  switch (t) {
    case at::kBFloat16:
      return 1;
    case at::kFloat:
      return 2;
    case at::kDouble:
      return 3;
    default:
      return 0;
  }
}

}  // namespace

void FourthPowerObjective::add_stack(const at::Tensor& stacked, double weight,
                                     std::vector<int> groups,
                                     std::optional<at::ScalarType> store_as) {
  require(stacked.dim() == 3 && stacked.size(2) == dim_ && stacked.size(1) > 0,
          "OptRot: a stack of shape ", stacked.sizes(), " cannot be rotated by a ", dim_, "x", dim_,
          " rotation (expected [n, m > 0, ", dim_, "])");
  const int64_t n = stacked.size(0);
  if (groups.empty()) groups.assign(static_cast<size_t>(n), -1);
  require(static_cast<int64_t>(groups.size()) == n, "OptRot: ", groups.size(),
          " groups for a stack of ", n, " matrices");
  for (int g : groups) require_group(g);
  require(!store_as || precision_rank(*store_as) > 0, "OptRot: a stack cannot be kept in ",
          store_as ? c10::toString(*store_as) : "", " (expected bfloat16, float32 or float64)");
  const at::Tensor sq = stacked.to(at::kDouble).pow(2).sum({1, 2}).cpu();
  const bool rounded =
      store_as && precision_rank(*store_as) < precision_rank(stacked.scalar_type());
  Stack s{
      store_as ? stacked.to(*store_as).contiguous() : stacked.contiguous(), {}, {}, {}, rounded};
  const double numel = static_cast<double>(stacked.size(1) * stacked.size(2));
  for (int64_t k = 0; k < n; ++k) {
    const double v = sq[k].item<double>();
    require(std::isfinite(v), "OptRot: matrix ", k, " of a stack has NaN/Inf entries");
    s.c.push_back(weight_of(weight, v, numel));
  }
  // Slots only once the whole stack is accepted: a refused one leaves the objective as it was.
  for (int g : groups) s.slot.push_back(slot_of(g));
  at::Tensor mix = at::zeros({static_cast<int64_t>(group_of_slot_.size()) + 1, n}, at::kDouble);
  for (int64_t k = 0; k < n; ++k) mix[s.slot[k]][k] = 4.0 * s.c[k];
  s.mix = mix.to(stacked.device());
  stacks_.push_back(std::move(s));
  flops_ += 4.0 * static_cast<double>(n * stacked.size(1)) * dim_ * dim_;
}

size_t FourthPowerObjective::size() const {
  size_t n = terms_.size();
  for (const Stack& s : stacks_) n += s.c.size();
  return n;
}

int64_t FourthPowerObjective::owned_bytes() const {
  int64_t bytes = 0;
  for (const Stack& st : stacks_) bytes += static_cast<int64_t>(st.a.nbytes() + st.mix.nbytes());
  for (const at::Tensor& cov : covariances_) bytes += static_cast<int64_t>(cov.nbytes());
  return bytes;
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
// Y_k the term's cube as the second product reads it, added into a float64 destination. float32 and
// float64 products go into it one by one. bfloat16 ones are summed in float32 over runs of
// kFloat32Run terms, each run then added to the float64 sum: the rounded cube already moves each
// product by up to 2⁻⁹ relative, eight float32 additions add at most 8·2⁻²⁴ ≈ 5e-7, and the
// float64 sum keeps that from growing with the number of terms (224 in a LLaMA-2-7B step). On CUDA
// the run is summed in the GEMMs' epilogue, so a term costs one pass over a float32 C×C
// instead of a float32 write and a float64 read-modify-write (≈ 50 GB less traffic per 7B step).
class ProductSum {
 public:
  ProductSum(at::ScalarType compute, at::Tensor dest) : compute_(compute), dest_(std::move(dest)) {}
  ProductSum(const ProductSum&) = delete;
  ProductSum& operator=(const ProductSum&) = delete;

  void add(const at::Tensor& a, const at::Tensor& y, double alpha) {
    if (compute_ != at::kBFloat16) {
      write(product(a.t(), y), alpha);
      return;
    }
    const bool start = pending_ == 0;
    if (!gemm_accumulate_on_device(a, y, alpha, start, run_)) {
      at::Tensor g = product(a.t(), y);
      run_ = start ? g.mul_(alpha) : run_.add_(g, alpha);
    }
    if (++pending_ == kFloat32Run) flush();
  }

  // Adds the pending run to the destination (after a step's last term).
  void flush() {
    if (pending_ > 0) write(run_, 1.0);
    pending_ = 0;
  }

  // Whether any term reached the destination (which is uninitialised until then).
  bool written() const { return written_; }

 private:
  static constexpr int kFloat32Run = 8;

  // dest ← α·x at the first write (one pass, not a zero fill and an addition), dest += α·x after.
  void write(const at::Tensor& x, double alpha) {
    if (written_) {
      dest_.add_(x, alpha);
      return;
    }
    dest_.copy_(x);
    if (alpha != 1.0) dest_.mul_(alpha);
    written_ = true;
  }

  at::ScalarType compute_;
  at::Tensor dest_, run_;
  int pending_ = 0;
  bool written_ = false;
};

// x·y batched over x's and y's first dimension, as product() computes one: bfloat16 inputs give
// the float32 sums of their products (float32 GEMMs of the bfloat16 values: a stack's matrices are
// small, and no bmm overload with float32 results is assumed).
at::Tensor batched_product(const at::Tensor& x, const at::Tensor& y) {
  if (x.scalar_type() != at::kBFloat16) return at::bmm(x, y);
  return at::bmm(x.to(at::kFloat), y.to(at::kFloat));
}

// A stack's slices are taken in chunks of about this many entries: on a CPU the chunk's product
// and cube stay in cache between the passes over them (≈ 4 MB in float64: one 7B R2 head), on a
// GPU a chunk is as many launches as one slice (≈ 512 MB in float64: a 7B layer's 64 heads, 64 of a
// 70B layer's 72).
int64_t stack_chunk_elements(const at::Device& device) {
  return device.is_cuda() ? int64_t{1} << 26 : int64_t{1} << 19;
}

// How many C×C float64 matrices the OptRot+ factors' pass holds per group at once (M, M^∘3, Ŝ·R,
// the gradient's pieces): groups are batched up to the objective's group_batch_bytes_.
constexpr int64_t kGroupTemporaries = 6;

}  // namespace

bool bf16_products_on_tensor_cores() {
#if defined(ROTQ_HAVE_MM_OUT_DTYPE)
  return true;
#else
  return false;
#endif
}

FourthPowerObjective::GradientAndLoss FourthPowerObjective::local_gradient_and_loss(
    const at::Tensor& r, bool want_gradient, at::ScalarType compute) const {
  require(compute == at::kDouble || compute == at::kFloat || compute == at::kBFloat16,
          "OptRot: the gradient is computed in bfloat16, float32 or float64, got ", compute);
  for (const Stack& st : stacks_) {
    require(!st.rounded || precision_rank(st.a.scalar_type()) >= precision_rank(compute),
            "OptRot: a stack rounded to ", st.a.scalar_type(), " when added cannot be read by ",
            compute, " products (it would give the rounded problem's loss and gradient)");
  }
  const at::Tensor rd = r.to(at::kDouble);
  const at::Tensor rc = rd.to(compute);
  // Slot 0: the ungrouped terms' sum; slot s ≥ 1: the s-th group to have received a term.
  const int64_t slots = static_cast<int64_t>(group_of_slot_.size()) + 1;
  // R as the products saw it (for the sums read off the gradient), in float64.
  const at::Tensor r_seen = rc.to(at::kDouble);
  // Each slot's ∂ sum. Everything stays on the device, the loss too: a read per term or group
  // would wait for its kernels before queueing the next, and the caller reads the loss once (with
  // the all-reduce's result, in an optimizer).
  const at::Tensor sums =
      want_gradient ? at::empty({slots, dim_, dim_}, rd.options()) : at::Tensor();
  // Without the gradient: each term's Σ (A R)^∘4 (a stack's slices one by one), summed into the
  // slots after the loop with the term's weight.
  const at::Tensor values =
      want_gradient ? at::Tensor() : at::empty({static_cast<int64_t>(size())}, rd.options());
  std::vector<double> value_weight;
  std::vector<int> value_slot;
  {
    std::vector<std::unique_ptr<ProductSum>> sum_of_slot;
    if (want_gradient) {
      for (int64_t s = 0; s < slots; ++s) {
        sum_of_slot.push_back(std::make_unique<ProductSum>(compute, sums.select(0, s)));
      }
    }
    for (const Term& t : terms_) {
      // The products from `compute` inputs (bfloat16: float32 results, and the cube in float32,
      // rounded to bfloat16 only as the second product's input); sums and gradient in float64. The
      // term's value is Σ (AR)∘(AR)^∘3 with the cube as the second product reads it: Σ (AR)^∘4 in
      // float32 and float64, and within ~1e-5 of it in bfloat16 (the rounded cube).
      const at::Tensor a = t.a.to(compute);
      at::Tensor ar = product(a, rc);
      if (!want_gradient) {
        const at::Tensor cube = cube_for_product(ar, compute, /*consume=*/false);
        values.select(0, static_cast<int64_t>(value_weight.size()))
            .copy_(at::sum(cube * ar, at::kDouble));
        value_weight.push_back(t.c);
        value_slot.push_back(t.slot);
        continue;
      }
      // The cube overwrites AR: its value is read off the gradient below, not from AR (memory
      // traffic is what the elementwise work costs next to the two GEMMs).
      const at::Tensor cube = cube_for_product(ar, compute, /*consume=*/true);
      sum_of_slot[t.slot]->add(a, cube, 4.0 * t.c);
    }
    for (int64_t s = 0; s < static_cast<int64_t>(sum_of_slot.size()); ++s) {
      sum_of_slot[s]->flush();
      if (!sum_of_slot[s]->written()) sums.select(0, s).zero_();  // only stacks' slices (or none)
    }
  }
  for (const Stack& st : stacks_) {
    const int64_t n = st.a.size(0), m = st.a.size(1), rows = st.mix.size(0);
    const int64_t chunk = std::max<int64_t>(1, stack_chunk_elements(st.a.device()) / (m * dim_));
    for (int64_t k0 = 0; k0 < n; k0 += chunk) {
      const int64_t k = std::min(chunk, n - k0);
      const at::Tensor a = st.a.narrow(0, k0, k).to(compute);  // [k, m, C]
      at::Tensor ar = product(a.view({k * m, dim_}), rc);
      if (!want_gradient) {
        const at::Tensor cube = cube_for_product(ar, compute, /*consume=*/false);
        values.narrow(0, static_cast<int64_t>(value_weight.size()), k)
            .copy_(at::sum((cube * ar).view({k, m, dim_}), {1, 2}, false, at::kDouble));
        value_weight.insert(value_weight.end(), st.c.begin() + k0, st.c.begin() + k0 + k);
        value_slot.insert(value_slot.end(), st.slot.begin() + k0, st.slot.begin() + k0 + k);
        continue;
      }
      const at::Tensor cube = cube_for_product(ar, compute, /*consume=*/true).view({k, m, dim_});
      // Each slice's C×C product, weighted into its slot: sums[s] += Σ_k mix[s, k]·G_k.
      const at::Tensor per_slice = batched_product(a.transpose(1, 2), cube).to(at::kDouble);
      sums.narrow(0, 0, rows)
          .view({rows, dim_ * dim_})
          .addmm_(st.mix.narrow(1, k0, k), per_slice.view({k, dim_ * dim_}));
    }
  }
  // Per slot: the ungrouped total (slot 0) and each group's F_g, on the device.
  at::Tensor slot_values;
  if (want_gradient) {
    // Σ_k c_k Σ (A_k R)^∘4 = ⟨R, Σ_k c_k A_kᵀ(A_k R)^∘3⟩ = ⟨R, ∂F⟩/4: read off the accumulated
    // sums, one C×C product per slot instead of one per term.
    slot_values = at::mv(sums.view({slots, dim_ * dim_}), r_seen.reshape({-1})).div_(4.0);
  } else {
    // The loss alone (fourth_power_loss, not an optimizer's step): the terms' values summed per
    // slot on the host, in a fixed order.
    const at::Tensor host_values = values.cpu();
    const double* vp = host_values.data_ptr<double>();
    std::vector<double> per_slot(static_cast<size_t>(slots), 0.0);
    for (size_t k = 0; k < value_weight.size(); ++k)
      per_slot[value_slot[k]] += value_weight[k] * vp[k];
    slot_values = at::tensor(per_slot, at::TensorOptions().dtype(at::kDouble)).to(rd.device());
  }
  at::Tensor total = slot_values.narrow(0, 0, 1).sum();
  const at::Tensor grad = want_gradient ? sums.select(0, 0).clone() : at::Tensor();
  // φ = C·Q/P², Q = Σ M⁴, P = Σ M² (= tr Ŝ² on the group); ∂Q = 8 Ŝ R M³, ∂P = 4 Ŝ R M. The groups
  // with terms, in batches whose temporaries fit group_batch_bytes_.
  const double c = static_cast<double>(dim_);
  const int64_t groups = slots - 1;
  const int64_t batch =
      std::max<int64_t>(1, group_batch_bytes_ / (kGroupTemporaries * 8 * dim_ * dim_));
  for (int64_t g0 = 0; g0 < groups; g0 += batch) {
    const int64_t k = std::min(batch, groups - g0);
    // One group (C×C at 7B: 134 MB) is read in place; a batch of small ones is copied together.
    std::vector<at::Tensor> covs;
    for (int64_t i = g0; i < g0 + k; ++i) covs.push_back(covariances_[group_of_slot_[i]]);
    const at::Tensor cov = k == 1 ? covs.front().unsqueeze(0) : at::stack(covs);
    const at::Tensor sr = at::matmul(cov, rd);     // [k, C, C]
    const at::Tensor mr = at::matmul(rd.t(), sr);  // M
    const at::Tensor m3 = mr.pow(3);
    const at::Tensor q = (m3 * mr).sum({1, 2});
    const at::Tensor p = (mr * mr).sum({1, 2});
    const at::Tensor phi = q.mul(c).div_(p * p);
    const at::Tensor f = slot_values.narrow(0, 1 + g0, k);
    total.add_((phi * f).sum());
    if (!want_gradient) continue;
    const auto weighted_sum = [&](const at::Tensor& x, const at::Tensor& w) {
      return at::mv(x.reshape({k, dim_ * dim_}).t(), w).view({dim_, dim_});
    };
    grad.add_(weighted_sum(sums.narrow(0, 1 + g0, k), phi));
    const at::Tensor p2 = p * p;
    const at::Tensor dphi =
        at::matmul(sr, m3)
            .mul_((f * (8.0 * c) / p2).view({k, 1, 1}))
            .sub_(at::matmul(sr, mr).mul_((f * (8.0 * c) * q / (p2 * p)).view({k, 1, 1})));
    grad.add_(dphi.sum(0));
  }
  return {grad, total};
}

at::Tensor FourthPowerObjective::local_gradient(const at::Tensor& r, double* loss,
                                                bool want_gradient, at::ScalarType compute) const {
  GradientAndLoss g = local_gradient_and_loss(r, want_gradient, compute);
  if (loss) *loss = g.loss.item<double>();
  return g.gradient;
}

double fourth_power_loss(const FourthPowerObjective& obj, const at::Tensor& r, Comm* comm) {
  at::Tensor l = at::full({1}, obj.local_loss(r.to(at::kDouble)), at::kDouble);
  if (comm) comm->all_reduce(l, ReduceOp::kSum);
  return l.item<double>();
}

namespace {

// The optimizer over a batch of independent problems ([B, C, C]; see minimize_fourth_power_batch),
// the gradients and losses all-reduced over `comm` when given (one problem split across ranks).
// Returns the best rotation of each problem by loss, projected onto O(C) in float64.
at::Tensor minimize_batch(const std::vector<const FourthPowerObjective*>& objs,
                          const at::Tensor& r0, const CayleySgdOptions& opts, Comm* comm,
                          std::vector<RotationTrace>* traces) {
  require(!objs.empty(), "OptRot: no problems to solve");
  for (const FourthPowerObjective* o : objs) require(o != nullptr, "OptRot: a null problem");
  const int64_t b = static_cast<int64_t>(objs.size()), c = objs.front()->dim();
  for (const FourthPowerObjective* o : objs) {
    require(o->dim() == c, "OptRot: the problems of one batch must share a width (", c, "), got ",
            o->dim());
  }
  require(r0.dim() == 3 && r0.size(0) == b && r0.size(1) == c && r0.size(2) == c,
          "OptRot: the initial rotations must be ", b, "x", c, "x", c, ", got ", r0.sizes());
  require(opts.steps >= 0 && opts.lr > 0, "OptRot: steps must be >= 0 and lr > 0");
  const auto t0 = std::chrono::steady_clock::now();
  at::Tensor r = r0.to(at::kDouble).clone();
  at::Tensor best = r.clone();
  std::vector<double> best_loss(static_cast<size_t>(b), std::numeric_limits<double>::infinity());
  at::Tensor velocity, second;  // momentum (SGD) or Adam's first moment; Adam's second moment
  std::vector<std::vector<double>> losses(static_cast<size_t>(b));
  std::vector<double> step_seconds;
  const int64_t grad_numel = b * c * c;
  // One buffer for the reduction and the host read: every problem's gradient, then the losses.
  at::Tensor packed = at::empty({grad_numel + b}, r.options());
  const at::Tensor grad = packed.narrow(0, 0, grad_numel).view({b, c, c});
  LapClock laps;
  for (int64_t step = 0; step <= opts.steps; ++step) {
    for (int64_t k = 0; k < b; ++k) {
      const Tf32Scope tf32(opts.tf32 && opts.gradient_dtype == at::kFloat);
      const FourthPowerObjective::GradientAndLoss local =
          objs[static_cast<size_t>(k)]->local_gradient_and_loss(r[k], true, opts.gradient_dtype);
      grad[k].copy_(local.gradient);
      packed.narrow(0, grad_numel + k, 1).copy_(local.loss.reshape({1}));
    }
    if (comm) comm->all_reduce(packed, ReduceOp::kSum);
    // Waits for the device: a step's end.
    const at::Tensor host_losses = packed.narrow(0, grad_numel, b).cpu();
    const double lap = laps.lap();
    if (step > 0) step_seconds.push_back(lap);
    const double* lp = host_losses.data_ptr<double>();
    for (int64_t k = 0; k < b; ++k) {
      const double loss = lp[k];
      require(std::isfinite(loss), "OptRot: the loss became non-finite at step ", step,
              b > 1 ? " in problem " + std::to_string(k) + " of " + std::to_string(b) : "",
              " (learning rate ", opts.lr, " too large?)");
      losses[static_cast<size_t>(k)].push_back(loss);
      if (loss < best_loss[static_cast<size_t>(k)]) {
        best_loss[static_cast<size_t>(k)] = loss;
        best[k].copy_(r[k]);
      }
    }
    if (opts.log_every > 0 && (step % opts.log_every == 0 || step == opts.steps)) {
      const double total = std::accumulate(lp, lp + b, 0.0);
      if (b == 1) {
        spdlog::info("optrot step {}/{}: loss {:.6g}", step, opts.steps, total);
      } else {
        spdlog::info("optrot step {}/{}: loss {:.6g} (summed over {} problems)", step, opts.steps,
                     total, b);
      }
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
  if (traces) {
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double c3 = std::pow(static_cast<double>(c), 3);
    traces->assign(static_cast<size_t>(b), RotationTrace{});
    for (int64_t k = 0; k < b; ++k) {
      RotationTrace& t = (*traces)[static_cast<size_t>(k)];
      t.loss = losses[static_cast<size_t>(k)];
      t.seconds = seconds;
      t.step_seconds = step_seconds;
      t.flops =
          static_cast<double>(t.loss.size()) * objs[static_cast<size_t>(k)]->gradient_flops() +
          static_cast<double>(opts.steps) * 4.7 * c3;
    }
  }
  at::Tensor out = at::empty_like(best);
  for (int64_t k = 0; k < b; ++k) out[k].copy_(polar_project(best[k]));
  return out;
}

}  // namespace

at::Tensor minimize_fourth_power(const FourthPowerObjective& obj, const at::Tensor& r0,
                                 const CayleySgdOptions& opts, Comm* comm, RotationTrace* trace) {
  require(r0.dim() == 2 && r0.size(0) == obj.dim() && r0.size(1) == obj.dim(),
          "OptRot: the initial rotation must be ", obj.dim(), "x", obj.dim());
  std::vector<RotationTrace> traces;
  const at::Tensor r =
      minimize_batch({&obj}, r0.unsqueeze(0), opts, comm, trace ? &traces : nullptr);
  if (trace) *trace = std::move(traces.front());
  return r.select(0, 0);
}

at::Tensor minimize_fourth_power_batch(const std::vector<const FourthPowerObjective*>& objs,
                                       const at::Tensor& r0, const CayleySgdOptions& opts,
                                       std::vector<RotationTrace>* traces) {
  return minimize_batch(objs, r0, opts, nullptr, traces);
}

}  // namespace rotq
