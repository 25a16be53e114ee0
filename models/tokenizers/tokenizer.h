// Tokenizers: llama2.c's tokenizer.bin and SentencePiece's tokenizer.model, behind one interface.
//
// Both vocabularies are SentencePiece-BPE models (scored pieces, byte fallback, a dummy prefix);
// they share one BPE encoder (bpe.h) that reproduces SentencePiece's own segmentation id for id.
// BOS/EOS are never added implicitly: callers state their policy (see encode_with_bos below).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace rotq {

// Whether a text's ids start with a BOS, as the tokenizer's own configuration says.
struct BosPolicy {
  bool add = false;
  int32_t id = -1;     // the BOS id (-1: none), also when it is not added
  std::string source;  // where the policy comes from; recorded with every result
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Token ids of `text` (UTF-8), without BOS/EOS; SentencePiece's `encode(text)` semantics.
  virtual std::vector<int32_t> encode(std::string_view text) const = 0;

  // Text of `ids` as SentencePiece's `decode(ids)`: pieces joined, U+2581 -> ' ', the leading
  // space of the first piece dropped, byte pieces <0xXX> joined into raw bytes (a malformed UTF-8
  // byte becomes U+FFFD); control tokens (BOS/EOS) produce nothing, <unk> its surface " ⁇ ".
  // Throws rotq::Error on an id outside [0, vocab_size()).
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;

  // Streaming decode of one token after `prev` (llama2.c's decode): the piece's bytes, with the
  // leading space dropped right after BOS and <0xXX> turned into the raw byte; control tokens
  // produce nothing and <unk> " ⁇ ", as in decode().
  virtual std::string decode_piece(int32_t prev, int32_t token) const = 0;

  virtual int32_t vocab_size() const = 0;
  virtual int32_t bos_id() const = 0;                      // -1 when the vocabulary has none
  virtual int32_t eos_id() const = 0;                      // -1 when the vocabulary has none
  virtual const std::string& piece(int32_t id) const = 0;  // raw piece string (U+2581 kept)
  virtual std::string kind() const = 0;  // "llama2c-bin", "sentencepiece" or "byte-level-bpe"
  virtual BosPolicy bos_policy() const = 0;
};

// Loads a tokenizer.bin (llama2.c format), tokenizer.model (SentencePiece protobuf) or
// tokenizer.json (Hugging Face, byte-level BPE, with tokenizer_config.json beside it); the format
// is detected from the bytes, not the file name. A directory: its first file named in
// kTokenizerFileNames. `vocab_size_hint` is needed by tokenizer.bin
// files, which do not record their size (pass the model's vocab size; -1 reads to end of file).
// Throws rotq::Error naming the file and the problem on any malformed input.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path, int32_t vocab_size_hint = -1);

// The file names a model directory's tokenizer may have, in order of preference (LLaMA-2
// directories carry both tokenizer.model and a tokenizer.json: SentencePiece's own model wins).
extern const char* const kTokenizerFileNames[3];
// The first of them in `dir`, or "" when none is there.
std::string tokenizer_in_directory(const std::string& dir);

// `path` itself, or for a directory the tokenizer file in it; rotq::Error when it has none.
std::string resolve_tokenizer_path(const std::string& path);

// The files that make up the tokenizer `tok` loaded from `path`, each with the name it has in a
// model directory: tokenizer.model, tokenizer.bin, or tokenizer.json with the
// tokenizer_config.json beside it (when there is one).
std::vector<std::pair<std::string, std::string>> tokenizer_files(const Tokenizer& tok,
                                                                 const std::string& path);

// Whether texts start with BOS: `choice` (--bos/--no-bos, evaluation.bos) when given, else the
// tokenizer's own policy.
bool resolve_bos(const Tokenizer& tok, std::optional<bool> choice);
// The policy in effect, with where it comes from, for the records of a result.
BosPolicy effective_bos(const Tokenizer& tok, std::optional<bool> choice);

// BOS policy made explicit at every call site.
std::vector<int32_t> encode_with_bos(const Tokenizer& tok, std::string_view text, bool add_bos);

}  // namespace rotq
