// The LLaMA-family forward pass, layer by layer (llama2.c's forward(), batched on ATen).
//
//   x = embed(tokens)
//   for each layer:                                   hook sites
//     h = rmsnorm(x) · γ_attn                          kAttnIn    (input of q/k/v)
//     q, k, v = h Wqᵀ, h Wkᵀ, h Wvᵀ  (+ biases; per-head q/k RMSNorm for Qwen3)
//     q, k = rope(q), rope(k)  (then ·Hᵀ/√d if R3)      kQ, kKCache, kVCache
//     a = softmax(q kᵀ/√d + causal) v                  kOProjIn   (input of o_proj)
//     x = x + a Woᵀ (+ bo)
//     h = rmsnorm(x) · γ_ffn                           kMlpIn     (input of gate/up)
//     m = act(h Wgᵀ) ⊙ (h Wuᵀ)  (+ biases; ·Hᵀ/√n if R4) kDownIn    (input of down_proj)
//     x = x + m Wdᵀ (+ bd)            act: hidden_act (silu, gelu, gelu_pytorch_tanh, relu)
//   logits = rmsnorm(x) · γ_final  lm_headᵀ  (computed in row chunks; see token_nll)
//
// Hooks (quantizers, online Hadamards, activation capture) see and may replace the tensor at each
// named site; they are how later stages change the forward pass without wrapping it.
#pragma once

#include <ATen/core/Tensor.h>

#include "models/rope.h"
#include "models/weights.h"

namespace rotq {

enum class Site { kAttnIn, kQ, kKCache, kVCache, kOProjIn, kMlpIn, kDownIn };
const char* site_name(Site s);

class ForwardHooks {
 public:
  virtual ~ForwardHooks() = default;
  // `layer` is the model's layer index; `x` may be replaced (same shape).
  virtual void at_site(Site site, int64_t layer, at::Tensor& x) = 0;
  // True when nothing past `site` of `layer` is wanted (a capture of one site's input): the forward
  // then ends right after the hook there and returns an undefined tensor, its input untouched.
  virtual bool ends_after(Site site, int64_t layer) const { return false; }
};

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);

class Transformer {
 public:
  // Holds a reference to `model`, which must outlive it; `dtype` is the compute dtype (the
  // weights are expected in it already, see LoadOptions).
  explicit Transformer(const Model& model);

  const ModelConfig& config() const { return model_.config; }
  const Model& model() const { return model_; }

  at::Tensor embed(const at::Tensor& tokens) const;  // [B, T] int64 -> [B, T, D]
  // One decoder layer on [B, T, D] (positions 0..T-1); `layer` indexes model.weights.layers.
  at::Tensor layer_forward(const at::Tensor& x, int64_t layer, ForwardHooks* hooks = nullptr) const;
  // A layer computed with other weights of the layer's shapes (a training forward builds rotated
  // weights that autograd differentiates; the model's own stay untouched); `global_layer` is its
  // index in the full model (what hooks see), so a shard may run a layer streamed from another
  // rank. Gradients flow to `x` and to `w` when they require them.
  at::Tensor layer_forward(const at::Tensor& x, const LayerWeights& w, int64_t global_layer,
                           ForwardHooks* hooks = nullptr) const;
  // The layer's two halves, layer_forward = mlp_block ∘ attention_block: the residual after the
  // attention block (sites kAttnIn … kOProjIn), and the MLP block on it (kMlpIn, kDownIn). A
  // caller that revisits a layer's MLP (GPTQ's true-sequential capture) keeps the first's result
  // instead of recomputing it. mlp_block adds to `x` in place outside autograd, and returns it.
  at::Tensor attention_block(const at::Tensor& x, const LayerWeights& w, int64_t global_layer,
                             ForwardHooks* hooks = nullptr) const;
  at::Tensor mlp_block(at::Tensor x, const LayerWeights& w, int64_t global_layer,
                       ForwardHooks* hooks = nullptr) const;
  at::Tensor final_norm(const at::Tensor& x) const;  // [.., D] -> [.., D]
  // All layers: tokens [B, T] -> final-normed hidden states [B, T, D].
  at::Tensor hidden_states(const at::Tensor& tokens, ForwardHooks* hooks = nullptr) const;
  // Logits of rows of final-normed hidden states: [N, D] -> [N, vocab] (for small N).
  at::Tensor logits(const at::Tensor& hidden) const;

 private:
  const RopeCache& rope(int64_t T) const;

  const Model& model_;
  mutable RopeCache rope_;
};

// Negative log-likelihood of `targets` [N] under logits = hidden [N, D] · lm_headᵀ, in float64,
// computed in row chunks so that no [N, vocab] buffer is ever materialized.
at::Tensor token_nll(const at::Tensor& hidden, const at::Tensor& lm_head,
                     const at::Tensor& targets);

}  // namespace rotq
