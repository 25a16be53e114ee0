// The BLAS products ATen lacks (solvers/blas.h) against ATen's GEMM: float64 on a CPU runs the
// BLAS routine, float32 the ATen fallback; both agree with the float64 GEMM to rounding.
#include "solvers/blas.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

namespace {

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

double tolerance(at::ScalarType t) { return t == at::kDouble ? 1e-12 : 1e-4; }

// A block of a larger upper triangle (row stride ≠ its width), as DFRot's span route passes R_x's
// diagonal blocks; entries below the diagonal must not be read.
TEST(Blas, UpperTriangularTimesIsTheTriangleTimesE) {
  at::manual_seed(5);
  for (at::ScalarType t : {at::kDouble, at::kFloat}) {
    const at::Tensor big = at::randn({40, 40}, at::kDouble).to(t);
    const at::Tensor u = big.narrow(0, 7, 23).narrow(1, 7, 23);
    const at::Tensor e = at::randn({23, 31}, at::kDouble).to(t);
    const at::Tensor tri = u.to(at::kDouble).triu();
    EXPECT_LT(max_abs_diff(rotq::upper_triangular_times(u, e), at::matmul(tri, e.to(at::kDouble))),
              tolerance(t));
    EXPECT_LT(max_abs_diff(rotq::upper_triangular_times(u, e, /*transpose_u=*/true),
                           at::matmul(tri.t(), e.to(at::kDouble))),
              tolerance(t));
  }
}

// All four of op(U)⁻¹·E and E·op(U)⁻¹ on a strided block, and triangular inverses of both kinds
// (a zero on the diagonal: none).
TEST(Blas, TriangularSolvesAndInverses) {
  at::manual_seed(7);
  for (at::ScalarType t : {at::kDouble, at::kFloat}) {
    at::Tensor big = at::randn({30, 30}, at::kDouble) + 6 * at::eye(30, at::kDouble);
    big = big.to(t);
    const at::Tensor u = big.narrow(0, 3, 21).narrow(1, 3, 21);
    const at::Tensor tri = u.to(at::kDouble).triu();
    for (bool transpose_u : {false, true}) {
      const at::Tensor op = transpose_u ? tri.t() : tri;
      const at::Tensor e_left = at::randn({21, 9}, at::kDouble).to(t);
      const at::Tensor x = rotq::upper_triangular_solve(u, e_left, transpose_u, /*left=*/true);
      EXPECT_LT(max_abs_diff(at::matmul(op, x.to(at::kDouble)), e_left), tolerance(t) * 10);
      const at::Tensor e_right = at::randn({9, 21}, at::kDouble).to(t);
      const at::Tensor y = rotq::upper_triangular_solve(u, e_right, transpose_u, /*left=*/false);
      EXPECT_LT(max_abs_diff(at::matmul(y.to(at::kDouble), op), e_right), tolerance(t) * 10);
    }
    for (bool upper : {true, false}) {
      const at::Tensor m = upper ? big.triu() : big.tril();
      // The other triangle holds garbage the inverse must not read.
      const at::Tensor garbage = m + (upper ? big.tril(-1) : big.triu(1)) * 100;
      const at::Tensor inv = rotq::triangular_inverse(garbage, upper);
      ASSERT_TRUE(inv.defined());
      EXPECT_LT(max_abs_diff(at::matmul(m.to(at::kDouble), inv.to(at::kDouble)),
                             at::eye(30, at::kDouble)),
                tolerance(t) * 10);
      at::Tensor singular = m.clone();
      singular.diagonal().select(0, 4).zero_();
      EXPECT_FALSE(rotq::triangular_inverse(singular, upper).defined());
    }
  }
}

TEST(Blas, GramMinusIdentityAndTheSymmetricProduct) {
  at::manual_seed(6);
  for (at::ScalarType t : {at::kDouble, at::kFloat}) {
    const at::Tensor x = at::randn({37, 37}, at::kDouble).to(t);
    const at::Tensor xd = x.to(at::kDouble);
    const at::Tensor want = at::matmul(xd.t(), xd) - at::eye(37, at::kDouble);
    const at::Tensor lower = rotq::gram_minus_identity_lower(x);
    EXPECT_LT(max_abs_diff(lower, want.tril()), tolerance(t) * 10);
    EXPECT_EQ(lower.triu(1).abs().max().item<double>(), 0.0);
    // C += α·Y·S reads S's lower triangle only: garbage above it changes nothing.
    const at::Tensor y = at::randn({19, 37}, at::kDouble).to(t);
    at::Tensor c = at::randn({19, 37}, at::kDouble).to(t);
    const at::Tensor c0 = c.to(at::kDouble).clone();
    const at::Tensor garbage = lower + at::full({37, 37}, 1e3, lower.options()).triu(1);
    rotq::symmetric_lower_addmm_(c, y, garbage, -0.5);
    EXPECT_LT(max_abs_diff(c, c0 - 0.5 * at::matmul(y.to(at::kDouble), want)), tolerance(t) * 100);
  }
}

// syrk's half of XᵀX: the lower triangle gets the product, the strict upper keeps what it held.
TEST(Blas, GramLowerAddUpdatesTheLowerTriangle) {
  at::manual_seed(9);
  for (at::ScalarType t : {at::kDouble, at::kFloat}) {
    const at::Tensor x = at::randn({37, 19}, at::kDouble).to(t);
    const at::Tensor c0 = at::randn({19, 19}, at::kDouble).to(t);
    at::Tensor c = c0.clone();
    const bool lower_only = rotq::gram_lower_add_(c, x);
    const at::Tensor want =
        c0.to(at::kDouble) + at::matmul(x.t().to(at::kDouble), x.to(at::kDouble));
    EXPECT_LT(max_abs_diff(c.tril(), want.tril()), tolerance(t) * 40);
    if (lower_only) {
      EXPECT_TRUE(c.triu(1).equal(c0.triu(1)));
    } else {
      EXPECT_LT(max_abs_diff(c, want), tolerance(t) * 40);
    }
  }
}

}  // namespace
