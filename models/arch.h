// Architectures are data (llama.cpp's llama-arch idea): each supported HF architecture is one row
// saying which optional tensors it has and how its tensors are named. Loaders, the forward pass
// and (later) fusion key off this table instead of branching on model names.
#pragma once

#include <string>
#include <vector>

#include "models/config.h"

namespace rotq {

// The tensors of one decoder layer, by role. Readers consume the residual stream (their input is
// a normalized residual), writers add into it; the rotation fusion relies on this split.
enum class LayerTensor {
  kAttnNorm,
  kWq,
  kWk,
  kWv,
  kWo,
  kBq,
  kBk,
  kBv,
  kBo,
  kQNorm,
  kKNorm,
  kFfnNorm,
  kWGate,
  kWUp,
  kWDown,
  kBGate,
  kBUp,
  kBDown,
  kCount
};

enum class GlobalTensor { kEmbed, kFinalNorm, kLmHead };

struct ArchSpec {
  const char* hf_name;        // config.json "architectures"[0]
  const char* family;         // llama | mistral | qwen2 | qwen3
  bool qkv_bias;              // q/k/v projections always carry biases (Qwen2)
  bool qk_norm;               // per-head RMSNorm on q and k before RoPE (Qwen3)
  bool reads_attention_bias;  // config attention_bias puts biases on q/k/v/o (Llama, Qwen3)
  bool reads_mlp_bias;        // config mlp_bias puts biases on gate/up/down (Llama)
  bool reads_sliding_window;  // sliding_window (Mistral) or use_sliding_window (Qwen2/3)
};

// Throws rotq::Error listing the supported architectures when `hf_name` is not one of them.
const ArchSpec& arch_spec(const std::string& hf_name);
const std::vector<ArchSpec>& supported_archs();

// Whether a layer tensor exists in a model of this config (architecture and bias flags).
bool has_tensor(const ModelConfig& c, LayerTensor t);

// HF checkpoint names ("model.layers.3.self_attn.q_proj.weight").
std::string hf_layer_tensor_name(LayerTensor t, int64_t layer);
std::string hf_global_tensor_name(GlobalTensor t);
const char* layer_tensor_key(LayerTensor t);  // short name: "wq", "attn_norm", ...

}  // namespace rotq
