// Host-side data parallelism for rotq's own loops (the MSE clip search, GPTQ's column loop).
#pragma once

#include <cstdint>
#include <functional>

namespace rotq {

// Runs fn(begin, end) over [0, n) split into at::get_num_threads() contiguous ranges, each on its
// own thread (the calling thread takes the first); ATen ops inside fn run serially, since the
// workers already share the cores. An exception in any range is rethrown after all have joined.
//
// Plain threads rather than at::parallel_for, so that each range can set its own ATen ops serial:
// an ATen op that forks its own OpenMP team inside a worker costs ~25 µs of futex traffic under
// OMP_WAIT_POLICY=PASSIVE. Not for loops that alternate with BLAS calls: OpenBLAS's own threads
// spin after each call and the two pools then fight for the cores (GPTQ's column loop measured 3×
// slower threaded than serial between its block GEMMs).
void parallel_ranges(int64_t n, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace rotq
