// Weights of a LLaMA-family model as plain tensors (llama2.c's TransformerWeights, on ATen).
// Linear weights are [out, in] (y = x Wᵀ), the HF layout. q/k rows are in the rotate-half RoPE
// order of HF checkpoints; the llama2.c reader converts its interleaved order on load.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <string>
#include <vector>

#include "models/arch.h"
#include "models/config.h"

namespace rotq {

struct LayerWeights {
  std::array<at::Tensor, static_cast<size_t>(LayerTensor::kCount)> tensors;

  at::Tensor& operator[](LayerTensor t) { return tensors[static_cast<size_t>(t)]; }
  const at::Tensor& operator[](LayerTensor t) const { return tensors[static_cast<size_t>(t)]; }
};

struct ModelWeights {
  at::Tensor embed;       // [vocab, dim]
  at::Tensor final_norm;  // [dim]
  at::Tensor lm_head;     // [vocab, dim]; shares storage with `embed` when tied
  std::vector<LayerWeights> layers;
};

struct Model {
  ModelConfig config;
  ModelWeights weights;
  std::string source;        // where it was loaded from, for messages
  int64_t layer_offset = 0;  // index of weights.layers[0] in the full model (sharded loads)
};

// The shape a layer tensor must have under `cfg` ({} when the architecture lacks it).
// A deep copy (tied embeddings stay tied): e.g. the floating-point reference of a model that is
// about to be quantized in place.
Model clone_model(const Model& m);

std::vector<int64_t> expected_shape(const ModelConfig& cfg, LayerTensor t);
std::vector<int64_t> expected_shape(const ModelConfig& cfg, GlobalTensor t);

// Throws rotq::Error naming `what` (e.g. "model.layers.3.self_attn.q_proj.weight in DIR") when the
// shape differs from `expected`.
void check_shape(const at::Tensor& t, const std::vector<int64_t>& expected,
                 const std::string& what);

// Converts every tensor to `dtype` (no copy when it already is).
void cast_weights(ModelWeights& w, at::ScalarType dtype);
// Moves every tensor to `device` (tied embeddings stay tied). Compute follows the weights: every
// stage allocates its work tensors on model_device().
void move_weights(ModelWeights& w, at::Device device);
// The device of the model's tensors (the first defined one; CPU for an empty model).
at::Device model_device(const Model& m);

// "float32" -> at::kFloat etc.; throws on unknown names.
at::ScalarType scalar_type_from_name(const std::string& name);
std::string scalar_type_name(at::ScalarType t);

}  // namespace rotq
