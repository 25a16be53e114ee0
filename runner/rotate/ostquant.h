// OSTQuant's optimisation on given windows (the `ostquant` rotation method draws them from the
// cell's calibration text; tests pass their own). Defined in method_ostquant.cc.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

#include "models/weights.h"
#include "runner/dist/placement.h"
#include "runner/rotate/rotation_methods.h"
#include "solvers/comm.h"

namespace rotq {

// R1, R2 and every layer's channel scalings learned from the randomized Hadamard of spec.seed
// (scalings from one) by spec.ostquant's Riemannian Adam / Adam on `windows` [N, T] (steps take
// spec.ostquant.batch windows in order, wrapping around); the per-step loss and the time go to
// `learned`. `model` is norm-fused (this rank's shard when `placement` is sharded). Every rank
// returns the same result. `device` as spinquant_rotations.
Rotations ostquant_rotations(const Model& model, const at::Tensor& windows,
                             const RotationSpec& spec, Comm& comm, const Placement& placement,
                             RotationLearning& learned,
                             std::optional<at::Device> device = std::nullopt);

}  // namespace rotq
