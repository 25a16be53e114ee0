// The calibration tokens DFRot rotates: the normalized inputs x/rms(x) of every attention and FFN
// block (RMSNorm scales already folded into the next linears, so the norm's output is exactly
// x/rms(x)), captured from a forward pass of the floating-point model, with where each came from.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "models/tokenizers/tokenizer.h"
#include "models/weights.h"
#include "runner/dist/placement.h"
#include "solvers/comm.h"

namespace rotq {

enum class BlockSite : int8_t { kAttn = 0, kMlp = 1 };

struct BlockInputs {
  at::Tensor x;  // [N, C] float32, rows ordered (window, layer, site, position)
  std::vector<int32_t> layer;
  std::vector<BlockSite> site;
  std::vector<int32_t> position;
  std::vector<int32_t> token;
  int64_t size() const { return x.defined() ? x.size(0) : 0; }
};

// Runs `windows` [B, T] through the first `max_layers` layers (0: all) of `model`, whose norms
// must be fused (fuse_norms), and returns the inputs of both blocks of each layer. With `shard`,
// `model` is this rank's part of a model sharded by layers: the windows go through the pipeline
// and each rank returns the inputs of its own layers (possibly none).
BlockInputs collect_block_inputs(const Model& model, const at::Tensor& windows,
                                 int64_t max_layers = 0,
                                 const Placement& placement = Placement::replicated(),
                                 Comm* comm = nullptr);

// Rows [begin, end) of `in` (a rank's share).
BlockInputs slice_block_inputs(const BlockInputs& in, int64_t begin, int64_t end);

// One line per finding: how many tokens `massive` flags, in which layers and blocks, at which
// positions and tokens; `tok` (optional) names the tokens.
std::vector<std::string> describe_massive_tokens(const BlockInputs& in, const at::Tensor& massive,
                                                 const Tokenizer* tok);

}  // namespace rotq
