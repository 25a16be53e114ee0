// OptRot on a model: the matrices R1 and each layer's R2 touch, in reader form (optrot.h), and the
// optimisation of both from a randomized Hadamard start. R1 first (with R2 = I), then each R2 on
// the R1-rotated v/o weights, so that every objective sees the weights it will actually rotate.
#pragma once

#include <string>
#include <vector>

#include "models/weights.h"
#include "solvers/comm.h"
#include "solvers/optrot.h"
#include "solvers/rotation.h"

namespace rotq {

// OptRot+: a layer's input covariances Σ xᵀx from calibration data on the unrotated, norm-fused
// model: the attention block's input (q/k/v read it), the FFN block's (gate/up) and o_proj's, per
// head ([head_dim, head_dim] blocks of its input, which R2 rotates).
struct LayerCovariances {
  at::Tensor attn, mlp;
  std::vector<at::Tensor> o_heads;
};

struct OptRotOptions {
  CayleySgdOptions sgd;
  OptRotNorm norm = OptRotNorm::kNumel;
  bool r2 = true;
  // The matrices that enter the objectives (R2 sees v and o only).
  std::vector<LayerTensor> matrices = {LayerTensor::kWq,   LayerTensor::kWk,    LayerTensor::kWv,
                                       LayerTensor::kWo,   LayerTensor::kWGate, LayerTensor::kWUp,
                                       LayerTensor::kWDown};
};

// "q,k,v,o,gate,up,down" (any non-empty subset) -> the matrices; throws naming an unknown one.
std::vector<LayerTensor> parse_optrot_matrices(const std::string& list);

// q/k/v/gate/up as themselves, o/down transposed: the R1 objective's terms, from the layers
// l ≡ rank (mod size) of `model` (every rank holds the whole model; the shares are disjoint, so
// an all-reduce sums each term once). The model's norms must be fused.
// With `covs` (one per layer of the model, OptRot+), q/k/v are grouped with their layer's attn
// covariance and gate/up with its mlp covariance.
FourthPowerObjective r1_objective(
    const Model& model, OptRotNorm norm, int rank = 0, int size = 1,
    const std::vector<LayerCovariances>* covs = nullptr,
    const std::vector<LayerTensor>& matrices = OptRotOptions().matrices);

// Layer `layer`'s R2 terms on weights already rotated by `r1` (undefined = identity): the
// per-head blocks of Wv·R1 (transposed) and of R1ᵀ·Wo, formed in float64 and kept as one stack in
// `store_as`, the dtype of the products that will read it (optrot.h: add_stack).
FourthPowerObjective r2_objective(
    const Model& model, int64_t layer, const at::Tensor& r1, OptRotNorm norm,
    const LayerCovariances* cov = nullptr,
    const std::vector<LayerTensor>& matrices = OptRotOptions().matrices,
    at::ScalarType store_as = at::kDouble);

// The layers (indices into model.weights.layers) whose R2 this rank solves: every layer of a shard
// (a model sharded by layers); of a replicated model the layers l ≡ rank (mod size), as R1's terms
// are split.
std::vector<int64_t> r2_layers_of_rank(const Model& model, const Comm& comm);

// R1 and R2 by OptRot, each started from the randomized Hadamard of `seed` (as make_rotations
// draws it). `trace` (optional) receives R1's optimisation trace. A rank's R2 problems are solved
// side by side (minimize_fourth_power_batch), in batches of equal size whose objectives fit
// `r2_batch_bytes` (at 7B: all 32 layers at once with bfloat16 products).
// `covs` (optional, OptRot+): one per layer of `model`.
Rotations optrot_rotations(const Model& model, const OptRotOptions& opts, uint64_t seed, Comm& comm,
                           RotationTrace* trace = nullptr,
                           const std::vector<LayerCovariances>* covs = nullptr,
                           int64_t r2_batch_bytes = int64_t{4} << 30);

}  // namespace rotq
