#include "solvers/blas.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>

namespace rotq {
namespace {

// Fortran BLAS signatures with the hidden string lengths of gfortran's ABI (as gptq.cc's LAPACK).
using Dtrmm = void (*)(const char*, const char*, const char*, const char*, const int*, const int*,
                       const double*, const double*, const int*, double*, const int*, size_t,
                       size_t, size_t, size_t);
using Dsyrk = void (*)(const char*, const char*, const int*, const int*, const double*,
                       const double*, const int*, const double*, double*, const int*, size_t,
                       size_t);

using Ssyrk = void (*)(const char*, const char*, const int*, const int*, const float*, const float*,
                       const int*, const float*, float*, const int*, size_t, size_t);

using Dsymm = void (*)(const char*, const char*, const int*, const int*, const double*,
                       const double*, const int*, const double*, const int*, const double*, double*,
                       const int*, size_t, size_t);

using Dtrsm = Dtrmm;  // the same arguments: side, uplo, transa, diag, m, n, alpha, A, lda, B, ldb
using Dtrtri = void (*)(const char*, const char*, const int*, double*, const int*, int*, size_t,
                        size_t);

bool fits_int(int64_t v) { return v <= INT32_MAX; }

bool host_double(const at::Tensor& t) {
  return t.device().is_cpu() && t.scalar_type() == at::kDouble;
}

// dtrmm or dtrsm (the same arguments) on row-major buffers: op(U)·E / op(U)⁻¹·E when `left`,
// E·op(U) / E·op(U)⁻¹ otherwise, into a copy of E; nullptr when the BLAS cannot take the operands.
// Row-major U is column-major Uᵀ (lower) and row-major E column-major Eᵀ, so the left product is
// the column-major right one with the lower view (transposed when op(U) = U, since
// (op(U)·E)ᵀ = Eᵀ·op(U)ᵀ), and vice versa.
at::Tensor upper_level3(Dtrmm f, const at::Tensor& u, const at::Tensor& e, bool transpose_u,
                        bool left) {
  if (!f || !host_double(u) || !host_double(e) || u.stride(1) != 1 || !fits_int(e.size(0)) ||
      !fits_int(e.size(1)) || !fits_int(u.stride(0))) {
    return {};
  }
  at::Tensor out = e.contiguous().clone();
  const int m = static_cast<int>(e.size(1)), n = static_cast<int>(e.size(0));
  const int lda = std::max(1, static_cast<int>(u.stride(0))), ldb = std::max(1, m);
  const double one = 1;
  f(left ? "R" : "L", "L", transpose_u ? "T" : "N", "N", &m, &n, &one, u.data_ptr<double>(), &lda,
    out.data_ptr<double>(), &ldb, 1, 1, 1, 1);
  return out;
}

}  // namespace

at::Tensor upper_triangular_times(const at::Tensor& u, const at::Tensor& e, bool transpose_u) {
  static const Dtrmm trmm = blas_symbol<Dtrmm>("dtrmm_");
  at::Tensor out = upper_level3(trmm, u, e, transpose_u, /*left=*/true);
  if (out.defined()) return out;
  const at::Tensor upper = u.triu();
  return at::matmul(transpose_u ? upper.t() : upper, e);
}

at::Tensor upper_triangular_solve(const at::Tensor& u, const at::Tensor& e, bool transpose_u,
                                  bool left) {
  static const Dtrsm trsm = blas_symbol<Dtrsm>("dtrsm_");
  at::Tensor out = upper_level3(trsm, u, e, transpose_u, left);
  if (out.defined()) return out;
  const at::Tensor upper = u.triu();
  return at::linalg_solve_triangular(transpose_u ? upper.t() : upper, e, /*upper=*/!transpose_u,
                                     left);
}

at::Tensor triangular_inverse(const at::Tensor& x, bool upper) {
  static const Dtrtri trtri = blas_symbol<Dtrtri>("dtrtri_");
  const int64_t n = x.size(0);
  if ((x.diagonal() == 0).any().item<bool>()) return {};
  // The other triangle of the copy is zeroed: dtrtri leaves it as it was.
  at::Tensor out = (upper ? x.triu() : x.tril()).contiguous();
  if (!trtri || !host_double(x) || !fits_int(n)) {
    return at::linalg_solve_triangular(out, at::eye(n, x.options()), upper);
  }
  // Row-major upper is column-major lower, and the inverse's layout follows.
  const int ni = static_cast<int>(n), lda = std::max(1, ni);
  int info = 0;
  trtri(upper ? "L" : "U", "N", &ni, out.data_ptr<double>(), &lda, &info, 1, 1);
  if (info != 0) return {};
  return out;
}

namespace {

// C (column-major upper = row-major lower) += Aᵀ·A through a syrk of either precision.
template <typename T, typename Syrk>
void syrk_lower_add(Syrk syrk, at::Tensor& c, const at::Tensor& xc) {
  // Row-major X [k, n] is column-major Xᵀ =: A (n×k, lda n), and XᵀX = A·Aᵀ.
  const int n = static_cast<int>(xc.size(1)), k = static_cast<int>(xc.size(0));
  const T one = 1;
  syrk("U", "N", &n, &k, &one, xc.data_ptr<T>(), &n, &one, c.data_ptr<T>(), &n, 1, 1);
}

}  // namespace

bool gram_lower_add_(at::Tensor& c, const at::Tensor& x) {
  static const Dsyrk dsyrk = blas_symbol<Dsyrk>("dsyrk_");
  static const Ssyrk ssyrk = blas_symbol<Ssyrk>("ssyrk_");
  const at::ScalarType dt = c.scalar_type();
  const bool blas = c.device().is_cpu() && x.device().is_cpu() && x.scalar_type() == dt &&
                    c.is_contiguous() && fits_int(x.size(0)) && fits_int(x.size(1)) &&
                    ((dt == at::kDouble && dsyrk) || (dt == at::kFloat && ssyrk));
  if (!blas || x.size(0) == 0) {
    c.addmm_(x.t(), x);
    return false;
  }
  const at::Tensor xc = x.contiguous();
  if (dt == at::kDouble) {
    syrk_lower_add<double>(dsyrk, c, xc);
  } else {
    syrk_lower_add<float>(ssyrk, c, xc);
  }
  return true;
}

at::Tensor gram_minus_identity_lower(const at::Tensor& x) {
  at::Tensor f = -at::eye(x.size(1), x.options());
  // syrk writes the lower triangle only; the strict upper keeps −I's zeros.
  if (!gram_lower_add_(f, x)) f.tril_();
  return f;
}

void symmetric_lower_addmm_(at::Tensor& c, const at::Tensor& y, const at::Tensor& s, double alpha) {
  static const Dsymm symm = blas_symbol<Dsymm>("dsymm_");
  const int64_t m = y.size(0), n = y.size(1);
  if (!symm || !host_double(y) || !host_double(s) || !host_double(c) || !c.is_contiguous() ||
      !fits_int(m) || !fits_int(n)) {
    c.addmm_(y, s.tril() + s.tril(-1).t(), /*beta=*/1, alpha);
    return;
  }
  const at::Tensor yc = y.contiguous(), sc = s.contiguous();
  // Row-major Y·S is column-major (Y·S)ᵀ = S·Yᵀ, and Y's buffer is column-major Yᵀ.
  const int mi = static_cast<int>(n), ni = static_cast<int>(m);
  const double one = 1;
  symm("L", "U", &mi, &ni, &alpha, sc.data_ptr<double>(), &mi, yc.data_ptr<double>(), &mi, &one,
       c.data_ptr<double>(), &mi, 1, 1);
}

}  // namespace rotq
