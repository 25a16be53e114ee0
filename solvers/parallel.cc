#include "solvers/parallel.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <exception>
#include <thread>
#include <vector>

// libgomp's, found at run time through LibTorch's own dependency on it (weak: rotq does not link
// an OpenMP runtime itself, and without one the call is skipped).
extern "C" void omp_set_num_threads(int) __attribute__((weak));

namespace rotq {
namespace {

void serial_aten_ops_in_this_thread() {
  at::get_num_threads();  // ATen's per-thread lazy init would otherwise undo the next line
  if (omp_set_num_threads) omp_set_num_threads(1);
}

}  // namespace

void parallel_ranges(int64_t n, const std::function<void(int64_t, int64_t)>& fn) {
  const int64_t workers = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n));
  if (workers == 1) {
    fn(0, n);
    return;
  }
  std::vector<std::exception_ptr> errors(workers);
  std::vector<std::thread> threads;
  const int64_t chunk = (n + workers - 1) / workers;
  const auto run = [&](int64_t t) {
    try {
      serial_aten_ops_in_this_thread();
      fn(t * chunk, std::min(n, (t + 1) * chunk));
    } catch (...) {
      errors[t] = std::current_exception();
    }
  };
  for (int64_t t = 1; t < workers; ++t) threads.emplace_back(run, t);
  // The caller's own thread works too; its ATen thread count is restored afterwards.
  const int saved = at::get_num_threads();
  run(0);
  if (omp_set_num_threads) omp_set_num_threads(saved);
  for (auto& th : threads) th.join();
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

}  // namespace rotq
