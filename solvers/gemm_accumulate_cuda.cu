#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <dlfcn.h>

#include <climits>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>

#include "solvers/error.h"
#include "solvers/gemm_accumulate_cuda.h"

namespace rotq::detail {
namespace {

// The three cuBLAS entry points, from the libcublas of this CUDA major version that the process
// has (LibTorch's, on a GPU run) or opens now. Opened, not linked: loading cuBLAS costs ~0.5 s, and
// most rotq processes (CPU runs, tests) never call it.
struct Cublas {
  decltype(&cublasCreate_v2) create = nullptr;
  // The C entry point (cublas_api.h also declares a C++ overload taking cudaDataType).
  using GemmEx = cublasStatus_t (*)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int,
                                    int, const void*, const void*, cudaDataType, int, const void*,
                                    cudaDataType, int, const void*, void*, cudaDataType, int,
                                    cublasComputeType_t, cublasGemmAlgo_t);
  GemmEx gemm_ex = nullptr;
  decltype(&cublasGetStatusString) status_string = nullptr;
};

const Cublas& cublas() {
  static const Cublas api = [] {
    const std::string soname = "libcublas.so." + std::to_string(CUBLAS_VER_MAJOR);
    void* lib = dlopen(soname.c_str(), RTLD_NOW | RTLD_NOLOAD);
    if (!lib) lib = dlopen(soname.c_str(), RTLD_NOW | RTLD_LOCAL);
    require(lib != nullptr, "gemm_bf16_accumulate_cuda: cannot open ", soname, ": ", dlerror());
    Cublas c;
    c.create = reinterpret_cast<decltype(c.create)>(dlsym(lib, "cublasCreate_v2"));
    c.gemm_ex = reinterpret_cast<decltype(c.gemm_ex)>(dlsym(lib, "cublasGemmEx"));
    c.status_string =
        reinterpret_cast<decltype(c.status_string)>(dlsym(lib, "cublasGetStatusString"));
    require(c.create && c.gemm_ex && c.status_string, "gemm_bf16_accumulate_cuda: ", soname,
            " lacks cublasCreate_v2, cublasGemmEx or cublasGetStatusString");
    return c;
  }();
  return api;
}

// One handle per device, created on first use and kept for the process (OptRot calls this hundreds
// of times per step). Its stream is the legacy default stream, the one ATen's work and rotq's
// kernels run on.
cublasHandle_t handle_for_current_device() {
  static std::mutex mu;
  static std::map<int, cublasHandle_t> handles;
  int device = 0;
  const cudaError_t e = cudaGetDevice(&device);
  require(e == cudaSuccess,
          "gemm_bf16_accumulate_cuda: no current device: ", cudaGetErrorString(e));
  const std::lock_guard<std::mutex> lock(mu);
  auto it = handles.find(device);
  if (it != handles.end()) return it->second;
  cublasHandle_t h = nullptr;
  const cublasStatus_t s = cublas().create(&h);
  require(s == CUBLAS_STATUS_SUCCESS, "gemm_bf16_accumulate_cuda: cublasCreate failed on device ",
          device, ": ", cublas().status_string(s));
  handles.emplace(device, h);
  return h;
}

}  // namespace

void gemm_bf16_accumulate_cuda(const uint16_t* a, bool a_columns_contiguous, int64_t ld,
                               const uint16_t* y, int64_t m, int64_t c, float alpha, float beta,
                               float* acc) {
  require(m >= 0 && c >= 0 && m <= INT_MAX && c <= INT_MAX && ld <= INT_MAX,
          "gemm_bf16_accumulate_cuda: sizes m = ", m, ", c = ", c, ", ld = ", ld,
          " beyond cuBLAS's int range");
  if (c == 0) return;
  const AccumulateGemm g = accumulate_gemm(a_columns_contiguous, ld, m, c);
  const auto i = [](int64_t v) { return static_cast<int>(v); };
  const cublasStatus_t s = cublas().gemm_ex(
      handle_for_current_device(), CUBLAS_OP_N, g.transpose_b ? CUBLAS_OP_T : CUBLAS_OP_N, i(g.m),
      i(g.n), i(g.k), &alpha, y, CUDA_R_16BF, i(g.lda), a, CUDA_R_16BF, i(g.ldb), &beta, acc,
      CUDA_R_32F, i(g.ldc), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  require(s == CUBLAS_STATUS_SUCCESS, "gemm_bf16_accumulate_cuda: cublasGemmEx failed (m = ", m,
          ", c = ", c, "): ", cublas().status_string(s));
}

}  // namespace rotq::detail
