// TF32 tensor cores for float32 GEMMs on CUDA, for one scope. LibTorch keeps them off by default
// (float32 products are full float32); an optimizer that asks for them turns them on for its own
// products only and restores the previous setting, so the Hessians, GPTQ and the model's forward
// keep full float32. CPUs have no TF32: there the scope changes nothing.
#pragma once

#include <ATen/Context.h>

namespace rotq {

class Tf32Scope {
 public:
  explicit Tf32Scope(bool on) : previous_(at::globalContext().allowTF32CuBLAS()), set_(on) {
    if (set_) at::globalContext().setAllowTF32CuBLAS(true);
  }
  ~Tf32Scope() {
    if (set_) at::globalContext().setAllowTF32CuBLAS(previous_);
  }
  Tf32Scope(const Tf32Scope&) = delete;
  Tf32Scope& operator=(const Tf32Scope&) = delete;

 private:
  bool previous_;
  bool set_;
};

}  // namespace rotq
