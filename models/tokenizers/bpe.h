// SentencePiece-BPE tokenization, reproducing SentencePiece 0.1.97 (bpe_model.cc, normalizer.cc,
// sentencepiece_processor.cc) id for id, without linking libsentencepiece.
//
// The vocabulary is format-neutral: sentencepiece_model.h builds it from a .model protobuf (pieces
// spell a space U+2581) and llama2c_tokenizer.h from a tokenizer.bin (pieces keep ' ', and the
// text's spaces are not escaped, exactly as llama2.c encodes).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "models/tokenizers/tokenizer.h"

namespace rotq {

// ModelProto.SentencePiece.Type; the numeric values are the protobuf enum's.
enum class PieceType : uint8_t {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};
const char* piece_type_name(PieceType type);

struct VocabPiece {
  std::string text;
  float score = 0.0f;
  PieceType type = PieceType::kNormal;
};

// SentencePiece's identity normalizer (no precompiled character map).
struct NormalizerOptions {
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = false;
  bool escape_whitespaces = true;
  // kReplace: SentencePiece turns each malformed UTF-8 byte into U+FFFD. kLlama2c: llama2.c looks
  // up each byte with the continuation bytes that follow it (4 bytes at most); a group that is
  // not one well-formed character becomes its <0xXX> byte pieces, never merged. In that mode the
  // dummy prefix is a symbol of its own, as llama2.c's separate " " token.
  enum class Malformed { kReplace, kLlama2c };
  Malformed malformed_utf8 = Malformed::kReplace;
};

struct BpeVocab {
  std::vector<VocabPiece> pieces;
  NormalizerOptions normalizer;
  bool byte_fallback = false;
  std::string unk_piece = "<unk>";
  std::string bos_piece = "<s>";
  std::string eos_piece = "</s>";
  std::string unk_surface = " \xE2\x81\x87 ";  // what decode() prints for <unk>: " ⁇ "
  // The dummy prefix as pieces spell it; decode() drops it from the start of the first piece.
  std::string dummy_prefix_marker = "\xE2\x96\x81";
};

class BpeTokenizer final : public Tokenizer {
 public:
  // Checks the vocabulary as SentencePiece's InitializePieces does (non-empty unique pieces, one
  // unknown piece, 256 well-formed byte pieces when byte_fallback); errors name `source`.
  BpeTokenizer(BpeVocab vocab, std::string kind, std::string source);

  std::vector<int32_t> encode(std::string_view text) const override;
  std::string decode(const std::vector<int32_t>& ids) const override;
  std::string decode_piece(int32_t prev, int32_t token) const override;
  int32_t vocab_size() const override { return static_cast<int32_t>(vocab_.pieces.size()); }
  int32_t bos_id() const override { return bos_id_; }
  int32_t eos_id() const override { return eos_id_; }
  const std::string& piece(int32_t id) const override { return vocab_.pieces[checked(id)].text; }
  std::string kind() const override { return kind_; }
  // LLaMA-1/2, Mistral and llama2.c models were trained with BOS before every document.
  BosPolicy bos_policy() const override {
    return {bos_id_ >= 0, bos_id_,
            bos_id_ >= 0 ? kind_ + ": BOS before every text (LLaMA-1/2 convention)"
                         : kind_ + ": the vocabulary has no BOS"};
  }

  // The string BPE segments: dummy prefix, spaces as U+2581 (when escape_whitespaces), runs of
  // spaces collapsed (when remove_extra_whitespaces), malformed bytes replaced (kReplace).
  std::string normalize(std::string_view text) const;
  // SentencePiece's PieceToId: reserved (unknown/control/byte) pieces first, then the others; the
  // unknown id when `piece` is in neither.
  int32_t piece_to_id(std::string_view piece) const;
  PieceType piece_type(int32_t id) const { return vocab_.pieces[checked(id)].type; }
  float score(int32_t id) const { return vocab_.pieces[checked(id)].score; }
  int32_t unk_id() const { return unk_id_; }
  const BpeVocab& vocab() const { return vocab_; }

 private:
  void index_pieces();
  size_t checked(int32_t id) const;
  size_t match_user_defined(std::string_view text) const;
  std::string_view next_normalizer_unit(std::string_view text, size_t* consumed) const;
  void append_decoded_bytes(std::string_view bytes, std::string* out) const;

  BpeVocab vocab_;
  std::string kind_;
  std::string source_;
  // Pieces a merge may produce (normal, user-defined, unused) and the reserved ones, as in
  // SentencePiece's pieces_ / reserved_id_map_. Keys view into vocab_.pieces.
  std::unordered_map<std::string_view, int32_t> mergeable_;
  std::unordered_map<std::string_view, int32_t> reserved_;
  std::unordered_set<std::string_view> user_defined_;
  std::vector<size_t> user_defined_lengths_;  // distinct, longest first
  int32_t byte_ids_[256] = {};
  std::vector<int16_t> byte_value_;  // per id: the byte of a <0xXX> piece, else -1
  int32_t unk_id_ = -1;
  int32_t bos_id_ = -1;
  int32_t eos_id_ = -1;
};

// "<0x41>" -> 0x41; -1 unless `piece` is exactly "<0x" two uppercase hex digits ">".
int parse_byte_piece(std::string_view piece);
std::string byte_piece(unsigned char byte);

}  // namespace rotq
