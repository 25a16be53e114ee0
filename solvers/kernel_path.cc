#include "solvers/kernel_path.h"

#include <atomic>

namespace rotq {
namespace {

std::atomic<bool>& forced() {
  static std::atomic<bool> flag{false};
  return flag;
}

}  // namespace

bool use_aten_kernels(const at::Tensor& x) { return !x.is_cpu() || forced().load(); }

void force_aten_kernels(bool on) { forced().store(on); }

bool aten_kernels_forced() { return forced().load(); }

}  // namespace rotq
