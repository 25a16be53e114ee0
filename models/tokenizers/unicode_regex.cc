#include "models/tokenizers/unicode_regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <memory>

#include "solvers/error.h"

namespace rotq {
namespace {

constexpr const char* kWordProperties = "\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}";

std::string pcre2_message(int code) {
  PCRE2_UCHAR buffer[256];
  if (pcre2_get_error_message(code, buffer, sizeof(buffer)) < 0)
    return "error " + std::to_string(code);
  return reinterpret_cast<const char*>(buffer);
}

// The spelling of escape `c` (one of sSdDwW), or nullptr when it is not one of them.
const char* property_spelling(char c) {
  switch (c) {
    case 's':
      return "\\p{White_Space}";
    case 'S':
      return "\\P{White_Space}";
    case 'd':
      return "\\p{Nd}";
    case 'D':
      return "\\P{Nd}";
    default:
      return nullptr;
  }
}

}  // namespace

std::string oniguruma_escapes_as_properties(const std::string& pattern) {
  std::string out;
  out.reserve(pattern.size() + 32);
  int class_depth = 0;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char e = pattern[++i];
      const bool in_class = class_depth > 0;
      if (const char* p = property_spelling(e)) {
        out += p;
      } else if (e == 'w') {
        out += in_class ? std::string(kWordProperties) : "[" + std::string(kWordProperties) + "]";
      } else if (e == 'W') {
        require(!in_class, "regex ", pattern,
                ": \\W inside a character class is not supported (spell the class out)");
        out += "[^" + std::string(kWordProperties) + "]";
      } else {
        out += c;
        out += e;
      }
      continue;
    }
    if (c == '[') {
      // A "[" inside a class is a literal unless it opens a POSIX class "[:...:]".
      if (class_depth == 0) {
        ++class_depth;
        out += c;
        // "[]..." and "[^]..." take the "]" as a literal member.
        if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
        if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += pattern[++i];
        continue;
      }
      if (i + 1 < pattern.size() && pattern[i + 1] == ':') {
        const size_t close = pattern.find(":]", i + 2);
        if (close != std::string::npos) {
          out.append(pattern, i, close + 2 - i);
          i = close + 1;
          continue;
        }
      }
    } else if (c == ']' && class_depth > 0) {
      --class_depth;
    }
    out += c;
  }
  return out;
}

struct UnicodeRegex::Compiled {
  pcre2_code* code = nullptr;
  bool jit = false;
  ~Compiled() {
    if (code != nullptr) pcre2_code_free(code);
  }
};

UnicodeRegex::UnicodeRegex(const std::string& pattern, const std::string& source)
    : pattern_(pattern), compiled_(std::make_unique<Compiled>()) {
  const std::string translated = oniguruma_escapes_as_properties(pattern);
  int error = 0;
  PCRE2_SIZE offset = 0;
  compiled_->code =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                    PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &error, &offset, nullptr);
  require(compiled_->code != nullptr, source, ": regex ", pattern,
          " does not compile: ", pcre2_message(error), " (at offset ", offset,
          " of its PCRE2 spelling ", translated, ")");
  // JIT is an optimisation only: without it (e.g. W^X memory policies) matching is slower.
  compiled_->jit = pcre2_jit_compile(compiled_->code, PCRE2_JIT_COMPLETE) == 0;
}

UnicodeRegex::~UnicodeRegex() = default;

std::vector<UnicodeRegex::Match> UnicodeRegex::find_all(std::string_view text) const {
  std::vector<Match> matches;
  std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> owned(
      pcre2_match_data_create_from_pattern(compiled_->code, nullptr), &pcre2_match_data_free);
  pcre2_match_data* data = owned.get();
  require(data != nullptr, "regex ", pattern_, ": out of memory for match data");
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t start = 0;
  while (start < text.size()) {
    // The text was validated once by the caller; PCRE2 must not rescan it at every start.
    const int rc = compiled_->jit ? pcre2_jit_match(compiled_->code, subject, text.size(), start,
                                                    PCRE2_NO_UTF_CHECK, data, nullptr)
                                  : pcre2_match(compiled_->code, subject, text.size(), start,
                                                PCRE2_NO_UTF_CHECK, data, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    require(rc >= 0, "regex ", pattern_, ": matching failed: ", pcre2_message(rc));
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data);
    const size_t b = ovector[0], e = ovector[1];
    if (e > b) {
      matches.push_back({b, e});
      start = e;
    } else {  // an empty match: step over one character
      start = b + 1;
      while (start < text.size() && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) {
        ++start;
      }
    }
  }
  return matches;
}

}  // namespace rotq
