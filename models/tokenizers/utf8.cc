#include "models/tokenizers/utf8.h"

#include <cstdint>

namespace rotq::utf8 {
namespace {

bool is_trail(unsigned char b) { return (b & 0xC0) == 0x80; }

bool is_scalar_value(uint32_t cp) { return cp < 0xD800 || (cp >= 0xE000 && cp <= 0x10FFFF); }

}  // namespace

int lead_byte_length(unsigned char lead) {
  static constexpr int kLengths[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLengths[lead >> 4];
}

size_t valid_char_length(std::string_view s) {
  if (s.empty()) return 0;
  const auto b = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  const unsigned char lead = b(0);
  if (lead < 0x80) return 1;
  if ((lead & 0xE0) == 0xC0) {
    if (s.size() < 2 || !is_trail(b(1))) return 0;
    const uint32_t cp = ((lead & 0x1Fu) << 6) | (b(1) & 0x3Fu);
    return cp >= 0x80 ? 2 : 0;
  }
  if ((lead & 0xF0) == 0xE0) {
    if (s.size() < 3 || !is_trail(b(1)) || !is_trail(b(2))) return 0;
    const uint32_t cp = ((lead & 0x0Fu) << 12) | ((b(1) & 0x3Fu) << 6) | (b(2) & 0x3Fu);
    return cp >= 0x800 && is_scalar_value(cp) ? 3 : 0;
  }
  if ((lead & 0xF8) == 0xF0) {
    if (s.size() < 4 || !is_trail(b(1)) || !is_trail(b(2)) || !is_trail(b(3))) return 0;
    const uint32_t cp =
        ((lead & 0x07u) << 18) | ((b(1) & 0x3Fu) << 12) | ((b(2) & 0x3Fu) << 6) | (b(3) & 0x3Fu);
    return cp >= 0x10000 && is_scalar_value(cp) ? 4 : 0;
  }
  return 0;
}

bool is_valid(std::string_view s) {
  while (!s.empty()) {
    const size_t n = valid_char_length(s);
    if (n == 0) return false;
    s.remove_prefix(n);
  }
  return true;
}

}  // namespace rotq::utf8
