// A Unicode regular expression with Oniguruma's meaning of the escapes, on PCRE2 (UTF + UCP, JIT).
//
// Hugging Face `tokenizers` compiles a Split pre-tokenizer's pattern with Oniguruma, whose \s is
// Unicode's White_Space property, \d Nd and \w Alphabetic|M|Nd|Pc. PCRE2's UCP classes differ at
// the edges (its \s also takes U+180E), so those escapes are rewritten to the properties before
// compiling. Everything else (\p{L}, \p{N}, (?i:...), (?!\S), {1,3}) means the same in both.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace rotq {

class UnicodeRegex {
 public:
  // Throws rotq::Error naming `source` and the position when the pattern does not compile.
  UnicodeRegex(const std::string& pattern, const std::string& source);
  ~UnicodeRegex();
  UnicodeRegex(const UnicodeRegex&) = delete;
  UnicodeRegex& operator=(const UnicodeRegex&) = delete;

  struct Match {
    size_t begin;
    size_t end;
  };
  // The leftmost-first, non-overlapping matches in `text` (valid UTF-8), left to right; empty
  // matches are skipped. Thread-safe (each call has its own match data).
  std::vector<Match> find_all(std::string_view text) const;

  const std::string& pattern() const { return pattern_; }

 private:
  struct Compiled;
  std::string pattern_;
  std::unique_ptr<Compiled> compiled_;
};

// `pattern` with \s \S \d \D \w \W (outside and inside classes) spelled as Unicode properties.
// Throws rotq::Error on a \W inside a class, which PCRE2 cannot spell as a property list.
std::string oniguruma_escapes_as_properties(const std::string& pattern);

}  // namespace rotq
