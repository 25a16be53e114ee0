#include "models/tokenizer.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>

#include "models/files.h"
#include "models/llama2c_tokenizer.h"
#include "models/sentencepiece_model.h"
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

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path, int32_t vocab_size_hint) {
  const std::string bytes = read_file(path);
  require(!bytes.empty(), "tokenizer file ", path, " is empty");
  // The two signatures cannot both match: a ModelProto's first four bytes (0x0A, a non-zero length
  // varint, ...) read as a little-endian int32 exceed 65536, the largest max_token_length
  // accepted.
  if (looks_like_sentencepiece_model(bytes)) return load_sentencepiece_tokenizer(bytes, path);
  if (looks_like_llama2c_tokenizer(bytes)) {
    return load_llama2c_tokenizer(bytes, vocab_size_hint, path);
  }
  fail("tokenizer file ", path,
       " is neither a SentencePiece model (protobuf starting with a piece, byte 0x0A) nor a "
       "llama2.c tokenizer.bin (starting with a small int32 max_token_length)");
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
