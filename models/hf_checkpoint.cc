// Hugging Face checkpoints: config.json + model.safetensors, or shards listed in
// model.safetensors.index.json. Shards are opened (mapped) only when one of their tensors is
// first asked for, so a rank that owns a few layers touches only the files that hold them.
#include <ATen/ATen.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "models/base/files.h"
#include "models/checkpoint.h"
#include "models/hf_config_keys.h"
#include "models/safetensors.h"
#include "models/tokenizers/tokenizer.h"
#include "solvers/error.h"

namespace rotq {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

json read_json(const std::string& path) {
  const std::string text = read_file_bytes(path);
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    fail(path, ": not valid JSON (", e.what(), ")");
  }
}

int64_t get_int(const json& j, const std::string& path, const char* key) {
  require(j.contains(key), path, ": missing field ", key);
  require(j[key].is_number_integer(), path, ": field ", key, " = ", j[key].dump(),
          ", expected an integer");
  return j[key].get<int64_t>();
}

int64_t get_int_or(const json& j, const std::string& path, const char* key, int64_t fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  return get_int(j, path, key);
}

double get_double_or(const json& j, const std::string& path, const char* key, double fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  require(j[key].is_number(), path, ": field ", key, " = ", j[key].dump(), ", expected a number");
  return j[key].get<double>();
}

bool get_bool_or(const json& j, const std::string& path, const char* key, bool fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  require(j[key].is_boolean(), path, ": field ", key, " = ", j[key].dump(),
          ", expected true or false");
  return j[key].get<bool>();
}

std::string get_string_or(const json& j, const std::string& path, const char* key,
                          const std::string& fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  require(j[key].is_string(), path, ": field ", key, " = ", j[key].dump(), ", expected a string");
  return j[key].get<std::string>();
}

std::string dtype_from_torch_dtype(const std::string& s) {
  if (s == "float32") return "float32";
  if (s == "float16") return "float16";
  if (s == "bfloat16") return "bfloat16";
  return "float32";
}

RopeScaling parse_rope_scaling(const json& j, const std::string& path) {
  RopeScaling rs;
  if (!j.contains("rope_scaling") || j["rope_scaling"].is_null()) return rs;
  const json& r = j["rope_scaling"];
  require(r.is_object(), path, ": rope_scaling must be an object or null");
  const std::string where = path + ": rope_scaling";
  for (const auto& [key, value] : r.items()) {
    static const char* const known[] = {"rope_type",        "type",
                                        "factor",           "low_freq_factor",
                                        "high_freq_factor", "original_max_position_embeddings"};
    bool ok = false;
    for (const char* k : known) ok = ok || key == k;
    require(ok, where, ": key '", key, "' (= ", value.dump(), ") is not computed by rotq");
  }
  std::string type = get_string_or(r, where, "rope_type", get_string_or(r, where, "type", "none"));
  if (type == "default") type = "none";
  require(type == "none" || type == "linear" || type == "llama3", path, ": rope_scaling type '",
          type, "' unsupported (expected linear or llama3)");
  rs.type = type;
  rs.factor = get_double_or(r, where, "factor", 1.0);
  rs.low_freq_factor = get_double_or(r, where, "low_freq_factor", 1.0);
  rs.high_freq_factor = get_double_or(r, where, "high_freq_factor", 4.0);
  rs.original_max_position = get_int_or(r, where, "original_max_position_embeddings", 8192);
  return rs;
}

// A token id (LLaMA-3.1 lists several eos ids: the first is taken), within int32.
int32_t token_id_or(const json& j, const std::string& path, const char* key, int32_t fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  const json& v = j[key].is_array() && !j[key].empty() ? j[key][0] : j[key];
  require(v.is_number_integer() && v.get<int64_t>() >= 0 && v.get<int64_t>() <= INT32_MAX, path,
          ": field ", key, " = ", j[key].dump(), ", expected a token id (an integer >= 0)");
  return static_cast<int32_t>(v.get<int64_t>());
}

// The attention window, 0 for full attention: Mistral's sliding_window, Qwen's when
// use_sliding_window (or a layer_types entry) turns it on.
int64_t parse_sliding_window(const json& j, const std::string& path, const ArchSpec& arch) {
  bool sliding = std::string(arch.family) == "mistral";
  if (j.contains("use_sliding_window")) sliding = get_bool_or(j, path, "use_sliding_window", false);
  if (j.contains("layer_types") && !j["layer_types"].is_null()) {
    require(j["layer_types"].is_array(), path, ": layer_types must be a list");
    for (const json& t : j["layer_types"]) {
      require(t == "full_attention" || t == "sliding_attention", path, ": layer_types entry ",
              t.dump(), " is not computed by rotq (expected full_attention or sliding_attention)");
      sliding = sliding || t == "sliding_attention";
    }
  }
  const bool has_window = j.contains("sliding_window") && !j["sliding_window"].is_null();
  if (!arch.reads_sliding_window) {
    require(!has_window && !sliding, path, ": ", arch.hf_name,
            " has no sliding-window attention (sliding_window ",
            has_window ? j["sliding_window"].dump() : "null", ")");
    return 0;
  }
  if (!sliding || !has_window) {
    require(!sliding || std::string(arch.family) == "mistral", path,
            ": use_sliding_window / layer_types ask for a window but sliding_window is null");
    return 0;
  }
  const int64_t w = get_int(j, path, "sliding_window");
  require(w > 0, path, ": sliding_window ", w, " must be positive");
  return w;
}

ModelConfig parse_hf_config(const std::string& path) {
  const json j = read_json(path);
  require(j.is_object(), path, ": expected a JSON object");
  require_known_config_keys(j, path);
  ModelConfig c;
  require(j.contains("architectures") && j["architectures"].is_array() &&
              !j["architectures"].empty() && j["architectures"][0].is_string(),
          path, ": missing field architectures (e.g. [\"LlamaForCausalLM\"])");
  c.architecture = j["architectures"][0].get<std::string>();
  const ArchSpec& arch = arch_spec(c.architecture);
  const std::string model_type = get_string_or(j, path, "model_type", arch.family);
  require(model_type == arch.family, path, ": model_type '", model_type, "' does not match ",
          c.architecture, " (expected '", arch.family, "')");
  c.dim = get_int(j, path, "hidden_size");
  c.hidden_dim = get_int(j, path, "intermediate_size");
  c.n_layers = get_int(j, path, "num_hidden_layers");
  c.n_heads = get_int(j, path, "num_attention_heads");
  c.vocab_size = get_int(j, path, "vocab_size");
  c.n_kv_heads = get_int_or(j, path, "num_key_value_heads", c.n_heads);
  // head_dim is read, never re-derived, when the config has it (Qwen3: head_dim != dim/heads).
  c.head_dim = get_int_or(j, path, "head_dim", c.n_heads > 0 ? c.dim / c.n_heads : 0);
  c.max_seq_len = get_int_or(j, path, "max_position_embeddings", 2048);
  c.rope_theta = get_double_or(j, path, "rope_theta", 10000.0);
  c.norm_eps = get_double_or(j, path, "rms_norm_eps", 1e-6);
  c.tie_embeddings = get_bool_or(j, path, "tie_word_embeddings", false);
  c.rope_scaling = parse_rope_scaling(j, path);
  c.dtype = dtype_from_torch_dtype(get_string_or(j, path, "torch_dtype", "float32"));
  c.bos_id = token_id_or(j, path, "bos_token_id", 1);
  c.eos_id = token_id_or(j, path, "eos_token_id", 2);
  const bool attention_bias = get_bool_or(j, path, "attention_bias", false);
  if (arch.reads_attention_bias) {
    c.qkv_bias = c.o_bias = attention_bias;
  } else {
    // Qwen2 has q/k/v biases and no o_proj bias whatever attention_bias says (transformers does
    // not read it); Mistral has none.
    require(!attention_bias || arch.qkv_bias, path, ": attention_bias: true, but ", c.architecture,
            " has no attention biases");
  }
  c.mlp_bias = get_bool_or(j, path, "mlp_bias", false);
  c.hidden_act = get_string_or(j, path, "hidden_act", "silu");
  c.sliding_window = parse_sliding_window(j, path, arch);
  if (j.contains("rotq_online_hadamard")) {
    const json& h = j["rotq_online_hadamard"];
    require(h.is_object(), path, ": rotq_online_hadamard must be an object {qk, down}");
    c.online_hadamard_qk = get_bool_or(h, path + ": rotq_online_hadamard", "qk", false);
    c.online_hadamard_down = get_bool_or(h, path + ": rotq_online_hadamard", "down", false);
  }
  c.validate(path);
  return c;
}

class HfReader final : public CheckpointReader {
 public:
  explicit HfReader(const std::string& dir) : dir_(dir) {
    const std::string cfg_path = (fs::path(dir) / "config.json").string();
    require(fs::exists(cfg_path), dir, ": no config.json (expected an HF checkpoint directory)");
    cfg_ = parse_hf_config(cfg_path);
    index_files();
    check_tensor_names();
    // The storage dtype is what the weights really are, whatever torch_dtype claims.
    cfg_.dtype = dtype_name_of(global_name(GlobalTensor::kEmbed));
    if (!cfg_.tie_embeddings && !weight_map_.count(global_name(GlobalTensor::kLmHead))) {
      fail(dir, ": lm_head.weight is missing and tie_word_embeddings is false");
    }
  }

  const ModelConfig& config() const override { return cfg_; }
  const std::string& source() const override { return dir_; }
  std::string format() const override { return "hf"; }

  at::Tensor global_tensor(GlobalTensor t) override {
    if (t == GlobalTensor::kLmHead && cfg_.tie_embeddings) t = GlobalTensor::kEmbed;
    const std::string name = global_name(t);
    at::Tensor w = fetch(name);
    check_shape(w, expected_shape(cfg_, t), name + " in " + dir_);
    return w;
  }

  at::Tensor layer_tensor(int64_t layer, LayerTensor t) override {
    require(layer >= 0 && layer < cfg_.n_layers, dir_, ": layer ", layer, " out of range");
    if (!has_tensor(cfg_, t)) return {};
    const std::string name = hf_layer_tensor_name(t, layer);
    at::Tensor w = fetch(name);
    check_shape(w, expected_shape(cfg_, t), name + " in " + dir_);
    return w;
  }

  std::string bundled_tokenizer() const override { return tokenizer_in_directory(dir_); }

 private:
  static std::string global_name(GlobalTensor t) { return hf_global_tensor_name(t); }

  void index_files() {
    const fs::path single = fs::path(dir_) / "model.safetensors";
    const fs::path index = fs::path(dir_) / "model.safetensors.index.json";
    if (fs::exists(index)) {
      indexed_ = true;
      const json j = read_json(index.string());
      require(j.contains("weight_map") && j["weight_map"].is_object(), index.string(),
              ": missing weight_map");
      for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
        require(it.value().is_string(), index.string(), ": weight_map[", it.key(),
                "] is not a file name");
        weight_map_[it.key()] = (fs::path(dir_) / it.value().get<std::string>()).string();
      }
    } else if (fs::exists(single)) {
      auto f = shard(single.string());
      for (const std::string& n : f->names()) weight_map_[n] = single.string();
    } else {
      fail(dir_,
           ": no model.safetensors or model.safetensors.index.json (only safetensors "
           "checkpoints are supported)");
    }
  }

  // Every tensor the config implies is there, and every tensor there is read: a stored tensor
  // nothing reads (a bias the config does not announce, an unknown module) would make rotq compute
  // another function than the checkpoint's. Known harmless: rotary inv_freq buffers (recomputed),
  // and lm_head.weight in a tied model (transformers ties it to the embedding).
  void check_tensor_names() const {
    std::set<std::string> expected = {global_name(GlobalTensor::kEmbed),
                                      global_name(GlobalTensor::kFinalNorm)};
    if (!cfg_.tie_embeddings) expected.insert(global_name(GlobalTensor::kLmHead));
    for (int64_t l = 0; l < cfg_.n_layers; ++l) {
      for (int i = 0; i < static_cast<int>(LayerTensor::kCount); ++i) {
        const auto t = static_cast<LayerTensor>(i);
        if (has_tensor(cfg_, t)) expected.insert(hf_layer_tensor_name(t, l));
      }
    }
    for (const auto& [name, file] : weight_map_) {
      if (expected.count(name) || is_harmless_extra(name)) continue;
      fail(dir_, ": tensor ", name, " (", fs::path(file).filename().string(),
           ") is not read by rotq for this config (", cfg_.summary(),
           "); refusing a checkpoint whose function rotq would not compute");
    }
    for (const std::string& name : expected) {
      require(weight_map_.count(name) > 0, dir_, ": tensor ", name,
              " is missing (config.json implies it: ", cfg_.summary(), ")");
    }
  }

  bool is_harmless_extra(const std::string& name) const {
    const std::string inv_freq = ".rotary_emb.inv_freq";
    if (name.size() > inv_freq.size() &&
        name.compare(name.size() - inv_freq.size(), inv_freq.size(), inv_freq) == 0) {
      return true;
    }
    return cfg_.tie_embeddings && name == global_name(GlobalTensor::kLmHead);
  }

  std::shared_ptr<SafetensorsFile> shard(const std::string& file) {
    auto it = shards_.find(file);
    if (it != shards_.end()) return it->second;
    auto f = SafetensorsFile::open(file);
    // A shard may not hold tensors its index does not list: nothing would read them.
    for (const std::string& n : indexed_ ? f->names() : std::vector<std::string>{}) {
      require(weight_map_.count(n) > 0, file, ": tensor ", n,
              " is not listed in model.safetensors.index.json (nothing would read it)");
    }
    shards_[file] = f;
    return f;
  }

  at::Tensor fetch(const std::string& name) {
    auto it = weight_map_.find(name);
    require(it != weight_map_.end(), dir_, ": tensor ", name, " not found in the checkpoint");
    auto f = shard(it->second);
    require(f->has(name), it->second, ": tensor ", name, " listed in the index is not in the file");
    at::Tensor t = f->tensor(name);
    require(at::isFloatingType(t.scalar_type()), name, " in ", it->second, ": dtype ",
            f->info(name).dtype, " is not a floating-point weight dtype");
    return t;
  }

  std::string dtype_name_of(const std::string& name) {
    auto it = weight_map_.find(name);
    require(it != weight_map_.end(), dir_, ": tensor ", name, " not found in the checkpoint");
    const std::string dt = shard(it->second)->info(name).dtype;
    if (dt == "BF16") return "bfloat16";
    if (dt == "F16") return "float16";
    if (dt == "F32") return "float32";
    fail(name, " in ", it->second, ": weight dtype ", dt,
         " unsupported (expected F32, F16 or BF16)");
  }

  std::string dir_;
  ModelConfig cfg_;
  std::map<std::string, std::string> weight_map_;
  std::map<std::string, std::shared_ptr<SafetensorsFile>> shards_;
  bool indexed_ = false;  // tensors listed by model.safetensors.index.json
};

json config_to_json(const ModelConfig& c) {
  json j;
  j["architectures"] = {c.architecture};
  j["model_type"] = arch_spec(c.architecture).family;
  j["hidden_size"] = c.dim;
  j["intermediate_size"] = c.hidden_dim;
  j["num_hidden_layers"] = c.n_layers;
  j["num_attention_heads"] = c.n_heads;
  j["num_key_value_heads"] = c.n_kv_heads;
  j["head_dim"] = c.head_dim;
  j["vocab_size"] = c.vocab_size;
  j["max_position_embeddings"] = c.max_seq_len;
  j["rope_theta"] = c.rope_theta;
  j["rms_norm_eps"] = c.norm_eps;
  j["tie_word_embeddings"] = c.tie_embeddings;
  j["torch_dtype"] = c.dtype;
  j["bos_token_id"] = c.bos_id;
  j["eos_token_id"] = c.eos_id;
  j["hidden_act"] = c.hidden_act;
  if (c.online_hadamard_qk || c.online_hadamard_down) {
    j["rotq_online_hadamard"] = {{"qk", c.online_hadamard_qk}, {"down", c.online_hadamard_down}};
  }
  const ArchSpec& arch = arch_spec(c.architecture);
  if (arch.reads_attention_bias) j["attention_bias"] = c.o_bias;
  if (arch.reads_mlp_bias) j["mlp_bias"] = c.mlp_bias;
  if (std::string(arch.family) == "mistral") {
    j["sliding_window"] = c.sliding_window > 0 ? json(c.sliding_window) : json(nullptr);
  } else if (arch.reads_sliding_window) {
    j["use_sliding_window"] = c.sliding_window > 0;
    j["sliding_window"] = c.sliding_window > 0 ? json(c.sliding_window) : json(nullptr);
  }
  if (c.rope_scaling.type == "none") {
    j["rope_scaling"] = nullptr;
  } else {
    j["rope_scaling"] = {
        {"rope_type", c.rope_scaling.type},
        {"factor", c.rope_scaling.factor},
        {"low_freq_factor", c.rope_scaling.low_freq_factor},
        {"high_freq_factor", c.rope_scaling.high_freq_factor},
        {"original_max_position_embeddings", c.rope_scaling.original_max_position}};
  }
  return j;
}

}  // namespace

ModelConfig read_hf_config(const std::string& path) { return parse_hf_config(path); }

std::unique_ptr<CheckpointReader> open_hf_checkpoint(const std::string& dir) {
  return std::make_unique<HfReader>(dir);
}

void save_hf_checkpoint(const Model& model, const std::string& dir, const SaveOptions& opts) {
  const ModelConfig& c = model.config;
  require(
      model.layer_offset == 0 && static_cast<int64_t>(model.weights.layers.size()) == c.n_layers,
      "save_hf_checkpoint: the model holds only part of its layers");
  const at::ScalarType st = scalar_type_from_name(opts.dtype);
  fs::create_directories(dir);

  std::vector<std::pair<std::string, at::Tensor>> all;
  auto put = [&](const std::string& name, const at::Tensor& t) {
    if (t.defined()) all.emplace_back(name, t.to(st).contiguous());
  };
  put(hf_global_tensor_name(GlobalTensor::kEmbed), model.weights.embed);
  for (int64_t l = 0; l < c.n_layers; ++l) {
    for (size_t i = 0; i < model.weights.layers[l].tensors.size(); ++i) {
      put(hf_layer_tensor_name(static_cast<LayerTensor>(i), l), model.weights.layers[l].tensors[i]);
    }
  }
  put(hf_global_tensor_name(GlobalTensor::kFinalNorm), model.weights.final_norm);
  if (!c.tie_embeddings) put(hf_global_tensor_name(GlobalTensor::kLmHead), model.weights.lm_head);

  // Group into shards of at most max_shard_bytes (a tensor larger than that gets its own shard).
  std::vector<std::vector<std::pair<std::string, at::Tensor>>> shards(1);
  int64_t bytes = 0, total = 0;
  for (auto& nt : all) {
    const int64_t nb = nt.second.numel() * nt.second.element_size();
    if (opts.max_shard_bytes > 0 && bytes > 0 && bytes + nb > opts.max_shard_bytes) {
      shards.emplace_back();
      bytes = 0;
    }
    shards.back().push_back(nt);
    bytes += nb;
    total += nb;
  }
  ModelConfig out_cfg = c;
  out_cfg.dtype = opts.dtype;
  const std::map<std::string, std::string> meta{{"format", "pt"}, {"producer", "rotq"}};
  if (shards.size() == 1 && opts.max_shard_bytes == 0) {
    write_safetensors((fs::path(dir) / "model.safetensors").string(), shards[0], meta);
  } else {
    json index;
    index["metadata"] = {{"total_size", total}};
    index["weight_map"] = json::object();
    const size_t n = shards.size();
    for (size_t s = 0; s < n; ++s) {
      char name[64];
      std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", s + 1, n);
      write_safetensors((fs::path(dir) / name).string(), shards[s], meta);
      for (auto& nt : shards[s]) index["weight_map"][nt.first] = name;
    }
    write_file_atomically((fs::path(dir) / "model.safetensors.index.json").string(), index.dump(2));
  }
  write_hf_config(out_cfg, dir);
}

void write_hf_config(const ModelConfig& cfg, const std::string& dir) {
  write_file_atomically((fs::path(dir) / "config.json").string(),
                        config_to_json(cfg).dump(2) + "\n");
}

}  // namespace rotq
