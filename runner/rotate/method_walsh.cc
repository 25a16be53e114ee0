// walsh: the plain normalized Hadamard H/√n for R1 and every R2, without QuaRot's random signs:
// the same for every seed, an ablation of what the random diagonal adds.
#include <ATen/ATen.h>

#include <cmath>

#include "runner/rotate/rotation_methods.h"
#include "solvers/error.h"
#include "solvers/hadamard.h"

namespace rotq {
namespace {

at::Tensor normalized_hadamard(int64_t n) {
  require(hadamard_exists(n), "walsh: no Hadamard construction of order ", n);
  return hadamard_matrix(n) / std::sqrt(static_cast<double>(n));
}

Rotations walsh(const RotationSpec& spec, const ModelConfig& config) {
  Rotations rot;
  rot.r1 = normalized_hadamard(config.dim);
  rot.r2.resize(config.n_layers);
  if (spec.r2) {
    const at::Tensor r2 = normalized_hadamard(config.head_dim);
    for (at::Tensor& r : rot.r2) r = r2.clone();
  }
  rot.r3 = rot.r4 = spec.online;
  return rot;
}

}  // namespace

RotationMethod walsh_rotation_method() {
  RotationMethod m;
  m.name = "walsh";
  m.summary = "the plain normalized Hadamard H/sqrt(n) (QuaRot's without its random signs)";
  m.fixed = walsh;
  return m;
}

}  // namespace rotq
