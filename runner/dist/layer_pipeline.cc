#include "runner/dist/layer_pipeline.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "models/arch.h"
#include "solvers/error.h"

namespace rotq {
namespace {

constexpr int kPipelineTag = 11;  // MPI keeps messages with one tag between two ranks in order

}  // namespace

Model load_shard(CheckpointReader& reader, const Placement& p, int rank, at::ScalarType dtype) {
  require(p.n_layers == reader.config().n_layers, reader.source(), ": placement for ", p.n_layers,
          " layers, the model has ", reader.config().n_layers);
  LoadOptions o;
  o.dtype = dtype;
  o.layer_begin = p.layer_begin(rank);
  o.layer_end = p.layer_end(rank);
  o.embed = rank == 0;
  o.head = rank == p.last();
  return load_model(reader, o);
}

bool holds_all_layers(const Model& model) {
  return model.layer_offset == 0 &&
         static_cast<int64_t>(model.weights.layers.size()) == model.config.n_layers;
}

at::ScalarType shard_dtype(const Model& shard) {
  require(!shard.weights.layers.empty(), shard.source, ": the shard holds no layer");
  return shard.weights.layers.front()[LayerTensor::kWq].scalar_type();
}

void pipeline_forward(const std::vector<const Transformer*>& stages,
                      const std::vector<ForwardHooks*>& hooks, const Placement& p, Comm& comm,
                      const std::vector<at::Tensor>& batches, const PipelineSink& sink) {
  require(!stages.empty() && hooks.size() == stages.size(),
          "pipeline: one hook slot per stage model");
  require(p.ranks == comm.size(), "pipeline: placement for ", p.ranks, " ranks, running on ",
          comm.size());
  const int r = comm.rank();
  const ModelConfig& c = stages[0]->config();
  const int64_t n_stage = static_cast<int64_t>(stages.size());
  const at::ScalarType dt = shard_dtype(stages[0]->model());
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < batches.size(); ++i) {
    const at::Tensor& ids = batches[i];
    const int64_t b = ids.size(0), T = ids.size(1);
    std::vector<at::Tensor> xs;
    if (r == 0) {
      const at::Tensor x = stages[0]->embed(ids);
      for (int64_t s = 0; s < n_stage; ++s) xs.push_back(s == 0 ? x : x.clone());
    } else {
      // The stage models are stacked along the batch dimension in one message.
      at::Tensor msg =
          at::empty({n_stage * b, T, c.dim},
                    at::TensorOptions().dtype(dt).device(model_device(stages[0]->model())));
      comm.recv(msg, r - 1, kPipelineTag);
      for (int64_t s = 0; s < n_stage; ++s) xs.push_back(msg.narrow(0, s * b, b).contiguous());
    }
    for (int64_t s = 0; s < n_stage; ++s) {
      const int64_t layers = static_cast<int64_t>(stages[s]->model().weights.layers.size());
      for (int64_t l = 0; l < layers; ++l) xs[s] = stages[s]->layer_forward(xs[s], l, hooks[s]);
    }
    if (r < p.last()) {
      comm.send(n_stage == 1 ? xs[0] : at::cat(xs, 0), r + 1, kPipelineTag);
    } else {
      sink(i, xs);
    }
  }
}

LayerWeights broadcast_layer(const Model& shard, const Placement& p, int64_t layer,
                             at::ScalarType dtype, Comm& comm) {
  const int owner = p.owner(layer);
  const bool mine = owner == comm.rank();
  LayerWeights out;
  if (mine) out = shard.weights.layers.at(layer - shard.layer_offset);
  if (comm.size() == 1) return out;
  for (size_t i = 0; i < out.tensors.size(); ++i) {
    const LayerTensor t = static_cast<LayerTensor>(i);
    if (!has_tensor(shard.config, t)) continue;
    at::Tensor& x = out.tensors[i];
    if (!mine) {
      x = at::empty(expected_shape(shard.config, t),
                    at::TensorOptions().dtype(dtype).device(model_device(shard)));
    }
    // broadcast writes in place: the owner sends from its own tensor untouched.
    comm.broadcast(x, owner);
  }
  return out;
}

}  // namespace rotq
