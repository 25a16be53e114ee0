#include "solvers/gemm_rate.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>

namespace rotq {

GemmRate measure_gemm_rate(int64_t n, at::ScalarType dtype, int reps) {
  at::Tensor a = at::randn({n, n}, at::TensorOptions().dtype(dtype));
  at::Tensor b = at::randn({n, n}, at::TensorOptions().dtype(dtype));
  at::Tensor c = at::empty({n, n}, at::TensorOptions().dtype(dtype));
  at::mm_out(c, a, b);  // warm-up: thread pool, page faults
  GemmRate r;
  r.n = n;
  r.seconds = 1e30;
  for (int i = 0; i < reps; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    at::mm_out(c, a, b);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    r.seconds = std::min(r.seconds, s);
  }
  r.gflops = 2.0 * n * n * static_cast<double>(n) / r.seconds / 1e9;
  return r;
}

}  // namespace rotq
