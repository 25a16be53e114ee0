#include "runner/rotate/rotated_forward.h"

#include <ATen/ATen.h>
#include <ATen/core/Reduction.h>
#include <ATen/core/grad_mode.h>

#include <cmath>
#include <optional>

#include "models/layer_groups.h"
#include "runner/dist/layer_pipeline.h"
#include "runner/fuse/fusion.h"
#include "runner/fuse/scalings.h"
#include "solvers/error.h"
#include "solvers/hadamard.h"
#include "solvers/straight_through.h"

namespace rotq {

// ---------------------------------------------------------------------------------------------
// RotationParams

RotationParams RotationParams::from(const Rotations& init, at::Device device) {
  require(init.r1.defined(), "learned rotation: no initial R1");
  const auto leaf = [&](const at::Tensor& r) {
    return r.detach().to(device, at::kDouble).clone().requires_grad_(true);
  };
  RotationParams p;
  p.r1 = leaf(init.r1);
  for (const at::Tensor& r : init.r2) p.r2.push_back(r.defined() ? leaf(r) : at::Tensor());
  for (const ChannelScalings& s : init.scales) {
    ChannelScalings& mine = p.scales.emplace_back();
    for (const auto& [kind, field] : scaling_kinds()) {
      if ((s.*field).defined()) mine.*field = leaf(s.*field);
    }
  }
  return p;
}

std::vector<at::Tensor> RotationParams::rotations() const {
  std::vector<at::Tensor> out{r1};
  for (const at::Tensor& r : r2) {
    if (r.defined()) out.push_back(r);
  }
  return out;
}

std::vector<at::Tensor> RotationParams::scalings() const {
  std::vector<at::Tensor> out;
  for (const ChannelScalings& s : scales) {
    for (const auto& [kind, field] : scaling_kinds()) {
      if ((s.*field).defined()) out.push_back(s.*field);
    }
  }
  return out;
}

std::vector<at::Tensor> RotationParams::tensors() const {
  std::vector<at::Tensor> out = rotations();
  for (const at::Tensor& s : scalings()) out.push_back(s);
  return out;
}

void RotationParams::zero_gradients() {
  for (at::Tensor t : tensors()) t.mutable_grad() = at::Tensor();
}

void RotationParams::all_reduce_gradients(Comm& comm, double scale) {
  std::vector<at::Tensor> flat;
  for (const at::Tensor& t : tensors()) {
    flat.push_back(t.grad().defined() ? t.grad().reshape({-1})
                                      : at::zeros({t.numel()}, t.options()));
  }
  at::Tensor packed = at::cat(flat).contiguous();
  if (comm.size() > 1) comm.all_reduce(packed, ReduceOp::kSum);
  packed.mul_(scale);
  int64_t at = 0;
  for (at::Tensor t : tensors()) {
    t.mutable_grad() = packed.narrow(0, at, t.numel()).view(t.sizes()).clone();
    at += t.numel();
  }
}

double RotationParams::gradient_norm() const {
  double sq = 0;
  for (const at::Tensor& t : tensors()) {
    if (t.grad().defined()) sq += t.grad().pow(2).sum().item<double>();
  }
  return std::sqrt(sq);
}

Rotations RotationParams::detached() const {
  const auto copy = [](const at::Tensor& r) {
    return r.defined() ? r.detach().to(at::kCPU, at::kDouble).clone() : at::Tensor();
  };
  Rotations out;
  out.r1 = copy(r1);
  for (const at::Tensor& r : r2) out.r2.push_back(copy(r));
  for (const ChannelScalings& s : scales) {
    ChannelScalings& mine = out.scales.emplace_back();
    for (const auto& [kind, field] : scaling_kinds()) mine.*field = copy(s.*field);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// RotatedForward

namespace {

// The products W·R run in float64 for a float64 model and in float32 otherwise (bfloat16
// weights are widened); the master rotations stay float64 and receive the gradient of the cast.
at::ScalarType product_dtype(at::ScalarType model_dtype) {
  return model_dtype == at::kDouble ? at::kDouble : at::kFloat;
}

void require_windows(const at::Tensor& windows) {
  require(windows.dim() == 2 && windows.size(1) >= 2,
          "learned rotation: windows must be [batch, seq >= 2] token ids, got ", windows.sizes());
}

// A tensor every rank needs whole (embedding, lm_head): a replicated model has it; a shard gets
// it from its owner.
at::Tensor everywhere(const at::Tensor& mine, const Placement& p, int owner,
                      const std::vector<int64_t>& shape, at::ScalarType dtype, at::Device device,
                      Comm& comm, const char* what) {
  if (!p.sharded() || comm.size() == 1) {
    require(mine.defined(), "learned rotation: the model has no ", what);
    return mine;
  }
  at::Tensor t = comm.rank() == owner
                     ? mine.contiguous()
                     : at::empty(shape, at::TensorOptions().dtype(dtype).device(device));
  require(t.defined(), "learned rotation: rank ", comm.rank(), " owns the ", what,
          " but does not hold it");
  comm.broadcast(t, owner);
  return t;
}

}  // namespace

struct RotatedForward::Rotated {
  at::Tensor r1;                        // product dtype, part of the graph when grad mode is on
  std::vector<at::Tensor> r2;           // per layer (undefined: none)
  std::vector<ChannelScalings> scales;  // per layer (empty: none), product dtype
};

RotatedForward::RotatedForward(const Model& model, const Placement& placement, Comm& comm,
                               RotatedForwardOptions opts)
    : model_(model),
      view_(model),
      teacher_(model),
      placement_(placement),
      comm_(comm),
      opts_(std::move(opts)),
      tf_(view_),
      teacher_tf_(teacher_),
      quant_hooks_(model.config, opts_.acts),
      hooks_(opts_.hooks ? opts_.hooks : &quant_hooks_),
      dtype_(shard_dtype(model)),
      device_(opts_.device.value_or(model_device(model))) {
  require(norms_are_fused(model), model.source,
          ": a learned rotation trains on the norm-fused model (fuse_norms first)");
  require(!model.config.online_hadamard_down && !model.config.online_hadamard_qk, model.source,
          " is already rotated (its config asks for online Hadamards)");
  require(opts_.micro_batch >= 1 && opts_.logit_rows >= 1,
          "learned rotation: micro_batch and logit_rows must be positive");
  require(opts_.loss != LearnLoss::kKlTop || opts_.kl_top >= 1,
          "learned rotation: KL-Top needs k >= 1, got ", opts_.kl_top);
  view_.config.online_hadamard_down = opts_.online;
  view_.config.online_hadamard_qk = opts_.online;
  if (opts_.online) {
    require(hadamard_exists(view_.config.hidden_dim), "R4: no Hadamard construction of order ",
            view_.config.hidden_dim, " (intermediate_size)");
    require(hadamard_exists(view_.config.head_dim), "R3: no Hadamard construction of order ",
            view_.config.head_dim, " (head_dim)");
  }
  quant_hooks_.set_straight_through(opts_.straight_through);
  const ModelConfig& c = model.config;
  const at::Device device = model_device(model);
  const bool sharded = placement.sharded();
  embed_ = everywhere(model.weights.embed, placement, sharded ? placement.owner(0) : 0,
                      {c.vocab_size, c.dim}, dtype_, device, comm, "embedding");
  lm_head_ =
      everywhere(model.weights.lm_head, placement, sharded ? placement.owner(c.n_layers - 1) : 0,
                 {c.vocab_size, c.dim}, dtype_, device, comm, "lm_head");
  // Offloaded: copied in once; the layers are copied in as they are used (layer_weights).
  embed_ = embed_.to(device_);
  lm_head_ = lm_head_.to(device_);
}

RotatedForward::Rotated RotatedForward::rotated(const RotationParams& params) const {
  const at::ScalarType ct = product_dtype(dtype_);
  Rotated r;
  r.r1 = params.r1.to(ct);
  for (const at::Tensor& r2 : params.r2) r.r2.push_back(r2.defined() ? r2.to(ct) : at::Tensor());
  for (const ChannelScalings& s : params.scales) {
    ChannelScalings& mine = r.scales.emplace_back();
    for (const auto& [kind, field] : scaling_kinds()) {
      if ((s.*field).defined()) mine.*field = (s.*field).to(ct);
    }
  }
  return r;
}

LayerWeights RotatedForward::layer_weights(int64_t layer) {
  LayerWeights w = placement_.sharded() ? broadcast_layer(model_, placement_, layer, dtype_, comm_)
                                        : model_.weights.layers.at(layer);
  for (at::Tensor& t : w.tensors) {
    if (t.defined()) t = t.to(device_, /*non_blocking=*/true);  // offloaded: copied in now
  }
  return w;
}

LayerWeights RotatedForward::rotate_layer(const LayerWeights& w, const Rotated& r,
                                          int64_t layer) const {
  const at::ScalarType ct = product_dtype(dtype_);
  LayerWeights out = w;
  for (at::Tensor& t : out.tensors) {
    if (t.defined()) t = t.to(ct);
  }
  const ChannelScalings* s = r.scales.empty() ? nullptr : &r.scales.at(layer);
  if (s) out = scale_inner(out, *s, view_.config);
  // R4's fixed half, Wd·Qᵀ (part of the graph only behind a learned up/down scaling).
  if (opts_.online) out[LayerTensor::kWDown] = hadamard_transform(out[LayerTensor::kWDown]);
  for (const LayerGroup& g : layer_groups()) {
    for (LayerTensor t : g.linears) {
      if (g.residual_reader) {
        out[t] = at::matmul(out[t], r.r1);
        continue;
      }
      out[t] = at::matmul(r.r1.t(), out[t]);
      if (out[bias_of(t)].defined()) out[bias_of(t)] = at::matmul(out[bias_of(t)], r.r1);
    }
  }
  const at::Tensor r2 = r.r2.empty() ? at::Tensor() : r.r2.at(layer);
  if (r2.defined()) {
    out[LayerTensor::kWv] = rotate_head_rows(out[LayerTensor::kWv], r2);
    if (out[LayerTensor::kBv].defined()) {
      out[LayerTensor::kBv] = rotate_head_rows(out[LayerTensor::kBv].unsqueeze(1), r2).squeeze(1);
    }
    out[LayerTensor::kWo] = rotate_head_columns(out[LayerTensor::kWo], r2);
  }
  if (s) out = scale_norms(out, *s);
  if (opts_.weights.enabled()) {
    for (const LayerGroup& g : layer_groups()) {
      for (LayerTensor t : g.linears) out[t] = rtn_quantize_weight_ste(out[t], opts_.weights);
    }
  }
  for (at::Tensor& t : out.tensors) {
    if (t.defined()) t = t.to(dtype_);
  }
  return out;
}

at::Tensor RotatedForward::embed(const at::Tensor& tokens, const Rotated& r) const {
  const at::Tensor e = at::embedding(embed_, tokens.to(embed_.device()));
  return at::matmul(e.to(r.r1.scalar_type()), r.r1).to(dtype_);
}

at::Tensor RotatedForward::teacher_embed(const at::Tensor& tokens) const {
  return at::embedding(embed_, tokens.to(embed_.device()));
}

// One chunk's summed loss from its logits [n, vocab] (float32/64): the cross-entropy of `targets`,
// or KL-Top against the teacher's last hidden states [n, C].
at::Tensor RotatedForward::chunk_loss(const at::Tensor& logits, const at::Tensor& teacher_hidden,
                                      const at::Tensor& targets) const {
  if (opts_.loss == LearnLoss::kCrossEntropy) {
    return at::cross_entropy_loss(logits, targets.to(logits.device()), {}, at::Reduction::Sum);
  }
  at::Tensor top, log_p;
  {
    at::NoGradGuard no_grad;
    const at::Tensor h = rms_norm(teacher_hidden, at::Tensor(), view_.config.norm_eps);
    const at::Tensor fp = at::matmul(h, lm_head_.t()).to(logits.scalar_type());
    const int64_t k = std::min(opts_.kl_top, fp.size(1));
    top = std::get<1>(at::topk(fp, k, /*dim=*/1));
    log_p = at::log_softmax(fp, 1).gather(1, top);
  }
  const at::Tensor log_q = at::log_softmax(logits, 1).gather(1, top);
  return (log_p.exp() * (log_p - log_q)).sum();
}

// Σ loss over tokens 0..T-2 given the last layer's output `hidden` [B, T, C] (and the teacher's,
// for KL-Top), in chunks of rows that each reach `hidden` through their own slice (so each
// chunk's backward, when asked for, frees its logits before the next chunk is formed).
double RotatedForward::head(const at::Tensor& hidden, const at::Tensor& teacher,
                            const at::Tensor& targets, const Rotated& r, bool backward) const {
  const int64_t B = hidden.size(0), T = targets.size(1);
  const at::ScalarType lt = dtype_ == at::kDouble ? at::kDouble : at::kFloat;
  double total = 0;
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t0 = 0; t0 < T; t0 += opts_.logit_rows) {
      const int64_t n = std::min(opts_.logit_rows, T - t0);
      const at::Tensor x = hidden.select(0, b).narrow(0, t0, n);
      const at::Tensor h = rms_norm(x, at::Tensor(), view_.config.norm_eps);
      const at::Tensor back = at::matmul(h.to(r.r1.scalar_type()), r.r1.t()).to(dtype_);
      const at::Tensor logits = at::matmul(back, lm_head_.t()).to(lt);
      at::Tensor loss =
          chunk_loss(logits, teacher.defined() ? teacher.select(0, b).narrow(0, t0, n) : teacher,
                     targets.select(0, b).narrow(0, t0, n));
      total += loss.item<double>();
      if (backward) loss.backward();
    }
  }
  return total;
}

double RotatedForward::checkpointed(const RotationParams& params,
                                    const std::vector<at::Tensor>& batches, bool backward) {
  const int64_t L = view_.config.n_layers;
  const size_t M = batches.size();
  // xs[mb][l]: the input of layer l (l = L: the last layer's output), kept without a graph.
  std::vector<std::vector<at::Tensor>> xs(M, std::vector<at::Tensor>(L + 1));
  std::vector<at::Tensor> fp(M);  // KL-Top's teacher: the floating-point model's hidden states
  const bool teach = opts_.loss == LearnLoss::kKlTop;
  // Cast once per call: every layer's recompute and the head share these nodes of the graph.
  const Rotated r = rotated(params);
  {
    at::NoGradGuard no_grad;
    for (size_t mb = 0; mb < M; ++mb) {
      xs[mb][0] = embed(batches[mb], r);
      if (teach) fp[mb] = teacher_embed(batches[mb]);
    }
    for (int64_t l = 0; l < L; ++l) {
      const LayerWeights w = layer_weights(l);
      const LayerWeights rw = rotate_layer(w, r, l);
      for (size_t mb = 0; mb < M; ++mb) {
        xs[mb][l + 1] = tf_.layer_forward(xs[mb][l], rw, l, hooks_);
        if (teach) fp[mb] = teacher_tf_.layer_forward(fp[mb], w, l, nullptr);
      }
    }
  }
  double total = 0;
  std::vector<at::Tensor> grads(M);
  for (size_t mb = 0; mb < M; ++mb) {
    const at::Tensor targets = batches[mb].narrow(1, 1, batches[mb].size(1) - 1);
    if (!backward) {
      at::NoGradGuard no_grad;
      total += head(xs[mb][L], fp[mb], targets, r, false);
      continue;
    }
    at::Tensor leaf = xs[mb][L].detach().requires_grad_(true);
    total += head(leaf, fp[mb], targets, r, true);
    grads[mb] = leaf.grad();
    xs[mb][L] = fp[mb] = at::Tensor();
  }
  if (!backward) return total;
  for (int64_t l = L - 1; l >= 0; --l) {
    // One graph of the rotated weights per layer, shared by its micro-batches' backwards.
    const LayerWeights rw = rotate_layer(layer_weights(l), r, l);
    for (size_t mb = 0; mb < M; ++mb) {
      at::Tensor leaf = xs[mb][l].detach().requires_grad_(true);
      const at::Tensor y = tf_.layer_forward(leaf, rw, l, hooks_);
      y.backward(grads[mb], /*retain_graph=*/mb + 1 < M);
      grads[mb] = leaf.grad();
      xs[mb][l] = at::Tensor();
    }
  }
  for (size_t mb = 0; mb < M; ++mb) embed(batches[mb], r).backward(grads[mb]);
  return total;
}

double RotatedForward::whole_graph(const RotationParams& params,
                                   const std::vector<at::Tensor>& batches) {
  const int64_t L = view_.config.n_layers;
  const Rotated r = rotated(params);
  const bool teach = opts_.loss == LearnLoss::kKlTop;
  std::vector<at::Tensor> x(batches.size()), fp(batches.size());
  for (size_t mb = 0; mb < batches.size(); ++mb) {
    x[mb] = embed(batches[mb], r);
    if (teach) fp[mb] = teacher_embed(batches[mb]);
  }
  for (int64_t l = 0; l < L; ++l) {
    const LayerWeights w = layer_weights(l);
    const LayerWeights rw = rotate_layer(w, r, l);
    for (size_t mb = 0; mb < batches.size(); ++mb) {
      x[mb] = tf_.layer_forward(x[mb], rw, l, hooks_);
      if (teach) {
        at::NoGradGuard no_grad;
        fp[mb] = teacher_tf_.layer_forward(fp[mb], w, l, nullptr);
      }
    }
  }
  // The head's chunks each backpropagate into the leaf; the leaf's gradient then runs the rest.
  double total = 0;
  for (size_t mb = 0; mb < batches.size(); ++mb) {
    at::Tensor leaf = x[mb].detach().requires_grad_(true);
    total += head(leaf, fp[mb], batches[mb].narrow(1, 1, batches[mb].size(1) - 1), r, true);
    x[mb].backward(leaf.grad(), /*retain_graph=*/mb + 1 < batches.size());
  }
  return total;
}

double RotatedForward::loss_and_backward(const RotationParams& params, const at::Tensor& windows) {
  require_windows(windows);
  at::AutoGradMode grad_mode(true);
  const std::vector<at::Tensor> batches = windows.split(opts_.micro_batch, 0);
  return opts_.checkpoint ? checkpointed(params, batches, true) : whole_graph(params, batches);
}

double RotatedForward::loss(const RotationParams& params, const at::Tensor& windows) {
  require_windows(windows);
  return checkpointed(params, windows.split(opts_.micro_batch, 0), false);
}

}  // namespace rotq
