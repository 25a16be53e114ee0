#include "runner/dist/device.h"

#include <ATen/ATen.h>

#include "runner/dist/comm.h"
#include "solvers/error.h"
#include "solvers/parse.h"

namespace rotq {

at::Device resolve_device(const std::string& name) {
  if (name == "cpu") return at::Device(at::kCPU);
  require(name == "cuda" || name.rfind("cuda:", 0) == 0, "--device ", name,
          ": expected cpu, cuda or cuda:N");
  require(at::hasCUDA(), "--device ", name,
          ": this rotq's LibTorch has no CUDA (or no GPU is visible); build against a CUDA "
          "LibTorch (README: GPU build) or use --device cpu");
  const int gpus = static_cast<int>(at::getNumGPUs());
  require(gpus > 0, "--device ", name, ": no GPU is visible");
  int index = local_rank_from_env() % gpus;
  if (name != "cuda") {
    const std::string digits = name.substr(5);
    const std::optional<int64_t> n = parse_integer(digits);
    require(n && digits.find_first_not_of("0123456789") == std::string::npos, "--device ", name,
            ": expected cuda:N with N a GPU index");
    require(*n < gpus, "--device ", name, ": only ", gpus, " GPU(s) are visible");
    index = static_cast<int>(*n);
  }
  return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(index));
}

void sync_device(at::Device device) {
  if (device.is_cpu()) return;
  // A copy to the host waits for the stream's queued work (rotq queues all on the default one).
  at::zeros({1}, at::TensorOptions().device(device)).cpu();
}

std::string device_description(at::Device device) { return device.str(); }

}  // namespace rotq
