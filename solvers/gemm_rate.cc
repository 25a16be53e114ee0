#include "solvers/gemm_rate.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>

namespace rotq {

GemmRate measure_gemm_rate(int64_t n, at::ScalarType dtype, int reps, at::Device device) {
  const auto opts = at::TensorOptions().dtype(dtype).device(device);
  at::Tensor a = at::randn({n, n}, opts);
  at::Tensor b = at::randn({n, n}, opts);
  at::Tensor c = at::empty({n, n}, opts);
  // Reading one element back waits for the queued work (a no-op wait on CPU).
  const auto drain = [&] { c[0][0].item<double>(); };
  at::mm_out(c, a, b);  // warm-up: thread pool, page faults, GPU kernels
  drain();
  GemmRate r;
  r.n = n;
  r.seconds = 1e30;
  for (int i = 0; i < reps; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    at::mm_out(c, a, b);
    drain();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    r.seconds = std::min(r.seconds, s);
  }
  r.gflops = 2.0 * n * n * static_cast<double>(n) / r.seconds / 1e9;
  return r;
}

}  // namespace rotq
