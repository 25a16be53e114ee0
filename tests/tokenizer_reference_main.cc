// The reference generator's C++ half: writes DIR/inputs.jsonl (one {"name", "texts"} per input,
// exactly the texts tests/tokenizer_json_test.cc encodes) and the tokenizer variants as
// DIR/NAME/, for scripts/hf_tokenizers_js.mjs to encode. Run by tests/make_tokenizer_reference.sh.
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "tests/tokenizer_reference.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  try {
    const std::string dir = argv[1];
    std::ofstream f(dir + "/inputs.jsonl", std::ios::binary);
    for (const rotq_test::TokenizerInput& in : rotq_test::tokenizer_reference_inputs()) {
      f << nlohmann::json{{"name", in.name}, {"texts", in.texts}}.dump() << "\n";
    }
    f.close();
    if (!f.good()) throw std::runtime_error("cannot write " + dir + "/inputs.jsonl");
    for (const rotq_test::Variant& v : rotq_test::variants()) rotq_test::write_variant(v, dir);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tokenizer_reference_inputs: %s\n", e.what());
    return 1;
  }
  return 0;
}
