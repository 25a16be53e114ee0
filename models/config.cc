#include "models/config.h"

#include <cmath>
#include <sstream>

#include "models/arch.h"
#include "solvers/error.h"

namespace rotq {

int64_t dtype_bytes(const std::string& dtype) {
  if (dtype == "float32") return 4;
  if (dtype == "float16" || dtype == "bfloat16") return 2;
  if (dtype == "float64") return 8;
  fail("dtype ", dtype, ": expected float32, float16, bfloat16 or float64");
}

bool is_supported_activation(const std::string& name) {
  for (const char* a : {"silu", "swish", "gelu", "gelu_pytorch_tanh", "gelu_new", "relu"}) {
    if (name == a) return true;
  }
  return false;
}

int64_t ModelConfig::param_count() const {
  const ArchSpec& arch = arch_spec(architecture);
  int64_t per_layer = dim * q_dim() + 2 * dim * kv_dim() + q_dim() * dim  // q, k, v, o
                      + 3 * dim * hidden_dim                              // gate, up, down
                      + 2 * dim;                                          // two RMSNorms
  if (arch.qkv_bias || qkv_bias) per_layer += q_dim() + 2 * kv_dim();
  if (o_bias) per_layer += dim;
  if (mlp_bias) per_layer += 2 * hidden_dim + dim;
  if (arch.qk_norm) per_layer += 2 * head_dim;
  int64_t total = n_layers * per_layer + vocab_size * dim + dim;
  if (!tie_embeddings) total += vocab_size * dim;
  return total;
}

void ModelConfig::validate(const std::string& source) const {
  // Upper bounds far beyond any released model (LLaMA-3.1-405B: hidden 16384, intermediate 53248,
  // 126 layers, vocabulary 128256; Llama 4: 10M positions), so that a corrupt or hostile config
  // is refused here instead of overflowing a size or asking for terabytes later.
  auto positive = [&](int64_t v, const char* name, int64_t max) {
    require(v > 0, source, ": config field ", name, " = ", v, ", expected a positive integer");
    require(v <= max, source, ": config field ", name, " = ", v, " exceeds ", max,
            " (the largest rotq accepts)");
  };
  const ArchSpec& arch = arch_spec(architecture);  // throws for an unsupported architecture
  require(arch.reads_attention_bias || !o_bias, source, ": ", architecture,
          " has no o_proj bias (attention_bias: true is not part of this architecture)");
  require(arch.reads_attention_bias || arch.qkv_bias || !qkv_bias, source, ": ", architecture,
          " has no q/k/v_proj biases (attention_bias: true is not part of this architecture)");
  require(!arch.reads_attention_bias || qkv_bias == o_bias, source,
          ": attention_bias puts biases on q/k/v and o_proj together in ", architecture);
  require(arch.reads_mlp_bias || !mlp_bias, source, ": ", architecture,
          " has no MLP biases (mlp_bias: true is not part of this architecture)");
  require(is_supported_activation(hidden_act), source, ": hidden_act '", hidden_act,
          "' is not computed by rotq (expected silu, swish, gelu, gelu_pytorch_tanh, gelu_new or "
          "relu)");
  require(sliding_window >= 0, source, ": sliding_window ", sliding_window,
          " must be a positive window or absent");
  require(arch.reads_sliding_window || sliding_window == 0, source, ": ", architecture,
          " has no sliding-window attention (sliding_window ", sliding_window, ")");
  positive(dim, "hidden_size (dim)", int64_t{1} << 17);
  positive(hidden_dim, "intermediate_size (hidden_dim)", int64_t{1} << 20);
  positive(n_layers, "num_hidden_layers (n_layers)", 4096);
  positive(n_heads, "num_attention_heads (n_heads)", 4096);
  positive(n_kv_heads, "num_key_value_heads (n_kv_heads)", 4096);
  positive(head_dim, "head_dim", 4096);
  positive(vocab_size, "vocab_size", int64_t{1} << 24);
  positive(max_seq_len, "max_position_embeddings (max_seq_len)", int64_t{1} << 24);
  require(n_heads % n_kv_heads == 0, source, ": num_attention_heads ", n_heads,
          " is not a multiple of num_key_value_heads ", n_kv_heads);
  require(head_dim % 2 == 0, source, ": head_dim ", head_dim, " must be even for RoPE");
  require(std::isfinite(rope_theta) && rope_theta > 0, source, ": rope_theta ", rope_theta,
          " must be a positive number");
  require(std::isfinite(norm_eps) && norm_eps > 0 && norm_eps < 1, source, ": rms_norm_eps ",
          norm_eps, " must be in (0, 1)");
  require(
      rope_scaling.type == "none" || rope_scaling.type == "linear" || rope_scaling.type == "llama3",
      source, ": rope_scaling type ", rope_scaling.type,
      " unsupported (expected none, linear, llama3)");
  if (rope_scaling.type != "none") {
    const RopeScaling& r = rope_scaling;
    require(std::isfinite(r.factor) && r.factor >= 1, source, ": rope_scaling.factor = ", r.factor,
            ", expected a number >= 1 (a context extension)");
  }
  if (rope_scaling.type == "llama3") {
    const RopeScaling& r = rope_scaling;
    require(std::isfinite(r.low_freq_factor) && r.low_freq_factor > 0 &&
                std::isfinite(r.high_freq_factor) && r.high_freq_factor > r.low_freq_factor,
            source, ": rope_scaling low_freq_factor = ", r.low_freq_factor,
            ", high_freq_factor = ", r.high_freq_factor,
            ": expected 0 < low_freq_factor < high_freq_factor");
    require(r.original_max_position > 0 && r.original_max_position <= (int64_t{1} << 24), source,
            ": rope_scaling.original_max_position_embeddings = ", r.original_max_position,
            ", expected a positive integer");
  }
  dtype_bytes(dtype);
}

std::string ModelConfig::summary() const {
  std::ostringstream os;
  os << architecture << " dim=" << dim << " hidden=" << hidden_dim << " layers=" << n_layers
     << " heads=" << n_heads << " kv_heads=" << n_kv_heads << " head_dim=" << head_dim
     << " vocab=" << vocab_size << " ctx=" << max_seq_len << " tied=" << (tie_embeddings ? 1 : 0);
  if (qkv_bias || o_bias) os << " attention_bias=1";
  if (mlp_bias) os << " mlp_bias=1";
  if (hidden_act != "silu") os << " act=" << hidden_act;
  if (sliding_window > 0) os << " window=" << sliding_window;
  return os.str();
}

}  // namespace rotq
