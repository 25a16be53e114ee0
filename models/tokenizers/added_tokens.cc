#include "models/tokenizers/added_tokens.h"

#include <algorithm>

#include "models/tokenizers/unicode_text.h"

namespace rotq {

AddedTokenMatcher::AddedTokenMatcher(std::vector<Pattern> patterns)
    : tokens_(std::move(patterns)), nodes_(1) {
  std::fill(std::begin(root_children_), std::end(root_children_), -1);
  for (size_t t = 0; t < tokens_.size(); ++t) {
    int32_t node = 0;
    if (tokens_[t].text.empty()) continue;  // normalized to nothing: never matches
    for (unsigned char byte : tokens_[t].text) {
      int32_t next = child(node, byte);
      if (next < 0) {
        next = static_cast<int32_t>(nodes_.size());
        nodes_.emplace_back();
        if (node == 0) {
          root_children_[byte] = next;
        } else {
          auto& kids = nodes_[node].children;
          kids.insert(std::lower_bound(kids.begin(), kids.end(), std::make_pair(byte, int32_t{-1})),
                      {byte, next});
        }
      }
      node = next;
    }
    nodes_[node].token = static_cast<int32_t>(t);  // a later duplicate content wins, as in a map
  }
}

int32_t AddedTokenMatcher::child(int32_t node, unsigned char byte) const {
  if (node == 0) return root_children_[byte];
  const auto& kids = nodes_[node].children;
  const auto it = std::lower_bound(kids.begin(), kids.end(), std::make_pair(byte, int32_t{-1}));
  return it != kids.end() && it->first == byte ? it->second : -1;
}

int32_t AddedTokenMatcher::longest_at(std::string_view text, size_t pos, size_t* length) const {
  int32_t best = -1;
  int32_t node = 0;
  for (size_t i = pos; i < text.size(); ++i) {
    node = child(node, static_cast<unsigned char>(text[i]));
    if (node < 0) break;
    if (nodes_[node].token >= 0) {
      best = nodes_[node].token;
      *length = i + 1 - pos;
    }
  }
  return best;
}

namespace {

bool word_char_before(std::string_view text, size_t pos) {
  if (pos == 0) return false;
  size_t start;
  return unicode::is_word_char(unicode::previous_code_point(text, pos, &start));
}

bool word_char_after(std::string_view text, size_t pos) {
  if (pos >= text.size()) return false;
  return unicode::is_word_char(unicode::next_code_point(text, &pos));
}

}  // namespace

std::vector<AddedTokenMatcher::Segment> AddedTokenMatcher::split(std::string_view text) const {
  std::vector<Segment> out;
  size_t done = 0;  // text[0, done) is in `out`
  size_t pos = 0;
  while (pos < text.size()) {
    if (root_children_[static_cast<unsigned char>(text[pos])] < 0) {
      ++pos;
      continue;
    }
    size_t length = 0;
    const int32_t t = longest_at(text, pos, &length);
    if (t < 0) {
      ++pos;
      continue;
    }
    const AddedToken& token = *tokens_[t].token;
    size_t begin = pos, end = pos + length;
    pos = end;
    if (token.single_word && (word_char_before(text, begin) || word_char_after(text, end))) {
      continue;
    }
    if (token.lstrip) {
      while (begin > done) {
        size_t start;
        if (!unicode::is_white_space(unicode::previous_code_point(text, begin, &start))) break;
        begin = start;
      }
    }
    if (token.rstrip) {
      while (end < text.size()) {
        size_t next = end;
        if (!unicode::is_white_space(unicode::next_code_point(text, &next))) break;
        end = next;
      }
      pos = end;
    }
    if (begin > done) out.push_back({done, begin, -1});
    out.push_back({begin, end, token.id});
    done = end;
  }
  if (done < text.size()) out.push_back({done, text.size(), -1});
  return out;
}

}  // namespace rotq
