// The two formulations of DFRot's alternation that dfrot_optimize drives (solvers/dfrot.cc):
//
//   full   the rotation R (C×C) is the state; a pass forms M = Σ w xᵀη (C×C) and the Procrustes
//          step is R = polar(M). Used when the tokens span all C channels (N ≥ C).
//   span   with fewer tokens than channels (N < C) the rotated tokens depend on R only through its
//          action on the tokens' span, B = QᵀR (N×C, Xᵀ = Q R_x): the pass forms L = R_x·(w η)
//          (N×C), the step is B = polar(L) (an N×N polar), and R is completed outside the span
//          once at the end (solvers/dfrot_span.cc).
//
// Both see the same xR up to rounding, so their losses agree; they differ only in what R does off
// the tokens' span, which the calibration tokens do not determine.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>

#include "solvers/comm.h"
#include "solvers/dfrot.h"
#include "solvers/quantizer.h"

namespace rotq {

// A pass over this rank's tokens at the current rotation: the weighted loss and the local sum
// the Procrustes step needs (undefined when not asked for), both to be all-reduced.
struct DfrotPass {
  at::Tensor sum;
  double loss = 0;
};

class DfrotRoute {
 public:
  virtual ~DfrotRoute() = default;
  virtual DfrotPass pass(bool want_sum) = 0;
  // The Procrustes step from the all-reduced sum; the new state is then broadcast from rank 0.
  virtual void step(const at::Tensor& sum) = 0;
  virtual at::Tensor& state() = 0;
  virtual void keep_as_best() = 0;
  // The C×C rotations (float64): the best kept and the one after the last step.
  virtual at::Tensor best() = 0;
  virtual at::Tensor last() = 0;
  virtual double flops_per_iteration() const = 0;
};

// The per-token weighted quantization pass shared by both routes: for the rotated tokens `xr`
// (in the pass's dtype) and their weights `w` [n, 1], the weighted squared error summed in float64
// and the weighted centroids w·Q(xr).
struct WeightedCentroids {
  at::Tensor weighted_eta;
  at::Tensor loss;  // float64 scalar
};
WeightedCentroids weighted_centroids(const at::Tensor& xr, const at::Tensor& w,
                                     const QuantSpec& spec);

// The Procrustes step's polar method: the float32 pass takes the mixed-precision Newton.
PolarMethod step_polar_method(const DfrotOptions& opts);
// Logs (debug) what a Procrustes step's polar factor took: its iteration count follows the
// sum's condition number, which the calibration tokens decide.
void log_step_polar(const PolarReport& rep);

// x [n, C] (this rank's tokens), w [n] float64 weights; r0 C×C float64.
std::unique_ptr<DfrotRoute> make_full_route(const at::Tensor& x, const at::Tensor& w,
                                            const at::Tensor& r0, const DfrotOptions& opts,
                                            const QuantSpec& spec);

// x_all [N, C] and w_all [N] are every rank's tokens (N < C, positive weights), identical on all
// ranks; this rank passes over rows [begin, end).
std::unique_ptr<DfrotRoute> make_span_route(const at::Tensor& x_all, const at::Tensor& w_all,
                                            int64_t begin, int64_t end, const at::Tensor& r0,
                                            const DfrotOptions& opts, const QuantSpec& spec);

}  // namespace rotq
