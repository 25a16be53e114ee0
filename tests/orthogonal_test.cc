// The optimizer steps and straight-through quantizers that learned rotations train with.
#include "solvers/orthogonal.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "solvers/error.h"
#include "solvers/hadamard.h"
#include "solvers/rotation.h"
#include "solvers/straight_through.h"

namespace {

// SpinQuant's Cayley_loop: Y = X + αV, then Y ← X + α·W·(X + Y)/2, `iters` times, on X = Pᵀ.
at::Tensor reference_cayley(const at::Tensor& p, const at::Tensor& g, double lr, int iters) {
  const at::Tensor x = p, v = -g.t();
  const at::Tensor mx = at::matmul(v, x);
  const at::Tensor w_hat = mx - 0.5 * at::matmul(x.t(), at::matmul(x, mx));
  const at::Tensor w = w_hat - w_hat.t();
  const double alpha = std::min(lr, 1.0 / (w.abs().sum(0).max().item<double>() + 1e-8));
  const at::Tensor x0 = x.t();
  at::Tensor y = x0 + alpha * v;
  for (int i = 0; i < iters; ++i) y = x0 + alpha * at::matmul(w, 0.5 * (x0 + y));
  return y.t();
}

// The Newton polar factor equals the SVD's U Vᵀ to 1e-10 (float64) from well to badly
// conditioned matrices (κ up to 1e5; 1e-7 at 1e8 and 1e-2 at 1e13, the problem's own sensitivity)
// and nearly orthogonal ones, and attains the SVD's maximum of tr(Qᵀ M) to float64 rounding;
// singular ones go to the SVD. κ = 1e13 is the condition of DFRot's first Procrustes step on the
// planted 7B-shaped model (massive tokens weighted by γ = 100; measured 1.45e13 at C = 4096).
TEST(PolarFactor, NewtonEqualsTheSvdsRotation) {
  at::manual_seed(31);
  const int64_t n = 96;
  const at::Tensor u = std::get<0>(at::linalg_qr(at::randn({n, n}, at::kDouble)));
  const at::Tensor v = std::get<0>(at::linalg_qr(at::randn({n, n}, at::kDouble)));
  for (double log_kappa : {0.0, 2.0, 5.0, 8.0, 13.0}) {
    const at::Tensor s = at::pow(10.0, at::linspace(0, -log_kappa, n, at::kDouble));
    const at::Tensor m = at::matmul(u * s, v.t()) * 37.0;
    rotq::PolarReport rep;
    const at::Tensor q = rotq::polar_factor(m, rotq::PolarMethod::kNewton, &rep);
    EXPECT_FALSE(rep.svd) << log_kappa;
    EXPECT_LE(rep.iterations, 12) << log_kappa;
    // The reported bound: κ₂ ≤ bound ≤ n·κ₂ (‖·‖₁ and ‖·‖∞ are within √n of ‖·‖₂).
    const double kappa = std::pow(10.0, log_kappa);
    EXPECT_GE(rep.condition_bound, 0.999 * kappa) << log_kappa;
    EXPECT_LE(rep.condition_bound, 1.001 * n * kappa) << log_kappa;
    // The polar factor itself moves by ~κ·ε under rounding of M: 1e-10 up to κ = 1e5, and at
    // κ = 1e8 and 1e13 both methods are as close to the exact U Vᵀ as that allows.
    const double tol = log_kappa <= 5 ? 1e-10 : log_kappa <= 8 ? 1e-7 : 1e-2;
    const at::Tensor qsvd = rotq::polar_factor(m, rotq::PolarMethod::kSvd);
    const auto objective = [&](const at::Tensor& r) {
      return at::trace(at::matmul(r.t(), m)).item<double>();
    };
    EXPECT_NEAR(objective(q) / objective(qsvd), 1.0, 1e-12) << log_kappa;
    EXPECT_LT(rotq::orthogonality_error(q), 1e-12) << log_kappa;
    EXPECT_LT((q - at::matmul(u, v.t())).abs().max().item<double>(), tol) << log_kappa;
    EXPECT_LT((qsvd - at::matmul(u, v.t())).abs().max().item<double>(), tol) << log_kappa;
    EXPECT_LT((q - qsvd).abs().max().item<double>(), tol) << log_kappa;
  }
  // A random (κ ~ n) matrix, and a rotation off by 1e-6: a few iterations.
  const at::Tensor g = at::randn({n, n}, at::kDouble);
  EXPECT_LT((rotq::procrustes(g) - rotq::procrustes(g, rotq::PolarMethod::kSvd))
                .abs()
                .max()
                .item<double>(),
            1e-10);
  rotq::PolarReport rep;
  // The conditioning test is scale-free: a tiny, well-conditioned M stays on the Newton path.
  const at::Tensor tiny = 1e-9 * g;
  EXPECT_LT((rotq::polar_factor(tiny, rotq::PolarMethod::kNewton, &rep) -
             rotq::polar_factor(tiny, rotq::PolarMethod::kSvd))
                .abs()
                .max()
                .item<double>(),
            1e-10);
  EXPECT_FALSE(rep.svd);
  const at::Tensor near = u + 1e-6 * g;
  const at::Tensor q = rotq::polar_factor(near, rotq::PolarMethod::kNewton, &rep);
  EXPECT_LE(rep.iterations, 4);
  EXPECT_LT((q - rotq::polar_factor(near, rotq::PolarMethod::kSvd)).abs().max().item<double>(),
            1e-12);
  rotq::polar_factor(u, rotq::PolarMethod::kNewton, &rep);
  EXPECT_LE(rep.iterations, 2);
  EXPECT_TRUE(at::equal(rotq::polar_project(u), u));
  // Singular: the polar factor is not unique; the SVD's is returned (still orthogonal).
  at::Tensor sing = g.clone();
  sing.select(1, 3).zero_();
  const at::Tensor qs = rotq::polar_factor(sing, rotq::PolarMethod::kNewton, &rep);
  EXPECT_TRUE(rep.svd);
  // The report says why (the debug log of a DFRot step shows it).
  const std::string why = rep.fallback;
  EXPECT_TRUE(why == "singular" || why == "ill-conditioned") << why;
  EXPECT_LT(rep.residual, 1e-12);
  EXPECT_LT(rotq::orthogonality_error(qs), 1e-12);
  rotq::polar_factor(near, rotq::PolarMethod::kNewton, &rep);
  EXPECT_STREQ(rep.fallback, "");
  EXPECT_THROW(rotq::polar_factor(at::full({3, 3}, std::nan(""), at::kDouble)), rotq::Error);
}

// The mixed-precision Newton: float32 for the iterates with κ ≲ 1e2, float64 before and after.
// Its result is orthogonal to float64 rounding and within ~κ(X_k)·ε₃₂ of the exact polar factor
// (5e-5 over κ up to 1e8, against 1e-7 in float64); a triangular M starts with a triangular solve.
TEST(PolarFactor, MixedPrecisionNewtonIsOrthogonalAndNearTheSvdsRotation) {
  at::manual_seed(33);
  const int64_t n = 96;
  const at::Tensor u = std::get<0>(at::linalg_qr(at::randn({n, n}, at::kDouble)));
  const at::Tensor v = std::get<0>(at::linalg_qr(at::randn({n, n}, at::kDouble)));
  for (double log_kappa : {0.0, 3.0, 8.0}) {
    const at::Tensor s = at::pow(10.0, at::linspace(0, -log_kappa, n, at::kDouble));
    const at::Tensor m = at::matmul(u * s, v.t()) * 3.0;
    rotq::PolarReport rep;
    const at::Tensor q = rotq::polar_factor(m, rotq::PolarMethod::kNewtonMixed, &rep);
    EXPECT_FALSE(rep.svd) << log_kappa;
    EXPECT_LT(rep.residual, 1e-12) << log_kappa;
    EXPECT_LE(rotq::orthogonality_error(q), rep.residual + 1e-15) << log_kappa;
    if (log_kappa > 0) {
      EXPECT_GT(rep.float32_iterations, 0) << log_kappa;
      // From float32's floor one float64 Newton step reaches float64's (a polish round at most).
      EXPECT_LE(rep.schulz_rounds, 1) << log_kappa;
    }
    EXPECT_LT((q - at::matmul(u, v.t())).abs().max().item<double>(), 5e-5) << log_kappa;
  }
  // Lower triangular (R_Lᵀ of a QR, as DFRot's span route passes it).
  const at::Tensor r = std::get<1>(at::linalg_qr(at::randn({n, n}, at::kDouble))).t();
  rotq::PolarReport rep;
  const at::Tensor qt = rotq::polar_factor(r, rotq::PolarMethod::kNewtonMixed, &rep);
  EXPECT_FALSE(rep.svd);
  EXPECT_LT((qt - rotq::polar_factor(r, rotq::PolarMethod::kSvd)).abs().max().item<double>(), 5e-5);
}

// The Newton–Schulz polish: from 1e-3 and 1e-6 off orthogonal to the SVD's polar factor (1e-12) in
// the rounds third order predicts (⅝‖F‖³ per round), the residual it reports (measured or bounded)
// never below the measured one; nothing to do for a rotation; undefined far from the group (where
// the rounds diverge) and for NaN.
TEST(PolarFactor, PolishTakesANearlyOrthogonalMatrixToItsPolarFactor) {
  at::manual_seed(34);
  const int64_t n = 64;
  const at::Tensor u = std::get<0>(at::linalg_qr(at::randn({n, n}, at::kDouble)));
  const at::Tensor g = at::randn({n, n}, at::kDouble) / std::sqrt(static_cast<double>(n));
  for (double off : {1e-3, 1e-6}) {
    const at::Tensor x = u + off * g;
    rotq::PolarReport rep;
    const at::Tensor q = rotq::polar_polish(x, &rep);
    ASSERT_TRUE(q.defined()) << off;
    EXPECT_LT((q - rotq::polar_factor(x, rotq::PolarMethod::kSvd)).abs().max().item<double>(),
              1e-12)
        << off;
    EXPECT_LE(rep.residual, 1e-12);
    EXPECT_LE(rotq::orthogonality_error(q), rep.residual + 1e-15);
    EXPECT_EQ(rep.schulz_rounds, off > 1e-4 ? 2 : 1) << off;
  }
  // From float32's floor (a rotation rounded to float32), as kNewtonMixed's finish starts: one
  // round, its reported bound above the measured residual.
  for (int64_t size : {96, 384}) {
    const at::Tensor r = std::get<0>(at::linalg_qr(at::randn({size, size}, at::kDouble)));
    rotq::PolarReport rep;
    const at::Tensor q = rotq::polar_polish(r.to(at::kFloat), &rep);
    ASSERT_TRUE(q.defined());
    EXPECT_EQ(rep.schulz_rounds, 1) << size;
    EXPECT_LE(rep.residual, 1e-12) << size;
    EXPECT_LE(rotq::orthogonality_error(q), rep.residual) << size;
  }
  rotq::PolarReport rep;
  EXPECT_TRUE(at::equal(rotq::polar_polish(u, &rep), u));
  EXPECT_EQ(rep.schulz_rounds, 0);
  EXPECT_FALSE(rotq::polar_polish(3.0 * u).defined());
  EXPECT_FALSE(rotq::polar_polish(u * std::nan("")).defined());
}

// The wide polar factor (DFRot's span route): U Vᵀ of the thin SVD, through the QR of Mᵀ and an
// N×N polar, by Newton or the SVD, to 1e-10 at κ ≤ 1e5.
TEST(PolarFactor, RowsOfAWideMatrixAreTheThinSvdsPolar) {
  at::manual_seed(32);
  const int64_t n = 40, c = 96;
  const at::Tensor u = std::get<0>(at::linalg_qr(at::randn({n, n}, at::kDouble)));
  const at::Tensor v = std::get<0>(at::linalg_qr(at::randn({c, n}, at::kDouble)));
  for (double log_kappa : {0.0, 3.0, 5.0}) {
    const at::Tensor s = at::pow(10.0, at::linspace(0, -log_kappa, n, at::kDouble));
    const at::Tensor m = at::matmul(u * s, v.t()) * 5.0;
    const at::Tensor want = at::matmul(u, v.t());
    for (rotq::PolarMethod method : {rotq::PolarMethod::kNewton, rotq::PolarMethod::kSvd}) {
      const at::Tensor b = rotq::polar_factor_rows(m, method);
      ASSERT_EQ(b.sizes(), m.sizes());
      EXPECT_LT((b - want).abs().max().item<double>(), 1e-10) << log_kappa;
      EXPECT_LT((at::matmul(b, b.t()) - at::eye(n, at::kDouble)).abs().max().item<double>(), 1e-12);
    }
  }
  // A square M: the square polar factor.
  const at::Tensor g = at::randn({n, n}, at::kDouble);
  EXPECT_LT((rotq::polar_factor_rows(g) - rotq::polar_factor(g)).abs().max().item<double>(), 1e-12);
  EXPECT_THROW(rotq::polar_factor_rows(at::randn({c, n}, at::kDouble)), rotq::Error);
  EXPECT_THROW(rotq::polar_factor_rows(at::full({2, 3}, std::nan(""), at::kDouble)), rotq::Error);
}

TEST(CayleySgd, StepIsTheFixedPointOfSpinQuantsIteration) {
  const at::Tensor p = rotq::random_orthogonal(24, 3);
  const at::Tensor g = rotq::seeded_gaussian(24, 24, 4);
  for (double lr : {1e-3, 0.05, 1.5}) {
    double alpha = 0;
    const at::Tensor next = rotq::cayley_sgd_step(p, g, lr, &alpha);
    EXPECT_LE(alpha, lr);
    EXPECT_LT(rotq::orthogonality_error(next), 1e-13) << lr;
    // Five iterations (the reference) are close; many converge to the exact solve.
    EXPECT_LT((reference_cayley(p, g, lr, 200) - next).abs().max().item<double>(), 1e-12) << lr;
    EXPECT_LT((reference_cayley(p, g, lr, 5) - next).abs().max().item<double>(), 0.05) << lr;
  }
}

TEST(CayleySgd, StepDescends) {
  // f(P) = ‖P − T‖²: a small step along −∇f on the group lowers f.
  const at::Tensor p = rotq::random_orthogonal(16, 5), t = rotq::random_orthogonal(16, 6);
  const auto f = [&](const at::Tensor& x) { return (x - t).pow(2).sum().item<double>(); };
  const at::Tensor next = rotq::cayley_sgd_step(p, 2 * (p - t), 0.01);
  EXPECT_LT(f(next), f(p));
}

// geoopt's RiemannianAdam on a quadratic over O(n): stays orthogonal (stabilised every 10 steps and
// exact in between up to rounding), descends, and keeps its moment tangent after transport.
TEST(RiemannianAdam, StaysOrthogonalAndDescends) {
  const at::Tensor t = rotq::random_orthogonal(12, 7);
  const auto f = [&](const at::Tensor& x) { return (x - t).pow(2).sum().item<double>(); };
  at::Tensor x = rotq::random_orthogonal(12, 8);
  const double f0 = f(x);
  rotq::RiemannianAdamState st;
  rotq::RiemannianAdamOptions o;
  o.lr = 0.05;
  double worst = 0;
  for (int i = 0; i < 60; ++i) {
    x = rotq::riemannian_adam_step(x, 2 * (x - t), st, o);
    worst = std::max(worst, rotq::orthogonality_error(x));
  }
  EXPECT_LT(worst, 1e-12);
  EXPECT_LT(f(x), 0.5 * f0);
  EXPECT_EQ(st.step, 60);
  // The moment stays tangent: Xᵀm is skew.
  const at::Tensor xm = at::matmul(x.t(), st.m);
  EXPECT_LT((xm + xm.t()).abs().max().item<double>(), 1e-10);
}

TEST(StraightThrough, ForwardIsTheQuantizerAndTheGradientIsTheIdentity) {
  rotq::QuantSpec spec;
  spec.bits = 4;
  spec.symmetric = false;
  spec.clip_ratio = 0.9;  // clamped elements too get the identity gradient (SpinQuant)
  const at::Tensor x = rotq::seeded_gaussian(6, 32, 7).requires_grad_(true);
  const at::Tensor y = rotq::fake_quantize_ste(x, spec, rotq::StraightThrough::kIdentity);
  EXPECT_LT((y - rotq::fake_quantize(x.detach(), spec)).abs().max().item<double>(), 1e-15);
  const at::Tensor w = rotq::seeded_gaussian(6, 32, 8);
  (y * w).sum().backward();
  EXPECT_TRUE(at::equal(x.grad(), w));
  const at::Tensor v = rotq::seeded_gaussian(8, 16, 9).requires_grad_(true);
  rotq::QuantSpec ws;
  ws.bits = 3;
  ws.mse_clip = true;
  const at::Tensor q = rotq::rtn_quantize_weight_ste(v, ws);
  EXPECT_LT((q - rotq::rtn_quantize_weight(v.detach(), ws)).abs().max().item<double>(), 1e-15);
  q.sum().backward();
  EXPECT_TRUE(at::equal(v.grad(), at::ones_like(v)));
}

// OSTQuant's fake quantizer with its rounding frozen at x0, written as its code writes it:
// (clamp(x/s + n + z, qmin, qmax) − z)·s with s from the rows' range of x, and n = round(x0/s0) −
// x0/s0 and z = round(−lo0/s0) held fixed. Its derivative is what the clipped STE should give.
at::Tensor frozen_rounding_quantizer(const at::Tensor& x, const at::Tensor& x0,
                                     const rotq::QuantSpec& spec) {
  const double maxq = rotq::detail::max_level(spec), minq = rotq::detail::min_level(spec);
  const auto scale_zero = [&](const at::Tensor& v) {
    at::Tensor lo = std::get<0>(v.min(1, true)).clamp_max(0) * spec.clip_ratio;
    at::Tensor hi = std::get<0>(v.max(1, true)).clamp_min(0) * spec.clip_ratio;
    if (spec.symmetric) return std::make_pair(at::maximum(lo.abs(), hi) / maxq, at::zeros_like(lo));
    const at::Tensor s = (hi - lo) / maxq;
    return std::make_pair(s, at::round(-lo / s));
  };
  const auto [s0, z] = scale_zero(x0);
  const at::Tensor n = at::round(x0 / s0) - x0 / s0;
  const at::Tensor s = scale_zero(x).first;
  return (at::clamp(x / s + n + z, minq, maxq) - z) * s;
}

TEST(StraightThrough, ClippedGradientIsTheDerivativeOfTheQuantizerWithFrozenRounding) {
  // Rows of small values with one planted maximum and minimum each, so that only the extremes
  // sit at the grid's ends: symmetric without clipping (the maximum exactly at maxq along every
  // direction) and asymmetric with clipping (both extremes strictly clamped, gradient 0 there,
  // the scale's gradient still reaching them through the range).
  at::Tensor x0 = 0.2 * rotq::seeded_gaussian(5, 24, 21);
  for (int64_t r = 0; r < 5; ++r) {
    x0[r][(3 * r) % 24] = 3.1 + 0.1 * r;
    x0[r][(3 * r + 7) % 24] = -2.0 - 0.1 * r;
  }
  rotq::QuantSpec sym;
  sym.bits = 4;
  rotq::QuantSpec asym = sym;
  asym.symmetric = false;
  asym.clip_ratio = 0.75;
  for (const rotq::QuantSpec& spec : {sym, asym}) {
    SCOPED_TRACE(spec.describe());
    const at::Tensor x = x0.clone().requires_grad_(true);
    const at::Tensor y = rotq::fake_quantize_ste(x, spec, rotq::StraightThrough::kClipped);
    EXPECT_LT((y - rotq::fake_quantize(x0, spec)).abs().max().item<double>(), 1e-15);
    EXPECT_LT((frozen_rounding_quantizer(x0, x0, spec) - y).abs().max().item<double>(), 1e-12);
    const at::Tensor w = rotq::seeded_gaussian(5, 24, 22);
    (y * w).sum().backward();
    const double eps = 1e-6;
    for (uint64_t d = 0; d < 4; ++d) {
      const at::Tensor v = rotq::seeded_gaussian(5, 24, 30 + d);
      const double fd = ((frozen_rounding_quantizer(x0 + eps * v, x0, spec) -
                          frozen_rounding_quantizer(x0 - eps * v, x0, spec)) *
                         w)
                            .sum()
                            .item<double>() /
                        (2 * eps);
      const double g = (x.grad() * v).sum().item<double>();
      EXPECT_NEAR(g, fd, 1e-6 * std::max(1.0, std::abs(fd)));
    }
    // Not SpinQuant's identity: the scale's gradient lands on the extremes.
    EXPECT_GT((x.grad() - w).abs().max().item<double>(), 0.1);
  }
}

TEST(StraightThrough, HadamardTransformIsDifferentiable) {
  // Orders with non-symmetric cores (Paley I: 12, 20; Williamson: 92·2) and pure Sylvester.
  for (int64_t n : {12, 20, 64, 184}) {
    const at::Tensor x = rotq::seeded_gaussian(5, n, n).requires_grad_(true);
    const at::Tensor y = rotq::hadamard_transform(x);
    EXPECT_LT((y - rotq::hadamard_transform(x.detach())).abs().max().item<double>(), 1e-12) << n;
    const at::Tensor w = rotq::seeded_gaussian(5, n, n + 1);
    (y * w).sum().backward();
    // y = x·Hᵀ/√n, so ∂⟨w, y⟩/∂x = w·H/√n.
    const at::Tensor expect = at::matmul(w, rotq::hadamard_matrix(n)) / std::sqrt(double(n));
    EXPECT_LT((x.grad() - expect).abs().max().item<double>(), 1e-12) << n;
  }
}

}  // namespace
