// GPTQ's in-block column loop as one CUDA kernel (built with ROTQ_WITH_CUDA): one thread per row
// of W, the row's block columns staged in shared memory. On a GPU the ATen formulation costs ~10
// small kernels per column (the 7B run on an H200 spent most of its 7.35 s per layer there); this
// is one launch per block. The per-element arithmetic is gptq_row.h's, the host kernel's.
#pragma once

#include <cstdint>

namespace rotq::detail {

template <typename T>
struct GptqBlockDevice {
  T* wt = nullptr;  // device: W transposed [cols, ld]; the block is rows i1 .. i1+count of it
  int64_t ld = 0;   // = rows of W
  int64_t i1 = 0, count = 0;
  T* err = nullptr;      // device [count, ld]: the block's scaled errors
  const T* u = nullptr;  // device: upper Cholesky factor of H⁻¹ [cols, u_ld]
  int64_t u_ld = 0;
  const T* d = nullptr;  // device [count]: U[c, c] per column
  // device: column k's params for row r at scale[k·p_stride + r] (p_stride 0: shared by all k)
  const T* scale = nullptr;
  const T* zero = nullptr;
  int64_t p_stride = 0;
  bool symmetric = true;
  T minq = 0, maxq = 0;
};

// Launches on the legacy default stream (rotq's ATen work runs there) and raises rotq::Error on
// a launch failure.
void gptq_block_cuda(const GptqBlockDevice<float>& b);
void gptq_block_cuda(const GptqBlockDevice<double>& b);

}  // namespace rotq::detail
