// CSV fields as RFC 4180 writes them (and Python's csv module reads them): a field holding a
// comma, a quote, or a line break is quoted, its quotes doubled.
#pragma once

#include <string>
#include <vector>

namespace rotq {

inline std::string csv_field(const std::string& v) {
  if (v.find_first_of(",\"\r\n") == std::string::npos) return v;
  std::string q = "\"";
  for (char ch : v) q += ch == '"' ? std::string("\"\"") : std::string(1, ch);
  return q + "\"";
}

inline std::string csv_row(const std::vector<std::string>& cells) {
  std::string s;
  for (size_t i = 0; i < cells.size(); ++i) s += (i ? "," : "") + csv_field(cells[i]);
  return s;
}

}  // namespace rotq
