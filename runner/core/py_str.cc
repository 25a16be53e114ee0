#include "runner/core/py_str.h"

#include <cctype>
#include <cstdint>

namespace rotq {
namespace {

bool py_space(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

// The code point starting at byte i and its length (a malformed byte counts as itself).
// Malformed sequences (bad continuation bytes, overlong forms) decode as their first byte, which
// is never whitespace above 0x7F: invalid text is kept, not stripped.
uint32_t decode_at(const std::string& s, size_t i, size_t& len) {
  const auto b = static_cast<unsigned char>(s[i]);
  len = b < 0x80 ? 1 : b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 1;
  if (len == 1 || i + len > s.size()) {
    len = 1;
    return b < 0x80 ? b : 0xFFFD;
  }
  uint32_t c = b & (0x7F >> len);
  for (size_t k = 1; k < len; ++k) {
    const auto t = static_cast<unsigned char>(s[i + k]);
    if ((t & 0xC0) != 0x80) {
      len = 1;
      return 0xFFFD;
    }
    c = (c << 6) | (t & 0x3F);
  }
  static const uint32_t min_of_len[] = {0, 0, 0x80, 0x800, 0x10000};
  if (c < min_of_len[len]) {
    len = 1;
    return 0xFFFD;
  }
  return c;
}

// Start of the code point that ends at byte `end` (exclusive).
size_t back_to_start(const std::string& s, size_t end) {
  size_t i = end - 1;
  while (i > 0 && end - i < 4 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
  return i;
}

size_t rstrip_end(const std::string& s) {
  size_t end = s.size();
  while (end > 0) {
    const size_t start = back_to_start(s, end);
    size_t len = 0;
    if (!py_space(decode_at(s, start, len)) || start + len != end) break;
    end = start;
  }
  return end;
}

}  // namespace

std::string py_rstrip(const std::string& s) { return s.substr(0, rstrip_end(s)); }

std::string py_strip(const std::string& s) {
  const size_t end = rstrip_end(s);
  size_t begin = 0, len = 0;
  while (begin < end && py_space(decode_at(s, begin, len))) begin += len;
  return begin >= end ? std::string() : s.substr(begin, end - begin);
}

std::string py_capitalize(const std::string& s) {
  std::string out = s;
  for (size_t i = 0; i < out.size(); ++i) {
    const auto c = static_cast<unsigned char>(out[i]);
    out[i] = static_cast<char>(i == 0 ? std::toupper(c) : std::tolower(c));
  }
  return out;
}

size_t utf8_length(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

}  // namespace rotq
