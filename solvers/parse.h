// Whole-string number parsing for option values: std::stod alone accepts trailing garbage ("3x")
// and throws on none, so every option parser wraps it the same way.
#pragma once

#include <charconv>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>

namespace rotq {

// The number `text` spells, all of it; nullopt otherwise. "inf" and "nan" parse (callers that
// need a finite value check).
inline std::optional<double> parse_number(const std::string& text) {
  try {
    size_t used = 0;
    const double x = std::stod(text, &used);
    if (used == text.size()) return x;
  } catch (const std::exception&) {
  }
  return std::nullopt;
}

// The decimal integer `text` spells, all of it, within int64; nullopt otherwise (no exception for
// an overflow: callers name the option in their own error).
inline std::optional<int64_t> parse_integer(const std::string& text) {
  int64_t v = 0;
  const char* end = text.data() + text.size();
  const auto r = std::from_chars(text.data(), end, v);
  if (text.empty() || r.ec != std::errc() || r.ptr != end) return std::nullopt;
  return v;
}

}  // namespace rotq
