// Planted massive activations for synthetic models (`rotq synth --massive`): LLaMA's mechanism as
// Sun et al. (2024, "Massive Activations in Large Language Models") describe it, built into random
// weights so that rotation methods can be compared on a model that has it (stories260K has none).
//
//  * trigger tokens (BOS and delimiters) carry a signature channel s in their embedding;
//  * from layer `layer` on: one FFN neuron of that layer reads s (gate = up = e_s, so its output
//    ≈ h_s² fires only on triggers) and its down_proj column writes `magnitude` (≈ that many times
//    the embedding's RMS) into `channels` fixed residual channels, which persist in the residual;
//  * attention sinks: in every later layer, the sink heads' lowest-frequency RoPE pair attends to
//  keys
//    that read the massive channels, from a query that reads a constant (DC) channel every
//    embedding carries, so every token after a trigger attends mostly to it; the sink's value
//    ignores the massive channels (≈ 0, as LLaMA's sinks' values are);
//  * optionally ordinary outlier channels (embedding columns scaled up), LLaMA's other outliers,
//    and a logit scale (sharper predictions, so that quantization noise shows in perplexity).
//
// Triggers are token identities: the first token of a window is massive when it is a trigger
// (BOS at the start of a text; a delimiter), not because it is first.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "models/config.h"

namespace rotq {

struct MassiveSpec {
  bool enabled = false;
  int64_t layer = 1;
  int64_t channels = 2;
  double magnitude = 300;
  std::vector<int32_t> tokens = {1};
  int64_t outliers = 0;
  double outlier_scale = 8;
  int64_t sinks = -1;      // sink heads per layer after `layer` (-1: all heads, 0: none)
  double sink_logit = 10;  // the sink's attention logit for a typical query
  // Sink heads' value gain: a head that parks its attention on a sink must write loudly when it
  // attends elsewhere, so its values are larger than a random head's.
  double sink_gain = 4;
  double logit_scale = 1;

  // "layer=1,channels=2,magnitude=300,tokens=1;13,outliers=4,outlier_scale=8,sinks=1,
  // sink_logit=10,sink_gain=4,logit_scale=4" (any subset; empty: defaults); enabled afterwards.
  static MassiveSpec parse(const std::string& text);
  std::string describe() const;
};

// The residual channels the plant uses, drawn from the seed: massive, signature, DC, outliers.
struct MassiveChannels {
  std::vector<int64_t> massive;
  int64_t signature = 0;
  int64_t dc = 0;
  std::vector<int64_t> outliers;
};
MassiveChannels massive_channels(const ModelConfig& cfg, const MassiveSpec& spec, uint64_t seed);

// Rewrites the freshly drawn float32 tensor `w` named `name` (HF names) in place.
void plant_massive(const ModelConfig& cfg, const MassiveSpec& spec, uint64_t seed,
                   const std::string& name, at::Tensor& w);

}  // namespace rotq
