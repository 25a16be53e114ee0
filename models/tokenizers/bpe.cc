#include "models/tokenizers/bpe.h"

#include <algorithm>
#include <cstdio>
#include <limits>
#include <queue>
#include <utility>

#include "models/tokenizers/utf8.h"
#include "solvers/error.h"

namespace rotq {
namespace {

bool starts_with(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && s.compare(0, prefix.size(), prefix) == 0;
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string replace_space_symbols(std::string_view piece) {
  std::string out;
  out.reserve(piece.size());
  while (!piece.empty()) {
    if (starts_with(piece, utf8::kSpaceSymbol)) {
      out += ' ';
      piece.remove_prefix(utf8::kSpaceSymbol.size());
    } else {
      out += piece.front();
      piece.remove_prefix(1);
    }
  }
  return out;
}

bool is_mergeable_type(PieceType type) {
  return type == PieceType::kNormal || type == PieceType::kUserDefined ||
         type == PieceType::kUnused;
}

// One segment of the normalized text; `prev`/`next` link the live segments, and a merged-away
// segment keeps size 0.
struct Symbol {
  int32_t prev;
  int32_t next;
  uint32_t begin;
  uint32_t size;
  bool frozen;    // a user-defined piece or a raw byte: never merged
  bool raw_byte;  // a byte of a malformed llama2.c lookup group: always its byte piece
};

struct MergeCandidate {
  float score;
  int32_t left;
  int32_t right;
  uint32_t size;  // of the merged piece, to detect candidates made stale by other merges
};

// Best score first; on equal scores the leftmost pair, as SentencePiece's agenda orders them.
struct CandidateOrder {
  bool operator()(const MergeCandidate& a, const MergeCandidate& b) const {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  }
};

}  // namespace

const char* piece_type_name(PieceType type) {
  switch (type) {
    case PieceType::kNormal:
      return "NORMAL";
    case PieceType::kUnknown:
      return "UNKNOWN";
    case PieceType::kControl:
      return "CONTROL";
    case PieceType::kUserDefined:
      return "USER_DEFINED";
    case PieceType::kUnused:
      return "UNUSED";
    case PieceType::kByte:
      return "BYTE";
  }
  return "?";
}

int parse_byte_piece(std::string_view piece) {
  if (piece.size() != 6 || !starts_with(piece, "<0x") || piece[5] != '>') return -1;
  int value = 0;
  for (size_t i = 3; i < 5; ++i) {
    const char c = piece[i];
    int digit;
    if (c >= '0' && c <= '9') {
      digit = c - '0';
    } else if (c >= 'A' && c <= 'F') {
      digit = c - 'A' + 10;
    } else {
      return -1;  // SentencePiece writes and accepts uppercase only
    }
    value = value * 16 + digit;
  }
  return value;
}

std::string byte_piece(unsigned char byte) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "<0x%02X>", byte);
  return buf;
}

BpeTokenizer::BpeTokenizer(BpeVocab vocab, std::string kind, std::string source)
    : vocab_(std::move(vocab)), kind_(std::move(kind)), source_(std::move(source)) {
  index_pieces();
}

void BpeTokenizer::index_pieces() {
  const auto& pieces = vocab_.pieces;
  require(!pieces.empty(), source_, ": the vocabulary has no pieces");
  require(pieces.size() <= static_cast<size_t>(std::numeric_limits<int32_t>::max()), source_,
          ": the vocabulary has too many pieces (", pieces.size(), ")");
  byte_value_.assign(pieces.size(), -1);
  std::fill(std::begin(byte_ids_), std::end(byte_ids_), -1);
  mergeable_.reserve(pieces.size());
  for (size_t i = 0; i < pieces.size(); ++i) {
    const VocabPiece& p = pieces[i];
    const auto id = static_cast<int32_t>(i);
    require(!p.text.empty(), source_, ": piece ", id, " is empty");
    auto& map = is_mergeable_type(p.type) ? mergeable_ : reserved_;
    require(map.emplace(p.text, id).second, source_, ": piece '", p.text, "' (id ", id,
            ") is defined twice");
    if (p.type == PieceType::kUserDefined) {
      user_defined_.insert(p.text);
      user_defined_lengths_.push_back(p.text.size());
    } else if (p.type == PieceType::kUnknown) {
      require(unk_id_ < 0, source_, ": pieces ", unk_id_, " and ", id,
              " are both UNKNOWN; expected exactly one");
      unk_id_ = id;
    } else if (p.type == PieceType::kByte) {
      require(vocab_.byte_fallback, source_, ": byte piece '", p.text, "' (id ", id,
              ") found although byte_fallback is off");
      const int byte = parse_byte_piece(p.text);
      require(byte >= 0, source_, ": byte piece ", id, " is '", p.text, "', expected <0xXX>");
      byte_ids_[byte] = id;
      byte_value_[i] = static_cast<int16_t>(byte);
    }
  }
  require(unk_id_ >= 0, source_, ": the vocabulary has no UNKNOWN piece");
  if (vocab_.byte_fallback) {
    for (int b = 0; b < 256; ++b) {
      require(byte_ids_[b] >= 0, source_, ": byte_fallback is on but byte piece ",
              byte_piece(static_cast<unsigned char>(b)), " is missing");
    }
  }
  std::sort(user_defined_lengths_.begin(), user_defined_lengths_.end(), std::greater<>());
  user_defined_lengths_.erase(
      std::unique(user_defined_lengths_.begin(), user_defined_lengths_.end()),
      user_defined_lengths_.end());
  // As SentencePieceProcessor::bos_id(): the named piece, provided it is a control piece.
  const auto control_id = [&](const std::string& name) {
    const int32_t id = piece_to_id(name);
    return pieces[id].type == PieceType::kControl ? id : -1;
  };
  bos_id_ = control_id(vocab_.bos_piece);
  eos_id_ = control_id(vocab_.eos_piece);
}

size_t BpeTokenizer::checked(int32_t id) const {
  require(id >= 0 && id < vocab_size(), source_, ": token id ", id, " is out of range [0, ",
          vocab_size(), ")");
  return static_cast<size_t>(id);
}

int32_t BpeTokenizer::piece_to_id(std::string_view piece) const {
  if (auto it = reserved_.find(piece); it != reserved_.end()) return it->second;
  if (auto it = mergeable_.find(piece); it != mergeable_.end()) return it->second;
  return unk_id_;
}

// Length of the longest user-defined piece starting `text`, 0 if none (SentencePiece's
// PrefixMatcher).
size_t BpeTokenizer::match_user_defined(std::string_view text) const {
  for (size_t len : user_defined_lengths_) {
    if (len <= text.size() && user_defined_.count(text.substr(0, len))) return len;
  }
  return 0;
}

// The next unit of raw text and how many bytes it consumes: a user-defined piece, a well-formed
// character, or one malformed byte (as U+FFFD, or raw).
std::string_view BpeTokenizer::next_normalizer_unit(std::string_view text, size_t* consumed) const {
  size_t n = match_user_defined(text);
  if (n == 0) n = utf8::valid_char_length(text);
  if (n > 0) {
    *consumed = n;
    return text.substr(0, n);
  }
  *consumed = 1;
  return vocab_.normalizer.malformed_utf8 == NormalizerOptions::Malformed::kReplace
             ? utf8::kReplacementChar
             : text.substr(0, 1);
}

std::string BpeTokenizer::normalize(std::string_view text) const {
  const NormalizerOptions& opt = vocab_.normalizer;
  std::string out;
  size_t consumed = 0;
  if (opt.remove_extra_whitespaces) {
    while (!text.empty() && next_normalizer_unit(text, &consumed) == " ") {
      text.remove_prefix(consumed);
    }
  }
  if (text.empty()) return out;  // no dummy prefix on empty (or all-space) text

  const std::string_view space = opt.escape_whitespaces ? utf8::kSpaceSymbol : " ";
  out.reserve(text.size() + text.size() / 2 + space.size());
  if (opt.add_dummy_prefix) out.append(space);
  bool prev_is_space = opt.remove_extra_whitespaces;
  while (!text.empty()) {
    std::string_view unit = next_normalizer_unit(text, &consumed);
    text.remove_prefix(consumed);
    // Collapses runs of spaces when remove_extra_whitespaces (prev_is_space is never set
    // otherwise).
    while (prev_is_space && starts_with(unit, " ")) unit.remove_prefix(1);
    if (unit.empty()) continue;
    for (char c : unit) {
      if (c == ' ') {
        out.append(space);
      } else {
        out += c;
      }
    }
    prev_is_space = opt.remove_extra_whitespaces && unit.back() == ' ';
  }
  if (opt.remove_extra_whitespaces) {
    while (ends_with(out, space)) out.resize(out.size() - space.size());
  }
  return out;
}

namespace {

// llama2.c's lookup unit: a byte and the continuation bytes after it, 4 bytes at most.
size_t llama2c_group_length(std::string_view s) {
  size_t n = 1;
  while (n < s.size() && n < 4 && (static_cast<uint8_t>(s[n]) & 0xC0) == 0x80) ++n;
  return n;
}

// The initial segmentation, linked as a list: user-defined pieces by longest match (frozen),
// otherwise single characters; malformed bytes as NormalizerOptions::malformed_utf8 says.
template <typename UserDefinedMatch>
std::vector<Symbol> split_symbols(std::string_view norm, const NormalizerOptions& opt,
                                  UserDefinedMatch match_user_defined) {
  const bool llama2c = opt.malformed_utf8 == NormalizerOptions::Malformed::kLlama2c;
  std::vector<Symbol> symbols;
  symbols.reserve(norm.size());
  const auto add = [&](size_t begin, size_t size, bool frozen, bool raw_byte) {
    symbols.push_back(
        Symbol{0, 0, static_cast<uint32_t>(begin), static_cast<uint32_t>(size), frozen, raw_byte});
  };
  size_t pos = 0;
  if (llama2c && opt.add_dummy_prefix) {
    pos = opt.escape_whitespaces ? utf8::kSpaceSymbol.size() : 1;
    add(0, pos, false, false);
  }
  while (pos < norm.size()) {
    const std::string_view rest = norm.substr(pos);
    size_t len = match_user_defined(rest);
    const bool frozen = len > 0;
    if (!frozen) {
      len = utf8::valid_char_length(rest);
      if (llama2c) {
        const size_t group = llama2c_group_length(rest);
        if (len != group) {
          for (size_t k = 0; k < group; ++k) add(pos + k, 1, true, true);
          pos += group;
          continue;
        }
      } else if (len == 0) {
        // Only a malformed user-defined piece can leave one here; SentencePiece then trusts the
        // lead byte.
        len = std::min<size_t>(utf8::lead_byte_length(static_cast<uint8_t>(rest[0])), rest.size());
      }
    }
    add(pos, len, frozen, false);
    pos += len;
  }
  const auto n = static_cast<int32_t>(symbols.size());
  for (int32_t i = 0; i < n; ++i) {
    symbols[i].prev = i - 1;
    symbols[i].next = i + 1 < n ? i + 1 : -1;
  }
  return symbols;
}

}  // namespace

std::vector<int32_t> BpeTokenizer::encode(std::string_view text) const {
  const std::string norm = normalize(text);
  std::vector<int32_t> ids;
  if (norm.empty()) return ids;
  require(norm.size() < static_cast<size_t>(std::numeric_limits<int32_t>::max()), source_,
          ": text of ", text.size(), " bytes is too long to encode in one call");
  const std::string_view normv = norm;

  std::vector<Symbol> symbols = split_symbols(
      normv, vocab_.normalizer, [this](std::string_view s) { return match_user_defined(s); });
  const auto view = [&](const Symbol& s) { return normv.substr(s.begin, s.size); };

  std::priority_queue<MergeCandidate, std::vector<MergeCandidate>, CandidateOrder> agenda;
  // For each unused piece a merge could form: the two pieces it was last formed from, so that
  // the output can split it again (SentencePiece's rev_merge; the last write wins there too).
  std::unordered_map<std::string_view, std::pair<std::string_view, std::string_view>> unmerge;

  const auto consider_pair = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0 || symbols[left].frozen || symbols[right].frozen) return;
    const Symbol& l = symbols[left];
    const Symbol& r = symbols[right];
    const std::string_view merged = normv.substr(l.begin, l.size + r.size);
    const auto it = mergeable_.find(merged);
    if (it == mergeable_.end()) return;
    const VocabPiece& piece = vocab_.pieces[it->second];
    agenda.push(MergeCandidate{piece.score, left, right, l.size + r.size});
    if (piece.type == PieceType::kUnused) unmerge[merged] = {view(l), view(r)};
  };

  for (size_t i = 1; i < symbols.size(); ++i) {
    consider_pair(static_cast<int32_t>(i - 1), static_cast<int32_t>(i));
  }

  while (!agenda.empty()) {
    const MergeCandidate top = agenda.top();
    agenda.pop();
    Symbol& l = symbols[top.left];
    Symbol& r = symbols[top.right];
    if (l.size == 0 || r.size == 0 || l.size + r.size != top.size) continue;  // stale
    l.size += r.size;
    l.next = r.next;
    if (r.next >= 0) symbols[r.next].prev = top.left;
    r.size = 0;
    consider_pair(l.prev, top.left);
    consider_pair(top.left, l.next);
  }

  // Emission as SentencePieceProcessor::PopulateSentencePieceText: unknown pieces become their
  // UTF-8 bytes under byte fallback; otherwise a run of unknown pieces yields one unknown id.
  bool prev_unknown = false;
  const auto emit = [&](std::string_view w, int32_t id) {
    const bool unknown = vocab_.pieces[id].type == PieceType::kUnknown;
    if (unknown && vocab_.byte_fallback) {
      for (char c : w) ids.push_back(byte_ids_[static_cast<uint8_t>(c)]);
    } else if (!(unknown && prev_unknown)) {
      ids.push_back(id);
    }
    prev_unknown = unknown;
  };
  // Unused pieces may be merge steps but never outputs: split them back, recursively.
  std::vector<std::string_view> stack;
  for (int32_t i = 0; i >= 0; i = symbols[i].next) {
    if (symbols[i].raw_byte) {
      emit(view(symbols[i]), unk_id_);
      continue;
    }
    stack.push_back(view(symbols[i]));
    while (!stack.empty()) {
      const std::string_view w = stack.back();
      stack.pop_back();
      const int32_t id = piece_to_id(w);
      const auto it =
          vocab_.pieces[id].type == PieceType::kUnused ? unmerge.find(w) : unmerge.end();
      if (it == unmerge.end()) {
        emit(w, id);
      } else {
        stack.push_back(it->second.second);
        stack.push_back(it->second.first);
      }
    }
  }
  return ids;
}

// Consecutive byte pieces as SentencePiece decodes them: well-formed characters verbatim, each
// malformed byte as U+FFFD.
void BpeTokenizer::append_decoded_bytes(std::string_view bytes, std::string* out) const {
  while (!bytes.empty()) {
    const size_t n = utf8::valid_char_length(bytes);
    if (n == 0) {
      out->append(utf8::kReplacementChar);
      bytes.remove_prefix(1);
    } else {
      out->append(bytes.substr(0, n));
      bytes.remove_prefix(n);
    }
  }
}

std::string BpeTokenizer::decode(const std::vector<int32_t>& ids) const {
  const NormalizerOptions& opt = vocab_.normalizer;
  const bool strip_dummy_prefix = opt.add_dummy_prefix || opt.remove_extra_whitespaces;
  std::string text;
  std::string pending_bytes;
  // SentencePiece drops the U+2581 that opens the first piece (the dummy prefix), and only that
  // one: the first non-byte piece, unless text was already produced.
  bool at_start = true;
  bool stripped_prefix = false;
  for (int32_t id : ids) {
    const VocabPiece& p = vocab_.pieces[checked(id)];
    if (p.type == PieceType::kByte) {
      pending_bytes += static_cast<char>(byte_value_[id]);
      continue;
    }
    append_decoded_bytes(pending_bytes, &text);
    pending_bytes.clear();
    if (stripped_prefix || !text.empty()) at_start = false;
    stripped_prefix = false;
    if (p.type == PieceType::kControl) continue;
    if (p.type == PieceType::kUnknown) {
      text += vocab_.unk_surface;
      continue;
    }
    std::string_view piece = p.text;
    const std::string& marker = vocab_.dummy_prefix_marker;
    if (at_start && strip_dummy_prefix && !marker.empty() && starts_with(piece, marker)) {
      piece.remove_prefix(marker.size());
      // With remove_extra_whitespaces SentencePiece keeps stripping on following pieces.
      stripped_prefix = !opt.remove_extra_whitespaces;
    }
    text += replace_space_symbols(piece);
  }
  append_decoded_bytes(pending_bytes, &text);
  return text;
}

std::string BpeTokenizer::decode_piece(int32_t prev, int32_t token) const {
  const VocabPiece& p = vocab_.pieces[checked(token)];
  switch (p.type) {
    case PieceType::kControl:
      return "";
    case PieceType::kUnknown:
      return vocab_.unk_surface;
    case PieceType::kByte:
      return std::string(1, static_cast<char>(byte_value_[token]));
    default:
      break;
  }
  std::string text = replace_space_symbols(p.text);
  if (prev >= 0 && prev == bos_id_ && !text.empty() && text[0] == ' ') text.erase(0, 1);
  return text;
}

}  // namespace rotq
