#include "runner/data/calibration.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <random>

#include "runner/data/text.h"
#include "solvers/error.h"

namespace rotq {
namespace {

// Uniform integer in [0, n) by rejection: std::uniform_int_distribution's algorithm is
// implementation-defined, and the same seed must give the same windows everywhere.
uint64_t uniform_below(std::mt19937_64& gen, uint64_t n) {
  const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
  uint64_t v;
  do {
    v = gen();
  } while (v >= limit);
  return v % n;
}

}  // namespace

at::Tensor calibration_windows(const std::vector<int32_t>& tokens, int64_t nsamples, int64_t seqlen,
                               uint64_t seed) {
  require(nsamples > 0, "calibration: nsamples must be positive, got ", nsamples);
  require(seqlen > 0, "calibration: seqlen must be positive, got ", seqlen);
  const int64_t n = static_cast<int64_t>(tokens.size());
  require(n > seqlen, "calibration text has ", n, " tokens; a window of ", seqlen,
          " needs more (use a longer text or a smaller --calib-seqlen)");
  std::mt19937_64 gen(seed);
  at::Tensor out = at::empty({nsamples, seqlen}, at::kLong);
  int64_t* p = out.data_ptr<int64_t>();
  for (int64_t s = 0; s < nsamples; ++s) {
    // As GPTQ: start in [0, n - seqlen - 1], i.e. n - seqlen choices.
    const auto start = static_cast<int64_t>(uniform_below(gen, static_cast<uint64_t>(n - seqlen)));
    for (int64_t t = 0; t < seqlen; ++t) p[s * seqlen + t] = tokens[start + t];
  }
  return out;
}

std::vector<int32_t> tokenize_file(const Tokenizer& tok, const std::string& path, bool add_bos) {
  const TextFormat fmt = resolve_text_format(TextFormat::kAuto, path);
  return encode_with_bos(tok, read_text(path, fmt), add_bos);
}

int64_t default_window(const ModelConfig& c) { return std::min<int64_t>(2048, c.max_seq_len); }

at::Tensor CalibrationText::windows(int64_t nsamples, int64_t seqlen, uint64_t seed,
                                    const char* who, const char* flag) {
  require(!path_.empty(), who, " needs calibration text (--calib FILE)");
  if (seqlen <= 0) seqlen = default_window(model_.config);
  require(seqlen <= model_.config.max_seq_len, flag, " ", seqlen,
          " exceeds the model's context of ", model_.config.max_seq_len, " tokens");
  if (!tokens_) tokens_ = tokenize_file(tok_, path_, add_bos_);
  return calibration_windows(*tokens_, nsamples, seqlen, seed);
}

}  // namespace rotq
