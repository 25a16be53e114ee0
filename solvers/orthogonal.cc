#include "solvers/orthogonal.h"

#include <ATen/ATen.h>

#include <algorithm>

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

at::Tensor cayley_sgd_step(const at::Tensor& p, const at::Tensor& grad, double lr, double* alpha) {
  require_square(p, "cayley_sgd_step");
  require(grad.sizes() == p.sizes(), "cayley_sgd_step: gradient ", grad.sizes(), " for a matrix ",
          p.sizes());
  const at::Tensor x = p.to(at::kDouble), v = -grad.to(at::kDouble).t();
  const at::Tensor mx = at::matmul(v, x);
  const at::Tensor w_hat = mx - 0.5 * at::matmul(x.t(), at::matmul(x, mx));
  const at::Tensor w = w_hat - w_hat.t();
  const double norm1 = w.abs().sum(0).max().item<double>();
  const double a = std::min(lr, 1.0 / (norm1 + 1e-8));
  if (alpha) *alpha = a;
  // (I − aW/2)⁻¹(I + aW/2) = cayley_retract's (I + tA/2)⁻¹(I − tA/2) with A = −W, t = a.
  return cayley_retract(x.t(), -w, a).t().contiguous();
}

}  // namespace rotq
