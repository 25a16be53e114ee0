// The compute device of a command (--device): CPU, or the rank's GPU when LibTorch has CUDA.
// Weights are moved there after loading; every stage then allocates on the weights' device.
#pragma once

#include <c10/core/Device.h>

#include <chrono>
#include <string>

namespace rotq {

// "cpu"; "cuda" (the GPU of this rank: local rank modulo the visible GPUs, as the NCCL backend
// picks it); "cuda:N". Throws rotq::Error when LibTorch was built without CUDA or sees no GPU.
at::Device resolve_device(const std::string& name);

// Waits for the work queued on `device` (for stage timings; a no-op on CPU).
void sync_device(at::Device device);

// Wall seconds of f() on `device`, its queue drained before and after (GPU work is asynchronous).
template <class F>
double timed_on(at::Device device, F&& f) {
  sync_device(device);
  const auto t0 = std::chrono::steady_clock::now();
  f();
  sync_device(device);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// "NVIDIA H200 (cuda:0)" or "cpu", for records.
std::string device_description(at::Device device);

}  // namespace rotq
