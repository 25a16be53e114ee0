// GPTQ's MSE clip search (find_params(mse=True)) for float32 rows, as one fused pass per grid
// point over each row: quantize, error, |error|^2.4 and the row sum without temporaries.
#pragma once

#include <cstdint>

namespace rotq::detail {

// The grid: shrink factors p_i = float(1 - i/grid) for i < steps; candidate i of row r has
//   symmetric:  scale = p_i·hi[r] / maxq, zero = 0,
//   asymmetric: scale = (p_i·hi[r] − p_i·lo[r]) / maxq, zero = round(−p_i·lo[r] / scale),
// and error Σ_c |Q(x[r, c]) − x[r, c]|^2.4 with the same quantizer operations as
// detail::quant_dequant_out. scale/zero [rows] hold the plain parameters on entry and the first
// candidate with the least error, if it is below +inf, on return. Rows are split over threads.
//
// |e|^2.4 is exp(2.4·ln|e|) from Cephes-style float polynomials (≈2 ulp, as Sleef's inside
// ATen): the error sums agree with the reference's torch.pow to ~1e-6 relative, which can only
// swap candidates that tie to that precision. Candidates are first ranked by a cheaper |e|^2.4
// with a proven relative bound, and only those that can still be the least are computed exactly:
// the same result as computing all of them. A candidate's running sum is dropped once it is past
// what can still win (most of the grid gives up after a few chunks).
void mse_search_f32(const float* x, int64_t rows, int64_t cols, const float* lo, const float* hi,
                    bool symmetric, float maxq, int steps, int grid, float* scale, float* zero);

// The same search for float64 rows: the cheap pass in float32 (its bound covers the rounding of
// the row to float32), the surviving candidates in float64.
void mse_search_f64(const double* x, int64_t rows, int64_t cols, const double* lo, const double* hi,
                    bool symmetric, double maxq, int steps, int grid, double* scale, double* zero);

// The search without pruning or giving up: every candidate's exact error (for tests: the pruned
// search returns the same parameters, bit for bit).
void mse_search_f32_exhaustive(const float* x, int64_t rows, int64_t cols, const float* lo,
                               const float* hi, bool symmetric, float maxq, int steps, int grid,
                               float* scale, float* zero);

// |a|^2.4 as the kernel computes it (for tests against std::pow), and the cheap bound it prunes
// candidates with (within 2.5e-4 relative of pow_2_4, zero where it is zero).
float pow_2_4(float a);
float pow_2_4_cheap(float a);

}  // namespace rotq::detail
