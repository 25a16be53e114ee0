#include "models/tokenizers/tokenizer.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "models/base/files.h"
#include "models/tokenizers/byte_level_bpe.h"
#include "models/tokenizers/llama2c_tokenizer.h"
#include "models/tokenizers/sentencepiece_model.h"
#include "solvers/error.h"

namespace rotq {
namespace {

std::string read_file(const std::string& path) {
  try {
    return read_file_bytes(path);
  } catch (const Error& e) {
    fail("tokenizer: ", e.what());
  }
}

}  // namespace

std::string tokenizer_in_directory(const std::string& dir) {
  for (const char* name : kTokenizerFileNames) {
    const std::filesystem::path p = std::filesystem::path(dir) / name;
    std::error_code ec;
    if (std::filesystem::is_regular_file(p, ec)) return p.string();
  }
  return "";
}

std::string resolve_tokenizer_path(const std::string& given) {
  std::error_code ec;
  if (!std::filesystem::is_directory(given, ec)) return given;
  const std::string path = tokenizer_in_directory(given);
  require(!path.empty(), "tokenizer: directory ", given,
          " has none of tokenizer.model, tokenizer.bin, tokenizer.json");
  return path;
}

std::vector<std::pair<std::string, std::string>> tokenizer_files(const Tokenizer& tok,
                                                                 const std::string& given) {
  const std::string path = resolve_tokenizer_path(given);
  if (tok.kind() == "sentencepiece") return {{path, "tokenizer.model"}};
  if (tok.kind() == "llama2c-bin") return {{path, "tokenizer.bin"}};
  std::vector<std::pair<std::string, std::string>> files = {{path, "tokenizer.json"}};
  const auto config = std::filesystem::path(path).parent_path() / "tokenizer_config.json";
  std::error_code ec;
  if (std::filesystem::is_regular_file(config, ec)) {
    files.emplace_back(config.string(), "tokenizer_config.json");
  }
  return files;
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& given, int32_t vocab_size_hint) {
  const std::string path = resolve_tokenizer_path(given);
  const std::string bytes = read_file(path);
  require(!bytes.empty(), "tokenizer file ", path, " is empty");
  // The two signatures cannot both match: a ModelProto's first four bytes (0x0A, a non-zero length
  // varint, ...) read as a little-endian int32 exceed 65536, the largest max_token_length
  // accepted.
  if (looks_like_sentencepiece_model(bytes)) return load_sentencepiece_tokenizer(bytes, path);
  if (looks_like_llama2c_tokenizer(bytes)) {
    return load_llama2c_tokenizer(bytes, vocab_size_hint, path);
  }
  if (looks_like_json_object(bytes)) return load_tokenizer_json(bytes, path);
  fail("tokenizer file ", path,
       " is neither a SentencePiece model (protobuf starting with a piece, byte 0x0A), a "
       "llama2.c tokenizer.bin (starting with a small int32 max_token_length) nor a Hugging Face "
       "tokenizer.json (a JSON object)");
}

const char* const kTokenizerFileNames[3] = {"tokenizer.model", "tokenizer.bin", "tokenizer.json"};

bool resolve_bos(const Tokenizer& tok, std::optional<bool> choice) {
  return choice.value_or(tok.bos_policy().add);
}

BosPolicy effective_bos(const Tokenizer& tok, std::optional<bool> choice) {
  BosPolicy p = tok.bos_policy();
  if (choice && *choice != p.add) {
    p.source =
        std::string(*choice ? "--bos" : "--no-bos") + " (the tokenizer's own: " + p.source + ")";
    p.add = *choice;
  }
  return p;
}

std::vector<int32_t> encode_with_bos(const Tokenizer& tok, std::string_view text, bool add_bos) {
  std::vector<int32_t> ids;
  if (add_bos) {
    require(tok.bos_id() >= 0, "the ", tok.kind(), " tokenizer has no BOS piece to prepend");
    ids.push_back(tok.bos_id());
  }
  const std::vector<int32_t> body = tok.encode(text);
  ids.insert(ids.end(), body.begin(), body.end());
  return ids;
}

}  // namespace rotq
