// Host-side data parallelism for rotq's own loops (the MSE clip search, GPTQ's column loop).
#pragma once

#include <cstdint>
#include <functional>

namespace rotq {

// Runs fn(begin, end) over [0, n) split into at::get_num_threads() contiguous ranges, each on its
// own thread (the calling thread takes the first); ATen ops inside fn run serially, since the
// workers already share the cores. An exception in any range is rethrown after all have joined.
//
// at::parallel_for cannot be used here: rotq is compiled without -fopenmp, so its header-inlined
// OpenMP region runs serially (and every ATen op inside it then forks its own team: ~25 µs of
// futex traffic per op under OMP_WAIT_POLICY=PASSIVE).
void parallel_ranges(int64_t n, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace rotq
