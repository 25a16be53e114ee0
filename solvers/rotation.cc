#include "solvers/rotation.h"

#include <ATen/ATen.h>

#include <cmath>
#include <random>

#include "solvers/error.h"
#include "solvers/hadamard.h"

namespace rotq {

const char* fixed_rotation_name(FixedRotation k) {
  switch (k) {
    case FixedRotation::kNone:
      return "none";
    case FixedRotation::kRandom:
      return "random";
    case FixedRotation::kHadamard:
      return "hadamard";
  }
  return "?";
}

FixedRotation parse_fixed_rotation(const std::string& name) {
  for (FixedRotation k : {FixedRotation::kNone, FixedRotation::kRandom, FixedRotation::kHadamard}) {
    if (name == fixed_rotation_name(k)) return k;
  }
  fail("rotation '", name, "': expected none, random or hadamard");
}

uint64_t derive_seed(uint64_t seed, uint64_t stream) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ull * (stream + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

at::Tensor seeded_gaussian(int64_t rows, int64_t cols, uint64_t seed) {
  std::mt19937_64 gen(seed);
  // Uniform in (0, 1] from the top 53 bits, so that log() never sees 0.
  const auto uniform = [&gen] { return (static_cast<double>(gen() >> 11) + 1.0) * 0x1.0p-53; };
  at::Tensor out = at::empty({rows, cols}, at::kDouble);
  double* p = out.data_ptr<double>();
  const int64_t n = rows * cols;
  for (int64_t i = 0; i < n; i += 2) {
    const double r = std::sqrt(-2.0 * std::log(uniform()));
    const double theta = 2.0 * M_PI * uniform();
    p[i] = r * std::cos(theta);
    if (i + 1 < n) p[i + 1] = r * std::sin(theta);
  }
  return out;
}

at::Tensor random_orthogonal(int64_t n, uint64_t seed) {
  require(n > 0, "random_orthogonal: size must be positive, got ", n);
  auto [q, r] = at::linalg_qr(seeded_gaussian(n, n, seed));
  // QR is unique only up to column signs; fixing diag(R) > 0 makes Q Haar-distributed.
  at::Tensor signs = at::sign(r.diagonal());
  signs.masked_fill_(signs == 0, 1.0);
  return q * signs.unsqueeze(0);
}

Rotations make_rotations(const FixedRotationSpec& spec, int64_t dim, int64_t head_dim,
                         int64_t n_layers) {
  Rotations rot;
  rot.r3 = rot.r4 = spec.online;
  rot.r2.resize(n_layers);
  const auto make = [&](int64_t n, uint64_t stream) -> at::Tensor {
    const uint64_t s = derive_seed(spec.seed, stream);
    switch (spec.kind) {
      case FixedRotation::kRandom:
        return random_orthogonal(n, s);
      case FixedRotation::kHadamard:
        return random_hadamard_matrix(n, s);
      case FixedRotation::kNone:
        return at::Tensor();
    }
    return at::Tensor();
  };
  rot.r1 = make(dim, 0);
  if (spec.r2) {
    for (int64_t l = 0; l < n_layers; ++l) rot.r2[l] = make(head_dim, static_cast<uint64_t>(l) + 1);
  }
  return rot;
}

double orthogonality_error(const at::Tensor& q) {
  at::Tensor qd = q.to(at::kDouble);
  at::Tensor eye = at::eye(qd.size(1), at::kDouble);
  return (at::matmul(qd.t(), qd) - eye).abs().max().item<double>();
}

}  // namespace rotq
