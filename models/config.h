// ModelConfig: the hyperparameters of a LLaMA-family decoder, independent of the file format that
// supplied them. Kept free of LibTorch so that planning tools can use it on any machine.
#pragma once

#include <cstdint>
#include <string>

namespace rotq {

// LLaMA-3.1-style frequency-dependent RoPE scaling ("rope_type": "llama3"), or linear scaling.
struct RopeScaling {
  std::string type = "none";  // none | linear | llama3
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position = 8192;
};

struct ModelConfig {
  std::string architecture = "LlamaForCausalLM";  // key into the architecture table (arch.h)
  int64_t dim = 0;                                // hidden_size: width of the residual stream
  int64_t hidden_dim = 0;                         // intermediate_size: width of the SwiGLU MLP
  int64_t n_layers = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;  // from the checkpoint; not always dim / n_heads (Qwen3)
  int64_t vocab_size = 0;
  int64_t max_seq_len = 0;  // max_position_embeddings
  double rope_theta = 10000.0;
  double norm_eps = 1e-5;
  RopeScaling rope_scaling;
  bool tie_embeddings = false;
  // Biases beyond the architecture's own (Qwen2's q/k/v): Llama's and Qwen3's attention_bias puts
  // them on q/k/v and o_proj, Llama's mlp_bias on gate/up/down_proj.
  bool qkv_bias = false;
  bool o_bias = false;
  bool mlp_bias = false;
  std::string hidden_act =
      "silu";  // the MLP's gate activation: silu | gelu | gelu_pytorch_tanh | relu
  // Attention window of Mistral / Qwen sliding-window configs (0: full attention). rotq computes
  // full causal attention, which equals it only for sequences no longer than the window: longer
  // ones are refused (Transformer::layer_forward).
  int64_t sliding_window = 0;
  std::string dtype = "float32";  // storage dtype of the checkpoint: float32 | float16 | bfloat16
  int32_t bos_id = 1;
  int32_t eos_id = 2;
  // Online Hadamards that a rotated checkpoint needs at run time, because their inverse was fused
  // into the weights (R4 into down_proj) or they must act on both q and k (R3). Stored in
  // config.json as "rotq_online_hadamard": {"qk": bool, "down": bool}.
  bool online_hadamard_qk = false;
  bool online_hadamard_down = false;

  int64_t q_dim() const { return n_heads * head_dim; }
  int64_t kv_dim() const { return n_kv_heads * head_dim; }
  int64_t param_count() const;  // all weights, counting a tied embedding once
  // Throws rotq::Error naming the first inconsistent field (`source` names the file).
  void validate(const std::string& source) const;
  std::string summary() const;  // one line: dims, heads, vocab
};

// The activations hidden_act may name (transformers' ACT2FN keys rotq computes).
bool is_supported_activation(const std::string& name);

// Bytes per element of a storage dtype name ("float32" -> 4); throws on an unknown name.
int64_t dtype_bytes(const std::string& dtype);

}  // namespace rotq
