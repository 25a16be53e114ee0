// Perplexity with the papers' protocol: the text tokenized once (BOS first), cut into
// non-overlapping windows of `seqlen` tokens (tail dropped), each window's mean NLL over its
// positions 1..seqlen-1, PPL = exp(mean of the window means). Windows are split across ranks
// (data parallel); every rank returns the same result.
#pragma once

#include <cstdint>
#include <vector>

#include "models/transformer.h"
#include "runner/dist/placement.h"
#include "solvers/comm.h"

namespace rotq {

struct PplOptions {
  int64_t seqlen = 2048;
  int64_t max_windows = -1;  // -1: all windows
  int64_t batch = 0;         // windows per forward; 0: chosen from seqlen
};

struct PplResult {
  int64_t seqlen = 0;
  double ppl = 0;
  double mean_nll = 0;
  int64_t windows = 0;
  int64_t text_tokens = 0;
  int64_t scored_tokens = 0;  // windows * (seqlen - 1)
  double seconds = 0;
  double tokens_per_s = 0;  // window tokens processed per second (all ranks)
  std::vector<double> window_nll;
  // With a reference model: mean KL(p_ref ‖ p_model) per scored token, in nats (-1: not computed).
  // On synthetic models, whose perplexity on real text means nothing, it measures how far a
  // quantized model's predictions moved from the floating-point ones.
  double kl = -1;
};

// `tokens` is the whole tokenized text (BOS already prepended by the caller's policy).
// `reference` (optional, unhooked) adds the KL divergence from its predictions.
PplResult perplexity(const Transformer& model, const std::vector<int32_t>& tokens,
                     const PplOptions& opts, Comm& comm, ForwardHooks* hooks = nullptr,
                     const Transformer* reference = nullptr);

// Pipeline parallel: `shard` is this rank's part of a model sharded by layers as `p` says (a
// `reference` shard likewise). Micro-batches of opts.batch consecutive windows stream through the
// stages and the last stage scores them: every window is computed exactly as perplexity() computes
// it with the same batch size, so the results are identical.
PplResult perplexity_pipeline(const Transformer& shard, const Placement& p,
                              const std::vector<int32_t>& tokens, const PplOptions& opts,
                              Comm& comm, ForwardHooks* hooks = nullptr,
                              const Transformer* reference = nullptr);

}  // namespace rotq
