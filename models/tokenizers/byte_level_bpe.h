// Byte-level BPE (Hugging Face `tokenizers` BPE model + ByteLevel pre-tokenizer and decoder): the
// tokenizer of LLaMA-3/3.x and Qwen2/2.5/3, reproducing `tokenizers` id for id.
//
// encode(text): added tokens are cut out of the raw text first (leftmost-longest), the rest is
// normalized (e.g. NFC), cut again at normalized added tokens, split by the pre-tokenizer
// (Split regexes; ByteLevel spells bytes as characters), and each piece ("word") is merged by
// rank order, lowest rank first and leftmost on ties. Words repeat, so each call caches them.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "models/tokenizers/tokenizer.h"
#include "models/tokenizers/tokenizer_json.h"

namespace rotq {

class AddedTokenMatcher;

class ByteLevelBpeTokenizer final : public Tokenizer {
 public:
  // Checks that the vocabulary spells all 256 bytes; errors name `source`.
  ByteLevelBpeTokenizer(ByteLevelBpeSpec spec, std::string source);
  ~ByteLevelBpeTokenizer() override;

  std::vector<int32_t> encode(std::string_view text) const override;
  // Model tokens through the ByteLevel decoder (malformed UTF-8 as U+FFFD), added tokens as their
  // text, special ones included: `tokenizers`' decode(ids, skip_special_tokens=false).
  std::string decode(const std::vector<int32_t>& ids) const override;
  // The token's raw bytes (possibly part of a character): concatenating them streams the text.
  std::string decode_piece(int32_t prev, int32_t token) const override;
  int32_t vocab_size() const override { return static_cast<int32_t>(spec_.vocab.size()); }
  int32_t bos_id() const override { return spec_.bos.id; }
  int32_t eos_id() const override { return spec_.eos_id; }
  const std::string& piece(int32_t id) const override { return spec_.vocab[checked(id)]; }
  std::string kind() const override { return "byte-level-bpe"; }
  BosPolicy bos_policy() const override { return spec_.bos; }

  // The pre-tokenizer's words of `text` (already normalized), spelled in the byte alphabet.
  std::vector<std::string> pre_tokenize(std::string_view text) const;

 private:
  using WordCache = std::unordered_map<std::string, std::vector<int32_t>>;
  size_t checked(int32_t id) const;
  void encode_text(std::string_view normalized, WordCache* cache, std::vector<int32_t>* out) const;
  void encode_word(const std::string& word, WordCache* cache, std::vector<int32_t>* out) const;
  std::vector<int32_t> merge_word(const std::string& word) const;

  ByteLevelBpeSpec spec_;
  std::string source_;
  std::unordered_map<std::string_view, int32_t> token_ids_;  // model vocabulary; views spec_
  std::unordered_map<uint64_t, uint64_t> merges_;  // (left << 32 | right) -> (rank << 32 | id)
  int32_t byte_ids_[256] = {};
  std::vector<int8_t> added_kind_;  // per id: 0 model token, 1 added verbatim, 2 added normalized
  std::unique_ptr<AddedTokenMatcher> raw_added_;
  std::unique_ptr<AddedTokenMatcher> normalized_added_;
};

// Loads tokenizer.json at `path`, with tokenizer_config.json from the same directory when it
// exists.
std::unique_ptr<Tokenizer> load_tokenizer_json(const std::string& json, const std::string& path);

}  // namespace rotq
