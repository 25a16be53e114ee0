// OptRot (data-free): choose an orthogonal R that minimizes the fourth powers of the rotated
// weights, a smooth proxy for their incoherence max|W|·√(mn)/‖W‖_F.
//
// Every matrix R touches is written in "reader form" A [m, C], so that its rotated entries are
// A·R: a reader W [out, C] (q, k, v, gate, up: y = x·Wᵀ, fused as W·R) is itself; a writer
// W [C, in] (o, down: fused as Rᵀ·W) enters as Wᵀ, since (Rᵀ W)ᵀ = Wᵀ R. For R2 (head_dim) the
// per-head blocks of v's output rows enter as blocks of Wvᵀ and o's input columns as blocks of Wo.
//
//   L(R) = Σ_A  c_A · Σ_ij (A R)_ij⁴          ∂L/∂R = Σ_A 4 c_A · Aᵀ (A R)^∘3
//
// with c_A from the normalisation (1; 1/‖A‖_F⁴; or 1/(numel·ms(A)²), which makes each term the
// mean fourth moment of A R relative to a Gaussian's 3: scale-free and O(1)).
//
// Matrices may be split across ranks: each rank passes its share and the loss and gradient (C×C)
// are all-reduced, so every rank takes the same step.
//
// OptRot+ (covariance groups). GPTQ's error on a linear with input covariance Σ is not RTN's: by
// QuIP's bound (Chee et al. 2023, Thm. 1) it scales with the product μ_W²·μ_H² of the incoherence
// of the rotated weight and of the rotated Hessian RᵀΣR, so a rotation should make both incoherent.
// We take the matching smooth proxies and multiply them per group of matrices sharing one input:
//
//   L⁺(R) = Σ_g φ_g(R) · Σ_{A∈g} c_A Σ_ij (A R)_ij⁴  +  Σ_{A ungrouped} c_A Σ_ij (A R)_ij⁴
//   φ_g(R) = C · Σ_ij M_ij⁴ / (Σ_ij M_ij²)²,   M = Rᵀ Σ_g R
//
// φ is the fourth-power proxy applied to the Hessian, made scale-free: the denominator is
// tr(Σ²)² on the group (rotation-invariant), so φ is the flatness of M's entries. With eigenpairs
// (λ_k, q_k), M_ij = Σ_k λ_k u_ki u_kj for the rotated eigenvectors u_k = Rᵀq_k, so φ grows with
// max|u_ki| on the large-λ directions (where the activation outliers live): for one dominant
// direction u, φ = C·(Σ_i u_i⁴)², from 1/C (u flat, incoherent) to C (u a basis vector). φ = 1
// exactly when Σ ∝ I, so OptRot⁺ is OptRot for white inputs. Writers (o, down) are ungrouped for
// R1: their inputs do not depend on R1. With Q = Σ M⁴ and P = Σ M²,
// ∂φ/∂R = C·(8·Σ R M^∘3 / P² − 8·Q·Σ R M / P³)  (M symmetric), and
// ∂L⁺/∂R = Σ_g (φ_g ∂F_g + F_g ∂φ_g) + Σ_ungrouped ∂f_A.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "solvers/comm.h"

namespace rotq {

enum class OptRotNorm { kNone, kFrobenius4, kNumel };

// Whether bfloat16 gradient products on CUDA run as one bfloat16 GEMM with float32 results (this
// LibTorch has mm's out_dtype overload) rather than as float32 GEMMs of the bfloat16 values.
bool bf16_products_on_tensor_cores();
OptRotNorm parse_optrot_norm(const std::string& name);  // "none" | "fro4" | "numel"

// The terms of one objective: reader-form matrices (any float dtype; kept as given) and their
// weights c_A.
class FourthPowerObjective {
 public:
  FourthPowerObjective(int64_t dim, OptRotNorm norm) : dim_(dim), norm_(norm) {}

  // A term; `group` (from add_covariance) multiplies it by that covariance's φ (OptRot+).
  void add(const at::Tensor& reader_form, double weight = 1.0, int group = -1);
  // Equal-shaped terms at once: slice k of `stacked` [n, m, C] is a term as add's, normalised on
  // its own, in group groups[k] (-1: ungrouped; empty: all ungrouped). A step runs their products
  // as one GEMM and one batched GEMM instead of n pairs: for many small matrices (R2's heads:
  // 64 [4096, 128] blocks per 7B layer) the per-term kernels, not the FLOPs, are the cost.
  // `store_as` (default: the given dtype): bfloat16, float32 or float64, the dtype the stack is
  // kept in, i.e. the products' dtype of the steps that will read it (bfloat16: a quarter of
  // float64's memory and no conversion per step); the weights c are taken from the given values.
  // A stack that store_as rounded refuses products of a higher precision, local_loss's float64
  // included: they would silently give the rounded problem's loss and gradient.
  void add_stack(const at::Tensor& stacked, double weight = 1.0, std::vector<int> groups = {},
                 std::optional<at::ScalarType> store_as = std::nullopt);
  // OptRot+: the covariance [C, C] of the input the group's terms read; returns the group id.
  int add_covariance(const at::Tensor& sigma);
  int64_t dim() const { return dim_; }
  size_t size() const;  // terms, a stack's slices counted one by one
  size_t covariances() const { return covariances_.size(); }
  // Bytes of the stacks and covariances the objective holds (a stack may share its storage with
  // the tensor given, when that was contiguous and already of the kept dtype); plain terms are the
  // caller's tensors, kept as given, and not counted.
  int64_t owned_bytes() const;
  // FLOPs of one local_gradient: A·R and Aᵀ·(A·R)^∘3 per term.
  double gradient_flops() const { return flops_; }
  // OptRot+'s factors are computed for as many groups at once as fit this many bytes of float64
  // temporaries (default 256 MiB: all of R2's 128×128 groups, one C×C group of R1 at a time).
  void set_group_batch_bytes(int64_t bytes);

  // Loss and Euclidean gradient at R (float64; undefined without want_gradient), summed over this
  // rank's terms only.
  double local_loss(const at::Tensor& r) const;
  // `compute`: the dtype of the products A·R and Aᵀ·(A·R)^∘3 (float32 GEMMs use TF32 only inside
  // a Tf32Scope; bfloat16 rounds the inputs A, R and (A·R)^∘3 to bfloat16 and sums their products
  // in float32, on tensor cores on CUDA); R, the sums and the gradient are float64 either way.
  at::Tensor local_gradient(const at::Tensor& r, double* loss = nullptr, bool want_gradient = true,
                            at::ScalarType compute = at::kDouble) const;
  // The same with the loss left where the products ran (a 0-dim float64 tensor): nothing waits for
  // the kernels, so an optimizer reads it once per step, with the all-reduced gradient.
  struct GradientAndLoss {
    at::Tensor gradient, loss;
  };
  GradientAndLoss local_gradient_and_loss(const at::Tensor& r, bool want_gradient = true,
                                          at::ScalarType compute = at::kDouble) const;

 private:
  // A sum the gradient accumulates: slot 0 the ungrouped terms, slot s ≥ 1 the group
  // group_of_slot_[s − 1], numbered as groups first receive a term (a group without terms has no
  // sum and adds nothing: its F is 0).
  struct Term {
    at::Tensor a;  // [m, C]
    double c;
    int slot;
  };
  struct Stack {
    at::Tensor a;           // [n, m, C], contiguous
    std::vector<double> c;  // per slice
    std::vector<int> slot;
    // [slots when added, n], where a is: entry (slot_k, k) = 4·c_k. The slices' C×C products go
    // into the sums as one GEMM with it (deterministic, as an index_add on CUDA is not).
    at::Tensor mix;
    // Kept in a lower precision than given (store_as): products of a higher precision than the
    // kept values are refused.
    bool rounded = false;
  };
  // The normalisation's c for a term with Σ a² = `sq` over `numel` entries.
  double weight_of(double weight, double sq, double numel) const;
  int slot_of(int group);               // numbers a group's slot at its first term
  void require_group(int group) const;  // -1 or an added covariance's id
  int64_t dim_;
  OptRotNorm norm_;
  std::vector<Term> terms_;
  std::vector<Stack> stacks_;
  std::vector<at::Tensor> covariances_;  // Ŝ_g, float64
  std::vector<int> slot_of_group_;       // 0: no term yet
  std::vector<int> group_of_slot_;       // slot s ≥ 1 at [s − 1]
  int64_t group_batch_bytes_ = int64_t{256} << 20;
  double flops_ = 0;
};

// How a step moves on O(C). Both step along the Cayley retraction R ← cayley(−η·D)·R of a skew
// direction D: Cayley SGD takes D = the Riemannian gradient A = G Rᵀ − R Gᵀ (with momentum), as
// SpinQuant; Riemannian Adam takes D = m̂/(√v̂ + ε) from Adam's moments of A's entries (the
// moments live in the Lie algebra, a fixed frame, so no vector transport is needed; elementwise
// ratios of a skew m and a symmetric v stay skew).
enum class ManifoldOptimizer { kCayleySgd, kRiemannianAdam };
ManifoldOptimizer parse_manifold_optimizer(const std::string& name);  // "cayley" | "adam"

struct CayleySgdOptions {
  ManifoldOptimizer method = ManifoldOptimizer::kCayleySgd;
  int64_t steps = 1000;
  // The step is relative to the objective's scale. With the kNumel normalisation the paper's lr of
  // 1.0 overshoots on stories260K (no step improves on the start); 0.02 descends steadily.
  double lr = 0.02;
  double momentum = 0.0;
  bool cosine = true;  // lr·(1 + cos(π·step/steps))/2: large early steps, then settle
  double adam_beta1 = 0.9, adam_beta2 = 0.999, adam_eps = 1e-8;
  int64_t log_every = 100;  // info line every k steps (0: never)
  // The gradient's products (FourthPowerObjective::local_gradient): float64, float32 or bfloat16
  // (float32 results); the rotation is float64.
  at::ScalarType gradient_dtype = at::kDouble;
  // float32 products on TF32 tensor cores (CUDA; nothing changes on CPUs), for the gradient only.
  bool tf32 = false;
};

struct RotationTrace {
  std::vector<double> loss;  // per step, before the step (and the final loss last)
  double seconds = 0;
  double flops = 0;  // gradients + Cayley steps (skew product 2·C³, LU and solve ~2.7·C³ per step)
  // Between successive loss reads: one Cayley step and the next gradient, i.e. one step as the
  // issue's per-step targets count it (the first gradient and the final projection are outside).
  std::vector<double> step_seconds;
};

// Cayley SGD or Riemannian Adam on O(C) from `r0` (see ManifoldOptimizer); the best rotation by
// loss is kept and returned after a float64 polar projection. Loss and gradient are all-reduced
// over `comm` when given (each rank holding a disjoint share of the terms); nullptr optimizes this
// rank's terms alone.
at::Tensor minimize_fourth_power(const FourthPowerObjective& obj, const at::Tensor& r0,
                                 const CayleySgdOptions& opts, Comm* comm,
                                 RotationTrace* trace = nullptr);

// Independent problems side by side (R2: one per layer): problem b minimizes *objs[b] from r0[b]
// ([B, C, C]; every objective of width C) and the result's [b] is what minimize_fourth_power would
// return for it alone, up to the rounding of the batched GEMMs and solves (on CUDA a batch's LU is
// cuBLAS's batched one, a single matrix's cuSOLVER's). A step queues every problem's gradient,
// reads all losses once, and takes one batched skew product and Cayley solve: the host waits and
// small launches a step costs are paid once per batch rather than once per problem. `traces`
// (optional) receives one trace per problem; their step_seconds are the batch's steps.
at::Tensor minimize_fourth_power_batch(const std::vector<const FourthPowerObjective*>& objs,
                                       const at::Tensor& r0, const CayleySgdOptions& opts,
                                       std::vector<RotationTrace>* traces = nullptr);

// Loss at R, all-reduced over `comm` when given.
double fourth_power_loss(const FourthPowerObjective& obj, const at::Tensor& r, Comm* comm);

}  // namespace rotq
