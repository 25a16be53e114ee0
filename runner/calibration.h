// Calibration data as the papers draw it (GPTQ's get_wikitext2): the text tokenized once, then
// `nsamples` windows of `seqlen` tokens starting at uniformly random offsets (seeded).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace rotq {

struct CalibOptions {
  int64_t nsamples = 128;
  int64_t seqlen = 0;  // 0: min(2048, the model's context)
  uint64_t seed = 0;
};

// [nsamples, seqlen] int64 token windows. Throws rotq::Error when the text has no more than
// `seqlen` tokens.
at::Tensor calibration_windows(const std::vector<int32_t>& tokens, int64_t nsamples, int64_t seqlen,
                               uint64_t seed);

}  // namespace rotq
