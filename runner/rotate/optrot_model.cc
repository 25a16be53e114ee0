#include "runner/rotate/optrot_model.h"

#include <ATen/ATen.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

#include "models/layer_groups.h"
#include "runner/core/stats.h"
#include "runner/dist/layer_pipeline.h"
#include "runner/fuse/fusion.h"
#include "solvers/error.h"

namespace rotq {

namespace {

bool uses(const std::vector<LayerTensor>& m, LayerTensor t) {
  return std::find(m.begin(), m.end(), t) != m.end();
}

}  // namespace

std::vector<LayerTensor> parse_optrot_matrices(const std::string& list) {
  static const std::vector<std::pair<std::string, LayerTensor>> kNames = {
      {"q", LayerTensor::kWq},      {"k", LayerTensor::kWk},       {"v", LayerTensor::kWv},
      {"o", LayerTensor::kWo},      {"gate", LayerTensor::kWGate}, {"up", LayerTensor::kWUp},
      {"down", LayerTensor::kWDown}};
  std::vector<LayerTensor> out;
  size_t start = 0;
  while (start <= list.size()) {
    const size_t comma = list.find(',', start);
    const std::string name =
        list.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (!name.empty()) {
      auto it = std::find_if(kNames.begin(), kNames.end(),
                             [&](const auto& p) { return p.first == name; });
      require(it != kNames.end(), "OptRot matrix '", name,
              "' is not one of q, k, v, o, gate, up, down");
      if (!uses(out, it->second)) out.push_back(it->second);
    }
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  require(!out.empty(), "OptRot: no matrices in '", list, "' (expected e.g. q,k,v,o,gate,up,down)");
  return out;
}

FourthPowerObjective r1_objective(const Model& model, OptRotNorm norm, int rank, int size,
                                  const std::vector<LayerCovariances>* covs,
                                  const std::vector<LayerTensor>& matrices) {
  require(norms_are_fused(model), "OptRot: fold the RMSNorm scales first (fuse_norms)");
  require(!covs || covs->size() == model.weights.layers.size(),
          "OptRot+: ", covs ? covs->size() : 0, " layer covariances for ",
          model.weights.layers.size(), " layers");
  FourthPowerObjective obj(model.config.dim, norm);
  for (size_t i = 0; i < model.weights.layers.size(); ++i) {
    if (static_cast<int>(i % size) != rank) continue;
    const LayerWeights& l = model.weights.layers[i];
    for (const LayerGroup& g : layer_groups()) {
      // Readers see x·R1 (their rows), writers R1ᵀ·W (their columns, so the transpose); a
      // reader group is weighted by its input's covariance (OptRot+).
      const int cov =
          covs && g.residual_reader
              ? obj.add_covariance(g.site == Site::kAttnIn ? (*covs)[i].attn : (*covs)[i].mlp)
              : -1;
      for (LayerTensor t : g.linears) {
        if (uses(matrices, t)) obj.add(g.residual_reader ? l[t] : l[t].t(), 1.0, cov);
      }
    }
  }
  return obj;
}

FourthPowerObjective r2_objective(const Model& model, int64_t layer, const at::Tensor& r1,
                                  OptRotNorm norm, const LayerCovariances* cov,
                                  const std::vector<LayerTensor>& matrices,
                                  at::ScalarType store_as) {
  const ModelConfig& c = model.config;
  const LayerWeights& l = model.weights.layers.at(layer);
  at::Tensor wv = l[LayerTensor::kWv].to(at::kDouble);  // [KVH·d, C]
  at::Tensor wo = l[LayerTensor::kWo].to(at::kDouble);  // [C, H·d]
  if (r1.defined()) {
    const at::Tensor r = r1.to(wv.device(), at::kDouble);
    wv = at::matmul(wv, r);
    wo = at::matmul(r.t(), wo);
  }
  const int64_t d = c.head_dim;
  FourthPowerObjective obj(d, norm);
  // All heads' blocks as one stack (equal shapes [C, d]): R2ᵀ·Wv_h rotates head h's rows, reader
  // form Wv_hᵀ; Wo_h·R2 rotates head h's input columns, reader form Wo_h. Each o head is weighted
  // by its own input's covariance (OptRot+).
  std::vector<at::Tensor> blocks;
  std::vector<int> groups;
  if (uses(matrices, LayerTensor::kWv)) {
    blocks.push_back(wv.reshape({c.n_kv_heads, d, -1}).transpose(1, 2));  // [KVH, C, d]
    groups.assign(static_cast<size_t>(c.n_kv_heads), -1);
  }
  if (uses(matrices, LayerTensor::kWo)) {
    require(!cov || static_cast<int64_t>(cov->o_heads.size()) == c.n_heads,
            "OptRot+: ", cov ? cov->o_heads.size() : 0, " o_proj head covariances for ", c.n_heads,
            " heads");
    blocks.push_back(wo.reshape({-1, c.n_heads, d}).permute({1, 0, 2}));  // [H, C, d]
    for (int64_t h = 0; h < c.n_heads; ++h) {
      groups.push_back(cov ? obj.add_covariance(cov->o_heads[h]) : -1);
    }
  }
  if (!blocks.empty()) obj.add_stack(at::cat(blocks, 0), 1.0, groups, store_as);
  return obj;
}

std::vector<int64_t> r2_layers_of_rank(const Model& model, const Comm& comm) {
  const int64_t layers = static_cast<int64_t>(model.weights.layers.size());
  const bool shard = !holds_all_layers(model);
  std::vector<int64_t> out;
  for (int64_t l = 0; l < layers; ++l) {
    if (shard || l % comm.size() == comm.rank()) out.push_back(l);
  }
  return out;
}

namespace {

// This rank's R2 problems, solved side by side in batches of layers whose objectives fit
// `batch_bytes` together, the batches of equal size (every layer's objective has the first one's
// shapes; a lone last layer would pay a whole batch's per-step overhead). At 7B a layer's stack is
// 67 MB in bfloat16, 268 MB in float64: one batch of 32 layers or three (11, 11, 10) under 4 GiB.
// Building a layer's objective also takes float64 temporaries of its v/o weights (~2.5× the
// float64 stack) beyond the budget. Sets rot.r2 at the layers solved here.
struct R2Solve {
  int64_t layers = 0, batches = 0;
  std::vector<double> step_seconds;
};

R2Solve solve_r2_layers(const Model& model, const OptRotOptions& opts, const Rotations& init,
                        const at::Tensor& r1, const std::vector<LayerCovariances>* covs,
                        const std::vector<int64_t>& layers, int64_t batch_bytes, Rotations& rot) {
  R2Solve out;
  if (layers.empty()) return out;
  CayleySgdOptions quiet = opts.sgd;
  quiet.log_every = 0;
  const at::Device device = model_device(model);
  const auto objective_of = [&](int64_t l) {
    return r2_objective(model, l, r1, opts.norm, covs ? &(*covs)[l] : nullptr, opts.matrices,
                        opts.sgd.gradient_dtype);
  };
  const int64_t n = static_cast<int64_t>(layers.size());
  // The first batch starts with the objective that sizes the batches.
  std::vector<FourthPowerObjective> objs;
  objs.push_back(objective_of(layers.front()));
  const int64_t fit =
      std::clamp<int64_t>(batch_bytes / std::max<int64_t>(1, objs.front().owned_bytes()), 1, n);
  const int64_t batches = (n + fit - 1) / fit, size = (n + batches - 1) / batches;
  for (int64_t b0 = 0; b0 < n; b0 += size, objs.clear()) {
    for (int64_t k = static_cast<int64_t>(objs.size()); k < std::min(size, n - b0); ++k) {
      objs.push_back(objective_of(layers[b0 + k]));
    }
    std::vector<const FourthPowerObjective*> ptrs;
    std::vector<at::Tensor> starts;
    for (size_t k = 0; k < objs.size(); ++k) {
      ptrs.push_back(&objs[k]);
      starts.push_back(init.r2[layers[b0 + k] + model.layer_offset]);
    }
    std::vector<RotationTrace> traces;
    const at::Tensor r2 =
        minimize_fourth_power_batch(ptrs, at::stack(starts).to(device), quiet, &traces).cpu();
    for (size_t k = 0; k < objs.size(); ++k) {
      rot.r2[layers[b0 + k] + model.layer_offset] = r2[static_cast<int64_t>(k)].clone();
    }
    out.step_seconds.insert(out.step_seconds.end(), traces.front().step_seconds.begin(),
                            traces.front().step_seconds.end());
    out.layers += static_cast<int64_t>(objs.size());
    ++out.batches;
  }
  return out;
}

}  // namespace

Rotations optrot_rotations(const Model& model, const OptRotOptions& opts, uint64_t seed, Comm& comm,
                           RotationTrace* trace, const std::vector<LayerCovariances>* covs,
                           int64_t r2_batch_bytes) {
  const ModelConfig& c = model.config;
  FixedRotationSpec start;
  start.kind = FixedRotation::kHadamard;
  start.seed = seed;
  start.r2 = opts.r2;
  Rotations init = make_rotations(start, c.dim, c.head_dim, c.n_layers);
  Rotations rot;
  rot.r2.resize(c.n_layers);
  // A shard (a model sharded by layers: every rank holds a disjoint range) contributes all of its
  // layers; a replicated model is split across ranks by layer index. Either way the all-reduced
  // objective counts every matrix once.
  const bool shard = !holds_all_layers(model);
  const FourthPowerObjective obj1 = r1_objective(model, opts.norm, shard ? 0 : comm.rank(),
                                                 shard ? 1 : comm.size(), covs, opts.matrices);
  // The optimisation runs where the weights are; the rotations are returned on the host.
  const at::Device device = model_device(model);
  RotationTrace own;
  RotationTrace& tr = trace ? *trace : own;
  const at::Tensor r1 = minimize_fourth_power(obj1, init.r1.to(device), opts.sgd, &comm, &tr);
  // The trace's losses, in the gradient's precision: evaluating them again in float64 would cost
  // two more passes over every weight (~1.7 s at 7B on an H200, ~36 s at 70B).
  spdlog::info(
      "{} R1: loss {:.6g} (randomized Hadamard start: {:.6g}) in {} steps ({:.2f}s; median step "
      "{:.3f}s)",
      covs ? "optrot+" : "optrot", *std::min_element(tr.loss.begin(), tr.loss.end()),
      tr.loss.front(), opts.sgd.steps, tr.seconds, median(tr.step_seconds));
  rot.r1 = r1.cpu();
  if (opts.r2 && (uses(opts.matrices, LayerTensor::kWv) || uses(opts.matrices, LayerTensor::kWo))) {
    require(r2_batch_bytes > 0, "OptRot: the R2 batch budget must be positive, got ",
            r2_batch_bytes);
    const auto t0 = std::chrono::steady_clock::now();
    const R2Solve solved = solve_r2_layers(model, opts, init, r1, covs,
                                           r2_layers_of_rank(model, comm), r2_batch_bytes, rot);
    spdlog::info(
        "{} R2: {} of {} layers on this rank in {} batches, {:.2f}s (median batch step {:.2g}s)",
        covs ? "optrot+" : "optrot", solved.layers, c.n_layers, solved.batches,
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
        median(solved.step_seconds));
    if (shard || comm.size() > 1) {
      // Each owner's R2s to every rank: the others add zeros, so the sum is exact.
      at::Tensor all = at::zeros({c.n_layers, c.head_dim, c.head_dim}, at::kDouble);
      for (int64_t l = 0; l < c.n_layers; ++l) {
        if (rot.r2[l].defined()) all[l].copy_(rot.r2[l]);
      }
      comm.all_reduce(all, ReduceOp::kSum);
      for (int64_t l = 0; l < c.n_layers; ++l) rot.r2[l] = all[l].clone();
    }
  } else if (opts.r2) {
    rot.r2 = init.r2;  // neither v nor o enters: R2 stays the randomized Hadamard start
  }
  return rot;
}

}  // namespace rotq
