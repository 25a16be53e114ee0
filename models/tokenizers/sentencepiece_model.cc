#include "models/tokenizers/sentencepiece_model.h"

#include <cmath>
#include <cstring>
#include <ostream>
#include <utility>

#include "solvers/error.h"

namespace rotq {
namespace {

enum WireType : uint32_t { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

// Error-message prefix, formatted only when an error is raised (require() evaluates its
// arguments on every call, and this runs once per field).
struct Where {
  const std::string& path;
  size_t offset;
};

std::ostream& operator<<(std::ostream& os, const Where& w) {
  return os << w.path << ": not a valid SentencePiece model: at byte " << w.offset;
}

struct Field {
  uint32_t number = 0;
  uint32_t wire_type = 0;
  size_t offset = 0;  // of the tag, in the file
  uint64_t varint = 0;
  uint32_t fixed32 = 0;
  std::string_view bytes;
};

// Sequential reader of one message's fields. Every read is bounds-checked against the message,
// so a corrupt length can neither read past the buffer nor loop forever (each field consumes at
// least one byte).
class WireReader {
 public:
  WireReader(std::string_view data, size_t base, const std::string& path, const char* message)
      : data_(data), base_(base), path_(path), message_(message) {}

  bool at_end() const { return pos_ >= data_.size(); }

  Field next() {
    Field f;
    f.offset = base_ + pos_;
    const uint64_t tag = varint("a field tag");
    f.wire_type = static_cast<uint32_t>(tag & 7);
    require(tag >> 3 >= 1 && tag >> 3 <= (1u << 29) - 1, where(f.offset), ": invalid field number ",
            tag >> 3, " in ", message_);
    f.number = static_cast<uint32_t>(tag >> 3);
    switch (f.wire_type) {
      case kVarint:
        f.varint = varint("a varint value");
        break;
      case kFixed64:
        take(8, "a fixed64 value");
        break;
      case kLengthDelimited: {
        const size_t at = base_ + pos_;
        const uint64_t len = varint("a length");
        require(len <= data_.size() - pos_, where(at), ": field ", f.number, " of ", message_,
                " has length ", len, " but only ", data_.size() - pos_,
                " bytes remain in the message (truncated file?)");
        f.bytes = take(static_cast<size_t>(len), "a length-delimited value");
        break;
      }
      case kFixed32: {
        const std::string_view b = take(4, "a fixed32 value");
        for (int i = 3; i >= 0; --i) f.fixed32 = (f.fixed32 << 8) | static_cast<uint8_t>(b[i]);
        break;
      }
      default:
        fail(where(f.offset), ": field ", f.number, " of ", message_, " has wire type ",
             f.wire_type, ", expected 0, 1, 2 or 5 (groups are not supported)");
    }
    return f;
  }

  // Offset of the byte after the data just read, within the file.
  size_t offset() const { return base_ + pos_; }

  Where where(size_t offset) const { return Where{path_, offset}; }

 private:
  uint64_t varint(const char* what) {
    const size_t start = base_ + pos_;
    uint64_t value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      require(pos_ < data_.size(), where(start), ": ", message_, " ends inside ", what,
              " (truncated file?)");
      const auto b = static_cast<uint8_t>(data_[pos_++]);
      value |= static_cast<uint64_t>(b & 0x7F) << shift;
      if (b < 0x80) return value;
    }
    fail(where(start), ": ", what, " in ", message_, " is a varint longer than 10 bytes");
  }

  std::string_view take(size_t n, const char* what) {
    require(n <= data_.size() - pos_, where(base_ + pos_), ": ", message_, " ends inside ", what,
            " (truncated file?)");
    const std::string_view out = data_.substr(pos_, n);
    pos_ += n;
    return out;
  }

  std::string_view data_;
  size_t base_;
  size_t pos_ = 0;
  const std::string& path_;
  const char* message_;
};

class FieldDecoder {
 public:
  FieldDecoder(const WireReader& reader, const Field& field, const char* message)
      : reader_(reader), field_(field), message_(message) {}

  uint64_t varint(const char* name) const {
    expect(kVarint, name, "varint");
    return field_.varint;
  }
  // int32 fields are sign-extended to 64 bits on the wire; the low 32 bits are the value.
  int32_t int32(const char* name) const {
    return static_cast<int32_t>(static_cast<uint32_t>(varint(name)));
  }
  bool boolean(const char* name) const { return varint(name) != 0; }
  float float32(const char* name) const {
    expect(kFixed32, name, "fixed32 float");
    float value;
    std::memcpy(&value, &field_.fixed32, sizeof value);
    return value;
  }
  std::string_view bytes(const char* name) const {
    expect(kLengthDelimited, name, "length-delimited");
    return field_.bytes;
  }
  size_t bytes_offset() const { return reader_.offset() - field_.bytes.size(); }

 private:
  void expect(uint32_t wire_type, const char* name, const char* expected) const {
    require(field_.wire_type == wire_type, reader_.where(field_.offset), ": ", message_, ".", name,
            " (field ", field_.number, ") has wire type ", field_.wire_type, ", expected ",
            expected);
  }

  const WireReader& reader_;
  const Field& field_;
  const char* message_;
};

VocabPiece parse_piece(std::string_view data, size_t base, const std::string& path) {
  VocabPiece piece;
  WireReader reader(data, base, path, "SentencePiece");
  while (!reader.at_end()) {
    const Field f = reader.next();
    const FieldDecoder d(reader, f, "SentencePiece");
    switch (f.number) {
      case 1:
        piece.text = std::string(d.bytes("piece"));
        break;
      case 2:
        piece.score = d.float32("score");
        require(!std::isnan(piece.score), reader.where(f.offset), ": piece score is NaN");
        break;
      case 3: {
        const uint64_t type = d.varint("type");
        require(type >= 1 && type <= 6, reader.where(f.offset), ": piece type ", type,
                " is not one of NORMAL(1) .. BYTE(6)");
        piece.type = static_cast<PieceType>(type);
        break;
      }
      default:
        break;
    }
  }
  return piece;
}

void parse_trainer_spec(std::string_view data, size_t base, const std::string& path,
                        SentencePieceTrainerSpec* spec) {
  WireReader reader(data, base, path, "TrainerSpec");
  while (!reader.at_end()) {
    const Field f = reader.next();
    const FieldDecoder d(reader, f, "TrainerSpec");
    switch (f.number) {
      case 3:
        spec->model_type = d.int32("model_type");
        break;
      case 4:
        spec->vocab_size = d.int32("vocab_size");
        break;
      case 24:
        spec->treat_whitespace_as_suffix = d.boolean("treat_whitespace_as_suffix");
        break;
      case 35:
        spec->byte_fallback = d.boolean("byte_fallback");
        break;
      case 40:
        spec->unk_id = d.int32("unk_id");
        break;
      case 41:
        spec->bos_id = d.int32("bos_id");
        break;
      case 42:
        spec->eos_id = d.int32("eos_id");
        break;
      case 43:
        spec->pad_id = d.int32("pad_id");
        break;
      case 44:
        spec->unk_surface = std::string(d.bytes("unk_surface"));
        spec->has_unk_surface = true;
        break;
      case 45:
        spec->unk_piece = std::string(d.bytes("unk_piece"));
        break;
      case 46:
        spec->bos_piece = std::string(d.bytes("bos_piece"));
        break;
      case 47:
        spec->eos_piece = std::string(d.bytes("eos_piece"));
        break;
      case 48:
        spec->pad_piece = std::string(d.bytes("pad_piece"));
        break;
      default:
        break;
    }
  }
}

void parse_normalizer_spec(std::string_view data, size_t base, const std::string& path,
                           SentencePieceNormalizerSpec* spec) {
  WireReader reader(data, base, path, "NormalizerSpec");
  while (!reader.at_end()) {
    const Field f = reader.next();
    const FieldDecoder d(reader, f, "NormalizerSpec");
    switch (f.number) {
      case 1:
        spec->name = std::string(d.bytes("name"));
        break;
      case 2:
        spec->precompiled_charsmap = std::string(d.bytes("precompiled_charsmap"));
        break;
      case 3:
        spec->add_dummy_prefix = d.boolean("add_dummy_prefix");
        break;
      case 4:
        spec->remove_extra_whitespaces = d.boolean("remove_extra_whitespaces");
        break;
      case 5:
        spec->escape_whitespaces = d.boolean("escape_whitespaces");
        break;
      default:
        break;
    }
  }
}

// Decodes a length-delimited varint at the start of `bytes`; false if malformed.
bool peek_varint(std::string_view bytes, size_t* pos, uint64_t* value) {
  *value = 0;
  for (int shift = 0; shift < 64 && *pos < bytes.size(); shift += 7) {
    const auto b = static_cast<uint8_t>(bytes[(*pos)++]);
    *value |= static_cast<uint64_t>(b & 0x7F) << shift;
    if (b < 0x80) return true;
  }
  return false;
}

}  // namespace

const char* model_type_name(int32_t model_type) {
  switch (model_type) {
    case SentencePieceTrainerSpec::kUnigram:
      return "UNIGRAM";
    case SentencePieceTrainerSpec::kBpe:
      return "BPE";
    case SentencePieceTrainerSpec::kWord:
      return "WORD";
    case SentencePieceTrainerSpec::kChar:
      return "CHAR";
    default:
      return "unknown";
  }
}

SentencePieceModel parse_sentencepiece_model(std::string_view bytes, const std::string& path) {
  SentencePieceModel model;
  WireReader reader(bytes, 0, path, "ModelProto");
  while (!reader.at_end()) {
    const Field f = reader.next();
    const FieldDecoder d(reader, f, "ModelProto");
    switch (f.number) {
      case 1:
        model.pieces.push_back(parse_piece(d.bytes("pieces"), d.bytes_offset(), path));
        break;
      case 2:
        // Repeated occurrences of a message field merge, as protobuf parsers do.
        parse_trainer_spec(d.bytes("trainer_spec"), d.bytes_offset(), path, &model.trainer_spec);
        model.has_trainer_spec = true;
        break;
      case 3:
        parse_normalizer_spec(d.bytes("normalizer_spec"), d.bytes_offset(), path,
                              &model.normalizer_spec);
        model.has_normalizer_spec = true;
        break;
      case 5:
        parse_normalizer_spec(d.bytes("denormalizer_spec"), d.bytes_offset(), path,
                              &model.denormalizer_spec);
        model.has_denormalizer_spec = true;
        break;
      default:
        break;  // self_test_data and extensions
    }
  }
  return model;
}

BpeVocab sentencepiece_bpe_vocab(const SentencePieceModel& model, const std::string& path) {
  // A file cut at a field boundary still parses; these catch it before defaults mislead.
  require(!model.pieces.empty(), path, ": SentencePiece model has no pieces (truncated file?)");
  require(model.has_trainer_spec, path,
          ": SentencePiece model has no trainer_spec (truncated file?)");
  require(model.has_normalizer_spec, path,
          ": SentencePiece model has no normalizer_spec (truncated file?)");
  const SentencePieceTrainerSpec& trainer = model.trainer_spec;
  const SentencePieceNormalizerSpec& norm = model.normalizer_spec;
  require(trainer.model_type == SentencePieceTrainerSpec::kBpe, path, ": SentencePiece model_type ",
          model_type_name(trainer.model_type), " (", trainer.model_type,
          ") is not supported: rotq implements the BPE model type only");
  require(norm.precompiled_charsmap.empty(), path, ": SentencePiece normalizer '", norm.name,
          "' has a precompiled_charsmap (NFKC-style normalization), which rotq does not "
          "implement: only the identity normalizer is supported");
  require(!model.has_denormalizer_spec || model.denormalizer_spec.precompiled_charsmap.empty(),
          path, ": SentencePiece denormalizer '", model.denormalizer_spec.name,
          "' has a precompiled_charsmap, which rotq does not implement");
  require(!trainer.treat_whitespace_as_suffix, path,
          ": SentencePiece treat_whitespace_as_suffix is not supported");

  BpeVocab vocab;
  vocab.pieces = model.pieces;
  vocab.normalizer.add_dummy_prefix = norm.add_dummy_prefix;
  vocab.normalizer.remove_extra_whitespaces = norm.remove_extra_whitespaces;
  vocab.normalizer.escape_whitespaces = norm.escape_whitespaces;
  vocab.normalizer.malformed_utf8 = NormalizerOptions::Malformed::kReplace;
  vocab.byte_fallback = trainer.byte_fallback;
  // An empty piece name falls back to the default, as ModelInterface::unk_piece() etc. do.
  const auto or_default = [](const std::string& s, const char* d) { return s.empty() ? d : s; };
  vocab.unk_piece = or_default(trainer.unk_piece, "<unk>");
  vocab.bos_piece = or_default(trainer.bos_piece, "<s>");
  vocab.eos_piece = or_default(trainer.eos_piece, "</s>");
  vocab.unk_surface = trainer.has_unk_surface ? trainer.unk_surface : " \xE2\x81\x87 ";
  return vocab;
}

std::unique_ptr<Tokenizer> load_sentencepiece_tokenizer(std::string_view bytes,
                                                        const std::string& path) {
  const SentencePieceModel model = parse_sentencepiece_model(bytes, path);
  return std::make_unique<BpeTokenizer>(sentencepiece_bpe_vocab(model, path), "sentencepiece",
                                        path);
}

bool looks_like_sentencepiece_model(std::string_view bytes) {
  if (bytes.size() < 3 || static_cast<uint8_t>(bytes[0]) != 0x0A) return false;
  size_t pos = 1;
  uint64_t len = 0;
  if (!peek_varint(bytes, &pos, &len) || len == 0 || pos >= bytes.size()) return false;
  const auto inner_tag = static_cast<uint8_t>(bytes[pos]);
  return inner_tag == 0x0A || inner_tag == 0x15 || inner_tag == 0x18;
}

}  // namespace rotq
