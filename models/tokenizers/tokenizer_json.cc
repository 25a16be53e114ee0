#include "models/tokenizers/tokenizer_json.h"

#include <limits>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "solvers/error.h"

namespace rotq {
namespace {

using json = nlohmann::json;

// One JSON file being read: errors name the file and the key path.
struct Source {
  std::string path;

  [[noreturn]] void refuse(const std::string& key, const std::string& what) const {
    fail("tokenizer ", path, ": ", key, ": ", what);
  }

  const json& field(const json& j, const std::string& key, const std::string& where) const {
    if (!j.is_object() || !j.contains(key)) refuse(where + "." + key, "missing");
    return j.at(key);
  }

  bool flag(const json& j, const std::string& key, const std::string& where, bool fallback) const {
    if (!j.contains(key) || j.at(key).is_null()) return fallback;
    if (!j.at(key).is_boolean()) {
      refuse(where + "." + key, "expected true or false, got " + j.at(key).dump());
    }
    return j.at(key).get<bool>();
  }

  std::string text(const json& j, const std::string& key, const std::string& where) const {
    const json& v = field(j, key, where);
    if (!v.is_string()) refuse(where + "." + key, "expected a string, got " + v.dump());
    return v.get<std::string>();
  }

  // Calls f(item, its key path) for each item of the list j[key] (a Sequence's components).
  template <typename F>
  void each(const json& j, const std::string& key, const std::string& where, F f) const {
    const json& list = field(j, key, where);
    if (!list.is_array()) refuse(where + "." + key, "expected a list");
    for (size_t i = 0; i < list.size(); ++i) {
      f(list[i], where + "." + key + "[" + std::to_string(i) + "]");
    }
  }

  int32_t id(const json& v, const std::string& where) const {
    if (!v.is_number_integer() || v.get<int64_t>() < 0 ||
        v.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
      refuse(where,
             "expected a token id (an integer in [0, 2^31)), got " + v.dump(-1).substr(0, 40));
    }
    return static_cast<int32_t>(v.get<int64_t>());
  }
};

json parse_json(const std::string& bytes, const std::string& path) {
  try {
    return json::parse(bytes);
  } catch (const json::parse_error& e) {
    fail("tokenizer ", path, ": not valid JSON (", e.what(), ")");
  }
}

// --- model ----------------------------------------------------------------------------------

void require_null_or(const Source& src, const json& model, const std::string& key,
                     const json& allowed, const std::string& why) {
  if (!model.contains(key) || model.at(key).is_null() || model.at(key) == allowed) return;
  src.refuse("model." + key, model.at(key).dump() + " is not supported (" + why + ")");
}

void read_vocab(const Source& src, const json& model, ByteLevelBpeSpec* spec,
                std::unordered_map<std::string, int32_t>* ids) {
  const json& vocab = src.field(model, "vocab", "model");
  if (!vocab.is_object() || vocab.empty()) {
    src.refuse("model.vocab", "expected a non-empty object token -> id");
  }
  for (const auto& [token, value] : vocab.items()) {
    const int32_t id = src.id(value, "model.vocab[\"" + token + "\"]");
    if (static_cast<size_t>(id) >= spec->vocab.size()) spec->vocab.resize(id + size_t{1});
    if (!spec->vocab[id].empty() || token.empty()) {
      src.refuse("model.vocab[\"" + token + "\"]",
                 token.empty()
                     ? std::string("empty token")
                     : "id " + std::to_string(id) + " is also \"" + spec->vocab[id] + "\"");
    }
    spec->vocab[id] = token;
    (*ids)[token] = id;
  }
  spec->in_model_vocab.assign(spec->vocab.size(), false);
  for (size_t id = 0; id < spec->vocab.size(); ++id)
    spec->in_model_vocab[id] = !spec->vocab[id].empty();
}

void read_merges(const Source& src, const json& model,
                 const std::unordered_map<std::string, int32_t>& ids, ByteLevelBpeSpec* spec) {
  const json& merges = src.field(model, "merges", "model");
  if (!merges.is_array()) src.refuse("model.merges", "expected a list");
  spec->merges.reserve(merges.size());
  for (size_t r = 0; r < merges.size(); ++r) {
    const std::string where = "model.merges[" + std::to_string(r) + "]";
    const json& m = merges[r];
    std::string left, right;
    if (m.is_string()) {  // "a b": byte-level tokens never contain a space
      const std::string s = m.get<std::string>();
      const size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
        src.refuse(where, "expected \"left right\" (two tokens, one space), got " + m.dump());
      }
      left = s.substr(0, space);
      right = s.substr(space + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      left = m[0].get<std::string>();
      right = m[1].get<std::string>();
    } else {
      src.refuse(where, "expected \"left right\" or [left, right], got " + m.dump().substr(0, 60));
    }
    const auto l = ids.find(left), rr = ids.find(right), merged = ids.find(left + right);
    for (const auto& [name, it] :
         {std::pair{left, l}, std::pair{right, rr}, std::pair{left + right, merged}}) {
      if (it == ids.end()) src.refuse(where, "token \"" + name + "\" is not in model.vocab");
    }
    spec->merges.push_back({l->second, rr->second, merged->second});
  }
}

void read_model(const Source& src, const json& root, ByteLevelBpeSpec* spec,
                std::unordered_map<std::string, int32_t>* ids) {
  const json& model = src.field(root, "model", "tokenizer");
  if (!model.is_object())
    src.refuse("model", "expected an object, got " + model.dump().substr(0, 60));
  const std::string type = model.contains("type") ? src.text(model, "type", "model") : "BPE";
  if (type != "BPE") {
    src.refuse("model.type", "\"" + type +
                                 "\" is not supported (rotq reads byte-level BPE tokenizer.json "
                                 "files, and SentencePiece tokenizer.model files)");
  }
  require_null_or(src, model, "dropout", 0.0, "BPE dropout samples different ids on every call");
  require_null_or(src, model, "continuing_subword_prefix", "",
                  "byte-level BPE spells words without a subword prefix");
  require_null_or(src, model, "end_of_word_suffix", "",
                  "byte-level BPE spells words without an end-of-word suffix");
  spec->ignore_merges = src.flag(model, "ignore_merges", "model", false);
  // byte_fallback, unk_token and fuse_unk only act on a character missing from the vocabulary;
  // the vocabulary is checked below to hold all 256 byte characters, so none is ever missing.
  read_vocab(src, model, spec, ids);
  read_merges(src, model, *ids, spec);
}

// --- added tokens ---------------------------------------------------------------------------

void read_added_tokens(const Source& src, const json& root, ByteLevelBpeSpec* spec,
                       std::unordered_map<std::string, int32_t>* ids) {
  if (!root.contains("added_tokens") || root.at("added_tokens").is_null()) return;
  const json& list = root.at("added_tokens");
  if (!list.is_array()) src.refuse("added_tokens", "expected a list");
  for (size_t i = 0; i < list.size(); ++i) {
    const std::string where = "added_tokens[" + std::to_string(i) + "]";
    const json& t = list[i];
    AddedToken a;
    a.id = src.id(src.field(t, "id", where), where + ".id");
    a.content = src.text(t, "content", where);
    if (a.content.empty()) src.refuse(where + ".content", "empty");
    a.special = src.flag(t, "special", where, false);
    a.lstrip = src.flag(t, "lstrip", where, false);
    a.rstrip = src.flag(t, "rstrip", where, false);
    a.single_word = src.flag(t, "single_word", where, false);
    a.normalized = src.flag(t, "normalized", where, !a.special);
    if (static_cast<size_t>(a.id) >= spec->vocab.size()) spec->vocab.resize(a.id + size_t{1});
    std::string& slot = spec->vocab[a.id];
    if (!slot.empty() && slot != a.content) {
      src.refuse(where, "id " + std::to_string(a.id) + " is \"" + a.content + "\" here but \"" +
                            slot + "\" in model.vocab");
    }
    slot = a.content;
    spec->in_model_vocab.resize(spec->vocab.size(), false);
    (*ids)[a.content] = a.id;
    spec->added_tokens.push_back(std::move(a));
  }
}

// --- normalizer and pre-tokenizer -------------------------------------------------------------

void read_normalizer(const Source& src, const json& n, const std::string& where,
                     ByteLevelBpeSpec* spec) {
  if (n.is_null()) return;
  const std::string type = src.text(n, "type", where);
  if (type == "Sequence") {
    src.each(n, "normalizers", where, [&](const json& item, const std::string& at) {
      read_normalizer(src, item, at, spec);
    });
    return;
  }
  static const std::unordered_map<std::string, unicode::NormalForm> forms = {
      {"NFC", unicode::NormalForm::kNFC},
      {"NFD", unicode::NormalForm::kNFD},
      {"NFKC", unicode::NormalForm::kNFKC},
      {"NFKD", unicode::NormalForm::kNFKD}};
  const auto it = forms.find(type);
  if (it == forms.end()) {
    src.refuse(where + ".type", "\"" + type +
                                    "\" is not supported (rotq computes NFC, NFD, NFKC, NFKD and "
                                    "Sequences of them)");
  }
  spec->normalizers.push_back(it->second);
}

SplitBehavior read_behavior(const Source& src, const json& step, const std::string& where) {
  static const std::unordered_map<std::string, SplitBehavior> behaviors = {
      {"Removed", SplitBehavior::kRemoved},
      {"Isolated", SplitBehavior::kIsolated},
      {"MergedWithPrevious", SplitBehavior::kMergedWithPrevious},
      {"MergedWithNext", SplitBehavior::kMergedWithNext},
      {"Contiguous", SplitBehavior::kContiguous}};
  const std::string name = src.text(step, "behavior", where);
  const auto it = behaviors.find(name);
  if (it == behaviors.end()) {
    src.refuse(where + ".behavior", "\"" + name +
                                        "\" is not one of Removed, Isolated, MergedWithPrevious, "
                                        "MergedWithNext, Contiguous");
  }
  return it->second;
}

void read_pre_tokenizer(const Source& src, const json& p, const std::string& where,
                        ByteLevelBpeSpec* spec) {
  if (p.is_null()) return;
  const std::string type = src.text(p, "type", where);
  if (type == "Sequence") {
    src.each(p, "pretokenizers", where, [&](const json& item, const std::string& at) {
      read_pre_tokenizer(src, item, at, spec);
    });
    return;
  }
  PreTokenizerStep step;
  if (type == "Split") {
    step.kind = PreTokenizerStep::Kind::kSplit;
    const json& pattern = src.field(p, "pattern", where);
    if (pattern.contains("Regex") && pattern.at("Regex").is_string()) {
      step.regex = std::make_shared<UnicodeRegex>(pattern.at("Regex").get<std::string>(),
                                                  "tokenizer " + src.path + ": " + where);
    } else if (pattern.contains("String") && pattern.at("String").is_string() &&
               !pattern.at("String").get<std::string>().empty()) {
      step.literal = pattern.at("String").get<std::string>();
    } else {
      src.refuse(where + ".pattern", "expected {\"Regex\": ...} or {\"String\": ...}, got " +
                                         pattern.dump().substr(0, 80));
    }
    step.behavior = read_behavior(src, p, where);
    step.invert = src.flag(p, "invert", where, false);
  } else if (type == "ByteLevel") {
    step.kind = PreTokenizerStep::Kind::kByteLevel;
    step.add_prefix_space = src.flag(p, "add_prefix_space", where, true);
    step.use_regex = src.flag(p, "use_regex", where, true);
    // trim_offsets only moves the offsets reported with each token, never the ids.
  } else {
    src.refuse(where + ".type", "\"" + type +
                                    "\" is not supported (rotq computes Split, ByteLevel and "
                                    "Sequences of them)");
  }
  spec->pre_tokenizer.push_back(std::move(step));
}

void require_byte_level(const Source& src, const json& root, const ByteLevelBpeSpec& spec) {
  bool byte_level = false;
  for (const auto& s : spec.pre_tokenizer)
    byte_level = byte_level || s.kind == PreTokenizerStep::Kind::kByteLevel;
  if (!byte_level) {
    src.refuse("pre_tokenizer",
               "has no ByteLevel step: rotq reads byte-level BPE tokenizer.json files (a "
               "SentencePiece-style tokenizer.json, e.g. LLaMA-2's, is read from its "
               "tokenizer.model)");
  }
  const json decoder = root.contains("decoder") ? root.at("decoder") : json();
  if (!decoder.is_object() || !decoder.contains("type") || decoder.at("type") != "ByteLevel") {
    src.refuse("decoder", decoder.dump().substr(0, 80) + ": expected {\"type\": \"ByteLevel\"}");
  }
}

// --- post-processor and BOS policy ----------------------------------------------------------

// The special tokens a TemplateProcessing "single" template puts before the text (nullopt when
// the post-processor has no template); refuses tokens after the text.
std::optional<std::vector<int32_t>> template_prefix(const Source& src, const json& p,
                                                    const std::string& where,
                                                    const ByteLevelBpeSpec& spec) {
  if (p.is_null()) return std::nullopt;
  const std::string type = src.text(p, "type", where);
  if (type == "ByteLevel") return std::nullopt;  // offsets only
  if (type == "Sequence") {
    std::optional<std::vector<int32_t>> found;
    src.each(p, "processors", where, [&](const json& item, const std::string& at) {
      auto t = template_prefix(src, item, at, spec);
      if (t && found) src.refuse(where, "two templates");
      if (t) found = std::move(t);
    });
    return found;
  }
  if (type != "TemplateProcessing") {
    src.refuse(where + ".type", "\"" + type +
                                    "\" is not supported (rotq computes ByteLevel, "
                                    "TemplateProcessing and Sequences of them)");
  }
  const json& single = src.field(p, "single", where);
  const json& specials = src.field(p, "special_tokens", where);
  if (!single.is_array()) src.refuse(where + ".single", "expected a list");
  std::vector<int32_t> prefix;
  bool seen_text = false;
  for (size_t i = 0; i < single.size(); ++i) {
    const std::string at = where + ".single[" + std::to_string(i) + "]";
    const json& item = single[i];
    if (item.contains("Sequence")) {
      if (seen_text) src.refuse(at, "the text appears twice");
      seen_text = true;
      continue;
    }
    if (!item.contains("SpecialToken")) src.refuse(at, "expected Sequence or SpecialToken");
    if (seen_text) {
      src.refuse(at, "a special token after the text (" + item.dump() +
                         ") is not supported: rotq prepends at most a BOS");
    }
    const std::string name = src.text(item.at("SpecialToken"), "id", at + ".SpecialToken");
    const json& entry = src.field(specials, name, where + ".special_tokens");
    const json& entry_ids = src.field(entry, "ids", where + ".special_tokens." + name);
    if (!entry_ids.is_array())
      src.refuse(where + ".special_tokens." + name + ".ids", "expected a list");
    for (const json& v : entry_ids) prefix.push_back(src.id(v, where + ".special_tokens." + name));
  }
  if (!seen_text) src.refuse(where + ".single", "the template has no Sequence A (the text)");
  for (int32_t id : prefix) {
    if (static_cast<size_t>(id) >= spec.vocab.size() || spec.vocab[id].empty()) {
      src.refuse(where + ".special_tokens",
                 "id " + std::to_string(id) + " is not a token of the vocabulary");
    }
  }
  if (prefix.size() > 1) {
    src.refuse(where + ".single", "prepends " + std::to_string(prefix.size()) +
                                      " tokens: rotq prepends at most one (a BOS)");
  }
  return prefix;
}

// A tokenizer_config.json token entry: "text", {"content": "text", ...} or null.
std::optional<std::string> config_token(const Source& src, const json& config,
                                        const std::string& key) {
  if (!config.contains(key) || config.at(key).is_null()) return std::nullopt;
  const json& v = config.at(key);
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v.at("content").is_string()) {
    return v.at("content").get<std::string>();
  }
  src.refuse(key, "expected a token string or {\"content\": ...}, got " + v.dump().substr(0, 60));
}

int32_t token_id(const Source& src, const std::unordered_map<std::string, int32_t>& ids,
                 const std::string& key, const std::string& token) {
  const auto it = ids.find(token);
  if (it == ids.end()) src.refuse(key, "\"" + token + "\" is not a token of the vocabulary");
  return it->second;
}

void read_config(const Source& src, const json& config, ByteLevelBpeSpec* spec) {
  if (!config.is_object()) src.refuse("(root)", "expected a JSON object");
  const std::pair<const char*, const char*> refused[] = {
      {"add_eos_token", "rotq never appends EOS to a text"},
      {"do_lower_case", "lower-casing is not part of the tokenizer.json pipeline rotq computes"},
  };
  for (const auto& [key, why] : refused) {
    if (src.flag(config, key, "tokenizer_config", false))
      src.refuse(key, std::string("true: ") + why);
  }
  spec->split_special_tokens = src.flag(config, "split_special_tokens", "tokenizer_config", false);
  if (src.flag(config, "add_prefix_space", "tokenizer_config", false)) {
    bool has = false;
    for (const auto& s : spec->pre_tokenizer) has = has || s.add_prefix_space;
    if (!has) {
      src.refuse("add_prefix_space",
                 "true, but tokenizer.json's ByteLevel pre-tokenizer adds no prefix space "
                 "(transformers would rewrite it; rotq refuses the disagreement)");
    }
  }
  if (config.contains("errors") && config.at("errors") != "replace") {
    src.refuse("errors", config.at("errors").dump() +
                             ": rotq decodes malformed UTF-8 as U+FFFD (\"replace\") only");
  }
}

BosPolicy decide_bos(const Source& json_src, const Source& config_src, const json& root,
                     const json* config, const std::unordered_map<std::string, int32_t>& ids,
                     const ByteLevelBpeSpec& spec) {
  const json null_json;
  const auto prefix = template_prefix(
      json_src, root.contains("post_processor") ? root.at("post_processor") : null_json,
      "post_processor", spec);
  std::optional<bool> add_bos;
  std::optional<std::string> bos_token;
  if (config != nullptr) {
    if (config->contains("add_bos_token") && !config->at("add_bos_token").is_null()) {
      add_bos = config_src.flag(*config, "add_bos_token", "tokenizer_config", false);
    }
    bos_token = config_token(config_src, *config, "bos_token");
  }
  BosPolicy policy;
  if (prefix) {
    policy.add = !prefix->empty();
    policy.id = policy.add ? prefix->front() : -1;
    policy.source =
        policy.add ? "tokenizer.json post_processor template prepends " + spec.vocab.at(policy.id)
                   : "tokenizer.json post_processor template prepends nothing";
    if (add_bos && *add_bos != policy.add) {
      config_src.refuse("add_bos_token",
                        std::string(*add_bos ? "true" : "false") + " disagrees with " +
                            json_src.path + "'s post_processor template (which " +
                            (policy.add ? "prepends a BOS" : "prepends nothing") + ")");
    }
  } else if (add_bos) {
    policy.add = *add_bos;
    policy.source =
        std::string("tokenizer_config.json add_bos_token: ") + (*add_bos ? "true" : "false");
    if (policy.add) {
      if (!bos_token) config_src.refuse("bos_token", "missing, but add_bos_token is true");
      policy.id = token_id(config_src, ids, "bos_token", *bos_token);
    }
  } else if (bos_token) {
    policy.add = true;
    policy.id = token_id(config_src, ids, "bos_token", *bos_token);
    policy.source = "tokenizer_config.json bos_token " + *bos_token +
                    " (no add_bos_token and no template: LLaMA's default, prepend it)";
  } else {
    policy.source = "no BOS: neither tokenizer.json nor tokenizer_config.json names one";
  }
  if (!policy.add && bos_token) policy.id = token_id(config_src, ids, "bos_token", *bos_token);
  return policy;
}

}  // namespace

bool looks_like_json_object(const std::string& bytes) {
  for (char c : bytes) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') continue;
    return c == '{';
  }
  return false;
}

namespace {

ByteLevelBpeSpec parse_checked(const std::string& text, const std::string& path,
                               const std::optional<std::string>& config_text,
                               const std::string& config_path) {
  const Source src{path};
  const json root = parse_json(text, path);
  if (!root.is_object()) src.refuse("(root)", "expected a JSON object");
  if (root.contains("truncation") && !root.at("truncation").is_null()) {
    src.refuse("truncation", root.at("truncation").dump().substr(0, 80) +
                                 ": rotq tokenizes whole texts and cuts its own windows");
  }
  ByteLevelBpeSpec spec;
  std::unordered_map<std::string, int32_t> ids;
  read_model(src, root, &spec, &ids);
  read_added_tokens(src, root, &spec, &ids);
  read_normalizer(src, root.value("normalizer", json()), "normalizer", &spec);
  read_pre_tokenizer(src, root.value("pre_tokenizer", json()), "pre_tokenizer", &spec);
  require_byte_level(src, root, spec);

  const Source config_src{config_path};
  json config;
  if (config_text) {
    config = parse_json(*config_text, config_path);
    read_config(config_src, config, &spec);
  }
  spec.bos = decide_bos(src, config_src, root, config_text ? &config : nullptr, ids, spec);
  if (config_text) {
    if (auto eos = config_token(config_src, config, "eos_token")) {
      spec.eos_id = token_id(config_src, ids, "eos_token", *eos);
    }
  }
  return spec;
}

}  // namespace

ByteLevelBpeSpec parse_tokenizer_json(const std::string& text, const std::string& path,
                                      const std::optional<std::string>& config_text,
                                      const std::string& config_path) {
  // Every structural check above names its key; this only turns a shape nobody anticipated into
  // the same one-line error rather than a library exception.
  try {
    return parse_checked(text, path, config_text, config_path);
  } catch (const json::exception& e) {
    fail("tokenizer ", path, " (or ", config_path, "): unexpected JSON structure: ", e.what());
  }
}

}  // namespace rotq
