// Synthetic LLaMA-family checkpoints with random weights, for tests and benchmarks where no real
// weights exist. Weights are scaled like a trained model's: linears N(0, 1/fan_in), norms 1,
// embeddings N(0, 1). Every tensor is drawn from its own generator seeded by (seed, tensor name),
// so a tensor's values do not depend on sharding, dtype or which other tensors were drawn.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "models/checkpoint.h"
#include "models/massive.h"

namespace rotq {

// Public shapes of well-known models ("llama-2-7b", "llama-3-8b", "llama-2-70b", ...).
ModelConfig synth_preset(const std::string& name);
std::vector<std::string> synth_preset_names();

// Applies "key=value,key=value" overrides (dim, hidden, layers, heads, kv_heads, head_dim, vocab,
// ctx, theta, eps, tied, arch) to `cfg`; throws naming an unknown key or a bad value.
void apply_dims(ModelConfig& cfg, const std::string& dims);

// The deterministic draw of one named tensor.
at::Tensor synth_tensor(const std::string& name, const std::vector<int64_t>& shape, bool is_norm,
                        uint64_t seed);

// An in-memory synthetic model (for small shapes).
// `massive` (optional) plants massive activations (models/massive.h).
Model make_synthetic_model(const ModelConfig& cfg, uint64_t seed, at::ScalarType dtype = at::kFloat,
                           const MassiveSpec& massive = {});

// Streams a synthetic HF checkpoint to `dir` layer by layer (memory ~ one shard), so that
// 7B/70B-shaped checkpoints can be written without holding the model.
void write_synthetic_checkpoint(const ModelConfig& cfg, uint64_t seed, const std::string& dir,
                                const SaveOptions& opts, const MassiveSpec& massive = {});

}  // namespace rotq
