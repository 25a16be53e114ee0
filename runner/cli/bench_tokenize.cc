// rotq bench tokenize: encoding speed of each tokenizer on a text (one core: tokenization is
// single-threaded), and, with --js-modules, of Hugging Face's JavaScript implementation
// (@huggingface/tokenizers under Node) on the same text in the same run, with the ratio.
//
// Tokenization has no GEMM in it, so the reference rate here is the JavaScript one (the issue's
// yardstick), not the machine's GEMM rate.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>

#include "models/base/files.h"
#include "runner/cli/cmd_common.h"
#include "runner/core/subprocess.h"
#include "solvers/error.h"

namespace rotq {
namespace {

struct TokenizeBenchArgs {
  std::vector<std::string> tokenizers;
  std::string text;
  int64_t repeat = 5;
  std::string js_modules;  // directory holding node_modules/@huggingface/tokenizers
  std::string node = "node";
  bool json = false;
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

struct Timing {
  double load_seconds = 0;
  double encode_seconds = 0;  // best of the repeats
  size_t tokens = 0;
};

Timing time_rotq(const std::string& tokenizer, const std::string& text, int64_t repeat) {
  Timing t;
  auto t0 = std::chrono::steady_clock::now();
  auto tok = load_tokenizer(tokenizer);
  t.load_seconds = seconds_since(t0);
  t.encode_seconds = 1e300;
  for (int64_t r = 0; r < repeat; ++r) {
    t0 = std::chrono::steady_clock::now();
    const std::vector<int32_t> ids = tok->encode(text);
    t.encode_seconds = std::min(t.encode_seconds, seconds_since(t0));
    t.tokens = ids.size();
  }
  return t;
}

// The JavaScript timing, through scripts/hf_tokenizers_js.mjs next to the executable's source.
Timing time_js(const TokenizeBenchArgs& a, const std::string& tokenizer) {
  std::string dir = tokenizer;
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec))
    dir = std::filesystem::path(tokenizer).parent_path().string();
  const std::string script = std::string(ROTQ_SCRIPTS_DIR) + "/hf_tokenizers_js.mjs";
  const ProcessResult r = run_process(
      {a.node, script, "time", a.js_modules, dir, a.text, std::to_string(a.repeat)}, true);
  require(r.exit_code == 0, "bench tokenize: the JavaScript reference failed (exit ", r.exit_code,
          "): ", r.output.substr(0, 400));
  const auto line = r.output.substr(r.output.rfind('{'));
  const nlohmann::json j = nlohmann::json::parse(line);
  return {j.at("load_seconds").get<double>(), j.at("encode_seconds").get<double>(),
          j.at("tokens").get<size_t>()};
}

void run_tokenize_bench(Runtime& rt, const TokenizeBenchArgs& a) {
  rt.init();
  const std::string text = read_file_bytes(a.text);
  const double mb = static_cast<double>(text.size()) / 1e6;
  std::vector<std::vector<std::string>> rows;
  for (const std::string& tokenizer : a.tokenizers) {
    const Timing ours = time_rotq(tokenizer, text, a.repeat);
    std::optional<Timing> js;
    if (!a.js_modules.empty()) js = time_js(a, tokenizer);
    if (js) {
      require(js->tokens == ours.tokens, "bench tokenize: ", tokenizer, ": rotq made ", ours.tokens,
              " tokens, the JavaScript reference ", js->tokens);
    }
    const double ratio = js ? js->encode_seconds / ours.encode_seconds : 0.0;
    if (a.json) {
      nlohmann::json j = {{"command", "bench-tokenize"},
                          {"tokenizer", tokenizer},
                          {"text", a.text},
                          {"bytes", text.size()},
                          {"tokens", ours.tokens},
                          {"load_seconds", ours.load_seconds},
                          {"encode_seconds", ours.encode_seconds},
                          {"mb_per_s", mb / ours.encode_seconds}};
      if (js) {
        j["js_load_seconds"] = js->load_seconds;
        j["js_encode_seconds"] = js->encode_seconds;
        j["speedup_vs_js"] = ratio;
      }
      print_json_line(rt.c(), j);
      continue;
    }
    rows.push_back({tokenizer, std::to_string(ours.tokens), fmt_double(ours.load_seconds, 3),
                    fmt_double(ours.encode_seconds, 3), fmt_double(mb / ours.encode_seconds, 2),
                    js ? fmt_double(js->encode_seconds, 3) : "-",
                    js ? fmt_double(ratio, 2) + "x" : "-"});
  }
  if (!a.json) {
    print_table(
        rt.c(),
        {"tokenizer", "tokens", "load s", "encode s", "MB/s", "JS encode s", "speed-up vs JS"},
        rows);
  }
}

}  // namespace

void register_bench_tokenize(CLI::App* bench, Runtime& rt) {
  auto a = std::make_shared<TokenizeBenchArgs>();
  CLI::App* cmd = bench->add_subcommand(
      "tokenize", "encoding speed (one core), optionally against @huggingface/tokenizers (Node)");
  cmd->add_option("--tokenizer", a->tokenizers, "tokenizer file(s) or model directories")
      ->required();
  cmd->add_option("--text", a->text, "text to encode (whole)")->required();
  cmd->add_option("--repeat", a->repeat, "encodings timed; the best is reported")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  cmd->add_option("--js-modules", a->js_modules,
                  "directory where `npm install @huggingface/tokenizers` was run: also time it");
  cmd->add_option("--node", a->node, "the Node.js executable")->capture_default_str();
  cmd->add_flag("--json", a->json, "print JSON lines");
  cmd->callback([a, &rt] { run_tokenize_bench(rt, *a); });
}

}  // namespace rotq
