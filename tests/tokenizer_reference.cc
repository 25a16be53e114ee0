// The inputs, the digest and the tokenizer variants shared by tests/tokenizer_json_test.cc and
// the reference generator (tests/tokenizer_reference_main.cc).
#include "tests/tokenizer_reference.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "models/base/files.h"
#include "runner/eval/task_registry.h"
#include "tests/test_util.h"

namespace rotq_test {

using json = nlohmann::json;

void IdDigest::add(int32_t id) {
  const auto u = static_cast<uint32_t>(id);
  for (int k = 0; k < 4; ++k) {
    const uint64_t b = (u >> (8 * k)) & 0xFFu;
    hash_ = (hash_ ^ b) * 0x100000001b3ull;
    chunk_ = (chunk_ ^ b) * 0x100000001b3ull;
  }
  if (++count_ % kChunk == 0) {
    char buf[17];
    std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(chunk_));
    chunks_.push_back(buf);
    chunk_ = 0xcbf29ce484222325ull;
  }
}

std::string IdDigest::hex() const {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(hash_));
  return buf;
}

std::vector<std::string> IdDigest::chunks() const {
  std::vector<std::string> all = chunks_;
  if (count_ % kChunk != 0) {
    char buf[17];
    std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(chunk_));
    all.push_back(buf);
  }
  return all;
}

std::vector<TokenizerInput> tokenizer_reference_inputs() {
  std::vector<TokenizerInput> inputs;
  inputs.push_back({"wikitext-2 test",
                    {rotq::read_file_bytes(shared_data("text/wikitext-2-raw/wiki.test.raw"))}});
  inputs.push_back(
      {"wikitext-2 train slice",
       {rotq::read_file_bytes(shared_data("text/wikitext-2-raw/wiki.train.slice.txt"))}});
  inputs.push_back({"torture",
                    {rotq::read_file_bytes(std::string(ROTQ_SOURCE_DIR) +
                                           "/tests/data/tokenizer_torture.txt")}});
  // The torture file line by line too: each line then starts a text, as a task prompt does.
  {
    TokenizerInput lines{"torture lines", {}};
    std::istringstream in(inputs.back().texts[0]);
    for (std::string line; std::getline(in, line);) lines.texts.push_back(line);
    inputs.push_back(std::move(lines));
  }
  for (const char* task :
       {"arc_easy", "arc_challenge", "boolq", "copa", "hellaswag", "lambada_openai", "openbookqa",
        "piqa", "social_iqa", "winogrande", "mmlu"}) {
    const rotq::TaskSpec& spec = rotq::find_task(task);
    TokenizerInput in{std::string("task ") + task, {}};
    for (const rotq::TaskDoc& doc :
         rotq::load_task_docs(spec, rotq::task_path(spec, "", shared_data("tasks")))) {
      const std::string* previous = nullptr;
      for (const auto& [context, continuation] : doc.requests) {
        if (previous == nullptr || *previous != context) in.texts.push_back(context);
        previous = &context;
        in.texts.push_back(continuation);
        in.texts.push_back(context + continuation);
      }
    }
    inputs.push_back(std::move(in));
  }
  return inputs;
}

std::string tokenizer_dir(const std::string& name) {
  return rotq_test::shared_data("tokenizers/" + name);
}

json read_json(const std::string& path) { return json::parse(rotq::read_file_bytes(path)); }

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  if (!out.good()) throw std::runtime_error("cannot write " + path);
}

// Variants of the real files that exercise what neither real tokenizer uses: GPT-2's ByteLevel
// regex with a prefix space, NFKC, added tokens with lstrip/rstrip/normalized, a literal Split
// pattern, the Removed behaviour, merges without ignore_merges, and a template that prepends BOS.
// (The JavaScript reference ignores single_word and implements only the Isolated and Removed
// behaviours; those others are checked below against `tokenizers`' own semantics.)

namespace {

void add_token(json* t, const std::string& content, bool special, bool lstrip, bool rstrip,
               bool single_word, bool normalized) {
  int64_t next = 0;
  for (const auto& [tok, id] : (*t)["model"]["vocab"].items())
    next = std::max<int64_t>(next, id.get<int64_t>() + 1);
  for (const auto& a : (*t)["added_tokens"])
    next = std::max<int64_t>(next, a["id"].get<int64_t>() + 1);
  (*t)["added_tokens"].push_back({{"id", next},
                                  {"content", content},
                                  {"single_word", single_word},
                                  {"lstrip", lstrip},
                                  {"rstrip", rstrip},
                                  {"normalized", normalized},
                                  {"special", special}});
}

}  // namespace

const std::vector<Variant>& variants() {
  static const std::vector<Variant> v = {
      {"gpt2-style", "qwen3",
       [](json* t, json* config) {
         (*t)["normalizer"] = {{"type", "NFKC"}};
         (*t)["pre_tokenizer"] = {{"type", "ByteLevel"},
                                  {"add_prefix_space", true},
                                  {"trim_offsets", true},
                                  {"use_regex", true}};
         add_token(t, "<mask>", true, /*lstrip=*/true, false, false, false);
         add_token(t, "[SEP]", true, false, /*rstrip=*/true, false, false);
         add_token(t, "Ⓐ", false, false, false, false, /*normalized=*/true);
         (*config)["add_prefix_space"] = true;
       }},
      {"split-isolated-removed", "llama3",
       [](json* t, json* config) {
         json split_regex = (*t)["pre_tokenizer"]["pretokenizers"][0];
         (*t)["pre_tokenizer"]["pretokenizers"] =
             json::array({{{"type", "Split"},
                           {"pattern", {{"String", "\n\n"}}},
                           {"behavior", "Isolated"},
                           {"invert", false}},
                          {{"type", "Split"},
                           {"pattern", {{"Regex", "[\u00a0\u3000]"}}},
                           {"behavior", "Removed"},
                           {"invert", false}},
                          split_regex,
                          {{"type", "ByteLevel"},
                           {"add_prefix_space", false},
                           {"trim_offsets", true},
                           {"use_regex", false}}});
         (*t)["model"]["ignore_merges"] = false;
         (*t)["post_processor"] = {
             {"type", "TemplateProcessing"},
             {"single",
              json::array({{{"SpecialToken", {{"id", "<|begin_of_text|>"}, {"type_id", 0}}}},
                           {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
             {"pair", json::array({{{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                                   {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}})},
             {"special_tokens",
              {{"<|begin_of_text|>",
                {{"id", "<|begin_of_text|>"},
                 {"ids", {128000}},
                 {"tokens", {"<|begin_of_text|>"}}}}}}};
         config->erase("bos_token");
       }},
  };
  return v;
}

// Writes variant `v` as a tokenizer directory under `dir`.
std::string write_variant(const Variant& v, const std::string& dir) {
  json t = read_json(tokenizer_dir(v.base) + "/tokenizer.json");
  json config = read_json(tokenizer_dir(v.base) + "/tokenizer_config.json");
  v.edit(&t, &config);
  const std::string out = dir + "/" + v.name;
  std::filesystem::create_directories(out);
  write_text(out + "/tokenizer.json", t.dump());
  write_text(out + "/tokenizer_config.json", config.dump());
  return out;
}

}  // namespace rotq_test
