// Small UTF-8 helpers shared by the tokenizers. Validity follows SentencePiece's DecodeUTF8
// (util.cc) exactly, since the encoder must split text the way SentencePiece does.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace rotq::utf8 {

// U+2581 LOWER ONE EIGHTH BLOCK: SentencePiece's visible stand-in for a space.
inline constexpr std::string_view kSpaceSymbol = "\xE2\x96\x81";
// U+FFFD REPLACEMENT CHARACTER: what SentencePiece substitutes for each malformed byte.
inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";

// Byte length announced by a lead byte (SentencePiece's OneCharLen): 1 for ASCII and for stray
// continuation bytes, 2/3/4 for multi-byte leads. Does not check the continuation bytes.
int lead_byte_length(unsigned char lead);

// Length (1..4) of the well-formed character at the start of `s`, or 0 when `s` is empty or
// starts with a malformed sequence (bad continuation, overlong form, surrogate, > U+10FFFF,
// truncated).
size_t valid_char_length(std::string_view s);

// Whether every character of `s` is well formed.
bool is_valid(std::string_view s);

}  // namespace rotq::utf8
