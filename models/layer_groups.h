// The linears of a decoder layer grouped by the tensor they read: one table that norm fusion,
// rotation fusion, GPTQ's true-sequential capture, OptRot's objective and the covariances all
// read, instead of each spelling the roles out.
//
//   site       norm        linears        reads                     rotations
//   attn_in    attn norm   q, k, v        the normed residual       R1 on the input side (W·R1)
//   o_proj_in  -           o              the heads' outputs        R2 per head; R1ᵀ on its output
//   mlp_in     ffn norm    gate, up       the normed residual       R1 on the input side
//   down_in    -           down           the MLP's hidden state    R4 online; R1ᵀ on its output
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "models/arch.h"
#include "models/config.h"
#include "models/transformer.h"

namespace rotq {

struct LayerGroup {
  Site site;                         // where the forward exposes their shared input (hooks)
  std::optional<LayerTensor> norm;   // the RMSNorm in front of them (folded into them), if any
  std::vector<LayerTensor> linears;  // in true-sequential order
  // Reads the residual stream: R1 turns its inputs (W·R1). Otherwise the group writes into the
  // stream: R1ᵀ turns its outputs and biases.
  bool residual_reader = false;
  bool per_head = false;  // its input is split in heads (R2 on the columns)

  int64_t input_width(const ModelConfig& c) const;  // columns of its linears
};

// The four groups of a layer, in the order the forward reaches them.
const std::vector<LayerGroup>& layer_groups();
// The group whose input the forward exposes at `site`, or null (q/k after RoPE, the KV cache).
const LayerGroup* find_layer_group(Site site);
// The bias that goes with a linear's weight (kWq -> kBq, ...).
LayerTensor bias_of(LayerTensor linear);

}  // namespace rotq
