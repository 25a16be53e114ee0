// The forward pass a learned rotation is trained through (SpinQuant): the norm-fused model with
// R1 and R2 applied as explicit products instead of fused, activations and KV cache
// fake-quantized with a straight-through estimator, and the online R3/R4 Hadamards as evaluation
// will apply them; LibTorch autograd gives the gradient of the next-token cross-entropy with
// respect to R1 and every R2. At the learned rotations this is, up to rounding, the function
// the fused model computes (fuse_rotations + ActQuantHooks), so the rotation is trained on what
// is evaluated.
//
//   residual in the R1 basis:  x₀ = E[tokens]·R1
//   readers (q, k, v, gate, up):  W·R1          writers (o, down): R1ᵀ·W (biases b·R1)
//   v's rows per head: R2ᵀ·block,  o's columns per head: block·R2
//   down: R1ᵀ·(W_d·Qᵀ) with x·Qᵀ online when R4 (Q = H/√n)
//   logits = rms(x_L)·R1ᵀ·lm_headᵀ   (the same as the fused head (lm_head·R1))
//
// Memory: per layer activation checkpointing. The forward keeps only each layer's input (under
// no-grad); the backward recomputes one layer at a time with its graph, so the peak is one
// layer's graph for one micro-batch plus the layer inputs of this rank's windows. The forward and
// the backward walk the layers in order, every micro-batch per layer, so a model sharded by layers
// (Placement::sharded()) streams each layer from its owner twice per step (forward, recompute),
// as GPTQ's calibration does; embedding and lm_head are broadcast once. A model offloaded to host
// memory (RotatedForwardOptions::device) is streamed the same way from the host, so the device
// holds no resident weights at all.
//
// Ranks are data-parallel: each computes the loss sum and gradients of its own windows; the caller
// all-reduces (RotationParams::all_reduce_gradients).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "models/quant_hooks.h"
#include "models/transformer.h"
#include "models/weights.h"
#include "runner/dist/placement.h"
#include "solvers/comm.h"
#include "solvers/rotation.h"
#include "solvers/straight_through.h"

namespace rotq {

// The learned matrices and scalings: float64 leaves that require a gradient, on the model's
// device.
struct RotationParams {
  at::Tensor r1;               // [dim, dim]
  std::vector<at::Tensor> r2;  // per layer of the full model [head_dim, head_dim]; empty: no R2
  std::vector<ChannelScalings> scales;  // per layer of the full model (OSTQuant); empty: none

  // Leaves initialised from `init` (r2 and scales empty or one per layer).
  static RotationParams from(const Rotations& init, at::Device device);
  std::vector<at::Tensor> rotations() const;  // r1 then the defined r2 (orthogonal)
  std::vector<at::Tensor> scalings() const;   // the defined scalings, layer by layer
  std::vector<at::Tensor> tensors() const;    // rotations() then scalings()
  void zero_gradients();
  // Sums the gradients over the ranks (one collective) and scales them by `scale`.
  void all_reduce_gradients(Comm& comm, double scale);
  double gradient_norm() const;  // ‖(∇R1, ∇R2…, ∇S…)‖₂ over all tensors
  // Detached float64 copies on the CPU, as Rotations (r3/r4 not set).
  Rotations detached() const;
};

// What the training minimises, summed over the tokens 0..T-2 of every window.
enum class LearnLoss {
  kCrossEntropy,  // of the next token (SpinQuant)
  // OSTQuant's KL-Top: Σ_{i ∈ top-k of the floating-point model's logits} p_fp,i·(log p_fp,i −
  // log p_q,i), both distributions over the whole vocabulary (no renormalisation to the top k).
  kKlTop,
};

struct RotatedForwardOptions {
  ActivationQuant acts;       // fake-quantized in training (bits 16: not)
  QuantSpec weights;          // weight fake-quantization in training (bits 16: none)
  bool online = true;         // R3 and R4 as evaluation applies them
  bool checkpoint = true;     // per-layer recompute (false: one graph over the whole model)
  int64_t micro_batch = 1;    // windows per forward/backward
  int64_t logit_rows = 4096;  // head rows per chunk (bounds the [rows, vocab] logits)
  LearnLoss loss = LearnLoss::kCrossEntropy;
  int64_t kl_top = 1000;  // k of kKlTop (at most the vocabulary)
  // The quantizers' gradient (OSTQuant: kClipped).
  StraightThrough straight_through = StraightThrough::kIdentity;
  // Where the training computes (null: the model's device). A model kept in host memory
  // (offloaded) has each layer copied in when it is used, embedding and lm_head once.
  std::optional<at::Device> device;
  // Replaces the activation quantizers (not owned; null: ActQuantHooks on `acts` with the
  // identity straight-through estimator). Tests pass hooks with frozen quantization noise.
  ForwardHooks* hooks = nullptr;
};

class RotatedForward {
 public:
  // `model` is norm-fused and unrotated (this rank's shard when `placement` is sharded); it must
  // outlive this object. Collective in sharded mode (broadcasts embedding and lm_head).
  RotatedForward(const Model& model, const Placement& placement, Comm& comm,
                 RotatedForwardOptions opts);

  // Σ over this rank's windows [B, T] (int64 token ids) of the loss at tokens 0..T-2 (the
  // cross-entropy of tokens 1..T-1, or KL-Top against the floating-point model, which the same
  // pass over the layers computes alongside); its gradient accumulates into the params' .grad().
  // Collective in sharded mode.
  double loss_and_backward(const RotationParams& params, const at::Tensor& windows);
  // The same sum without a gradient.
  double loss(const RotationParams& params, const at::Tensor& windows);

  const ModelConfig& config() const { return view_.config; }
  at::Device device() const { return device_; }

 private:
  struct Rotated;  // the rotation matrices in the compute dtype, built once per call
  Rotated rotated(const RotationParams& params) const;
  LayerWeights layer_weights(int64_t layer);  // streamed from its owner when sharded
  LayerWeights rotate_layer(const LayerWeights& w, const Rotated& r, int64_t layer) const;
  at::Tensor embed(const at::Tensor& tokens, const Rotated& r) const;
  // The floating-point model's first layer input and one layer (KL-Top's teacher).
  at::Tensor teacher_embed(const at::Tensor& tokens) const;
  double head(const at::Tensor& hidden, const at::Tensor& teacher, const at::Tensor& targets,
              const Rotated& r, bool backward) const;
  at::Tensor chunk_loss(const at::Tensor& logits, const at::Tensor& teacher_hidden,
                        const at::Tensor& targets) const;
  double checkpointed(const RotationParams& params, const std::vector<at::Tensor>& batches,
                      bool backward);
  double whole_graph(const RotationParams& params, const std::vector<at::Tensor>& batches);

  const Model& model_;
  Model view_;     // model_'s tensors with the training config (online Hadamards on)
  Model teacher_;  // model_'s tensors with its own config (no online transforms)
  const Placement& placement_;
  Comm& comm_;
  RotatedForwardOptions opts_;
  Transformer tf_, teacher_tf_;
  ActQuantHooks quant_hooks_;
  ForwardHooks* hooks_;
  at::Tensor embed_, lm_head_;  // whole on every rank
  at::ScalarType dtype_;
  at::Device device_;
};

}  // namespace rotq
