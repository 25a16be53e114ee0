// Cutting a text at added tokens (<|begin_of_text|>, <|im_start|>, ...), as Hugging Face
// `tokenizers`' AddedVocabulary does: leftmost-longest matches of the tokens' contents, widened
// over white space by lstrip/rstrip, and skipped by single_word when a letter or digit touches
// them (Rust regex's \w: letters, marks, decimal digits, connector punctuation).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "models/tokenizers/tokenizer_json.h"

namespace rotq {

class AddedTokenMatcher {
 public:
  // Each token with the text it matches: its content, or for a normalized token its content
  // normalized as the text is (`tokenizers` matches "Ⓐ" as "A" under NFKC).
  struct Pattern {
    std::string text;
    const AddedToken* token;
  };
  explicit AddedTokenMatcher(std::vector<Pattern> patterns);

  struct Segment {
    size_t begin;
    size_t end;
    int32_t id;  // the added token, or -1 for text between tokens
  };
  // `text` (valid UTF-8) cut into non-empty segments covering it in order.
  std::vector<Segment> split(std::string_view text) const;
  bool empty() const { return tokens_.empty(); }

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> children;  // sorted by byte
    int32_t token = -1;                                       // index into tokens_
  };
  int32_t child(int32_t node, unsigned char byte) const;
  // Index into tokens_ of the longest token starting at `pos`, its length in *length; -1 if none.
  int32_t longest_at(std::string_view text, size_t pos, size_t* length) const;

  std::vector<Pattern> tokens_;
  std::vector<Node> nodes_;
  int32_t root_children_[256];
};

}  // namespace rotq
