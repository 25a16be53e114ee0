// Calibration data as the papers draw it (GPTQ's get_wikitext2): the text tokenized once, then
// `nsamples` windows of `seqlen` tokens starting at uniformly random offsets (seeded).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "models/tokenizers/tokenizer.h"
#include "models/weights.h"

namespace rotq {

struct CalibOptions {
  int64_t nsamples = 128;
  int64_t seqlen = 0;  // 0: min(2048, the model's context)
  uint64_t seed = 0;
  int64_t batch = 8;  // windows per calibration forward (GPTQ's capture, OptRot+'s covariances)
};

// min(2048, the model's context): the papers' window, or the whole context of smaller models.
int64_t default_window(const ModelConfig& c);

// [nsamples, seqlen] int64 token windows. Throws rotq::Error when the text has no more than
// `seqlen` tokens.
at::Tensor calibration_windows(const std::vector<int32_t>& tokens, int64_t nsamples, int64_t seqlen,
                               uint64_t seed);

// A text file (format from its name, runner/data/text.h) tokenized, BOS first when `add_bos`.
std::vector<int32_t> tokenize_file(const Tokenizer& tok, const std::string& path, bool add_bos);

// A cell's calibration text, read and tokenized at most once however many stages (DFRot,
// OptRot+, GPTQ) draw windows from it.
class CalibrationText {
 public:
  CalibrationText(const Model& model, const Tokenizer& tok, const std::string& path, bool add_bos)
      : model_(model), tok_(tok), path_(path), add_bos_(add_bos) {}

  // [nsamples, seqlen] windows (seqlen 0: min(2048, context)); `who` and `flag` name the stage
  // and its window option in errors.
  at::Tensor windows(int64_t nsamples, int64_t seqlen, uint64_t seed, const char* who,
                     const char* flag);
  const std::string& path() const { return path_; }

 private:
  const Model& model_;
  const Tokenizer& tok_;
  std::string path_;
  bool add_bos_;
  std::optional<std::vector<int32_t>> tokens_;
};

}  // namespace rotq
