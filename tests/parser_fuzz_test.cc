// The torch-free parsers (SentencePiece .model, llama2.c tokenizer.bin, tokenizer.json +
// tokenizer_config.json) built with AddressSanitizer and UndefinedBehaviorSanitizer and fed
// seeded mutations of real and synthetic files: every input must load or fail with one
// rotq::Error line; a tokenizer that loads must encode and decode without fault. Any other
// exception, or any sanitizer report (which aborts), fails the test.
//
//   rotq_parser_fuzz SHARED_DATA [MUTATIONS]
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "models/base/files.h"
#include "models/tokenizers/tokenizer.h"
#include "solvers/error.h"

namespace {

using json = nlohmann::json;

struct Stats {
  int loaded = 0, refused = 0, failures = 0;
};

const char* const kTexts[] = {
    "Hello world, it's 12345 don't <|begin_of_text|> <s> </s>",
    "  \t\n\r\n Ünïcödé e\xCC\x81 \xF0\x9F\x98\x80 \xE2\x80\xA8 \xEF\xBB\xBF \xC2\x85 \xFF\xFE bad",
    ""};

void write(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

// Loads `dir/name` and, when it loads, runs it over the texts.
void attempt(const std::string& path, const std::string& what, Stats* s) {
  try {
    const auto tok = rotq::load_tokenizer(path, -1);
    for (const char* t : kTexts) {
      const std::vector<int32_t> ids = rotq::encode_with_bos(*tok, t, tok->bos_id() >= 0);
      (void)tok->decode(ids);
      for (size_t i = 0; i < ids.size(); ++i) (void)tok->decode_piece(i ? ids[i - 1] : -1, ids[i]);
    }
    ++s->loaded;
  } catch (const rotq::Error& e) {
    const std::string msg = e.what();
    if (std::getenv("ROTQ_FUZZ_VERBOSE") != nullptr) std::fprintf(stderr, "%s\n", msg.c_str());
    if (msg.find('\n') != std::string::npos) {
      std::fprintf(stderr, "FAIL %s: a multi-line error: %s\n", what.c_str(), msg.c_str());
      ++s->failures;
    }
    ++s->refused;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "FAIL %s: escaped as %s, not a rotq::Error\n", what.c_str(), e.what());
    ++s->failures;
  }
}

std::string mutate_bytes(std::string b, std::mt19937_64& rng) {
  if (b.empty()) return b;
  std::uniform_int_distribution<size_t> pos(0, b.size() - 1);
  switch (rng() % 4) {
    case 0:  // flip bytes
      for (int k = 0; k < 1 + static_cast<int>(rng() % 4); ++k)
        b[pos(rng)] ^= static_cast<char>(1 + rng() % 255);
      break;
    case 1:  // truncate
      b.resize(pos(rng));
      break;
    case 2: {  // delete a range
      const size_t at = pos(rng);
      b.erase(at, std::min<size_t>(b.size() - at, 1 + rng() % 64));
      break;
    }
    default: {  // duplicate a range
      const size_t at = pos(rng);
      b.insert(at, b.substr(at, 1 + rng() % 64));
      break;
    }
  }
  return b;
}

// A JSON document with one node replaced by a value of another type or an odd value.
void mutate_json(json* j, std::mt19937_64& rng) {
  static const json odd[] = {nullptr,
                             true,
                             false,
                             0,
                             -1,
                             3,
                             1e300,
                             -2147483649LL,
                             "",
                             "x",
                             "<|x|>",
                             " ",
                             json::array(),
                             json::object(),
                             json::array({1, "a"})};
  json* node = j;
  for (int depth = 0; depth < 6; ++depth) {
    if (!(node->is_object() || node->is_array()) || node->empty() || rng() % 3 == 0) break;
    const size_t k = rng() % node->size();
    if (node->is_array()) {
      node = &(*node)[k];
    } else {
      auto it = node->begin();
      std::advance(it, static_cast<long>(k));
      node = &it.value();
    }
  }
  *node = odd[rng() % (sizeof(odd) / sizeof(odd[0]))];
}

// A small byte-level tokenizer.json touching every component rotq computes.
json small_tokenizer_json() {
  json vocab = json::object();
  int id = 0;
  auto spell = [](int b) {  // GPT-2's alphabet
    const bool self =
        (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    static int next = 256;
    static std::map<int, int> cp;
    if (!cp.count(b)) cp[b] = self ? b : next++;
    const int c = cp[b];
    std::string s;
    if (c < 0x80) {
      s += static_cast<char>(c);
    } else {
      s += static_cast<char>(0xC0 | (c >> 6));
      s += static_cast<char>(0x80 | (c & 0x3F));
    }
    return s;
  };
  for (int b = 0; b < 256; ++b) vocab[spell(b)] = id++;
  vocab["He"] = id++;
  vocab["ll"] = id++;
  vocab["Hell"] = id++;
  vocab[spell(' ') + "w"] = id++;
  return {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", json::array({{{"id", id},
                                     {"content", "<|begin_of_text|>"},
                                     {"special", true},
                                     {"lstrip", false},
                                     {"rstrip", false},
                                     {"single_word", false},
                                     {"normalized", false}},
                                    {{"id", id + 1},
                                     {"content", "<m>"},
                                     {"special", false},
                                     {"lstrip", true},
                                     {"rstrip", true},
                                     {"single_word", true},
                                     {"normalized", true}}})},
      {"normalizer", {{"type", "Sequence"}, {"normalizers", json::array({{{"type", "NFC"}}})}}},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         json::array(
             {{{"type", "Split"},
               {"pattern", {{"Regex", "\\p{L}+|\\p{N}{1,3}|\\s+(?!\\S)|\\s+|[^\\s\\p{L}\\p{N}]+"}}},
               {"behavior", "Isolated"},
               {"invert", false}},
              {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}})}}},
      {"post_processor", {{"type", "ByteLevel"}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model",
       {{"type", "BPE"},
        {"ignore_merges", true},
        {"vocab", vocab},
        {"merges", json::array({"H e", json::array({"l", "l"}), "He ll", spell(' ') + " w"})}}}};
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s SHARED_DATA [MUTATIONS]\n", argv[0]);
    return 2;
  }
  const std::string data = argv[1];
  const int mutations = argc > 2 ? std::atoi(argv[2]) : 300;
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("rotq-fuzz-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  Stats s;
  std::mt19937_64 rng(20261203);
  // Binary formats: byte mutations of the real files.
  for (const char* rel : {"tokenizers/llama2/tokenizer.model", "models/stories260K/tok512.bin"}) {
    const std::string seed = rotq::read_file_bytes(data + "/" + rel);
    attempt(data + "/" + rel, rel, &s);
    for (int m = 0; m < mutations; ++m) {
      const std::string path = (dir / "tok.bin").string();
      write(path, mutate_bytes(seed, rng));
      attempt(path, std::string(rel) + " mutation " + std::to_string(m), &s);
    }
  }
  // tokenizer.json: byte mutations (mostly invalid JSON) and tree mutations (valid JSON, wrong
  // types and values), of the file and of its tokenizer_config.json.
  const json base = small_tokenizer_json();
  const json base_config = {{"bos_token", "<|begin_of_text|>"}, {"add_bos_token", true}};
  const std::string path = (dir / "tokenizer.json").string();
  const std::string config_path = (dir / "tokenizer_config.json").string();
  write(path, base.dump());
  write(config_path, base_config.dump());
  attempt(path, "small tokenizer.json", &s);
  for (int m = 0; m < 3 * mutations; ++m) {
    json t = base, c = base_config;
    std::string text;
    switch (m % 3) {
      case 0:
        text = mutate_bytes(base.dump(), rng);
        break;
      case 1:
        for (int k = 0; k < 1 + static_cast<int>(rng() % 3); ++k) mutate_json(&t, rng);
        text = t.dump();
        break;
      default:
        mutate_json(&c, rng);
        text = base.dump();
        break;
    }
    write(path, text);
    write(config_path, c.dump());
    attempt(path, "tokenizer.json mutation " + std::to_string(m), &s);
  }
  std::filesystem::remove_all(dir);
  std::printf("%d inputs loaded, %d refused with one line, %d failures\n", s.loaded, s.refused,
              s.failures);
  return s.failures == 0 && s.loaded > 0 && s.refused > 0 ? 0 : 1;
}
