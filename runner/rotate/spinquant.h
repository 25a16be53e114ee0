// SpinQuant's optimisation on given windows (the `spinquant` rotation method draws them from the
// cell's calibration text; tests and benchmarks pass their own). Defined in method_spinquant.cc.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

#include "models/weights.h"
#include "runner/dist/placement.h"
#include "runner/rotate/rotation_methods.h"
#include "solvers/comm.h"

namespace rotq {

// R1 and R2 learned from the randomized Hadamard of spec.seed by spec.spinquant's Cayley SGD on
// `windows` [N, T] (steps take spec.spinquant.batch windows in order, wrapping around); the
// per-step loss and the time go to `learned`. `model` is norm-fused (this rank's shard when
// `placement` is sharded). Every rank returns the same rotations. `device` (default: the
// model's) is where the training computes; a model in host memory is then streamed layer by layer.
Rotations spinquant_rotations(const Model& model, const at::Tensor& windows,
                              const RotationSpec& spec, Comm& comm, const Placement& placement,
                              RotationLearning& learned,
                              std::optional<at::Device> device = std::nullopt);

}  // namespace rotq
