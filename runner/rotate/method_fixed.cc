// none, random, hadamard: rotations drawn from the cell's seed alone (solvers/rotation.h).
#include "runner/rotate/rotation_methods.h"

namespace rotq {
namespace {

template <FixedRotation kKind>
Rotations make_fixed(const RotationSpec& spec, const ModelConfig& config) {
  FixedRotationSpec f;
  f.kind = kKind;
  f.seed = spec.seed;
  f.r2 = spec.r2;
  f.online = spec.online;
  return make_rotations(f, config.dim, config.head_dim, config.n_layers);
}

}  // namespace

RotationMethod fixed_rotation_method(FixedRotation kind) {
  RotationMethod m;
  m.name = fixed_rotation_name(kind);
  switch (kind) {
    case FixedRotation::kNone:
      m.summary = "no rotation (the baseline keeps its norms)";
      m.rotates = false;
      m.fixed = make_fixed<FixedRotation::kNone>;
      break;
    case FixedRotation::kRandom:
      m.summary = "Haar-random orthogonal R1/R2";
      m.fixed = make_fixed<FixedRotation::kRandom>;
      break;
    case FixedRotation::kHadamard:
      m.summary = "randomized Hadamard R1/R2 (QuaRot)";
      m.fixed = make_fixed<FixedRotation::kHadamard>;
      break;
  }
  return m;
}

}  // namespace rotq
