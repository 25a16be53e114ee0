// The machine's measured GEMM rate: the yardstick every rotq benchmark reports its speed against.
#pragma once

#include <ATen/core/ScalarType.h>
#include <c10/core/Device.h>

#include <cstdint>

namespace rotq {

struct GemmRate {
  int64_t n = 0;       // square matrix size
  double seconds = 0;  // best of the timed repetitions
  double gflops = 0;   // 2n³ / seconds / 1e9
};

// Times an n×n×n matmul (after a warm-up) on `device` and returns the best of `reps` runs (a GPU's
// queue is drained before and after each).
GemmRate measure_gemm_rate(int64_t n = 2048, at::ScalarType dtype = at::kFloat, int reps = 3,
                           at::Device device = at::kCPU);

}  // namespace rotq
