#include "models/checkpoint.h"

#include <ATen/ATen.h>

#include <cmath>
#include <filesystem>

#include "models/base/resources.h"
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

void require_finite(const at::Tensor& t, const std::string& name, const std::string& source) {
  // One float64 sum finds any NaN or Inf without a mask as large as the tensor: finite float32
  // or bfloat16 values cannot overflow a float64 sum.
  if (t.numel() == 0 || std::isfinite(t.sum(at::kDouble).item<double>())) return;
  const at::Tensor flat = t.reshape({-1});
  const int64_t bad = at::logical_not(at::isfinite(flat)).nonzero()[0][0].item<int64_t>();
  const double v = flat[bad].item<double>();
  fail(source, ": tensor ", name, " holds ", std::isnan(v) ? "NaN" : "Inf", " (element ", bad,
       " of ", t.numel(), "); the checkpoint is corrupt");
}

// The weights this process is about to hold, against the machine's memory (before any of it is
// allocated).
void require_weights_fit(const ModelConfig& c, const LoadOptions& opts, int64_t layers,
                         const std::string& source) {
  const double per_layer =
      static_cast<double>(c.param_count() - c.vocab_size * c.dim * (c.tie_embeddings ? 1 : 2) -
                          c.dim) /
      static_cast<double>(c.n_layers);
  double params = per_layer * static_cast<double>(layers);
  if (opts.embed) params += static_cast<double>(c.vocab_size) * c.dim;
  if (opts.head && !(c.tie_embeddings && opts.embed))
    params += static_cast<double>(c.vocab_size) * c.dim;
  const double bytes = params * static_cast<double>(at::elementSize(opts.dtype));
  require_memory(bytes,
                 "loading " + source + " (" + std::to_string(layers) + " layers in " +
                     std::string(c10::toString(opts.dtype)) + ")",
                 "use --dtype bfloat16, or --placement layers over more ranks");
}

LayerWeights read_layer(CheckpointReader& reader, int64_t layer, at::ScalarType dtype) {
  LayerWeights lw;
  for (size_t i = 0; i < lw.tensors.size(); ++i) {
    const LayerTensor which = static_cast<LayerTensor>(i);
    at::Tensor t = reader.layer_tensor(layer, which);
    if (!t.defined()) continue;
    // Owned copies: later stages (fusion, quantization) modify weights in place, and the
    // reader's tensors may be read-only views of a memory mapping.
    lw.tensors[i] = t.to(dtype, /*non_blocking=*/false, /*copy=*/true);
    require_finite(lw.tensors[i], hf_layer_tensor_name(which, layer), reader.source());
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
  require_weights_fit(m.config, opts, end - opts.layer_begin, reader.source());
  auto owned = [&](GlobalTensor g) {
    at::Tensor t = reader.global_tensor(g).to(opts.dtype, false, true);
    require_finite(t, hf_global_tensor_name(g), reader.source());
    return t;
  };
  if (opts.embed) m.weights.embed = owned(GlobalTensor::kEmbed);
  if (opts.head) {
    m.weights.final_norm = owned(GlobalTensor::kFinalNorm);
    if (m.config.tie_embeddings && opts.embed) {
      m.weights.lm_head = m.weights.embed;
    } else {  // a tied reader returns the embedding for kLmHead
      m.weights.lm_head = owned(GlobalTensor::kLmHead);
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
