// llama2.c checkpoints. Three layouts exist:
//  v0 (legacy): 7 int32 header (a negative vocab_size means an untied classifier), fp32 weights
//      grouped by kind across layers, two unused RoPE tables, then the classifier if untied;
//  v1: magic "ak42", version 1, the 7 ints, a shared-classifier byte, padded to 256 bytes; fp32
//      weights, norms first;
//  v2: like v1 plus the Q8_0 group size; norms fp32, matrices int8 with per-group fp32 scales.
// q/k are stored with interleaved RoPE pairs and are permuted to rotate-half on read.
#include <ATen/ATen.h>

#include <cstring>
#include <map>

#include "models/checkpoint.h"
#include "models/mapped_file.h"
#include "solvers/error.h"

namespace rotq {
namespace {

constexpr uint32_t kMagic = 0x616b3432;  // "ak42"
constexpr int64_t kV1HeaderBytes = 256;

struct Slot {
  int64_t offset = 0;  // byte offset of the data
  std::vector<int64_t> shape;
  bool q8 = false;  // int8 data followed by fp32 scales (v2)
};

class Llama2cReader final : public CheckpointReader {
 public:
  explicit Llama2cReader(const std::string& path) : path_(path) {
    file_ = MappedFile::open(path);
    parse_header();
    layout();
    cfg_.validate(path_);
  }

  const ModelConfig& config() const override { return cfg_; }
  const std::string& source() const override { return path_; }
  std::string format() const override { return "llama2c-v" + std::to_string(version_); }

  at::Tensor global_tensor(GlobalTensor t) override {
    switch (t) {
      case GlobalTensor::kEmbed:
        return read("embed");
      case GlobalTensor::kFinalNorm:
        return read("final_norm");
      case GlobalTensor::kLmHead:
        return cfg_.tie_embeddings ? read("embed") : read("lm_head");
    }
    return {};
  }

  at::Tensor layer_tensor(int64_t layer, LayerTensor t) override {
    require(layer >= 0 && layer < cfg_.n_layers, path_, ": layer ", layer, " out of range");
    if (!has_tensor(cfg_, t)) return {};
    at::Tensor w = read(std::string(layer_tensor_key(t)) + "." + std::to_string(layer));
    if (t == LayerTensor::kWq) return permute_interleaved_to_half(w, cfg_.n_heads, cfg_.head_dim);
    if (t == LayerTensor::kWk)
      return permute_interleaved_to_half(w, cfg_.n_kv_heads, cfg_.head_dim);
    return w;
  }

 private:
  int32_t read_i32(int64_t off) const {
    int32_t v;
    std::memcpy(&v, file_->data() + off, 4);
    return v;
  }

  void parse_header() {
    require(file_->size() >= 28, path_, ": ", file_->size(),
            " bytes is too short for a llama2.c checkpoint (expected a 28-byte header at least)");
    uint32_t magic;
    std::memcpy(&magic, file_->data(), 4);
    int64_t h = 0;  // offset of the 7 config ints
    if (magic == kMagic) {
      require(file_->size() >= kV1HeaderBytes, path_, ": truncated 256-byte llama2.c header");
      version_ = read_i32(4);
      require(version_ == 1 || version_ == 2, path_, ": llama2.c format version ", version_,
              " unsupported (expected 1 or 2)");
      h = 8;
    }
    const int32_t dim = read_i32(h), hidden = read_i32(h + 4), layers = read_i32(h + 8),
                  heads = read_i32(h + 12), kv_heads = read_i32(h + 16), vocab = read_i32(h + 20),
                  seq_len = read_i32(h + 24);
    cfg_.architecture = "LlamaForCausalLM";
    cfg_.dim = dim;
    cfg_.hidden_dim = hidden;
    cfg_.n_layers = layers;
    cfg_.n_heads = heads;
    cfg_.n_kv_heads = kv_heads;
    cfg_.max_seq_len = seq_len;
    cfg_.rope_theta = 10000.0;  // llama2.c hard-codes these
    cfg_.norm_eps = 1e-5;
    cfg_.dtype = "float32";
    if (version_ == 0) {
      cfg_.vocab_size = vocab < 0 ? -int64_t{vocab} : vocab;
      cfg_.tie_embeddings = vocab > 0;
    } else {
      cfg_.vocab_size = vocab;
      cfg_.tie_embeddings = file_->data()[h + 28] != 0;
      if (version_ == 2) group_size_ = read_i32(h + 29);
    }
    // Sanity before any size arithmetic, so that garbage headers fail with a clear message.
    for (auto [v, name] : {std::pair<int64_t, const char*>{dim, "dim"},
                           {hidden, "hidden_dim"},
                           {layers, "n_layers"},
                           {heads, "n_heads"},
                           {kv_heads, "n_kv_heads"},
                           {cfg_.vocab_size, "vocab_size"},
                           {seq_len, "seq_len"}}) {
      require(v > 0 && v < (int64_t{1} << 20), path_, ": header field ", name, " = ", v,
              " is not plausible; not a llama2.c checkpoint?");
    }
    require(dim % heads == 0, path_, ": dim ", dim, " is not a multiple of n_heads ", heads);
    cfg_.head_dim = dim / heads;
    require(version_ != 2 || group_size_ > 0, path_, ": Q8_0 group size ", group_size_,
            " must be positive");
  }

  void add(const std::string& name, std::vector<int64_t> shape, bool q8 = false) {
    int64_t numel = 1;
    for (int64_t d : shape) numel *= d;
    slots_[name] = Slot{cursor_, std::move(shape), q8};
    if (q8) {
      require(numel % group_size_ == 0, path_, ": tensor ", name, " with ", numel,
              " elements is not a multiple of the Q8_0 group size ", group_size_);
      cursor_ += numel + 4 * (numel / group_size_);
    } else {
      cursor_ += 4 * numel;
    }
  }

  void add_per_layer(const char* key, std::vector<int64_t> shape, bool q8 = false) {
    for (int64_t l = 0; l < cfg_.n_layers; ++l)
      add(std::string(key) + "." + std::to_string(l), shape, q8);
  }

  void layout() {
    const ModelConfig& c = cfg_;
    const std::vector<int64_t> norm{c.dim}, wq{c.q_dim(), c.dim}, wkv{c.kv_dim(), c.dim},
        wo{c.dim, c.q_dim()}, w13{c.hidden_dim, c.dim}, w2{c.dim, c.hidden_dim},
        emb{c.vocab_size, c.dim};
    if (version_ == 0) {
      cursor_ = 28;
      add("embed", emb);
      add_per_layer("attn_norm", norm);
      add_per_layer("wq", wq);
      add_per_layer("wk", wkv);
      add_per_layer("wv", wkv);
      add_per_layer("wo", wo);
      add_per_layer("ffn_norm", norm);
      add_per_layer("w_gate", w13);
      add_per_layer("w_down", w2);
      add_per_layer("w_up", w13);
      add("final_norm", norm);
      cursor_ += 4 * c.max_seq_len * c.head_dim;  // the unused freq_cis_real/imag tables
      if (!c.tie_embeddings) add("lm_head", emb);
    } else {
      const bool q8 = version_ == 2;
      cursor_ = kV1HeaderBytes;
      add_per_layer("attn_norm", norm);
      add_per_layer("ffn_norm", norm);
      add("final_norm", norm);
      add("embed", emb, q8);
      add_per_layer("wq", wq, q8);
      add_per_layer("wk", wkv, q8);
      add_per_layer("wv", wkv, q8);
      add_per_layer("wo", wo, q8);
      add_per_layer("w_gate", w13, q8);
      add_per_layer("w_down", w2, q8);
      add_per_layer("w_up", w13, q8);
      if (!c.tie_embeddings) add("lm_head", emb, q8);
    }
    require(static_cast<int64_t>(file_->size()) == cursor_, path_, ": file has ", file_->size(),
            " bytes but its header (", c.summary(), ") implies ", cursor_,
            file_->size() < static_cast<size_t>(cursor_) ? " (truncated)" : " (trailing data)");
  }

  at::Tensor read(const std::string& name) {
    const Slot& s = slots_.at(name);
    const uint8_t* p = file_->data() + s.offset;
    int64_t numel = 1;
    for (int64_t d : s.shape) numel *= d;
    if (!s.q8) {
      at::Tensor t = at::empty(s.shape, at::kFloat);
      std::memcpy(t.data_ptr(), p, 4 * numel);
      return t;
    }
    at::Tensor q = at::empty({numel / group_size_, group_size_}, at::kChar);
    std::memcpy(q.data_ptr(), p, numel);
    at::Tensor scale = at::empty({numel / group_size_, 1}, at::kFloat);
    std::memcpy(scale.data_ptr(), p + numel, 4 * (numel / group_size_));
    return (q.to(at::kFloat) * scale).reshape(s.shape);
  }

  std::string path_;
  std::shared_ptr<const MappedFile> file_;
  ModelConfig cfg_;
  int32_t version_ = 0;
  int32_t group_size_ = 0;
  int64_t cursor_ = 0;
  std::map<std::string, Slot> slots_;
};

}  // namespace

std::unique_ptr<CheckpointReader> open_llama2c_checkpoint(const std::string& path) {
  return std::make_unique<Llama2cReader>(path);
}

}  // namespace rotq
