#include "models/tokenizers/byte_level_bpe.h"

#include <filesystem>
#include <queue>

#include "models/base/files.h"
#include "models/tokenizers/added_tokens.h"
#include "models/tokenizers/byte_level.h"
#include "models/tokenizers/unicode_text.h"
#include "solvers/error.h"

namespace rotq {
namespace {

// GPT-2's split, which a ByteLevel pre-tokenizer with use_regex applies.
constexpr const char* kGpt2Split =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

uint64_t pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

struct Range {
  size_t begin;
  size_t end;
  bool is_match;
};

// Hugging Face's Pattern::find_matches: the text cut into matches and the gaps between them.
std::vector<Range> find_ranges(const PreTokenizerStep& step, std::string_view text) {
  std::vector<Range> ranges;
  size_t prev = 0;
  auto add_match = [&](size_t b, size_t e) {
    if (b > prev) ranges.push_back({prev, b, false});
    ranges.push_back({b, e, true});
    prev = e;
  };
  if (step.regex) {
    for (const auto& m : step.regex->find_all(text)) add_match(m.begin, m.end);
  } else {
    for (size_t at = text.find(step.literal); at != std::string_view::npos;
         at = text.find(step.literal, at + step.literal.size())) {
      add_match(at, at + step.literal.size());
    }
  }
  if (prev < text.size()) ranges.push_back({prev, text.size(), false});
  if (step.invert) {
    for (Range& r : ranges) r.is_match = !r.is_match;
  }
  return ranges;
}

// Hugging Face's NormalizedString::split: which ranges become pieces, per delimiter behaviour.
std::vector<Range> apply_behavior(SplitBehavior behavior, std::vector<Range> ranges) {
  std::vector<Range> out;
  bool previous_match = false;
  switch (behavior) {
    case SplitBehavior::kIsolated:
      return ranges;
    case SplitBehavior::kRemoved:
      for (const Range& r : ranges) {
        if (!r.is_match) out.push_back(r);
      }
      return out;
    case SplitBehavior::kMergedWithPrevious:
      for (const Range& r : ranges) {
        if (r.is_match && !previous_match && !out.empty()) {
          out.back().end = r.end;
        } else {
          out.push_back(r);
        }
        previous_match = r.is_match;
      }
      return out;
    case SplitBehavior::kMergedWithNext:
      for (auto it = ranges.rbegin(); it != ranges.rend(); ++it) {
        if (it->is_match && !previous_match && !out.empty()) {
          out.back().begin = it->begin;
        } else {
          out.push_back(*it);
        }
        previous_match = it->is_match;
      }
      return {out.rbegin(), out.rend()};
    case SplitBehavior::kContiguous:
      for (const Range& r : ranges) {
        if (r.is_match == previous_match && !out.empty()) {
          out.back().end = r.end;
        } else {
          out.push_back(r);
        }
        previous_match = r.is_match;
      }
      return out;
  }
  return ranges;
}

void split_pieces(const PreTokenizerStep& step, std::vector<std::string>* pieces) {
  std::vector<std::string> out;
  out.reserve(pieces->size() * 2);
  for (const std::string& piece : *pieces) {
    for (const Range& r : apply_behavior(step.behavior, find_ranges(step, piece))) {
      if (r.end > r.begin) out.emplace_back(piece, r.begin, r.end - r.begin);
    }
  }
  *pieces = std::move(out);
}

// One symbol of a word being merged; merged-away symbols keep length 0.
struct Symbol {
  int32_t id;
  int32_t prev;
  int32_t next;
  int32_t length;
};

struct Candidate {
  uint32_t rank;
  int32_t pos;
  int32_t merged;
};

// Lowest rank first, then leftmost: `tokenizers`' Merge ordering.
struct CandidateOrder {
  bool operator()(const Candidate& a, const Candidate& b) const {
    return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
  }
};

std::string apply_normalizers(const ByteLevelBpeSpec& spec, std::string_view text) {
  std::string s(text);
  for (unicode::NormalForm form : spec.normalizers) s = unicode::normalize(s, form);
  return s;
}

std::unique_ptr<AddedTokenMatcher> matcher(const ByteLevelBpeSpec& spec, bool normalized) {
  std::vector<AddedTokenMatcher::Pattern> patterns;
  for (const AddedToken& t : spec.added_tokens) {
    if (t.normalized != normalized) continue;
    if (t.special && spec.split_special_tokens) continue;
    patterns.push_back({normalized ? apply_normalizers(spec, t.content) : t.content, &t});
  }
  return std::make_unique<AddedTokenMatcher>(std::move(patterns));
}

}  // namespace

ByteLevelBpeTokenizer::ByteLevelBpeTokenizer(ByteLevelBpeSpec spec, std::string source)
    : spec_(std::move(spec)), source_(std::move(source)) {
  added_kind_.assign(spec_.vocab.size(), 0);
  for (const AddedToken& t : spec_.added_tokens) added_kind_[t.id] = t.normalized ? 2 : 1;
  token_ids_.reserve(spec_.vocab.size());
  for (size_t id = 0; id < spec_.vocab.size(); ++id) {
    if (spec_.in_model_vocab[id]) {
      token_ids_.emplace(spec_.vocab[id], static_cast<int32_t>(id));
    }
  }
  for (int b = 0; b < 256; ++b) {
    const std::string& c = byte_level::char_of_byte(static_cast<unsigned char>(b));
    const auto it = token_ids_.find(c);
    require(it != token_ids_.end(), "tokenizer ", source_, ": model.vocab has no token for byte 0x",
            std::hex, b, std::dec, " (\"", c,
            "\"): a byte-level vocabulary must spell all 256 bytes");
    byte_ids_[b] = it->second;
  }
  merges_.reserve(spec_.merges.size());
  for (size_t r = 0; r < spec_.merges.size(); ++r) {
    const auto& m = spec_.merges[r];
    // A pair listed twice keeps its last rank, as `tokenizers` builds its map.
    merges_[pair_key(m.left, m.right)] =
        (static_cast<uint64_t>(r) << 32) | static_cast<uint32_t>(m.merged);
  }
  raw_added_ = matcher(spec_, /*normalized=*/false);
  normalized_added_ = matcher(spec_, /*normalized=*/true);
}

ByteLevelBpeTokenizer::~ByteLevelBpeTokenizer() = default;

size_t ByteLevelBpeTokenizer::checked(int32_t id) const {
  require(id >= 0 && id < vocab_size(), "token id ", id, " is outside the ", source_,
          " vocabulary [0, ", vocab_size(), ")");
  return static_cast<size_t>(id);
}

std::vector<std::string> ByteLevelBpeTokenizer::pre_tokenize(std::string_view text) const {
  static const PreTokenizerStep gpt2_split = [] {
    PreTokenizerStep s;
    s.regex = std::make_shared<UnicodeRegex>(kGpt2Split, "GPT-2's ByteLevel split");
    return s;
  }();
  std::vector<std::string> pieces;
  if (!text.empty()) pieces.emplace_back(text);
  for (const PreTokenizerStep& step : spec_.pre_tokenizer) {
    if (step.kind == PreTokenizerStep::Kind::kSplit) {
      split_pieces(step, &pieces);
      continue;
    }
    if (step.add_prefix_space) {
      for (std::string& p : pieces) {
        if (p.front() != ' ') p.insert(p.begin(), ' ');
      }
    }
    if (step.use_regex) split_pieces(gpt2_split, &pieces);
    for (std::string& p : pieces) p = byte_level::spell(p);
  }
  return pieces;
}

std::vector<int32_t> ByteLevelBpeTokenizer::merge_word(const std::string& word) const {
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  for (size_t i = 0; i < word.size();) {
    const size_t start = i;
    const uint32_t cp = unicode::next_code_point(word, &i);
    const int b = byte_level::byte_of_code_point(cp);
    require(b >= 0, "tokenizer ", source_, ": internal: word character U+", std::hex, cp,
            " is outside the byte alphabet");
    (void)start;
    const auto n = static_cast<int32_t>(symbols.size());
    symbols.push_back({byte_ids_[b], n - 1, n + 1, 1});
  }
  const auto count = static_cast<int32_t>(symbols.size());
  std::priority_queue<Candidate, std::vector<Candidate>, CandidateOrder> queue;
  auto push_pair = [&](int32_t pos) {
    const int32_t next = symbols[pos].next;
    if (next >= count) return;
    const auto it = merges_.find(pair_key(symbols[pos].id, symbols[next].id));
    if (it == merges_.end()) return;
    queue.push({static_cast<uint32_t>(it->second >> 32), pos,
                static_cast<int32_t>(it->second & 0xFFFFFFFFu)});
  };
  for (int32_t i = 0; i + 1 < count; ++i) push_pair(i);
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    if (left.length == 0 || left.next >= count) continue;
    Symbol& right = symbols[left.next];
    // A stale candidate: one of its symbols has been merged with something else since.
    const auto it = merges_.find(pair_key(left.id, right.id));
    if (it == merges_.end() || static_cast<int32_t>(it->second & 0xFFFFFFFFu) != top.merged)
      continue;
    left.id = top.merged;
    left.length += right.length;
    right.length = 0;
    left.next = right.next;
    if (left.next < count) symbols[left.next].prev = top.pos;
    if (left.prev >= 0) push_pair(left.prev);
    push_pair(top.pos);
  }
  std::vector<int32_t> ids;
  for (int32_t i = 0; i < count; i = symbols[i].next) ids.push_back(symbols[i].id);
  return ids;
}

void ByteLevelBpeTokenizer::encode_word(const std::string& word, WordCache* cache,
                                        std::vector<int32_t>* out) const {
  if (spec_.ignore_merges) {
    const auto it = token_ids_.find(word);
    if (it != token_ids_.end()) {
      out->push_back(it->second);
      return;
    }
  }
  auto cached = cache->find(word);
  if (cached == cache->end()) cached = cache->emplace(word, merge_word(word)).first;
  out->insert(out->end(), cached->second.begin(), cached->second.end());
}

void ByteLevelBpeTokenizer::encode_text(std::string_view normalized, WordCache* cache,
                                        std::vector<int32_t>* out) const {
  for (const std::string& word : pre_tokenize(normalized)) encode_word(word, cache, out);
}

std::vector<int32_t> ByteLevelBpeTokenizer::encode(std::string_view text) const {
  const std::string valid = unicode::to_valid_utf8(text);
  std::vector<int32_t> ids;
  ids.reserve(valid.size() / 3 + 8);
  WordCache cache;
  for (const auto& raw : raw_added_->split(valid)) {
    if (raw.id >= 0) {
      ids.push_back(raw.id);
      continue;
    }
    const std::string normalized =
        apply_normalizers(spec_, std::string_view(valid).substr(raw.begin, raw.end - raw.begin));
    if (normalized_added_->empty()) {
      encode_text(normalized, &cache, &ids);
      continue;
    }
    for (const auto& seg : normalized_added_->split(normalized)) {
      if (seg.id >= 0) {
        ids.push_back(seg.id);
      } else {
        encode_text(std::string_view(normalized).substr(seg.begin, seg.end - seg.begin), &cache,
                    &ids);
      }
    }
  }
  return ids;
}

std::string ByteLevelBpeTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string text;
  std::string bytes;  // model tokens since the last verbatim added token
  for (int32_t id : ids) {
    const std::string& token = spec_.vocab[checked(id)];
    require(!token.empty(), "token id ", id, " names no token in the ", source_, " vocabulary");
    if (added_kind_[id] == 1) {
      text += unicode::to_valid_utf8(bytes);
      bytes.clear();
      text += token;
    } else if (!byte_level::unspell(token, &bytes)) {
      bytes += token;  // the ByteLevel decoder keeps a token it cannot unspell as it is
    }
  }
  text += unicode::to_valid_utf8(bytes);
  return text;
}

std::string ByteLevelBpeTokenizer::decode_piece(int32_t /*prev*/, int32_t token) const {
  const std::string& piece = spec_.vocab[checked(token)];
  std::string bytes;
  if (added_kind_[token] == 1 || !byte_level::unspell(piece, &bytes)) return piece;
  return bytes;
}

std::unique_ptr<Tokenizer> load_tokenizer_json(const std::string& json, const std::string& path) {
  const std::filesystem::path config_path =
      std::filesystem::path(path).parent_path() / "tokenizer_config.json";
  std::optional<std::string> config;
  std::error_code ec;
  if (std::filesystem::exists(config_path, ec)) config = read_file_bytes(config_path.string());
  ByteLevelBpeSpec spec = parse_tokenizer_json(json, path, config, config_path.string());
  return std::make_unique<ByteLevelBpeTokenizer>(std::move(spec), path);
}

}  // namespace rotq
