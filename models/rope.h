// Rotary position embeddings in the rotate-half convention (HF LLaMA): dimension i of a head is
// paired with i + head_dim/2. Angles are computed in float64 and stored in the compute dtype.
#pragma once

#include <ATen/core/Tensor.h>

#include "models/config.h"

namespace rotq {

struct RopeCache {
  at::Tensor cos;  // [max_pos, head_dim/2]
  at::Tensor sin;  // [max_pos, head_dim/2]
  int64_t max_pos() const { return cos.defined() ? cos.size(0) : 0; }
};

// Inverse frequencies theta^(-2i/d), with linear or LLaMA-3.1 ("llama3") scaling applied; float64.
at::Tensor rope_inv_freq(const ModelConfig& cfg);
RopeCache make_rope_cache(const ModelConfig& cfg, int64_t max_pos, at::ScalarType dtype);

// x: [..., T, head_dim] for positions [pos0, pos0 + T); returns the rotated tensor.
at::Tensor apply_rope(const at::Tensor& x, const RopeCache& rope, int64_t pos0 = 0);

}  // namespace rotq
