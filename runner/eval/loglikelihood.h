// Batched log-likelihood of continuations given contexts, as lm-evaluation-harness's HF backend
// computes it (HFLM._loglikelihood_tokens):
//   - a pair is tokenized as the harness does for causal models: trailing spaces of the context
//     move to the continuation; the context and the whole string are tokenized (BOS first when the
//     tokenizer has one, as the harness's default for LLaMA tokenizers), and the continuation is
//     the whole string's tokens after the context's; an empty context is the prefix token alone;
//   - the model reads (context + continuation)[-(L+1):][:-1] (left-truncated to its context L)
//     and the continuation's tokens are scored from the last len(continuation) positions (a
//     continuation longer than L, which the harness refuses, is scored on its last L tokens and
//     counted);
//   - inputs are sorted longest first (ties by tokens), as the harness sorts them, and cut into
//     batches of equal length: no padding at all, so a score does not depend on the batch it ran
//     in (bit for bit, with or without fake quantization, for any batch size or rank count; a
//     padded batch changes attention's reduction length, and under 4-bit fake quantization such
//     rounding differences flip quantization levels);
//   - identical inputs are run once (the harness's one-token-continuation cache, generalized):
//     MMLU's four letters share one forward.
// Batches are spread over ranks (data parallel) or streamed through a layer-sharded pipeline;
// every rank returns every score.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "models/tokenizers/tokenizer.h"
#include "models/transformer.h"
#include "runner/dist/placement.h"
#include "solvers/comm.h"

namespace rotq {

struct LlRequest {
  std::vector<int32_t> context, continuation;
};

struct LlScore {
  double logprob = 0;   // Σ log p(continuation token | everything before it)
  bool greedy = false;  // every continuation token is the argmax of its position
};

struct LlOptions {
  int64_t batch = 32;      // sequences per forward
  int64_t max_length = 0;  // the model's context L; 0: the config's max_seq_len
};

// lm-eval's tokenization of one (context, continuation) pair. `add_bos`: prefix BOS (when the
// tokenizer has one). rotq::Error if the continuation comes out empty.
LlRequest encode_request(const Tokenizer& tok, const std::string& context,
                         const std::string& continuation, bool add_bos);

// What the scorer ran (all ranks together): distinct inputs, their tokens (Σ len, Σ len²) and the
// continuation rows projected to the vocabulary. Benchmarks turn these into FLOPs.
struct LlStats {
  int64_t inputs = 0, tokens = 0, scored_rows = 0;
  int64_t cut = 0;  // requests whose continuation outgrew the context: its last L tokens scored
  double tokens_sq = 0;
};

// Called after each batch this rank scores with the number of requests it has finished.
using LlProgress = std::function<void(int64_t done, int64_t total)>;

// Scores of `requests` (same order). `shard`: the model is this rank's layer shard placed as `p`
// says (pipeline); null: every rank holds the whole model (batches split across ranks).
std::vector<LlScore> score_requests(const Transformer& model,
                                    const std::vector<LlRequest>& requests, const LlOptions& opts,
                                    Comm& comm, ForwardHooks* hooks,
                                    const Placement& placement = Placement::replicated(),
                                    const LlProgress& progress = nullptr, LlStats* stats = nullptr);

}  // namespace rotq
