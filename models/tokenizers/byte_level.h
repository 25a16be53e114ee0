// GPT-2's byte-level alphabet: each of the 256 byte values is spelled by one printable Unicode
// character, so that a byte-level BPE vocabulary (LLaMA-3, Qwen, GPT-2) is a set of strings over
// 256 visible characters. The map is GPT-2's bytes_to_unicode(): the printable Latin-1 bytes spell
// themselves and the others take U+0100, U+0101, ... in byte order.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace rotq::byte_level {

// The UTF-8 spelling of byte `b`'s character.
const std::string& char_of_byte(unsigned char b);

// The byte a code point spells, or -1 when it is not one of the 256 characters.
int byte_of_code_point(uint32_t cp);

// `bytes` spelled in the alphabet (the ByteLevel pre-tokenizer's transformation).
std::string spell(std::string_view bytes);

// The bytes `token` spells, appended to `out`; false (and `out` untouched) when a character of
// `token` is not in the alphabet (the ByteLevel decoder then keeps the token's own bytes).
bool unspell(std::string_view token, std::string* out);

}  // namespace rotq::byte_level
