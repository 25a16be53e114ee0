// rotq tokenize: token ids of a text (one line of ids per input line, like spm_encode), or the
// decoded text of ids with --decode.
#include <iostream>
#include <sstream>

#include "runner/cli/cmd_common.h"
#include "runner/data/text.h"

namespace rotq {
namespace {

struct TokenizeArgs {
  std::string tokenizer;
  std::string text;  // file; empty: stdin
  bool decode = false;
  bool bos = false;
  bool whole = false;
};

void print_ids(const std::vector<int32_t>& ids) {
  for (size_t i = 0; i < ids.size(); ++i) std::cout << (i ? " " : "") << ids[i];
  std::cout << "\n";
}

void run_tokenize(Runtime& rt, const TokenizeArgs& a) {
  rt.init();
  auto tok = load_tokenizer(a.tokenizer);
  const std::string input = a.text.empty()
                                ? std::string(std::istreambuf_iterator<char>(std::cin), {})
                                : read_file_bytes(a.text);
  if (a.whole && !a.decode) {
    print_ids(encode_with_bos(*tok, input, a.bos));
    return;
  }
  std::istringstream lines(input);
  std::string line;
  while (std::getline(lines, line)) {
    if (a.decode) {
      std::istringstream ids(line);
      std::vector<int32_t> v;
      int32_t id;
      while (ids >> id) v.push_back(id);
      std::cout << tok->decode(v) << "\n";
      continue;
    }
    print_ids(encode_with_bos(*tok, line, a.bos));
  }
}

}  // namespace

void register_tokenize(CLI::App& app, Runtime& rt) {
  auto a = std::make_shared<TokenizeArgs>();
  CLI::App* cmd = app.add_subcommand("tokenize", "encode text line by line (or --decode ids)");
  cmd->add_option("--tokenizer", a->tokenizer,
                  "tokenizer.bin, tokenizer.model, tokenizer.json or a model directory")
      ->required();
  cmd->add_option("--text", a->text, "input file (default: stdin)");
  cmd->add_flag("--decode", a->decode, "decode lines of ids instead");
  cmd->add_flag("--bos", a->bos, "prepend BOS");
  cmd->add_flag("--whole", a->whole, "encode the whole input as one text (one line of ids)");
  cmd->callback([a, &rt] { run_tokenize(rt, *a); });
}

}  // namespace rotq
