// Unicode text operations the tokenizer.json pipeline needs, on UTF-8 strings: repairing
// malformed bytes, the four normalization forms (utf8proc), and the character properties Hugging
// Face `tokenizers` tests (\s and \w of Rust's regex crate).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace rotq::unicode {

// `bytes` with each maximal ill-formed subsequence replaced by one U+FFFD, as WHATWG's UTF-8
// decoder, Python's errors="replace" and Rust's from_utf8_lossy do. Valid text is returned as is.
std::string to_valid_utf8(std::string_view bytes);

enum class NormalForm { kNFC, kNFD, kNFKC, kNFKD };
const char* normal_form_name(NormalForm form);

// `text` (valid UTF-8) in normalization form `form`. Throws rotq::Error if utf8proc refuses it.
std::string normalize(std::string_view text, NormalForm form);

// The code point at `s[*pos]` (valid UTF-8), advancing *pos past it.
uint32_t next_code_point(std::string_view s, size_t* pos);
// The code point ending at `s[end - 1]` (valid UTF-8) and its start.
uint32_t previous_code_point(std::string_view s, size_t end, size_t* start);

// Unicode's White_Space property.
bool is_white_space(uint32_t cp);
// A word character as Rust's regex \w: letters, marks, decimal and letter numbers, connector
// punctuation, and the joiners U+200C/U+200D.
bool is_word_char(uint32_t cp);

}  // namespace rotq::unicode
