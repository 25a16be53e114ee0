// Rotations on disk: a safetensors file with "R1" [dim, dim], "R2.<layer>" [head_dim, head_dim]
// and learned channel scalings "S.<layer>.<kind>" (runner/fuse/scalings.h), all float64, plus
// metadata saying whether R3/R4 were used and how the matrices were made.
#pragma once

#include <map>
#include <string>

#include "models/config.h"
#include "solvers/rotation.h"

namespace rotq {

void save_rotations(const Rotations& rot, const std::string& path,
                    const std::map<std::string, std::string>& metadata = {});

// Loads and checks the rotations for a model of `config`: shapes, orthogonality within 1e-8.
// Throws rotq::Error naming the file and the offending matrix.
Rotations load_rotations(const std::string& path, const ModelConfig& config);

}  // namespace rotq
