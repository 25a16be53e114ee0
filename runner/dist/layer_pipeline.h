// A model sharded by layers over ranks (placement.h) and the pipeline that runs it: stage 0
// embeds a micro-batch of windows, each stage runs its layers and sends the hidden states to the
// next, the last stage consumes them. With blocking sends a stage starts micro-batch i+1 as soon
// as it has handed i on, so after the fill every stage is busy.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <vector>

#include "models/checkpoint.h"
#include "models/transformer.h"
#include "runner/dist/placement.h"
#include "solvers/comm.h"

namespace rotq {

// This rank's shard: layers [begin, end) (model.layer_offset = begin), the embedding on rank 0,
// the final norm and lm_head on the last rank. Reads only those tensors from the checkpoint.
Model load_shard(CheckpointReader& reader, const Placement& p, int rank, at::ScalarType dtype);

// Whether `model` holds every layer (a replicated model) rather than a shard.
bool holds_all_layers(const Model& model);

// Runs `batches` (token ids [b, T], the same list on every rank) through the stages. `stages`
// are this rank's models run side by side on the same input (e.g. a quantized shard and its
// floating-point reference: the message carries both); `hooks[i]` (may be null) hooks stages[i].
// On the last rank `sink(i, outs)` receives micro-batch i's hidden states after the last layer
// (before the final norm), one tensor per stage. Other ranks never call `sink`.
using PipelineSink = std::function<void(size_t, const std::vector<at::Tensor>&)>;
void pipeline_forward(const std::vector<const Transformer*>& stages,
                      const std::vector<ForwardHooks*>& hooks, const Placement& p, Comm& comm,
                      const std::vector<at::Tensor>& batches, const PipelineSink& sink);

// Broadcasts layer `layer` from its owner to every rank: the owner's tensors are returned as
// they are, the others receive copies (shapes from the config, dtype `dtype`). The layer a
// non-owner streams through during calibration.
LayerWeights broadcast_layer(const Model& shard, const Placement& p, int64_t layer,
                             at::ScalarType dtype, Comm& comm);

// The compute dtype of a shard's layers.
at::ScalarType shard_dtype(const Model& shard);

}  // namespace rotq
