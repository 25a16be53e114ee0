// OptRot+'s calibration statistics: per layer, Σ xᵀx of the attention block's input, the FFN
// block's input and o_proj's input (kept as per-head blocks), from one floating-point pass over
// the calibration windows. Data-parallel: each rank runs its share of the windows and the sums are
// all-reduced. With `shard` (a model sharded by layers), every window streams through the pipeline
// and each rank gets its own layers' sums.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "models/weights.h"
#include "runner/dist/placement.h"
#include "runner/rotate/optrot_model.h"
#include "solvers/comm.h"

namespace rotq {

std::vector<LayerCovariances> collect_layer_covariances(
    const Model& model, const at::Tensor& windows, Comm& comm, int64_t batch = 8,
    const Placement& placement = Placement::replicated());

}  // namespace rotq
