#include "solvers/orthogonal.h"

#include <ATen/ATen.h>

#include "solvers/error.h"

namespace rotq {
namespace {

void require_square(const at::Tensor& m, const char* what) {
  require(m.dim() == 2 && m.size(0) == m.size(1), what, ": expected a square matrix, got ",
          m.sizes());
}

}  // namespace

at::Tensor procrustes(const at::Tensor& m) {
  require_square(m, "procrustes");
  require(at::isfinite(m).all().item<bool>(), "procrustes: the matrix has NaN/Inf entries");
  auto [u, s, vh] = at::linalg_svd(m.to(at::kDouble), /*full_matrices=*/false);
  return at::matmul(u, vh);
}

at::Tensor polar_project(const at::Tensor& r) { return procrustes(r); }

at::Tensor skew_gradient(const at::Tensor& r, const at::Tensor& euclidean_grad) {
  require_square(r, "skew_gradient");
  const at::Tensor rd = r.to(at::kDouble), g = euclidean_grad.to(at::kDouble);
  return at::matmul(g, rd.t()) - at::matmul(rd, g.t());
}

at::Tensor cayley_retract(const at::Tensor& r, const at::Tensor& skew, double t) {
  require_square(skew, "cayley_retract");
  const int64_t n = skew.size(0);
  const at::Tensor eye = at::eye(n, skew.options().dtype(at::kDouble));
  const at::Tensor half = skew.to(at::kDouble) * (t / 2);
  // (I + tA/2) Y = (I − tA/2) R; I + tA/2 is invertible for skew A (eigenvalues 1 + iλ).
  return at::linalg_solve(eye + half, at::matmul(eye - half, r.to(skew.device(), at::kDouble)));
}

}  // namespace rotq
