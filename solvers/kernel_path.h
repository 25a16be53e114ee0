// Which implementation a solver kernel takes. The hot loops of the Hadamard butterfly, the
// quantizer's per-row parameters and GPTQ's columns are hand-written over host memory; tensors on
// a GPU take an ATen-only path instead. Tests force the ATen-only path on CPU to check it against
// the host loops without a GPU.
#pragma once

#include <ATen/core/Tensor.h>

namespace rotq {

// True when `x` must (not on the CPU) or is asked to (force_aten_kernels) use the ATen-only path.
bool use_aten_kernels(const at::Tensor& x);

// Process-wide switch for tests; off by default.
void force_aten_kernels(bool on);

}  // namespace rotq
