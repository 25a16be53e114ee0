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
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "solvers/comm.h"

namespace rotq {

enum class OptRotNorm { kNone, kFrobenius4, kNumel };
OptRotNorm parse_optrot_norm(const std::string& name);  // "none" | "fro4" | "numel"

// The terms of one objective: reader-form matrices (any float dtype; kept as given) and their
// weights c_A.
class FourthPowerObjective {
 public:
  FourthPowerObjective(int64_t dim, OptRotNorm norm) : dim_(dim), norm_(norm) {}

  void add(const at::Tensor& reader_form, double weight = 1.0);
  int64_t dim() const { return dim_; }
  size_t size() const { return terms_.size(); }
  // FLOPs of one local_gradient: A·R and Aᵀ·(A·R)^∘3 per term.
  double gradient_flops() const { return flops_; }

  // Loss and Euclidean gradient at R (float64), summed over this rank's terms only.
  double local_loss(const at::Tensor& r) const;
  at::Tensor local_gradient(const at::Tensor& r, double* loss = nullptr) const;

 private:
  struct Term {
    at::Tensor a;  // [m, C]
    double c;
  };
  int64_t dim_;
  OptRotNorm norm_;
  std::vector<Term> terms_;
  double flops_ = 0;
};

struct CayleySgdOptions {
  int64_t steps = 1000;
  // The step is relative to the objective's scale. With the kNumel normalisation the paper's lr of
  // 1.0 overshoots on stories260K (no step improves on the start); 0.02 descends steadily.
  double lr = 0.02;
  double momentum = 0.0;
  int64_t log_every = 100;  // info line every k steps (0: never)
};

struct RotationTrace {
  std::vector<double> loss;  // per step, before the step (and the final loss last)
  double seconds = 0;
  double flops = 0;  // gradients + Cayley steps (LU solve and products, ~9·C³ per step)
};

// Cayley SGD on O(C) from `r0`: R ← cayley(−lr·A)·R with A the skew Riemannian gradient (with
// momentum on A); the best rotation by loss is kept and returned after a float64 polar
// projection. Loss and gradient are all-reduced over `comm` when given (each rank holding a
// disjoint share of the terms); nullptr optimizes this rank's terms alone.
at::Tensor minimize_fourth_power(const FourthPowerObjective& obj, const at::Tensor& r0,
                                 const CayleySgdOptions& opts, Comm* comm,
                                 RotationTrace* trace = nullptr);

// Loss at R, all-reduced over `comm` when given.
double fourth_power_loss(const FourthPowerObjective& obj, const at::Tensor& r, Comm* comm);

}  // namespace rotq
