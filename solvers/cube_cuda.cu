#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "solvers/cube_cuda.h"
#include "solvers/error.h"

namespace rotq::detail {
namespace {

// Four elements per thread and iteration where x and y are aligned for 16- and 8-byte accesses
// (an ATen allocation is), the remainder one by one.
__global__ void cube_to_bf16_kernel(const float* __restrict__ x, __nv_bfloat16* __restrict__ y,
                                    int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t quads = n / 4;
  const auto* x4 = reinterpret_cast<const float4*>(x);
  auto* y4 = reinterpret_cast<__nv_bfloat162*>(y);
  for (int64_t i = first; i < quads; i += stride) {
    const float4 v = x4[i];
    y4[2 * i] = __floats2bfloat162_rn(v.x * v.x * v.x, v.y * v.y * v.y);
    y4[2 * i + 1] = __floats2bfloat162_rn(v.z * v.z * v.z, v.w * v.w * v.w);
  }
  for (int64_t i = 4 * quads + first; i < n; i += stride)
    y[i] = __float2bfloat16_rn(x[i] * x[i] * x[i]);
}

}  // namespace

void cube_to_bf16_cuda(const float* x, uint16_t* y, int64_t n) {
  if (n == 0) return;
  require(reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(y) % 8 == 0,
          "cube_to_bf16_cuda: expected 16-byte aligned input and 8-byte aligned output");
  int device = 0, sms = 0;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  constexpr int kThreads = 256;
  const int64_t want = (n / 4 + kThreads - 1) / kThreads;
  const auto blocks =
      static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(want, 8LL * sms)));
  cube_to_bf16_kernel<<<blocks, kThreads, 0, cudaStream_t{nullptr}>>>(
      x, reinterpret_cast<__nv_bfloat16*>(y), n);
  const cudaError_t e = cudaGetLastError();
  require(e == cudaSuccess, "cube_to_bf16_cuda: kernel launch failed (", n,
          " elements): ", cudaGetErrorString(e));
}

}  // namespace rotq::detail
