#include "runner/data/text.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "models/base/files.h"
#include "solvers/error.h"

namespace rotq {

TextFormat parse_text_format(const std::string& s) {
  if (s == "auto") return TextFormat::kAuto;
  if (s == "hf-rows" || s == "wikitext") return TextFormat::kHfRows;
  if (s == "raw") return TextFormat::kRaw;
  fail("--text-format ", s, ": expected auto, hf-rows or raw");
}

const char* text_format_name(TextFormat f) {
  switch (f) {
    case TextFormat::kAuto:
      return "auto";
    case TextFormat::kHfRows:
      return "hf-rows";
    case TextFormat::kRaw:
      return "raw";
  }
  return "?";
}

TextFormat resolve_text_format(TextFormat f, const std::string& path) {
  if (f != TextFormat::kAuto) return f;
  const std::string name = std::filesystem::path(path).filename().string();
  const bool wiki = name.find("wikitext") != std::string::npos ||
                    (name.rfind("wiki", 0) == 0 && name.size() > 4 &&
                     name.compare(name.size() - 4, 4, ".raw") == 0);
  return wiki ? TextFormat::kHfRows : TextFormat::kRaw;
}

std::string hf_rows_joined(const std::string& raw) {
  std::string out;
  out.reserve(raw.size() + raw.size() / 8);
  size_t pos = 0;
  bool first = true;
  while (pos < raw.size()) {
    size_t nl = raw.find('\n', pos);
    const size_t end = nl == std::string::npos ? raw.size() : nl + 1;
    const std::string line = raw.substr(pos, end - pos);
    pos = end;
    if (!first) out += "\n\n";
    first = false;
    if (line.find_first_not_of(" \t\r\n") != std::string::npos) out += line;
  }
  return out;
}

std::string read_text(const std::string& path, TextFormat format) {
  std::string raw = read_file_bytes(path);
  require(raw.find_first_not_of(" \t\r\n") != std::string::npos, path,
          ": the text is empty (nothing to score)");
  return resolve_text_format(format, path) == TextFormat::kHfRows ? hf_rows_joined(raw) : raw;
}

}  // namespace rotq
