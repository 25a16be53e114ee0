#include "models/tokenizers/byte_level.h"

#include <array>

namespace rotq::byte_level {
namespace {

std::string utf8_of(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else {  // the alphabet stays below U+0800: two bytes
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

bool is_self_spelled(int b) {
  return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

struct Alphabet {
  std::array<std::string, 256> spelling;
  std::array<uint32_t, 256> code_point{};
  std::array<int16_t, 0x200> byte_of{};  // every code point of the alphabet is below U+0144

  Alphabet() {
    byte_of.fill(-1);
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      code_point[b] = is_self_spelled(b) ? static_cast<uint32_t>(b) : next++;
      spelling[b] = utf8_of(code_point[b]);
      byte_of[code_point[b]] = static_cast<int16_t>(b);
    }
  }
};

const Alphabet& alphabet() {
  static const Alphabet a;
  return a;
}

}  // namespace

const std::string& char_of_byte(unsigned char b) { return alphabet().spelling[b]; }

int byte_of_code_point(uint32_t cp) {
  return cp < alphabet().byte_of.size() ? alphabet().byte_of[cp] : -1;
}

std::string spell(std::string_view bytes) {
  const Alphabet& a = alphabet();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) out += a.spelling[b];
  return out;
}

bool unspell(std::string_view token, std::string* out) {
  std::string bytes;
  bytes.reserve(token.size());
  for (size_t i = 0; i < token.size();) {
    const auto c0 = static_cast<unsigned char>(token[i]);
    uint32_t cp;
    if (c0 < 0x80) {
      cp = c0;
      i += 1;
    } else if ((c0 & 0xE0) == 0xC0 && i + 1 < token.size()) {
      cp = ((c0 & 0x1Fu) << 6) | (static_cast<unsigned char>(token[i + 1]) & 0x3Fu);
      i += 2;
    } else {
      return false;  // three- and four-byte characters are never in the alphabet
    }
    const int b = byte_of_code_point(cp);
    if (b < 0) return false;
    bytes += static_cast<char>(b);
  }
  *out += bytes;
  return true;
}

}  // namespace rotq::byte_level
