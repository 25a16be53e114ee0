#include "models/arch.h"

#include "solvers/error.h"

namespace rotq {
namespace {

struct LayerTensorInfo {
  LayerTensor id;
  const char* key;
  const char* hf_suffix;
};

// Order matches the LayerTensor enum.
const LayerTensorInfo kLayerTensors[] = {
    {LayerTensor::kAttnNorm, "attn_norm", "input_layernorm.weight"},
    {LayerTensor::kWq, "wq", "self_attn.q_proj.weight"},
    {LayerTensor::kWk, "wk", "self_attn.k_proj.weight"},
    {LayerTensor::kWv, "wv", "self_attn.v_proj.weight"},
    {LayerTensor::kWo, "wo", "self_attn.o_proj.weight"},
    {LayerTensor::kBq, "bq", "self_attn.q_proj.bias"},
    {LayerTensor::kBk, "bk", "self_attn.k_proj.bias"},
    {LayerTensor::kBv, "bv", "self_attn.v_proj.bias"},
    {LayerTensor::kBo, "bo", "self_attn.o_proj.bias"},
    {LayerTensor::kQNorm, "q_norm", "self_attn.q_norm.weight"},
    {LayerTensor::kKNorm, "k_norm", "self_attn.k_norm.weight"},
    {LayerTensor::kFfnNorm, "ffn_norm", "post_attention_layernorm.weight"},
    {LayerTensor::kWGate, "w_gate", "mlp.gate_proj.weight"},
    {LayerTensor::kWUp, "w_up", "mlp.up_proj.weight"},
    {LayerTensor::kWDown, "w_down", "mlp.down_proj.weight"},
    {LayerTensor::kBGate, "b_gate", "mlp.gate_proj.bias"},
    {LayerTensor::kBUp, "b_up", "mlp.up_proj.bias"},
    {LayerTensor::kBDown, "b_down", "mlp.down_proj.bias"},
};

}  // namespace

const std::vector<ArchSpec>& supported_archs() {
  static const std::vector<ArchSpec> kArchs = {
      // name, family, qkv_bias, qk_norm, attention_bias, mlp_bias, sliding_window
      {"LlamaForCausalLM", "llama", false, false, true, true, false},
      {"MistralForCausalLM", "mistral", false, false, false, false, true},
      {"Qwen2ForCausalLM", "qwen2", true, false, false, false, true},
      {"Qwen3ForCausalLM", "qwen3", false, true, true, false, true},
  };
  return kArchs;
}

const ArchSpec& arch_spec(const std::string& hf_name) {
  std::string names;
  for (const ArchSpec& a : supported_archs()) {
    if (hf_name == a.hf_name) return a;
    names += names.empty() ? "" : ", ";
    names += a.hf_name;
  }
  fail("unsupported architecture '", hf_name, "' (supported: ", names, ")");
}

bool has_tensor(const ModelConfig& c, LayerTensor t) {
  const ArchSpec& arch = arch_spec(c.architecture);
  switch (t) {
    case LayerTensor::kBq:
    case LayerTensor::kBk:
    case LayerTensor::kBv:
      return arch.qkv_bias || c.qkv_bias;
    case LayerTensor::kBo:
      return c.o_bias;
    case LayerTensor::kBGate:
    case LayerTensor::kBUp:
    case LayerTensor::kBDown:
      return c.mlp_bias;
    case LayerTensor::kQNorm:
    case LayerTensor::kKNorm:
      return arch.qk_norm;
    default:
      return true;
  }
}

std::string hf_layer_tensor_name(LayerTensor t, int64_t layer) {
  return "model.layers." + std::to_string(layer) + "." +
         kLayerTensors[static_cast<int>(t)].hf_suffix;
}

std::string hf_global_tensor_name(GlobalTensor t) {
  switch (t) {
    case GlobalTensor::kEmbed:
      return "model.embed_tokens.weight";
    case GlobalTensor::kFinalNorm:
      return "model.norm.weight";
    case GlobalTensor::kLmHead:
      return "lm_head.weight";
  }
  return "";
}

const char* layer_tensor_key(LayerTensor t) { return kLayerTensors[static_cast<int>(t)].key; }

}  // namespace rotq
