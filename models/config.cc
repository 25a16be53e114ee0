#include "models/config.h"

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

int64_t ModelConfig::param_count() const {
  const ArchSpec& arch = arch_spec(architecture);
  int64_t per_layer = dim * q_dim() + 2 * dim * kv_dim() + q_dim() * dim  // q, k, v, o
                      + 3 * dim * hidden_dim                               // gate, up, down
                      + 2 * dim;                                           // two RMSNorms
  if (arch.qkv_bias) per_layer += q_dim() + 2 * kv_dim();
  if (arch.qk_norm) per_layer += 2 * head_dim;
  int64_t total = n_layers * per_layer + vocab_size * dim + dim;
  if (!tie_embeddings) total += vocab_size * dim;
  return total;
}

void ModelConfig::validate(const std::string& source) const {
  auto positive = [&](int64_t v, const char* name) {
    require(v > 0, source, ": config field ", name, " = ", v, ", expected a positive integer");
  };
  arch_spec(architecture);  // throws for an unsupported architecture
  positive(dim, "hidden_size (dim)");
  positive(hidden_dim, "intermediate_size (hidden_dim)");
  positive(n_layers, "num_hidden_layers (n_layers)");
  positive(n_heads, "num_attention_heads (n_heads)");
  positive(n_kv_heads, "num_key_value_heads (n_kv_heads)");
  positive(head_dim, "head_dim");
  positive(vocab_size, "vocab_size");
  positive(max_seq_len, "max_position_embeddings (max_seq_len)");
  require(n_heads % n_kv_heads == 0, source, ": num_attention_heads ", n_heads,
          " is not a multiple of num_key_value_heads ", n_kv_heads);
  require(head_dim % 2 == 0, source, ": head_dim ", head_dim, " must be even for RoPE");
  require(rope_theta > 0, source, ": rope_theta ", rope_theta, " must be positive");
  require(norm_eps > 0, source, ": rms_norm_eps ", norm_eps, " must be positive");
  require(rope_scaling.type == "none" || rope_scaling.type == "linear" ||
              rope_scaling.type == "llama3",
          source, ": rope_scaling type ", rope_scaling.type, " unsupported (expected none, linear, llama3)");
  dtype_bytes(dtype);
}

std::string ModelConfig::summary() const {
  std::ostringstream os;
  os << architecture << " dim=" << dim << " hidden=" << hidden_dim << " layers=" << n_layers
     << " heads=" << n_heads << " kv_heads=" << n_kv_heads << " head_dim=" << head_dim
     << " vocab=" << vocab_size << " ctx=" << max_seq_len << " tied=" << (tie_embeddings ? 1 : 0);
  return os.str();
}

}  // namespace rotq
