// Python's str semantics where the harness's prompts depend on them, on UTF-8 bytes: strip()
// removes every character str.isspace() accepts (ASCII whitespace, U+001C-U+001F, U+0085, U+00A0,
// U+1680, U+2000-U+200A, U+2028, U+2029, U+202F, U+205F, U+3000), len() counts code points.
#pragma once

#include <cstddef>
#include <string>

namespace rotq {

std::string py_strip(const std::string& s);
std::string py_rstrip(const std::string& s);
// str.capitalize() for ASCII letters (first upper, the rest lower; other bytes kept).
std::string py_capitalize(const std::string& s);
// Characters (Unicode code points) of UTF-8 text: Python's len(), lm-eval's acc_norm length.
size_t utf8_length(const std::string& s);

}  // namespace rotq
