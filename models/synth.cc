#include "models/synth.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "models/base/files.h"
#include "models/safetensors.h"
#include "solvers/error.h"
#include "solvers/hash.h"
#include "solvers/parse.h"

namespace rotq {
namespace {

// FNV-1a of the tensor name mixed with the seed (splitmix64 finalizer).
uint64_t tensor_seed(uint64_t seed, const std::string& name) {
  const uint64_t h = fnv1a(name);
  uint64_t z = h ^ (seed + 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

ModelConfig base(int64_t dim, int64_t hidden, int64_t layers, int64_t heads, int64_t kv,
                 int64_t vocab, int64_t ctx, double theta, double eps) {
  ModelConfig c;
  c.dim = dim;
  c.hidden_dim = hidden;
  c.n_layers = layers;
  c.n_heads = heads;
  c.n_kv_heads = kv;
  c.head_dim = dim / heads;
  c.vocab_size = vocab;
  c.max_seq_len = ctx;
  c.rope_theta = theta;
  c.norm_eps = eps;
  return c;
}

// The special-token ids of the LLaMA-3 and Qwen vocabularies, as their config.json files give them.
ModelConfig llama3(ModelConfig c) {
  c.bos_id = 128000;  // <|begin_of_text|>
  c.eos_id = 128001;  // <|end_of_text|>
  return c;
}

ModelConfig qwen(ModelConfig c) {
  c.bos_id = 151643;  // <|endoftext|>
  c.eos_id = 151643;
  return c;
}

const std::map<std::string, std::function<ModelConfig()>>& presets() {
  static const std::map<std::string, std::function<ModelConfig()>> kPresets = {
      {"tiny", [] { return base(64, 172, 2, 8, 4, 512, 256, 1e4, 1e-5); }},
      {"100m", [] { return base(768, 2048, 12, 12, 12, 32000, 2048, 1e4, 1e-5); }},
      {"llama-2-7b", [] { return base(4096, 11008, 32, 32, 32, 32000, 4096, 1e4, 1e-5); }},
      {"llama-2-13b", [] { return base(5120, 13824, 40, 40, 40, 32000, 4096, 1e4, 1e-5); }},
      {"llama-2-70b", [] { return base(8192, 28672, 80, 64, 8, 32000, 4096, 1e4, 1e-5); }},
      {"llama-3-8b", [] { return llama3(base(4096, 14336, 32, 32, 8, 128256, 8192, 5e5, 1e-5)); }},
      {"llama-3-70b", [] { return llama3(base(8192, 28672, 80, 64, 8, 128256, 8192, 5e5, 1e-5)); }},
      {"llama-3.1-8b",
       [] {
         ModelConfig c = llama3(base(4096, 14336, 32, 32, 8, 128256, 131072, 5e5, 1e-5));
         c.rope_scaling = {"llama3", 8.0, 1.0, 4.0, 8192};
         return c;
       }},
      {"llama-3.1-70b",
       [] {
         ModelConfig c = llama3(base(8192, 28672, 80, 64, 8, 128256, 131072, 5e5, 1e-5));
         c.rope_scaling = {"llama3", 8.0, 1.0, 4.0, 8192};
         return c;
       }},
      {"llama-3.2-1b",
       [] {
         ModelConfig c = llama3(base(2048, 8192, 16, 32, 8, 128256, 131072, 5e5, 1e-5));
         c.tie_embeddings = true;
         c.rope_scaling = {"llama3", 32.0, 1.0, 4.0, 8192};
         return c;
       }},
      {"mistral-7b",
       [] {
         ModelConfig c = base(4096, 14336, 32, 32, 8, 32000, 32768, 1e4, 1e-5);
         c.architecture = "MistralForCausalLM";
         return c;
       }},
      {"qwen2-7b",
       [] {
         ModelConfig c = qwen(base(3584, 18944, 28, 28, 4, 152064, 32768, 1e6, 1e-6));
         c.architecture = "Qwen2ForCausalLM";
         return c;
       }},
      {"qwen2.5-7b",
       [] {
         ModelConfig c = qwen(base(3584, 18944, 28, 28, 4, 152064, 131072, 1e6, 1e-6));
         c.architecture = "Qwen2ForCausalLM";
         return c;
       }},
      {"qwen2-72b",
       [] {
         ModelConfig c = qwen(base(8192, 29568, 80, 64, 8, 152064, 32768, 1e6, 1e-6));
         c.architecture = "Qwen2ForCausalLM";
         return c;
       }},
      {"qwen3-8b",
       [] {
         ModelConfig c = qwen(base(4096, 12288, 36, 32, 8, 151936, 40960, 1e6, 1e-6));
         c.architecture = "Qwen3ForCausalLM";
         c.head_dim = 128;
         return c;
       }},
  };
  return kPresets;
}

int64_t parse_int(const std::string& key, const std::string& v) {
  const std::optional<int64_t> x = parse_integer(v);
  require(x.has_value(), "--dims ", key, "=", v, ": expected an integer");
  return *x;
}

double parse_double(const std::string& key, const std::string& v) {
  const std::optional<double> x = parse_number(v);
  require(x.has_value(), "--dims ", key, "=", v, ": expected a number");
  return *x;
}

// Names and tensors of one layer / the globals, in checkpoint order.
using Named = std::vector<std::pair<std::string, at::Tensor>>;

Named synth_layer(const ModelConfig& cfg, int64_t l, uint64_t seed, at::ScalarType dt,
                  const MassiveSpec& massive) {
  Named out;
  for (int i = 0; i < static_cast<int>(LayerTensor::kCount); ++i) {
    const LayerTensor t = static_cast<LayerTensor>(i);
    const std::vector<int64_t> shape = expected_shape(cfg, t);
    if (shape.empty()) continue;
    const bool norm = t == LayerTensor::kAttnNorm || t == LayerTensor::kFfnNorm ||
                      t == LayerTensor::kQNorm || t == LayerTensor::kKNorm;
    const std::string name = hf_layer_tensor_name(t, l);
    at::Tensor w = synth_tensor(name, shape, norm, seed);
    // Biases are small, as in trained Qwen2 models.
    for (LayerTensor b : {LayerTensor::kBq, LayerTensor::kBk, LayerTensor::kBv, LayerTensor::kBo,
                          LayerTensor::kBGate, LayerTensor::kBUp, LayerTensor::kBDown}) {
      if (t == b) w.mul_(0.1);
    }
    plant_massive(cfg, massive, seed, name, w);
    out.emplace_back(name, w.to(dt));
  }
  return out;
}

}  // namespace

ModelConfig synth_preset(const std::string& name) {
  auto it = presets().find(name);
  if (it == presets().end()) {
    std::string names;
    for (const auto& kv : presets()) names += (names.empty() ? "" : ", ") + kv.first;
    fail("--like ", name, ": unknown preset (known: ", names, ")");
  }
  return it->second();
}

std::vector<std::string> synth_preset_names() {
  std::vector<std::string> out;
  for (const auto& kv : presets()) out.push_back(kv.first);
  return out;
}

void apply_dims(ModelConfig& c, const std::string& dims) {
  std::stringstream ss(dims);
  std::string item;
  bool head_dim_set = false;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    const size_t eq = item.find('=');
    require(eq != std::string::npos, "--dims ", item, ": expected key=value");
    const std::string k = item.substr(0, eq), v = item.substr(eq + 1);
    if (k == "dim")
      c.dim = parse_int(k, v);
    else if (k == "hidden")
      c.hidden_dim = parse_int(k, v);
    else if (k == "layers")
      c.n_layers = parse_int(k, v);
    else if (k == "heads")
      c.n_heads = parse_int(k, v);
    else if (k == "kv_heads")
      c.n_kv_heads = parse_int(k, v);
    else if (k == "head_dim") {
      c.head_dim = parse_int(k, v);
      head_dim_set = true;
    } else if (k == "vocab")
      c.vocab_size = parse_int(k, v);
    else if (k == "ctx")
      c.max_seq_len = parse_int(k, v);
    else if (k == "theta")
      c.rope_theta = parse_double(k, v);
    else if (k == "eps")
      c.norm_eps = parse_double(k, v);
    else if (k == "tied")
      c.tie_embeddings = parse_int(k, v) != 0;
    else if (k == "arch")
      c.architecture = v;
    else if (k == "attention_bias")
      c.qkv_bias = c.o_bias = parse_int(k, v) != 0;
    else if (k == "mlp_bias")
      c.mlp_bias = parse_int(k, v) != 0;
    else if (k == "act")
      c.hidden_act = v;
    else if (k == "window")
      c.sliding_window = parse_int(k, v);
    else
      fail("--dims ", k,
           ": unknown key (expected dim, hidden, layers, heads, kv_heads, head_dim, vocab, ctx, "
           "theta, eps, tied, arch, attention_bias, mlp_bias, act, window)");
  }
  if (!head_dim_set && c.n_heads > 0 && c.architecture != "Qwen3ForCausalLM") {
    c.head_dim = c.dim / c.n_heads;
  }
  c.validate("--dims");
}

at::Tensor synth_tensor(const std::string& name, const std::vector<int64_t>& shape, bool is_norm,
                        uint64_t seed) {
  if (is_norm) return at::ones(shape, at::kFloat);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(tensor_seed(seed, name));
  const double fan_in = static_cast<double>(shape.back());
  const bool embedding = name.find("embed_tokens") != std::string::npos;
  const double std = embedding ? 1.0 : 1.0 / std::sqrt(fan_in);
  return at::normal(0.0, std, shape, gen, at::TensorOptions().dtype(at::kFloat));
}

void require_massive_fits(const ModelConfig& cfg, const MassiveSpec& massive) {
  if (!massive.enabled) return;
  require(!cfg.tie_embeddings || (massive.logit_scale == 1 && massive.outliers == 0),
          "--massive: logit_scale and outliers need untied embeddings (tied=0)");
  massive_channels(cfg, massive, 0);
  require(massive.layer < cfg.n_layers, "--massive layer=", massive.layer, " but the model has ",
          cfg.n_layers, " layers");
}

Model make_synthetic_model(const ModelConfig& cfg, uint64_t seed, at::ScalarType dtype,
                           const MassiveSpec& massive) {
  cfg.validate("synthetic model");
  require_massive_fits(cfg, massive);
  Model m;
  m.config = cfg;
  m.source = "synthetic(seed=" + std::to_string(seed) + ")";
  auto global = [&](GlobalTensor t, bool norm) {
    const std::string name = hf_global_tensor_name(t);
    at::Tensor w = synth_tensor(name, expected_shape(cfg, t), norm, seed);
    plant_massive(cfg, massive, seed, name, w);
    return w.to(dtype);
  };
  m.weights.embed = global(GlobalTensor::kEmbed, false);
  m.weights.final_norm = global(GlobalTensor::kFinalNorm, true);
  m.weights.lm_head = cfg.tie_embeddings ? m.weights.embed : global(GlobalTensor::kLmHead, false);
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    LayerWeights lw;
    for (auto& [name, t] : synth_layer(cfg, l, seed, dtype, massive)) {
      for (int i = 0; i < static_cast<int>(LayerTensor::kCount); ++i) {
        if (hf_layer_tensor_name(static_cast<LayerTensor>(i), l) == name) lw.tensors[i] = t;
      }
    }
    m.weights.layers.push_back(std::move(lw));
  }
  return m;
}

void write_synthetic_checkpoint(const ModelConfig& cfg, uint64_t seed, const std::string& dir,
                                const SaveOptions& opts, const MassiveSpec& massive) {
  namespace fs = std::filesystem;
  cfg.validate("synthetic model");
  require_massive_fits(cfg, massive);
  const at::ScalarType dt = scalar_type_from_name(opts.dtype);
  fs::create_directories(dir);
  const int64_t shard_limit = opts.max_shard_bytes > 0 ? opts.max_shard_bytes : (int64_t{1} << 62);
  std::vector<Named> shards(1);
  std::vector<std::string> files;
  int64_t bytes = 0, total = 0;
  nlohmann::json weight_map = nlohmann::json::object();
  const std::map<std::string, std::string> meta{{"format", "pt"}, {"producer", "rotq synth"}};
  // Shards are named in a second pass once their number is known; write to temporary names.
  auto flush = [&]() {
    if (shards.back().empty()) return;
    const std::string tmp = "shard-" + std::to_string(files.size()) + ".partial.safetensors";
    write_safetensors((fs::path(dir) / tmp).string(), shards.back(), meta);
    for (auto& nt : shards.back()) weight_map[nt.first] = tmp;
    files.push_back(tmp);
    shards.back().clear();
    bytes = 0;
  };
  auto add = [&](Named tensors) {
    for (auto& nt : tensors) {
      const int64_t nb = nt.second.numel() * nt.second.element_size();
      if (bytes > 0 && bytes + nb > shard_limit) flush();
      shards.back().push_back(std::move(nt));
      bytes += nb;
      total += nb;
    }
  };
  auto global = [&](GlobalTensor t, bool norm) {
    const std::string name = hf_global_tensor_name(t);
    at::Tensor w = synth_tensor(name, expected_shape(cfg, t), norm, seed);
    plant_massive(cfg, massive, seed, name, w);
    return Named{{name, w.to(dt)}};
  };
  add(global(GlobalTensor::kEmbed, false));
  for (int64_t l = 0; l < cfg.n_layers; ++l) add(synth_layer(cfg, l, seed, dt, massive));
  add(global(GlobalTensor::kFinalNorm, true));
  if (!cfg.tie_embeddings) add(global(GlobalTensor::kLmHead, false));
  flush();

  const size_t n = files.size();
  if (opts.max_shard_bytes == 0 && n == 1) {
    fs::rename(fs::path(dir) / files[0], fs::path(dir) / "model.safetensors");
  } else {
    std::map<std::string, std::string> rename;
    for (size_t s = 0; s < n; ++s) {
      char name[64];
      std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", s + 1, n);
      fs::rename(fs::path(dir) / files[s], fs::path(dir) / name);
      rename[files[s]] = name;
    }
    for (auto it = weight_map.begin(); it != weight_map.end(); ++it) {
      it.value() = rename[it.value().get<std::string>()];
    }
    nlohmann::json index;
    index["metadata"] = {{"total_size", total}};
    index["weight_map"] = weight_map;
    write_file_atomically((fs::path(dir) / "model.safetensors.index.json").string(), index.dump(2));
  }
  ModelConfig out_cfg = cfg;
  out_cfg.dtype = opts.dtype;
  write_hf_config(out_cfg, dir);
}

}  // namespace rotq
