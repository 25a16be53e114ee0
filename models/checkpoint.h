// Checkpoints: a reader interface over the formats rotq loads (llama2.c .bin, HF directories),
// read lazily tensor by tensor so that a rank can load only its own layers, plus the HF writer.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>

#include "models/weights.h"

namespace rotq {

class CheckpointReader {
 public:
  virtual ~CheckpointReader() = default;
  virtual const ModelConfig& config() const = 0;
  virtual const std::string& source() const = 0;
  virtual std::string format() const = 0;  // "llama2c-v0", "llama2c-v1", "llama2c-v2", "hf"
  // Tensors in their stored dtype (possibly views of a memory mapping), shapes validated; the
  // returned q/k rows are in the rotate-half RoPE order. Undefined when the architecture lacks
  // the tensor. For a tied checkpoint kLmHead returns the embedding.
  virtual at::Tensor global_tensor(GlobalTensor t) = 0;
  virtual at::Tensor layer_tensor(int64_t layer, LayerTensor t) = 0;
  // Tokenizer file that ships with the checkpoint ("" when none).
  virtual std::string bundled_tokenizer() const { return ""; }
};

// Opens a llama2.c .bin file or an HF directory (config.json + safetensors). Throws rotq::Error
// naming the path and the problem.
std::unique_ptr<CheckpointReader> open_checkpoint(const std::string& path);
std::unique_ptr<CheckpointReader> open_llama2c_checkpoint(const std::string& path);
std::unique_ptr<CheckpointReader> open_hf_checkpoint(const std::string& dir);

// The model's config alone: from an HF directory's (or a bare) config.json without touching any
// weights, or from a llama2.c file's header. What `rotq plan` needs to plan a 70B run anywhere.
ModelConfig read_model_config(const std::string& path);
ModelConfig read_hf_config(const std::string& config_json);  // validated

struct LoadOptions {
  at::ScalarType dtype = at::kFloat;  // compute dtype the weights are converted to
  int64_t layer_begin = 0;            // load only layers [layer_begin, layer_end)
  int64_t layer_end = -1;             // -1: through the last layer
  // A pipeline shard holds the embedding only on its first stage and the final norm + lm_head
  // only on its last; the others stay undefined.
  bool embed = true;
  bool head = true;
};

// Reads one layer as owned tensors of `dtype`.
LayerWeights read_layer(CheckpointReader& reader, int64_t layer, at::ScalarType dtype);
Model load_model(CheckpointReader& reader, const LoadOptions& opts = {});
Model load_model(const std::string& path, const LoadOptions& opts = {});

struct SaveOptions {
  std::string dtype = "float32";  // storage dtype: float32 | float16 | bfloat16
  int64_t max_shard_bytes = 0;    // 0: a single model.safetensors; else shards + index.json
};

// Writes an HF directory (config.json, safetensors, index when sharded) that open_hf_checkpoint
// reads back; q/k stay in the rotate-half order, as HF LLaMA checkpoints store them.
void save_hf_checkpoint(const Model& model, const std::string& dir, const SaveOptions& opts = {});

// Writes DIR/config.json in the HF format that open_hf_checkpoint reads.
void write_hf_config(const ModelConfig& cfg, const std::string& dir);

// llama2.c's interleaved RoPE pairs (2i, 2i+1) -> HF rotate-half (i, i + head_dim/2), per head.
at::Tensor permute_interleaved_to_half(const at::Tensor& w, int64_t n_heads, int64_t head_dim);

}  // namespace rotq
