// Evaluation and calibration text, read the way the papers' code reads it.
#pragma once

#include <string>

#include "models/base/files.h"  // read_file_bytes

namespace rotq {

// hf-rows: the file is WikiText raw; each line is a dataset row with its "\n" kept, a line that is
//   only whitespace is the empty row, and the text is "\n\n".join(rows) — what
//   "\n\n".join(load_dataset('wikitext', ...)['text']) gives in the papers' code;
// raw: the file's bytes as they are;
// auto: hf-rows for files named like WikiText (wiki*.raw, *wikitext*), raw otherwise.
enum class TextFormat { kAuto, kHfRows, kRaw };

TextFormat parse_text_format(const std::string& s);  // "auto" | "hf-rows" | "raw"
const char* text_format_name(TextFormat f);
TextFormat resolve_text_format(TextFormat f, const std::string& path);

std::string hf_rows_joined(const std::string& raw);

// Reads `path` in `format` (resolved); throws naming the file when missing or empty.
std::string read_text(const std::string& path, TextFormat format);

}  // namespace rotq
