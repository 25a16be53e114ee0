// Text generation (llama2.c's generate loop): `steps` positions in all, the prompt's tokens forced,
// the rest sampled (argmax at temperature 0); stops early when BOS is produced.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "models/tokenizers/tokenizer.h"
#include "models/transformer.h"

namespace rotq {

struct GenerateOptions {
  int64_t steps = 256;
  double temperature = 0.0;
  double top_p = 1.0;
  uint64_t seed = 0;
  std::string prompt;       // empty: start from BOS alone
  std::optional<bool> bos;  // nullopt: the tokenizer's own policy
};

struct GenerateResult {
  std::string text;
  int64_t tokens = 0;  // tokens generated or forced after BOS
  double seconds = 0;
};

// `on_piece` receives each printable piece as it is produced (for streaming output).
GenerateResult generate(const Transformer& model, const Tokenizer& tok, const GenerateOptions& opts,
                        const std::function<void(const std::string&)>& on_piece = {});

}  // namespace rotq
