// Which implementation a solver kernel takes. The hot loops of the Hadamard butterfly, the
// quantizer's per-row parameters and GPTQ's columns are hand-written over host memory; tensors on
// a GPU take an ATen-only path instead, except GPTQ's column loop, which CUDA builds run as one
// kernel per block (gptq_cuda.cu). Tests force the ATen-only path on CPU to check it against the
// host loops without a GPU.
#pragma once

#include <ATen/core/Tensor.h>

namespace rotq {

// True when `x` must (not on the CPU) or is asked to (force_aten_kernels) use the ATen-only path.
bool use_aten_kernels(const at::Tensor& x);

// Process-wide switch for tests; off by default. On a GPU it also turns off rotq's own CUDA
// kernels (gptq_cuda.cu), so that tests can compare them with the ATen formulation.
void force_aten_kernels(bool on);
bool aten_kernels_forced();

}  // namespace rotq
