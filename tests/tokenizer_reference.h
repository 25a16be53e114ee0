// The texts rotq's byte-level BPE is checked on against Hugging Face's JavaScript tokenizers, and
// the digest both sides compute over the ids. The reference digests are made by
// tests/make_tokenizer_reference.sh (with tests/tokenizer_reference_main.cc writing the inputs)
// and committed as tests/data/tokenizer_reference.json.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace rotq_test {

// One named input: its texts are encoded separately, in order.
struct TokenizerInput {
  std::string name;
  std::vector<std::string> texts;
};

// WikiText-2 test (whole) and the train slice (whole), the torture file, and for every task file
// and MMLU each document's context, then each request's continuation and context+continuation.
std::vector<TokenizerInput> tokenizer_reference_inputs();

// FNV-1a 64 over ids as little-endian int32, -1 between texts, and the same digest restarted every
// kChunk ids (to locate a mismatch); hex strings as scripts/hf_tokenizers_js.mjs prints them.
class IdDigest {
 public:
  static constexpr int64_t kChunk = 65536;
  void separator() { add(-1); }
  void add(int32_t id);
  void add_all(const std::vector<int32_t>& ids) {
    for (int32_t id : ids) add(id);
  }
  std::string hex() const;
  std::vector<std::string> chunks() const;  // including the partial last one
  int64_t count() const { return count_; }

 private:
  uint64_t hash_ = 0xcbf29ce484222325ull;
  uint64_t chunk_ = 0xcbf29ce484222325ull;
  int64_t count_ = 0;
  std::vector<std::string> chunks_;
};

// Variants of the real tokenizer files that exercise what neither real tokenizer uses (see
// variants() in tokenizer_reference.cc); each is a JSON edit of tokenizer.json and
// tokenizer_config.json of `base` (a directory under ../shared/data/tokenizers).
struct Variant {
  std::string name;
  std::string base;
  void (*edit)(nlohmann::json* tokenizer, nlohmann::json* config);
};
const std::vector<Variant>& variants();
// Writes variant `v` as DIR/NAME (tokenizer.json + tokenizer_config.json); returns that path.
std::string write_variant(const Variant& v, const std::string& dir);

std::string tokenizer_dir(const std::string& name);  // ../shared/data/tokenizers/NAME
nlohmann::json read_json(const std::string& path);
void write_text(const std::string& path, const std::string& text);  // throws on failure

}  // namespace rotq_test
