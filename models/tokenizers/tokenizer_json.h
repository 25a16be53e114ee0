// Hugging Face `tokenizers` tokenizer.json (+ transformers' tokenizer_config.json), byte-level BPE
// flavour: what LLaMA-3/3.x, Qwen2/2.5/3 and GPT-2-style checkpoints ship.
//
// Parsing turns the JSON into a ByteLevelBpeSpec and refuses, with one line naming the key and
// the value, every component rotq does not implement exactly (other model types, normalizers and
// pre-tokenizers, BPE dropout, subword prefixes, truncation, post-processors that append tokens).
// Fields that cannot change token ids (offsets trimming, padding, the chat template, the
// decoder's clean-up of spaces, model_max_length) are accepted and ignored; README lists them.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "models/tokenizers/tokenizer.h"
#include "models/tokenizers/unicode_regex.h"
#include "models/tokenizers/unicode_text.h"

namespace rotq {

struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool special = false;
  bool lstrip = false;       // absorbs the white space before it
  bool rstrip = false;       // absorbs the white space after it
  bool single_word = false;  // matches only between non-alphanumeric characters
  bool normalized = false;   // matched in the normalized text rather than the raw text
};

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

struct PreTokenizerStep {
  enum class Kind { kSplit, kByteLevel } kind = Kind::kSplit;
  // Split: a regex or a literal string, the pieces kept and whether matches are the delimiters.
  std::shared_ptr<const UnicodeRegex> regex;  // null: `literal`
  std::string literal;
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool invert = false;
  // ByteLevel: a space prefixed to each piece that lacks one, and GPT-2's split regex.
  bool add_prefix_space = false;
  bool use_regex = true;
};

struct ByteLevelBpeSpec {
  std::vector<std::string> vocab;    // by id; "" where no token has that id
  std::vector<bool> in_model_vocab;  // by id: listed in model.vocab (not only an added token)
  struct Merge {
    int32_t left;
    int32_t right;
    int32_t merged;
  };
  std::vector<Merge> merges;   // in rank order
  bool ignore_merges = false;  // a word that is itself a token is not merged (LLaMA-3)
  std::vector<AddedToken> added_tokens;
  bool split_special_tokens = false;  // tokenizer_config: special tokens are not matched in text
  std::vector<unicode::NormalForm> normalizers;  // applied in order
  std::vector<PreTokenizerStep> pre_tokenizer;
  BosPolicy bos;
  int32_t eos_id = -1;
};

// `json` is tokenizer.json's text, `config` tokenizer_config.json's (nullopt when absent); errors
// name `path` (and `config_path`) and the key.
ByteLevelBpeSpec parse_tokenizer_json(const std::string& json, const std::string& path,
                                      const std::optional<std::string>& config,
                                      const std::string& config_path);

// Whether `bytes` looks like a JSON object (first non-space character '{').
bool looks_like_json_object(const std::string& bytes);

}  // namespace rotq
