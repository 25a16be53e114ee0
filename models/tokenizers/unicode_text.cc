#include "models/tokenizers/unicode_text.h"

#include <utf8proc.h>

#include <cstdlib>
#include <memory>

#include "solvers/error.h"

namespace rotq::unicode {
namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";

bool is_continuation(unsigned char c) { return (c & 0xC0) == 0x80; }

// Length of the well-formed character at `s[i]`, or 0 with *subpart the length of the maximal
// prefix of one (at least 1) that is to be replaced by a single U+FFFD.
size_t well_formed_length(std::string_view s, size_t i, size_t* subpart) {
  const auto c = static_cast<unsigned char>(s[i]);
  *subpart = 1;
  if (c < 0x80) return 1;
  size_t need;
  unsigned char lo = 0x80, hi = 0xBF;  // the second byte's range (Unicode table 3-7)
  if (c >= 0xC2 && c <= 0xDF) {
    need = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    need = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    need = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  size_t k = 1;
  for (; k < need && i + k < s.size(); ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    const bool ok = k == 1 ? (b >= lo && b <= hi) : is_continuation(b);
    if (!ok) break;
  }
  if (k == need) return need;
  *subpart = k;
  return 0;
}

}  // namespace

std::string to_valid_utf8(std::string_view bytes) {
  std::string out;
  size_t copied = 0;  // bytes[0, copied) are already in `out`, or nothing needed repair yet
  bool repaired = false;
  for (size_t i = 0; i < bytes.size();) {
    size_t subpart;
    const size_t n = well_formed_length(bytes, i, &subpart);
    if (n > 0) {
      i += n;
      continue;
    }
    if (!repaired) out.reserve(bytes.size() + 16);
    repaired = true;
    out.append(bytes.substr(copied, i - copied));
    out.append(kReplacement);
    i += subpart;
    copied = i;
  }
  if (!repaired) return std::string(bytes);
  out.append(bytes.substr(copied));
  return out;
}

const char* normal_form_name(NormalForm form) {
  switch (form) {
    case NormalForm::kNFC:
      return "NFC";
    case NormalForm::kNFD:
      return "NFD";
    case NormalForm::kNFKC:
      return "NFKC";
    case NormalForm::kNFKD:
      return "NFKD";
  }
  return "?";
}

std::string normalize(std::string_view text, NormalForm form) {
  bool ascii = true;
  for (unsigned char c : text) ascii = ascii && c < 0x80;
  if (ascii) return std::string(text);  // ASCII is invariant under all four forms
  int options = UTF8PROC_STABLE;
  switch (form) {
    case NormalForm::kNFC:
      options |= UTF8PROC_COMPOSE;
      break;
    case NormalForm::kNFD:
      options |= UTF8PROC_DECOMPOSE;
      break;
    case NormalForm::kNFKC:
      options |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT;
      break;
    case NormalForm::kNFKD:
      options |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT;
      break;
  }
  utf8proc_uint8_t* out = nullptr;
  const utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                                          static_cast<utf8proc_ssize_t>(text.size()), &out,
                                          static_cast<utf8proc_option_t>(options));
  std::unique_ptr<utf8proc_uint8_t, decltype(&std::free)> owned(out, &std::free);
  require(n >= 0, normal_form_name(form), " normalization failed: ", utf8proc_errmsg(n));
  return std::string(reinterpret_cast<const char*>(out), static_cast<size_t>(n));
}

uint32_t next_code_point(std::string_view s, size_t* pos) {
  utf8proc_int32_t cp = 0;
  const utf8proc_ssize_t n =
      utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(s.data() + *pos),
                       static_cast<utf8proc_ssize_t>(s.size() - *pos), &cp);
  if (n <= 0) {  // not reachable on valid text; step one byte so callers always progress
    *pos += 1;
    return 0xFFFD;
  }
  *pos += static_cast<size_t>(n);
  return static_cast<uint32_t>(cp);
}

uint32_t previous_code_point(std::string_view s, size_t end, size_t* start) {
  size_t b = end - 1;
  while (b > 0 && is_continuation(static_cast<unsigned char>(s[b]))) --b;
  *start = b;
  size_t p = b;
  return next_code_point(s, &p);
}

bool is_white_space(uint32_t cp) {
  if ((cp >= 0x09 && cp <= 0x0D) || cp == 0x85) return true;
  const utf8proc_category_t c = utf8proc_category(static_cast<utf8proc_int32_t>(cp));
  return c == UTF8PROC_CATEGORY_ZS || c == UTF8PROC_CATEGORY_ZL || c == UTF8PROC_CATEGORY_ZP;
}

bool is_word_char(uint32_t cp) {
  if (cp == 0x200C || cp == 0x200D) return true;
  const utf8proc_category_t c = utf8proc_category(static_cast<utf8proc_int32_t>(cp));
  return (c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_ME) ||  // L*, M*
         c == UTF8PROC_CATEGORY_ND || c == UTF8PROC_CATEGORY_NL || c == UTF8PROC_CATEGORY_PC;
}

}  // namespace rotq::unicode
