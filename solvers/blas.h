// Level-3 BLAS products that ATen does not expose (triangular and symmetric), from the BLAS the
// process loaded with LibTorch (OpenBLAS or MKL), looked up at run time. Other devices, dtypes or
// a BLAS without the routine get the plain ATen product: the same values to rounding.
#pragma once

#include <ATen/core/Tensor.h>
#include <dlfcn.h>

namespace rotq {

// A BLAS/LAPACK routine of the library the process loaded with LibTorch, by its Fortran name
// (`dtrmm_`), or nullptr: rotq links none itself, and every caller keeps an ATen fallback.
template <typename F>
F blas_symbol(const char* name) {
  return reinterpret_cast<F>(dlsym(RTLD_DEFAULT, name));
}

// U·E, or Uᵀ·E when `transpose_u`, for an upper-triangular U [m, m] (unit column stride, any row
// stride: a block of a larger triangle) and E [m, n]: half a GEMM's FLOPs in float64 on a CPU.
// Only U's upper triangle is read.
at::Tensor upper_triangular_times(const at::Tensor& u, const at::Tensor& e,
                                  bool transpose_u = false);

// op(U)⁻¹·E (`left`) or E·op(U)⁻¹, op(U) = U or Uᵀ (`transpose_u`), for an upper-triangular U
// [m, m] (unit column stride, any row stride) and E: a triangular solve (dtrsm) in float64 on a
// CPU, without ATen's copies to column-major layout. Only U's upper triangle is read.
at::Tensor upper_triangular_solve(const at::Tensor& u, const at::Tensor& e, bool transpose_u,
                                  bool left);

// The inverse of a triangular X [n, n] (`upper` or lower; the other triangle is not read), or
// undefined when X has a zero on its diagonal: dtrtri (n³/3 FLOPs) in float64 on a CPU.
at::Tensor triangular_inverse(const at::Tensor& x, bool upper);

// The lower triangle of XᵀX − I for a square X [n, n] (the strict upper triangle is zero): half a
// GEMM's FLOPs in float64 on a CPU (dsyrk). Pairs with symmetric_lower_addmm_.
at::Tensor gram_minus_identity_lower(const at::Tensor& x);

// C's lower triangle += XᵀX for X [k, n] and a contiguous C [n, n] of X's dtype: half a GEMM's
// FLOPs (ssyrk/dsyrk) on a CPU in float32 or float64; true when only the lower triangle was
// written. Otherwise (other devices or dtypes) the whole C += XᵀX, and false.
bool gram_lower_add_(at::Tensor& c, const at::Tensor& x);

// C += alpha·Y·S for a symmetric S [n, n] given by its lower triangle (as gram_minus_identity_lower
// returns it; the upper is not read) and Y, C [m, n] (C contiguous): dsymm in float64 on a CPU.
void symmetric_lower_addmm_(at::Tensor& c, const at::Tensor& y, const at::Tensor& s, double alpha);

}  // namespace rotq
