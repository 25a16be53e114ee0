// SentencePiece's tokenizer.model: a serialized sentencepiece.ModelProto
// (sentencepiece_model.proto), read by a hand-written protobuf wire-format parser so that
// libsentencepiece/libprotobuf are not linked (Debian's clash with LibTorch's bundled protobuf).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "models/tokenizers/bpe.h"
#include "models/tokenizers/tokenizer.h"

namespace rotq {

// TrainerSpec fields that matter for encoding; defaults are the proto2 defaults.
struct SentencePieceTrainerSpec {
  enum ModelType : int32_t { kUnigram = 1, kBpe = 2, kWord = 3, kChar = 4 };
  int32_t model_type = kUnigram;
  int32_t vocab_size = 8000;
  bool byte_fallback = false;
  bool treat_whitespace_as_suffix = false;
  int32_t unk_id = 0;
  int32_t bos_id = 1;
  int32_t eos_id = 2;
  int32_t pad_id = -1;
  std::string unk_piece = "<unk>";
  std::string bos_piece = "<s>";
  std::string eos_piece = "</s>";
  std::string pad_piece = "<pad>";
  bool has_unk_surface = false;
  std::string unk_surface = " \xE2\x81\x87 ";
};

struct SentencePieceNormalizerSpec {
  std::string name;
  std::string precompiled_charsmap;
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = true;
  bool escape_whitespaces = true;
};

struct SentencePieceModel {
  std::vector<VocabPiece> pieces;
  bool has_trainer_spec = false;
  SentencePieceTrainerSpec trainer_spec;
  bool has_normalizer_spec = false;
  SentencePieceNormalizerSpec normalizer_spec;
  bool has_denormalizer_spec = false;
  SentencePieceNormalizerSpec denormalizer_spec;
};

const char* model_type_name(int32_t model_type);

// Parses the wire format. Unknown fields are skipped; truncated or malformed bytes (bad varint,
// length past the end, group or reserved wire types, out-of-range enum) throw rotq::Error naming
// `path` and the byte offset.
SentencePieceModel parse_sentencepiece_model(std::string_view bytes, const std::string& path);

// The model as a BPE vocabulary, after checking that rotq reproduces it: BPE model type, identity
// normalizer (no precompiled_charsmap, e.g. nmt_nfkc), whitespace as prefix. Throws rotq::Error
// naming `path` and the unsupported feature otherwise.
BpeVocab sentencepiece_bpe_vocab(const SentencePieceModel& model, const std::string& path);

// parse + check + BpeTokenizer of kind "sentencepiece".
std::unique_ptr<Tokenizer> load_sentencepiece_tokenizer(std::string_view bytes,
                                                        const std::string& path);

// Whether `bytes` open like a serialized ModelProto: field 1 (a piece), length-delimited, whose
// own first field is again field 1 or 2 or 3. Never true for a llama2.c tokenizer.bin, whose
// int32 max_token_length is small.
bool looks_like_sentencepiece_model(std::string_view bytes);

}  // namespace rotq
