#include <cuda_runtime.h>

#include "solvers/error.h"
#include "solvers/gptq_cuda.h"
#include "solvers/gptq_row.h"

namespace rotq::detail {
namespace {

// Shared memory per block kept under the 48 KiB that needs no opt-in.
constexpr int64_t kSharedBytes = 48 * 1024;

// kStaged: the row's block columns are copied to shared memory, laid out [column][thread] so that
// a warp's accesses fall in distinct banks; each thread touches only its own slots, so no
// barrier is needed. Otherwise the row program runs on global memory (blocks too wide to stage).
template <typename T, bool kStaged>
__global__ void gptq_block_kernel(GptqBlockDevice<T> b, GptqRowShared<T> shared) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= b.ld) return;
  T* col = b.wt + b.i1 * b.ld + r;
  if constexpr (kStaged) {
    extern __shared__ __align__(16) unsigned char smem[];
    const int64_t nt = blockDim.x;
    T* tile = reinterpret_cast<T*>(smem) + threadIdx.x;
    for (int64_t k = 0; k < b.count; ++k) tile[k * nt] = col[k * b.ld];
    gptq_row(tile, nt, b.err + r, b.ld, b.scale + r, b.zero + r, b.p_stride, shared);
    for (int64_t k = 0; k < b.count; ++k) col[k * b.ld] = tile[k * nt];
  } else {
    gptq_row(col, b.ld, b.err + r, b.ld, b.scale + r, b.zero + r, b.p_stride, shared);
  }
}

template <typename T>
void launch(const GptqBlockDevice<T>& b) {
  require(b.count > 0 && b.ld > 0, "gptq_block_cuda: empty block (", b.count, " columns, ", b.ld,
          " rows)");
  GptqRowShared<T> shared;
  shared.count = b.count;
  shared.u = b.u + b.i1 * b.u_ld + b.i1;
  shared.u_ld = b.u_ld;
  shared.d = b.d;
  shared.symmetric = b.symmetric;
  shared.minq = b.minq;
  shared.maxq = b.maxq;
  // The widest CTA (≤ 64 threads) whose staged tile fits; 64 rather than more keeps enough CTAs
  // for all SMs at 4096 rows.
  int64_t threads = 64;
  while (threads > 32 && threads * b.count * static_cast<int64_t>(sizeof(T)) > kSharedBytes)
    threads /= 2;
  const int64_t bytes = threads * b.count * static_cast<int64_t>(sizeof(T));
  const bool staged = bytes <= kSharedBytes;
  if (!staged) threads = 128;
  const auto grid = static_cast<unsigned>((b.ld + threads - 1) / threads);
  if (staged) {
    gptq_block_kernel<T, true><<<grid, static_cast<unsigned>(threads), static_cast<size_t>(bytes),
                                 cudaStream_t{nullptr}>>>(b, shared);
  } else {
    gptq_block_kernel<T, false>
        <<<grid, static_cast<unsigned>(threads), 0, cudaStream_t{nullptr}>>>(b, shared);
  }
  const cudaError_t e = cudaGetLastError();
  require(e == cudaSuccess, "gptq_block_cuda: kernel launch failed (", b.count, " columns, ", b.ld,
          " rows): ", cudaGetErrorString(e));
}

}  // namespace

void gptq_block_cuda(const GptqBlockDevice<float>& b) { launch(b); }
void gptq_block_cuda(const GptqBlockDevice<double>& b) { launch(b); }

}  // namespace rotq::detail
