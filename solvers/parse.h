// Whole-string number parsing for option values: std::stod alone accepts trailing garbage ("3x")
// and throws on none, so every option parser wraps it the same way.
#pragma once

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

}  // namespace rotq
