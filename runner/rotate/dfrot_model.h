// DFRot on a model: calibration tokens from one window of text (the block inputs of every layer,
// runner/rotate/block_inputs.h), massive tokens flagged and reported, R1 refined from a randomized
// Hadamard (or random orthogonal) start; R2 stays the start's (DFRot only learns R1).
#pragma once

#include <string>
#include <vector>

#include "models/tokenizers/tokenizer.h"
#include "models/weights.h"
#include "runner/dist/placement.h"
#include "runner/rotate/rotation_methods.h"
#include "solvers/comm.h"
#include "solvers/dfrot.h"

namespace rotq {

struct DfrotModelResult {
  Rotations rotations;
  DfrotTrace trace;
  std::vector<std::string> massive_report;
  double massive_fraction = 0;
};

// `windows` [B, T]: the calibration tokens' windows (the same on every rank); the model's norms
// must be fused. Tokens are split across ranks in contiguous shares; with `shard` (a model
// sharded by layers) each rank's tokens are its own layers' block inputs.
DfrotModelResult dfrot_rotations(const Model& model, const at::Tensor& windows,
                                 const RotationSpec& spec, Comm& comm, const Tokenizer* tok,
                                 const Placement& placement = Placement::replicated());

}  // namespace rotq
