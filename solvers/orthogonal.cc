#include "solvers/orthogonal.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "solvers/error.h"

namespace rotq {
namespace {

void require_square(const at::Tensor& m, const char* what) {
  require(m.dim() == 2 && m.size(0) == m.size(1), what, ": expected a square matrix, got ",
          m.sizes());
}

at::Tensor polar_by_svd(const at::Tensor& m) {
  auto [u, s, vh] = at::linalg_svd(m, /*full_matrices=*/false);
  return at::matmul(u, vh);
}

double max_abs(const at::Tensor& t) { return t.abs().max().item<double>(); }

double orthogonality_residual(const at::Tensor& q) {
  const at::Tensor eye = at::eye(q.size(0), q.options());
  return max_abs(at::matmul(q.t(), q) - eye);
}

// ‖X‖₁·‖X‖∞ (largest column and row sums).
double one_inf(const at::Tensor& x) {
  const at::Tensor a = x.abs();
  return a.sum(0).max().item<double>() * a.sum(1).max().item<double>();
}

}  // namespace

at::Tensor polar_factor(const at::Tensor& m, PolarMethod method, PolarReport* report) {
  require_square(m, "polar_factor");
  require(at::isfinite(m).all().item<bool>(), "polar_factor: the matrix has NaN/Inf entries");
  PolarReport rep;
  const at::Tensor md = m.to(at::kDouble).contiguous();
  at::Tensor x = md;
  at::Tensor q;
  if (method == PolarMethod::kNewton && x.size(0) > 0) {
    // Scaled Newton (Higham 1986; Kenney & Laub's (1,∞) scaling, switched off once close, where
    // the unscaled iteration converges quadratically).
    bool scale = true, last = false;
    for (int it = 1; it <= 30 && !q.defined(); ++it) {
      at::Tensor inv, info;
      std::tie(inv, info) = at::linalg_inv_ex(x);
      if (info.item<int64_t>() != 0 || !at::isfinite(inv).all().item<bool>()) break;
      const double norm_inv = one_inf(inv), norm_x = one_inf(x);
      // κ² ≈ ‖X⁻¹‖₁‖X⁻¹‖∞·‖X‖₁‖X‖∞ (scale-free): beyond κ ≈ 1e12 the inverse carries no digits.
      if (it == 1 && norm_inv * norm_x > 1e24) break;
      const double zeta = scale ? std::pow(norm_inv / norm_x, 0.25) : 1.0;
      at::Tensor next = x.mul(0.5 * zeta).add_(inv.t(), 0.5 / zeta);
      const double step = max_abs(next - x) / max_abs(next);
      x = next;
      rep.iterations = it;
      if (last) q = x;
      if (step < 1e-2) scale = false;
      // Quadratic convergence: after a step below 1e-8 the error is ~1e-16, at the rounding floor,
      // and one more iteration settles it.
      if (step < 1e-8) last = true;
    }
    if (q.defined()) {
      rep.residual = orthogonality_residual(q);
      if (rep.residual > 1e-12) q = at::Tensor();
    }
  }
  if (!q.defined()) {
    q = polar_by_svd(md);
    rep.svd = true;
    if (report) rep.residual = orthogonality_residual(q);
  }
  if (report) *report = rep;
  return q;
}

at::Tensor procrustes(const at::Tensor& m, PolarMethod method) {
  require_square(m, "procrustes");
  return polar_factor(m, method);
}

at::Tensor polar_project(const at::Tensor& r) {
  require_square(r, "polar_project");
  // Already orthogonal (a rotation re-projected): nothing to do.
  const at::Tensor x = r.to(at::kDouble);
  if (x.size(0) > 0 && orthogonality_residual(x) < 1e-13) return x;
  return polar_factor(x);
}

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

double cosine_decay(double lr, int64_t step, int64_t steps) {
  if (steps <= 0) return lr;
  return lr * 0.5 * (1.0 + std::cos(M_PI * static_cast<double>(step) / static_cast<double>(steps)));
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

at::Tensor riemannian_adam_step(const at::Tensor& x_in, const at::Tensor& grad,
                                RiemannianAdamState& st, const RiemannianAdamOptions& o) {
  require_square(x_in, "riemannian_adam_step");
  require(grad.sizes() == x_in.sizes(), "riemannian_adam_step: gradient ", grad.sizes(),
          " for a matrix ", x_in.sizes());
  const at::Tensor x = x_in.to(at::kDouble), gd = grad.to(x.device(), at::kDouble);
  const at::Tensor g = gd - at::matmul(x, at::matmul(gd.t(), x));
  if (!st.m.defined()) st.m = at::zeros_like(x);
  st.step += 1;
  st.m = o.beta1 * st.m + (1 - o.beta1) * g;
  const double inner =
      g.pow(2).sum().item<double>() - 0.5 * at::matmul(x.t(), g).pow(2).sum().item<double>();
  st.v = o.beta2 * st.v + (1 - o.beta2) * inner;
  const double bc1 = 1 - std::pow(o.beta1, static_cast<double>(st.step));
  const double bc2 = 1 - std::pow(o.beta2, static_cast<double>(st.step));
  const at::Tensor u = (-o.lr / (std::sqrt(st.v / bc2) + o.eps)) * (st.m / bc1);
  const at::Tensor a = at::matmul(u, x.t()) - at::matmul(x, u.t());
  const at::Tensor eye = at::eye(x.size(0), x.options());
  const at::Tensor both =
      at::linalg_solve(eye - 0.5 * a, at::matmul(eye + 0.5 * a, at::cat({x, st.m}, 1)));
  at::Tensor next = both.narrow(1, 0, x.size(1)).contiguous();
  st.m = both.narrow(1, x.size(1), x.size(1)).contiguous();
  if (o.stabilize > 0 && st.step % o.stabilize == 0) {
    next = polar_project(next);
    st.m = st.m - at::matmul(next, at::matmul(st.m.t(), next));
  }
  return next;
}

}  // namespace rotq
