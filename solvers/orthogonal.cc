#include "solvers/orthogonal.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "solvers/blas.h"
#include "solvers/error.h"

namespace rotq {
namespace {

void require_square(const at::Tensor& m, const char* what) {
  require(m.dim() == 2 && m.size(0) == m.size(1), what, ": expected a square matrix, got ",
          m.sizes());
}

// A square matrix or a batch of them ([..., n, n]).
void require_square_batch(const at::Tensor& m, const char* what) {
  require(m.dim() >= 2 && m.size(-1) == m.size(-2), what,
          ": expected a square matrix or a batch of them, got ", m.sizes());
}

// A batch of one ([1, n, n]) is stepped as its matrix: the 2-D GEMM and solve rather than their
// batched forms (R1's steps, minimize_fourth_power's batch of one, stay the 2-D ops they were).
bool single_of_batch(const at::Tensor& m) { return m.dim() == 3 && m.size(0) == 1; }

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

namespace {

// X⁻¹, or undefined when X is numerically singular. A triangular X (the first iterate of a polar
// through a QR) is inverted as a triangle (dtrtri), a sixth of an LU inverse's FLOPs.
at::Tensor inverse_or_undefined(const at::Tensor& x, bool first) {
  at::Tensor inv;
  const bool lower = first && at::equal(x, x.tril());
  if (lower || (first && at::equal(x, x.triu()))) {
    inv = triangular_inverse(x, /*upper=*/!lower);
    if (!inv.defined()) return {};
  } else {
    at::Tensor info;
    std::tie(inv, info) = at::linalg_inv_ex(x);
    if (info.item<int64_t>() != 0) return {};
  }
  if (!at::isfinite(inv).all().item<bool>()) return {};
  return inv;
}

// ‖X‖₂ from below by a few block power iterations on XᵀX (fixed start: deterministic). Four
// vectors cost what one does (each pass reads X once) and catch the top of a clustered spectrum.
double spectral_norm_estimate(const at::Tensor& x) {
  const int64_t n = x.size(1);
  at::Tensor v = at::ones({n, 4}, x.options());
  v.select(1, 1).copy_(at::arange(n, x.options()).remainder(2).mul(2).sub(1));
  v.select(1, 2).copy_(at::arange(n, x.options()).div(std::max<int64_t>(n - 1, 1)));
  v.select(1, 3).copy_(at::arange(n, x.options()).remainder(3).sub(1));
  double est = 0;
  for (int i = 0; i < 4; ++i) {
    v = std::get<0>(at::linalg_qr(v));
    const at::Tensor xv = at::matmul(x, v);
    est = std::sqrt(xv.pow(2).sum(0).max().item<double>());
    v = at::matmul(x.t(), xv);
  }
  return est;
}

// ‖F‖₁ of a symmetric F given by its lower triangle L (= ‖F‖∞ ≥ ‖F‖₂): column sums of |L| and
// |L|ᵀ, the diagonal counted once.
double symmetric_lower_one_norm(const at::Tensor& lower) {
  const at::Tensor a = lower.abs();
  return (a.sum(0) + a.sum(1) - a.diagonal()).max().item<double>();
}

// polar_polish, filling only the report's residual and rounds (newton_polar's report keeps its
// iteration counts).
at::Tensor polish_into(at::Tensor x, PolarReport& rep) {
  if (x.numel() == 0) return x;
  // Unit roundoff and γ_n = n·u/(1 − n·u), the bound on a length-n dot product's rounding.
  const double u = std::ldexp(1.0, -53), nu = static_cast<double>(x.size(0)) * u;
  const double gamma_n = nu / (1 - nu);
  double previous = std::numeric_limits<double>::infinity();
  for (int round = 0; round <= 3; ++round) {
    const at::Tensor f = gram_minus_identity_lower(x);
    const double residual = max_abs(f);
    if (residual <= 1e-12) {
      rep.residual = residual;
      rep.schulz_rounds = round;
      return x;
    }
    const double f1 = symmetric_lower_one_norm(f);
    if (round == 3 || !(residual < 0.5 * previous) || f1 >= 0.5) break;
    previous = residual;
    at::Tensor xf = at::zeros_like(x);
    symmetric_lower_addmm_(xf, x, f, 1);
    x = x.add(xf, -0.5);
    symmetric_lower_addmm_(x, xf, f, 0.375);
    // The round's result without another product, when its bound already meets the target:
    // exactly, σ² = 1 + φ goes to 1 + ⅝φ³ − (15/64)φ⁴ + (9/64)φ⁵ (|φ| ≤ ‖F‖₂ ≤ ‖F‖₁); F's rounding
    // (|δF_ij| ≤ γ_n·‖x_i‖‖x_j‖) enters the new residual as −δF to first order; the two
    // additions add ≤ 4u.
    const double bound =
        0.625 * f1 * f1 * f1 * (1 + f1) + gamma_n * (1 + 2 * f1) + 4 * u * (1 + f1) * (1 + f1);
    if (bound <= 1e-12) {
      rep.residual = bound;
      rep.schulz_rounds = round + 1;
      return x;
    }
  }
  return {};
}

}  // namespace

at::Tensor polar_polish(const at::Tensor& x, PolarReport* report) {
  require_square(x, "polar_polish");
  PolarReport rep;
  at::Tensor q = polish_into(x.to(at::kDouble), rep);
  if (report && q.defined()) *report = rep;
  return q;
}

namespace {

// Scaled Newton (Higham 1986) with the near-optimal scaling ζ = (‖X⁻¹‖₂/‖X‖₂)^½ (Byers & Xu),
// which takes κ to ~√κ/2 per step, switched off once close, where the unscaled iteration
// converges quadratically (a step of size s leaves an error ~s²/2); from a step below 1e-3
// polar_polish finishes in float64 (its round costs what an inverse does and gains more).
// kNewtonMixed runs the iterates whose condition is moderate in float32: the polar factor of X_k
// is the answer for every k, and rounding X_k moves it by ~κ(X_k)·ε, so the iterations stay in
// float64 until κ(X_k) ≤ ~1e2 and continue in float32 until a step below 1e-3 (float32's floor,
// ~1e-7, is one step away; the polish starts from either).
// Returns the converged iterate or undefined.
at::Tensor newton_polar(const at::Tensor& md, bool mixed, PolarReport& rep) {
  at::Tensor x = md;
  bool scale = true, low = false;
  for (int it = 1; it <= 30; ++it) {
    const at::Tensor xi = low ? x.to(at::kFloat) : x;
    const at::Tensor inv = inverse_or_undefined(xi, it == 1);
    if (!inv.defined()) {
      rep.fallback = "singular";
      return {};
    }
    // κ² ≤ ‖X⁻¹‖₁‖X⁻¹‖∞·‖X‖₁‖X‖∞ (scale-free). Beyond κ ≈ 1e15 (u·κ ≈ 0.1) M is singular to
    // float64 and its polar factor not determined. Below, the scaled iteration with LU inverses
    // is backward stable (Nakatsukasa & Higham 2012), however inaccurate the first inverses: on
    // DFRot's first step on the planted 7B model (κ = 1.45e13, bound 1.5e14) the result is 4.0e-8
    // from the SVD's, as far as the SVD's own moves when M moves by u·‖M‖ (4.1e-8).
    if (it == 1) {
      rep.condition_bound = std::sqrt(one_inf(inv) * one_inf(xi));
      if (!(rep.condition_bound <= 1e15)) {
        rep.fallback = "ill-conditioned";
        return {};
      }
    }
    double zeta = 1, kappa = 1;
    if (scale) {
      const double norm_x = spectral_norm_estimate(xi), norm_inv = spectral_norm_estimate(inv);
      zeta = std::sqrt(norm_inv / norm_x);
      kappa = norm_x * norm_inv;
    }
    const at::Tensor next = xi.mul(0.5 * zeta).add_(inv.t(), 0.5 / zeta).to(at::kDouble);
    const double step = max_abs(next - x) / max_abs(next);
    x = next;
    rep.iterations = it;
    if (low) ++rep.float32_iterations;
    if (step < 1e-2 || kappa < 1.05) scale = false;  // unscaled Newton is as fast there
    if (!scale && step < 1e-3) {
      const at::Tensor q = polish_into(x, rep);
      if (!q.defined()) rep.fallback = "no convergence of the polish";
      return q;
    } else if (mixed && scale && kappa < 4e4) {
      low = true;  // the next iterate's κ ≲ (√κ + 1/√κ)/2 ≈ 1e2
    }
  }
  rep.fallback = "no convergence";
  return {};
}

}  // namespace

at::Tensor polar_factor(const at::Tensor& m, PolarMethod method, PolarReport* report) {
  require_square(m, "polar_factor");
  require(at::isfinite(m).all().item<bool>(), "polar_factor: the matrix has NaN/Inf entries");
  PolarReport rep;
  const at::Tensor md = m.to(at::kDouble).contiguous();
  at::Tensor q;
  if (method != PolarMethod::kSvd && md.size(0) > 0) {
    q = newton_polar(md, method == PolarMethod::kNewtonMixed, rep);
  }
  if (!q.defined()) {
    q = polar_by_svd(md);
    rep.svd = true;
    if (report) rep.residual = orthogonality_residual(q);
  }
  if (report) *report = rep;
  return q;
}

at::Tensor polar_factor_rows(const at::Tensor& m, PolarMethod method) {
  require(m.dim() == 2 && m.size(0) <= m.size(1),
          "polar_factor_rows: expected a wide matrix [N, C] with N <= C, got ", m.sizes());
  require(at::isfinite(m).all().item<bool>(), "polar_factor_rows: the matrix has NaN/Inf entries");
  // Mᵀ = Q R, so M = Rᵀ Qᵀ and (Rᵀ = U S Vᵀ) M = U S (Q V)ᵀ: polar(M) = U Vᵀ Qᵀ = polar(Rᵀ)·Qᵀ.
  auto [q, r] = at::linalg_qr(m.to(at::kDouble).t(), "reduced");
  return at::matmul(polar_factor(r.t(), method), q.t());
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
  require_square_batch(r, "skew_gradient");
  require(euclidean_grad.sizes() == r.sizes(), "skew_gradient: gradient ", euclidean_grad.sizes(),
          " for rotations ", r.sizes());
  if (single_of_batch(r)) return skew_gradient(r[0], euclidean_grad[0]).unsqueeze(0);
  const at::Tensor rd = r.to(at::kDouble), g = euclidean_grad.to(at::kDouble);
  // R Gᵀ = (G Rᵀ)ᵀ: one C×C GEMM, and the result is skew to the last bit.
  const at::Tensor grt = at::matmul(g, rd.transpose(-2, -1));
  return grt - grt.transpose(-2, -1);
}

at::Tensor cayley_retract(const at::Tensor& r, const at::Tensor& skew, double t) {
  require_square_batch(skew, "cayley_retract");
  require(r.sizes() == skew.sizes(), "cayley_retract: direction ", skew.sizes(), " for rotations ",
          r.sizes());
  if (single_of_batch(skew)) return cayley_retract(r[0], skew[0], t).unsqueeze(0);
  const int64_t n = skew.size(-1);
  const at::Tensor eye = at::eye(n, skew.options().dtype(at::kDouble));
  const at::Tensor half = skew.to(at::kDouble) * (t / 2);
  // (I + tA/2) Y = (I − tA/2) R; I + tA/2 is invertible for skew A (eigenvalues 1 + iλ). As
  // (I + B)⁻¹(I − B) = 2(I + B)⁻¹ − I, Y = 2(I + B)⁻¹R − R: the solve alone, without the C×C
  // product (I − B)·R (a third of the step's work).
  // The solve's info is not checked: I + tA/2 is never singular, and checking it reads the device
  // once per step (a NaN A gives a NaN R, which the caller's loss check catches).
  const at::Tensor rd = r.to(skew.device(), at::kDouble);
  const at::Tensor y = std::get<0>(at::linalg_solve_ex(half.add_(eye), rd, /*left=*/true,
                                                       /*check_errors=*/false));
  return y.mul_(2).sub_(rd);
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
