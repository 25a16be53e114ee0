// OptRot's bfloat16 gradient sums Σ_k α_k·A_kᵀ·Y_k over a step's terms (Y_k the rounded cube). As
// ATen ops each term is a GEMM that writes A_kᵀY_k in float32 and an add that reads it back with
// the running sum and writes the sum (four C×C float32 passes per term; ATen's bfloat16 GEMM with
// float32 results takes no float32 addend). cuBLAS's GemmEx adds in the GEMM's epilogue,
// acc ← α·AᵀY + β·acc: two passes (224 terms of 4096×4096 per LLaMA-2-7B step).
#pragma once

#include <cstdint>

namespace rotq::detail {

// acc ← α·aᵀ·y + β·acc as the column-major GEMM C ← α·op(A)·op(B) + β·C that BLAS and cuBLAS
// compute: acc's row-major storage read column-major is accᵀ, y's is yᵀ [c, m] (A, not
// transposed, lda = c), and accᵀ = yᵀ·a. a's storage read column-major is aᵀ [c, m] with
// leading dimension ld when a is row-major (B transposed back), or a [m, c] itself when a is
// column-major. Host arithmetic: the CPU test runs the same arguments through sgemm.
struct AccumulateGemm {
  bool transpose_b = false;
  int64_t m = 0, n = 0, k = 0, lda = 0, ldb = 0, ldc = 0;
};
inline AccumulateGemm accumulate_gemm(bool a_columns_contiguous, int64_t ld, int64_t m, int64_t c) {
  return {!a_columns_contiguous, c, c, m, c, ld, c};
}

// acc ← alpha·aᵀ·y + beta·acc on the device: acc [c, c] float32 row-major contiguous; y [m, c]
// bfloat16 (raw 16-bit values) row-major contiguous; a [m, c] bfloat16 stored either row-major
// with row stride `ld` (a_columns_contiguous = false) or column-major with column stride `ld`
// (true: the transpose of a contiguous [c, m] matrix). Products summed in float32 (tensor cores).
// Runs on the legacy default stream (rotq's ATen work runs there) through a cuBLAS handle of this
// library's own per device; raises rotq::Error on any cuBLAS failure.
void gemm_bf16_accumulate_cuda(const uint16_t* a, bool a_columns_contiguous, int64_t ld,
                               const uint16_t* y, int64_t m, int64_t c, float alpha, float beta,
                               float* acc);

}  // namespace rotq::detail
