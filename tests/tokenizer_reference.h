// The texts rotq's byte-level BPE is checked on against Hugging Face's JavaScript tokenizers, and
// the digest both sides compute over the ids. The reference digests are made by
// tests/make_tokenizer_reference.sh and committed as tests/data/tokenizer_reference.json.
#pragma once

#include <cstdint>
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

}  // namespace rotq_test
