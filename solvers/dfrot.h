// DFRot (Xiang & Zhang, COLM 2025): refine a rotation R1 so that per-token activation quantization
// hurts the calibration tokens least, up-weighting the tokens that carry massive activations.
//
//   L(R) = E_{x∉X_m} ‖xR − Q(xR)‖² + γ² · E_{x∈X_m} ‖xR − Q(xR)‖²
//
// minimized by alternation: quantize the rotated tokens (the centroids η = Q(xR)), then solve the
// orthogonal Procrustes problem argmin_R Σ w‖xR − η‖² = UVᵀ with UΣVᵀ = Σ w xᵀη (C×C, float64);
// the best rotation by loss is kept. Tokens may be split across ranks: the C×C sum, the loss and
// the token counts are all-reduced and R is broadcast from rank 0, so every rank holds the same R.
//
// Massive tokens X_m are flagged once, from the unrotated tokens (as the reference code does):
//   quant-error  ‖x − Q₄(x)‖ / ‖x‖ < τ with Q₄ 4-bit symmetric per token. The reference uses an
//                absolute 8.5 on LLaMA's unit-RMS d = 4096 tokens (‖x‖ = 64): τ = 8.5/64.
//   random       the error under a random orthogonal rotation is at least the error without one
//                (the reference's rule for Mistral).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "solvers/comm.h"
#include "solvers/orthogonal.h"
#include "solvers/quantizer.h"

namespace rotq {

enum class MassiveRule { kQuantError, kRandomRotation };
MassiveRule parse_massive_rule(const std::string& name);  // "quant-error" | "random"
const char* massive_rule_name(MassiveRule r);

struct MassiveOptions {
  MassiveRule rule = MassiveRule::kQuantError;
  double threshold = 8.5 / 64.0;  // kQuantError: relative per-token error
  uint64_t seed = 0;              // kRandomRotation: the random rotation's seed
};

// The reference's weighting sums each set (γ² multiplies the massive tokens' total); the paper's
// formula (our default) averages each set, so γ does not depend on how many tokens were flagged.
enum class DfrotWeighting { kMean, kSum };

struct DfrotOptions {
  int64_t iters = 100;
  double gamma = 100;      // +inf: only the massive tokens count (all tokens when none are flagged)
  bool symmetric = false;  // the objective's 4-bit per-token quantizer (asymmetric as the paper)
  int bits = 4;
  DfrotWeighting weighting = DfrotWeighting::kMean;
  MassiveOptions massive;
  int64_t chunk_rows = 8192;  // tokens per product (bounds the temporaries)
  int64_t log_every = 10;     // info line every k iterations (0: never)
  // The token pass (xR, Q(xR), the loss and Σ w xᵀη per chunk): float64, or float32 GEMMs (full
  // float32: the per-token rounding decisions follow xR) with the chunks' sums accumulated in
  // float64. float32 also runs the Procrustes step's well-conditioned Newton iterations in float32
  // (PolarMethod::kNewtonMixed: first and last steps float64, the rotation orthogonal in float64).
  // The span route keeps xR's products in float64 (they carry κ(L)) and quantizes in float32.
  at::ScalarType pass_dtype = at::kDouble;
  PolarMethod polar = PolarMethod::kNewton;  // the Procrustes step's polar factor
  // With fewer weighted tokens than channels (N < C), iterate in the tokens' span: N×C and N×N
  // work per iteration instead of C×C, the same rotated tokens, and R completed outside the span
  // by the rotation nearest R0 (solvers/dfrot_route.h). false: the C×C iteration (comparisons).
  bool span_route = true;
};

// ‖x − Q(x)‖₂ per row of x [N, C] (float64 [N]); Q per row as `spec`.
at::Tensor per_token_quant_error(const at::Tensor& x, const QuantSpec& spec);

// Boolean [N]: which rows of x [N, C] (unrotated) are massive-activation tokens.
at::Tensor flag_massive_tokens(const at::Tensor& x, const MassiveOptions& opts);

struct DfrotTrace {
  std::vector<double> loss;  // per iteration, at the rotation before its Procrustes step
  int64_t tokens = 0;        // over all ranks
  int64_t massive = 0;
  double seconds = 0;
  double flops = 0;  // per iteration: xR, the step's sum and its polar (route-dependent estimate)
  // Set before the call to have `last` filled: the rotation after the last Procrustes step (the
  // best is returned). The span route completes each outside the tokens' span once, at the end: a
  // second completion when the best is not the last, paid only when asked for.
  bool want_last = false;
  at::Tensor last;
  double first_pass_seconds = 0;  // the first pass: xR, Q(xR), the loss and Σ w xᵀη
  // Between successive loss reads: one Procrustes step and the next pass, i.e. one iteration
  // (the last pass forms no step sum).
  std::vector<double> iteration_seconds;
};

// The weighted loss L(R) (all-reduced over `comm` when given).
double dfrot_loss(const at::Tensor& x, const at::Tensor& massive, const at::Tensor& r,
                  const DfrotOptions& opts, Comm* comm);

// The alternating optimisation from `r0` on this rank's tokens x [N, C] with flags `massive` [N];
// returns the best rotation (float64, orthogonal to rounding).
at::Tensor dfrot_optimize(const at::Tensor& x, const at::Tensor& massive, const at::Tensor& r0,
                          const DfrotOptions& opts, Comm* comm, DfrotTrace* trace = nullptr);

}  // namespace rotq
