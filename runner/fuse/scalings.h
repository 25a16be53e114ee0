// OSTQuant's learned channel scalings on one layer's weights: each pair divides an activation
// channel by s and multiplies the weights that consume it by s, so that the floating-point
// function is unchanged while the quantizer sees the divided activation.
//
//   attn, ffn  (after R1, in the rotated basis)  the norm's weight ÷ s (the norm-fused model's
//              ones become 1/s), the readers' columns × s
//   qk         (before RoPE)  q's rows ÷ s, k's rows × s, equal on each rotary pair (i, i + d/2)
//              so that RoPE commutes with it and q·k is unchanged; on models with per-head q/k
//              norms (Qwen3) the norms' weights carry it instead, one s shared by the heads
//   ov         (before R2)  v's rows and bias ÷ s, o's columns × s (repeated over a GQA group)
//   up_down    (before R4)  up's rows and bias ÷ s, down's columns × s before the folded
//              Hadamard, so the online Hadamard sees up/s and the product is exact
//
// The functions are differentiable ATen ops in the weights' dtype (the scalings are cast to it),
// used by the training forward (runner/rotate/rotated_forward.cc) and by fuse_rotations (float64).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "models/weights.h"
#include "solvers/rotation.h"

namespace rotq {

// The five kinds by name ("attn", "ffn", "qk", "ov", "up_down"), for files and records.
using ScalingField = at::Tensor ChannelScalings::*;
const std::vector<std::pair<std::string, ScalingField>>& scaling_kinds();

// All five kinds as ones for one layer of `c` (float64): OSTQuant's start.
ChannelScalings unit_scalings(const ModelConfig& c);

// Throws rotq::Error naming the layer and the tensor unless every defined scaling has its shape,
// is finite and positive.
void validate_scalings(const ChannelScalings& s, const ModelConfig& c, int64_t layer);

// qk, ov and up_down, applied to the unrotated weights (before R1, R2 and R4's fold).
LayerWeights scale_inner(const LayerWeights& w, const ChannelScalings& s, const ModelConfig& c);

// attn and ffn, applied after R1: the norms' weights ÷ s, the readers' columns × s.
LayerWeights scale_norms(const LayerWeights& w, const ChannelScalings& s);

}  // namespace rotq
