// The optimizer steps and straight-through quantizers that learned rotations train with.
#include "solvers/orthogonal.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

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
