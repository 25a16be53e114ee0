#include "models/checkpoint.h"

#include <ATen/ATen.h>

#include <filesystem>

#include "solvers/error.h"

namespace rotq {

std::unique_ptr<CheckpointReader> open_checkpoint(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  require(fs::exists(path, ec), path,
          ": no such file or directory (expected a llama2.c .bin "
          "file or an HF directory with config.json)");
  if (fs::is_directory(path, ec)) return open_hf_checkpoint(path);
  return open_llama2c_checkpoint(path);
}

at::Tensor permute_interleaved_to_half(const at::Tensor& w, int64_t n_heads, int64_t head_dim) {
  const int64_t in = w.size(1);
  return w.reshape({n_heads, head_dim / 2, 2, in})
      .transpose(1, 2)
      .reshape({n_heads * head_dim, in});
}

LayerWeights read_layer(CheckpointReader& reader, int64_t layer, at::ScalarType dtype) {
  LayerWeights lw;
  for (size_t i = 0; i < lw.tensors.size(); ++i) {
    at::Tensor t = reader.layer_tensor(layer, static_cast<LayerTensor>(i));
    // Owned copies: later stages (fusion, quantization) modify weights in place, and the
    // reader's tensors may be read-only views of a memory mapping.
    if (t.defined()) lw.tensors[i] = t.to(dtype, /*non_blocking=*/false, /*copy=*/true);
  }
  return lw;
}

Model load_model(CheckpointReader& reader, const LoadOptions& opts) {
  Model m;
  m.config = reader.config();
  m.source = reader.source();
  m.layer_offset = opts.layer_begin;
  const int64_t end = opts.layer_end < 0 ? m.config.n_layers : opts.layer_end;
  require(opts.layer_begin >= 0 && opts.layer_begin <= end && end <= m.config.n_layers,
          reader.source(), ": layer range [", opts.layer_begin, ", ", end, ") outside [0, ",
          m.config.n_layers, "]");
  auto owned = [&](at::Tensor t) { return t.to(opts.dtype, false, true); };
  if (opts.embed) m.weights.embed = owned(reader.global_tensor(GlobalTensor::kEmbed));
  if (opts.head) {
    m.weights.final_norm = owned(reader.global_tensor(GlobalTensor::kFinalNorm));
    if (m.config.tie_embeddings && opts.embed) {
      m.weights.lm_head = m.weights.embed;
    } else {  // a tied reader returns the embedding for kLmHead
      m.weights.lm_head = owned(reader.global_tensor(GlobalTensor::kLmHead));
    }
  }
  for (int64_t l = opts.layer_begin; l < end; ++l) {
    m.weights.layers.push_back(read_layer(reader, l, opts.dtype));
  }
  return m;
}

ModelConfig read_model_config(const std::string& path) {
  namespace fs = std::filesystem;
  require(fs::exists(path), path,
          ": no such file or directory (expected a config.json, an HF "
          "directory or a llama2.c .bin file)");
  if (fs::is_directory(path)) {
    const fs::path cfg = fs::path(path) / "config.json";
    require(fs::exists(cfg), path, ": no config.json (expected an HF checkpoint directory)");
    return read_hf_config(cfg.string());
  }
  if (fs::path(path).extension() == ".json") return read_hf_config(path);
  return open_checkpoint(path)->config();
}

Model load_model(const std::string& path, const LoadOptions& opts) {
  auto reader = open_checkpoint(path);
  return load_model(*reader, opts);
}

}  // namespace rotq
