#include "models/tokenizers/llama2c_tokenizer.h"

#include <cmath>
#include <cstring>
#include <utility>

#include "solvers/error.h"

namespace rotq {
namespace {

constexpr int32_t kMaxPlausibleTokenLength = 1 << 16;
constexpr int32_t kFirstBytePiece = 3;  // after <unk>, <s>, </s>
constexpr int32_t kMinVocabSize = kFirstBytePiece + 256;

// Little-endian reader over the file's bytes; every read is bounds-checked.
class BinReader {
 public:
  explicit BinReader(std::string_view data) : data_(data) {}
  size_t offset() const { return pos_; }
  size_t remaining() const { return data_.size() - pos_; }
  uint32_t u32() {
    uint32_t v = 0;
    for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(data_[pos_ + i]);
    pos_ += 4;
    return v;
  }
  std::string_view take(size_t n) {
    const std::string_view out = data_.substr(pos_, n);
    pos_ += n;
    return out;
  }

 private:
  std::string_view data_;
  size_t pos_ = 0;
};

VocabPiece read_piece(BinReader& in, int32_t index, int32_t max_len, const std::string& path) {
  const size_t at = in.offset();
  require(in.remaining() >= 8, path, ": llama2.c tokenizer.bin ends inside token ", index,
          " at byte ", at, " (truncated file?)");
  VocabPiece piece;
  const uint32_t score_bits = in.u32();
  std::memcpy(&piece.score, &score_bits, sizeof piece.score);
  const auto len = static_cast<int32_t>(in.u32());
  require(std::isfinite(piece.score), path, ": llama2.c tokenizer.bin token ", index, " at byte ",
          at, " has a non-finite score (not a tokenizer.bin?)");
  require(len >= 1 && len <= max_len, path, ": llama2.c tokenizer.bin token ", index, " at byte ",
          at, " has length ", len, ", expected 1 ..", max_len,
          " (max_token_length; not a tokenizer.bin?)");
  require(in.remaining() >= static_cast<size_t>(len), path,
          ": llama2.c tokenizer.bin ends inside token ", index, " at byte ", at,
          " (truncated file?)");
  piece.text = std::string(in.take(static_cast<size_t>(len)));
  return piece;
}

// Piece types follow llama2.c's fixed layout, which its encode/decode hard-code.
void assign_types(std::vector<VocabPiece>& pieces, const std::string& path) {
  require(pieces.size() >= kMinVocabSize, path, ": llama2.c tokenizer.bin has ", pieces.size(),
          " tokens, expected at least ", kMinVocabSize, " (<unk>, <s>, </s> and 256 byte pieces)");
  pieces[0].type = PieceType::kUnknown;
  pieces[1].type = PieceType::kControl;
  pieces[2].type = PieceType::kControl;
  for (int b = 0; b < 256; ++b) {
    VocabPiece& p = pieces[kFirstBytePiece + b];
    const std::string expected = byte_piece(static_cast<unsigned char>(b));
    require(p.text == expected, path, ": llama2.c tokenizer.bin token ", kFirstBytePiece + b,
            " is '", p.text, "', expected the byte piece ", expected,
            " (the 256 byte pieces must be ids 3..258)");
    p.type = PieceType::kByte;
  }
}

}  // namespace

BpeVocab llama2c_vocab(std::string_view bytes, int32_t vocab_size_hint, const std::string& path) {
  require(vocab_size_hint >= -1, path, ": vocab size ", vocab_size_hint,
          " is invalid (expected the model's vocab size, or -1 to read to end of file)");
  BinReader in(bytes);
  require(in.remaining() >= 4, path, ": llama2.c tokenizer.bin is ", bytes.size(),
          " bytes, too short for its header");
  const auto max_len = static_cast<int32_t>(in.u32());
  require(max_len >= 1 && max_len <= kMaxPlausibleTokenLength, path,
          ": llama2.c tokenizer.bin max_token_length is ", max_len, ", expected 1 ..",
          kMaxPlausibleTokenLength, " (not a tokenizer.bin?)");

  BpeVocab vocab;
  if (vocab_size_hint >= 0) {
    vocab.pieces.reserve(static_cast<size_t>(vocab_size_hint));
    for (int32_t i = 0; i < vocab_size_hint; ++i) {
      require(in.remaining() > 0, path, ": llama2.c tokenizer.bin holds ", i, " tokens, expected ",
              vocab_size_hint, " (the model's vocab size)");
      vocab.pieces.push_back(read_piece(in, i, max_len, path));
    }
    require(in.remaining() == 0, path, ": llama2.c tokenizer.bin has ", in.remaining(),
            " bytes left after ", vocab_size_hint,
            " tokens (the model's vocab size): the file holds a different vocabulary");
  } else {
    while (in.remaining() > 0) {
      vocab.pieces.push_back(
          read_piece(in, static_cast<int32_t>(vocab.pieces.size()), max_len, path));
    }
  }
  assign_types(vocab.pieces, path);

  // llama2.c encodes raw text: spaces stay ' ' (as in its pieces), the dummy prefix is a " "
  // token, malformed UTF-8 falls back to bytes.
  vocab.normalizer.add_dummy_prefix = true;
  vocab.normalizer.remove_extra_whitespaces = false;
  vocab.normalizer.escape_whitespaces = false;
  vocab.normalizer.malformed_utf8 = NormalizerOptions::Malformed::kLlama2c;
  vocab.byte_fallback = true;
  vocab.unk_piece = vocab.pieces[0].text;
  vocab.bos_piece = vocab.pieces[1].text;
  vocab.eos_piece = vocab.pieces[2].text;
  vocab.dummy_prefix_marker = " ";
  return vocab;
}

std::unique_ptr<Tokenizer> load_llama2c_tokenizer(std::string_view bytes, int32_t vocab_size_hint,
                                                  const std::string& path) {
  return std::make_unique<BpeTokenizer>(llama2c_vocab(bytes, vocab_size_hint, path), "llama2c-bin",
                                        path);
}

bool looks_like_llama2c_tokenizer(std::string_view bytes) {
  if (bytes.size() < 4) return false;
  BinReader in(bytes);
  const auto max_len = static_cast<int32_t>(in.u32());
  return max_len >= 1 && max_len <= kMaxPlausibleTokenLength;
}

}  // namespace rotq
