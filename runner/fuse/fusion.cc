#include "runner/fuse/fusion.h"

#include <ATen/ATen.h>

#include "models/layer_groups.h"
#include "runner/fuse/scalings.h"
#include "solvers/error.h"
#include "solvers/hadamard.h"

namespace rotq {
namespace {

// Replaces t's contents by f(t in float64), keeping t's dtype (and storage for untied tensors).
template <typename F>
void update_f64(at::Tensor& t, F f) {
  const at::ScalarType dt = t.scalar_type();
  t = f(t.to(at::kDouble)).to(dt).contiguous();
}

// Replaces the layer's tensors by those of f(float64 copies) that f changed, keeping their dtypes.
template <typename F>
void update_layer_f64(LayerWeights& l, F f) {
  LayerWeights f64 = l;
  for (at::Tensor& t : f64.tensors) {
    if (t.defined()) t = t.to(at::kDouble);
  }
  const LayerWeights out = f(f64);
  for (size_t i = 0; i < l.tensors.size(); ++i) {
    if (!out.tensors[i].is_same(f64.tensors[i])) {
      l.tensors[i] = out.tensors[i].to(l.tensors[i].scalar_type()).contiguous();
    }
  }
}

// The scalings of this rank's layers (indexed by the full model's layers), validated.
std::vector<const ChannelScalings*> layer_scalings(const Model& model, const Rotations& rot) {
  const ModelConfig& c = model.config;
  require(rot.scales.empty() || static_cast<int64_t>(rot.scales.size()) == c.n_layers,
          "channel scalings: expected one set per layer (", c.n_layers, "), got ",
          rot.scales.size());
  std::vector<const ChannelScalings*> out;
  for (size_t i = 0; i < model.weights.layers.size() && !rot.scales.empty(); ++i) {
    const int64_t layer = static_cast<int64_t>(i) + model.layer_offset;
    validate_scalings(rot.scales[layer], c, layer);
    out.push_back(&rot.scales[layer]);
  }
  return out;
}

void scale_columns(at::Tensor& w, const at::Tensor& gamma) {
  update_f64(w, [&](const at::Tensor& x) { return x * gamma.to(at::kDouble).unsqueeze(0); });
}

void reset_to_ones(at::Tensor& gamma) { gamma = at::ones_like(gamma); }

void check_square(const at::Tensor& r, int64_t n, const char* what) {
  require(r.dim() == 2 && r.size(0) == n && r.size(1) == n, what, " must be ", n, "x", n, ", got ",
          r.sizes());
}

}  // namespace

at::Tensor rotate_head_rows(const at::Tensor& w, const at::Tensor& r2) {
  const int64_t d = r2.size(0);
  const int64_t heads = w.size(0) / d;
  at::Tensor blocks = w.reshape({heads, d, -1});
  return at::matmul(r2.t(), blocks).reshape(w.sizes());
}

at::Tensor rotate_head_columns(const at::Tensor& w, const at::Tensor& r2) {
  const int64_t d = r2.size(0);
  const int64_t heads = w.size(1) / d;
  return at::matmul(w.reshape({w.size(0), heads, d}), r2).reshape(w.sizes());
}

void fuse_norms(Model& model) {
  ModelWeights& w = model.weights;
  for (LayerWeights& l : w.layers) {
    for (const LayerGroup& g : layer_groups()) {
      if (!g.norm) continue;
      for (LayerTensor t : g.linears) scale_columns(l[t], l[*g.norm]);
      reset_to_ones(l[*g.norm]);
    }
  }
  // Untie first: scaling the head in place would also scale a shared embedding. A pipeline
  // shard without the head (not the last stage) has nothing to fold here.
  if (w.lm_head.defined()) {
    w.lm_head = w.lm_head.clone();
    scale_columns(w.lm_head, w.final_norm);
    reset_to_ones(w.final_norm);
  }
  model.config.tie_embeddings = false;
}

bool norms_are_fused(const Model& model) {
  const auto ones = [](const at::Tensor& g) { return at::all(g == 1).item<bool>(); };
  if (model.weights.final_norm.defined() && !ones(model.weights.final_norm)) return false;
  for (const LayerWeights& l : model.weights.layers) {
    for (const LayerGroup& g : layer_groups()) {
      if (g.norm && !ones(l[*g.norm])) return false;
    }
  }
  return true;
}

void fuse_rotations(Model& model, const Rotations& rot) {
  require(!model.config.online_hadamard_down && !model.config.online_hadamard_qk, model.source,
          " is already rotated (its config asks for online Hadamards)");
  require(norms_are_fused(model),
          "fuse_rotations: fold the RMSNorm scales first (fuse_norms); R1 does not commute with "
          "a scaled norm");
  ModelConfig& c = model.config;
  ModelWeights& w = model.weights;
  // The scalings inside the blocks act in the weights' own bases, before R2 and R4's fold.
  const std::vector<const ChannelScalings*> scales = layer_scalings(model, rot);
  for (size_t i = 0; i < scales.size(); ++i) {
    update_layer_f64(w.layers[i],
                     [&](const LayerWeights& l) { return scale_inner(l, *scales[i], c); });
  }
  if (rot.r1.defined()) {
    check_square(rot.r1, c.dim, "R1");
    // Fused in float64 where the weights are (a GPU when the model was moved there).
    const at::Tensor r1 = rot.r1.to(model_device(model), at::kDouble);
    const auto reader = [&](const at::Tensor& x) { return at::matmul(x, r1); };
    const auto writer = [&](const at::Tensor& x) { return at::matmul(r1.t(), x); };
    if (w.embed.defined()) update_f64(w.embed, reader);
    if (w.lm_head.defined()) update_f64(w.lm_head, reader);
    for (LayerWeights& l : w.layers) {
      for (const LayerGroup& g : layer_groups()) {
        for (LayerTensor t : g.linears) {
          if (g.residual_reader) {
            update_f64(l[t], reader);
            continue;
          }
          // A writer's bias lands in the residual stream, so it turns with it; readers' biases
          // are added after their (rotated) input has been undone by W·R1 and stay as they are.
          update_f64(l[t], writer);
          if (l[bias_of(t)].defined()) update_f64(l[bias_of(t)], writer);
        }
      }
    }
  }
  // R2 is indexed by the full model's layers; a shard (layer_offset) uses its own range.
  require(rot.r2.empty() || static_cast<int64_t>(rot.r2.size()) == c.n_layers,
          "R2: expected one matrix per layer (", c.n_layers, "), got ", rot.r2.size());
  for (size_t i = 0; i < w.layers.size() && !rot.r2.empty(); ++i) {
    const at::Tensor& r2_i = rot.r2[i + model.layer_offset];
    if (!r2_i.defined()) continue;
    check_square(r2_i, c.head_dim, "R2");
    const at::Tensor r2 = r2_i.to(model_device(model), at::kDouble);
    LayerWeights& l = w.layers[i];
    update_f64(l[LayerTensor::kWv], [&](const at::Tensor& x) { return rotate_head_rows(x, r2); });
    if (l[LayerTensor::kBv].defined()) {
      update_f64(l[LayerTensor::kBv], [&](const at::Tensor& b) {
        return rotate_head_rows(b.unsqueeze(1), r2).squeeze(1);
      });
    }
    update_f64(l[LayerTensor::kWo],
               [&](const at::Tensor& x) { return rotate_head_columns(x, r2); });
  }
  // The norms' scalings act in the R1 basis.
  for (size_t i = 0; i < scales.size(); ++i) {
    update_layer_f64(w.layers[i],
                     [&](const LayerWeights& l) { return scale_norms(l, *scales[i]); });
  }
  if (rot.r4) {
    require(hadamard_exists(c.hidden_dim), "R4: no Hadamard construction of order ", c.hidden_dim,
            " (intermediate_size)");
    for (LayerWeights& l : w.layers) {
      // Wd·Qᵀ with Q = H/√n: the online transform maps x to x·Qᵀ.
      update_f64(l[LayerTensor::kWDown], [](const at::Tensor& x) { return hadamard_transform(x); });
    }
    c.online_hadamard_down = true;
  }
  if (rot.r3) {
    require(hadamard_exists(c.head_dim), "R3: no Hadamard construction of order ", c.head_dim,
            " (head_dim)");
    c.online_hadamard_qk = true;
  }
}

}  // namespace rotq
