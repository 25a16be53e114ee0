// GPTQ (Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for Generative
// Pre-trained Transformers") as run by QuaRot's GPTQ.fasterquant, on ATen tensors.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <string>

#include "solvers/comm.h"
#include "solvers/quantizer.h"

namespace rotq {

// H = 2/n · Σ x xᵀ over all rows x of a layer's calibration inputs. GPTQ.add_batch keeps the same
// quantity as a running average; the reference counts batches rather than rows in n, which scales
// H by a constant: GPTQ's result does not depend on it (the damping is relative to mean(diag(H))).
class HessianAccumulator {
 public:
  // dtype: kFloat (as the reference) or kDouble accumulation, on `device` (the inputs').
  explicit HessianAccumulator(int64_t cols, at::ScalarType dtype = at::kFloat,
                              at::Device device = at::kCPU);
  // x [..., cols] of any float dtype; every leading index is one row.
  void add(const at::Tensor& x);
  // Σ x xᵀ [cols, cols] in the accumulation dtype. Not a copy (a 11008-column sum is 0.5 GB):
  // writing into it changes this accumulator.
  at::Tensor sum() const;
  int64_t count() const { return count_; }
  // Adds another accumulator's (e.g. another rank's) sum and row count.
  void merge(const at::Tensor& sum, int64_t count);
  // Sums the sums and row counts of every rank in place, so that hessian() is the whole
  // calibration set's on each rank.
  void all_reduce(Comm& comm);
  // 2/count · sum in the accumulation dtype; rotq::Error when no row was added.
  at::Tensor hessian() const;

 private:
  // On a CPU add() updates only the lower triangle (half the FLOPs, syrk); the upper one is
  // mirrored from it before the sum is read, reduced or merged.
  void symmetrize() const;

  int64_t cols_;
  at::Tensor sum_;
  int64_t count_ = 0;
  mutable bool lower_only_ = false;
};

struct GptqOptions {
  double percdamp = 0.01;      // percdamp · mean(diag(H)) is added to the diagonal
  int64_t blocksize = 128;     // columns per lazy batch update
  bool act_order = false;      // columns in decreasing diag(H) order, permuted back at the end
  bool static_groups = false;  // with groups: params from the full W upfront (not the updated W)
};

// Where the time goes (seconds; the device's queue drained at each boundary) and the
// linear-algebra FLOPs of each stage.
struct GptqStages {
  double params_seconds = 0;  // quantizer params of the whole W (MSE clip search) or static groups
  double factor_seconds = 0;  // upper Cholesky factor of H⁻¹
  double column_seconds = 0;  // the in-block column loop (dynamic groups' params included)
  double update_seconds = 0;  // the lazy-batch GEMMs W[:, i2:] −= Err·U[i1:i2, i2:]
  double factor_flops = 0, column_flops = 0, update_flops = 0;
};

struct GptqResult {
  at::Tensor weight;   // fake-quantized (dequantized) weight, w's dtype and shape
  double seconds = 0;  // wall time of gptq_quantize
  double flops = 0;    // linear-algebra FLOPs: the factorization and the column and block updates
  GptqStages stages;
};

// Quantizes w [rows, cols] column by column, compensating each column's error on the columns not
// yet quantized through H⁻¹ (hessian [cols, cols], e.g. HessianAccumulator::hessian()):
//  - dead columns (diag(H) == 0) get H_ii = 1 and W[:, i] = 0;
//  - percdamp · mean(diag(H)) is added to H's diagonal; the upper Cholesky factor of H⁻¹ as in the
//    reference (on the host from one Cholesky of the reversed H and a triangular inverse);
//  - per-channel params (spec.group == 0) come from the full W before the dead columns are zeroed;
//    with groups, static params from the full W (dead columns zeroed) per original column group,
//    dynamic params (the default) from the current, already-updated W at each group start, in
//    act-order's column order when act_order is set;
//  - spec.mse_clip runs the MSE clip search wherever params are computed.
// Math in float32 (float64 when w or hessian is float64). Each row's result depends only on that
// row and H, so ranks may quantize disjoint row slices with the same H. rotq::Error (naming `what`)
// for bad shapes or options, a non-finite H, or an H not positive definite after damping.
//
// One deviation from the reference: with dynamic groups a lazy block also ends at every group
// start, so a group's params always see every update from the columns before it. The reference
// reads stale columns when a group starts inside a block (groupsize not a multiple of blocksize);
// for groupsize a multiple of blocksize (QuaRot's 128/128) the two are the same computation.
GptqResult gptq_quantize(const at::Tensor& w, const at::Tensor& hessian, const QuantSpec& spec,
                         const GptqOptions& opts = {}, const std::string& what = "weight");

}  // namespace rotq
