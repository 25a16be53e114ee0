// NumPy .npy arrays (format versions 1–3, C order, little-endian f4/f8/f2/i8/i4/i2/i1/u1/b1), and
// one tensor read from either a .npy or a .safetensors file: how rotq exchanges weights,
// Hessians, tokens and rotations with other tools (scripts/peer_parity.py).
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

namespace rotq {

// The array in `path` as a CPU tensor (a copy). rotq::Error naming the file for a bad magic or
// header, Fortran order, a big-endian or unsupported dtype, or a size that does not match.
at::Tensor read_npy(const std::string& path);

// Writes a CPU tensor (any dtype above, made contiguous) to `path` atomically, format 1.0.
void write_npy(const std::string& path, const at::Tensor& t);

// `path` ending in .npy: the array; .safetensors: the tensor `name`, or the only tensor when
// `name` is empty. rotq::Error naming the file and what was expected otherwise.
at::Tensor read_tensor_file(const std::string& path, const std::string& name = "");

}  // namespace rotq
