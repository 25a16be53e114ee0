// GPTQ's in-block column loop on the host, fused: for a tile of rows, each column of the block is
// quantized, its error computed and spread over the block's later columns in one pass while the
// tile stays in cache (every row's result depends only on that row and H, so tiles are
// independent).
#pragma once

#include <cstdint>
#include <vector>

namespace rotq::detail {

template <typename T>
struct GptqBlock {
  T* wt = nullptr;       // W transposed [cols, ld]: column c of W is the row wt + c·ld
  int64_t ld = 0;        // = rows of W
  T* err = nullptr;      // [i2 − i1, ld]: the block's scaled errors (w − q) / d
  const T* u = nullptr;  // upper Cholesky factor of H⁻¹ [cols, u_ld]
  int64_t u_ld = 0;
  int64_t i1 = 0, i2 = 0;  // the block's columns
  // Per column of the block: the divisor d = U[c, c] and the rows' quantizer params.
  std::vector<T> d;
  std::vector<const T*> scale, zero;
  bool symmetric = true;
  T minq = 0, maxq = 0;
};

// Quantizes the block's columns in place for every row, writing the errors; the same operations
// per element, in the same order and type, as the reference's column loop (quant_dequant_out, then
// W1[:, j] −= err · U[c, j] for j in (c, i2)).
void gptq_block(const GptqBlock<float>& b);
void gptq_block(const GptqBlock<double>& b);

}  // namespace rotq::detail
