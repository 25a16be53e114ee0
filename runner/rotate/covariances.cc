#include "runner/rotate/covariances.h"

#include <ATen/ATen.h>

#include "models/layer_groups.h"
#include "models/transformer.h"
#include "runner/dist/layer_pipeline.h"
#include "solvers/error.h"

namespace rotq {
namespace {

class CovarianceCapture final : public ForwardHooks {
 public:
  CovarianceCapture(const ModelConfig& c, int64_t layers, at::Device device)
      : head_dim_(c.head_dim) {
    const auto opts = at::TensorOptions().dtype(at::kDouble).device(device);
    // One fresh buffer per layer (vector::assign would share one tensor across all layers).
    for (int64_t l = 0; l < layers; ++l) {
      attn_.push_back(at::zeros({c.dim, c.dim}, opts));
      mlp_.push_back(at::zeros({c.dim, c.dim}, opts));
      o_.push_back(at::zeros({c.n_heads, c.head_dim, c.head_dim}, opts));
    }
  }
  void at_site(Site site, int64_t layer, at::Tensor& x) override {
    // Inputs that a rotation turns: the residual readers' (R1) and the heads' (R2).
    const LayerGroup* g = find_layer_group(site);
    if (!g || !(g->residual_reader || g->per_head)) return;
    const at::Tensor rows = x.reshape({-1, x.size(-1)}).to(at::kDouble);
    if (g->per_head) {
      const at::Tensor heads = rows.view({rows.size(0), -1, head_dim_}).transpose(0, 1);
      o_[layer].add_(at::matmul(heads.transpose(1, 2), heads));
    } else {
      (site == Site::kAttnIn ? attn_ : mlp_)[layer].add_(at::matmul(rows.t(), rows));
    }
  }
  std::vector<at::Tensor> attn_, mlp_, o_;  // o_[l]: [H, d, d]

 private:
  int64_t head_dim_;
};

}  // namespace

std::vector<LayerCovariances> collect_layer_covariances(const Model& model,
                                                        const at::Tensor& windows, Comm& comm,
                                                        int64_t batch, const Placement& placement) {
  require(windows.dim() == 2 && windows.size(0) > 0,
          "OptRot+: expected calibration windows [B, T], got ", windows.sizes());
  require(batch > 0, "OptRot+: batch must be positive");
  const int64_t layers = static_cast<int64_t>(model.weights.layers.size());
  Transformer tf(model);
  CovarianceCapture cap(model.config, layers, model_device(model));
  // Layer indices in hooks are the model's (layer_offset added for a placement).
  struct Shift final : ForwardHooks {
    CovarianceCapture* inner;
    int64_t offset;
    void at_site(Site s, int64_t l, at::Tensor& x) override { inner->at_site(s, l - offset, x); }
  } shift;
  shift.inner = &cap;
  shift.offset = model.layer_offset;
  const bool sharded = placement.sharded();
  // Replicated: each rank its share of the windows (then all-reduced). Sharded: every window
  // goes through the pipeline and each stage sums its own layers' inputs.
  std::vector<int64_t> mine;
  for (int64_t i = sharded ? 0 : comm.rank(); i < windows.size(0); i += sharded ? 1 : comm.size()) {
    mine.push_back(i);
  }
  std::vector<at::Tensor> batches;
  for (size_t b0 = 0; b0 < mine.size(); b0 += static_cast<size_t>(batch)) {
    const size_t n = std::min(mine.size() - b0, static_cast<size_t>(batch));
    const at::Tensor idx =
        at::tensor(std::vector<int64_t>(mine.begin() + b0, mine.begin() + b0 + n));
    batches.push_back(windows.to(at::kLong).index_select(0, idx));
  }
  if (sharded) {
    pipeline_forward({&tf}, {&shift}, placement, comm, batches,
                     [](size_t, const std::vector<at::Tensor>&) {});
  } else {
    for (const at::Tensor& ids : batches) tf.hidden_states(ids, &shift);
  }
  std::vector<LayerCovariances> out(layers);
  for (int64_t l = 0; l < layers; ++l) {
    if (!sharded) {
      comm.all_reduce(cap.attn_[l]);
      comm.all_reduce(cap.mlp_[l]);
      comm.all_reduce(cap.o_[l]);
    }
    out[l].attn = cap.attn_[l];
    out[l].mlp = cap.mlp_[l];
    for (int64_t h = 0; h < model.config.n_heads; ++h) out[l].o_heads.push_back(cap.o_[l][h]);
  }
  return out;
}

}  // namespace rotq
