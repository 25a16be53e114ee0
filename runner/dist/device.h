// The compute device of a command (--device): CPU, or the rank's GPU when LibTorch has CUDA.
// Weights are moved there after loading; every stage then allocates on the weights' device.
#pragma once

#include <c10/core/Device.h>

#include <string>

namespace rotq {

// "cpu"; "cuda" (the GPU of this rank: local rank modulo the visible GPUs, as the NCCL backend
// picks it); "cuda:N". Throws rotq::Error when LibTorch was built without CUDA or sees no GPU.
at::Device resolve_device(const std::string& name);

// Waits for the work queued on `device` (for stage timings; a no-op on CPU).
void sync_device(at::Device device);

// "NVIDIA H200 (cuda:0)" or "cpu", for records.
std::string device_description(at::Device device);

}  // namespace rotq
