// Fake quantization of activations and the KV cache in the forward pass, each site configured by
// a QuantSpec. The online Hadamards (R3, R4) are part of the model (ModelConfig) and have already
// been applied when these hooks run, so they quantize exactly what the next linear (or the KV
// cache) sees. A downstream hook (activation capture for GPTQ) sees the quantized tensors.
#pragma once

#include <string>

#include "models/transformer.h"
#include "solvers/quantizer.h"
#include "solvers/straight_through.h"

namespace rotq {

struct ActivationQuant {
  QuantSpec act;                 // inputs of q/k/v, o_proj, gate/up, down_proj (per token)
  bool o_proj_per_head = false;  // o_proj's input in groups of head_dim (one scale per head)
  QuantSpec k_cache;             // keys after RoPE (and R3), per token in groups across KV heads
  QuantSpec v_cache;             // values, same layout
  // DFRot's "QuaRot.FP16()" ablation: at the inputs of q/k/v and gate/up, tokens whose per-token
  // error under `act` without rotation is below fp_massive·‖x‖ (massive-activation tokens) stay in
  // floating point. 0 disables it; the reference uses 9.5 on ‖x‖ = 64, i.e. 0.148.
  double fp_massive = 0;

  bool any() const { return act.enabled() || k_cache.enabled() || v_cache.enabled(); }
  std::string describe() const;
};

// QuaRot's defaults: activations symmetric per token (clip `a_clip`), KV asymmetric in groups of
// 128 (capped at the KV row) with clip `kv_clip`; 16 bits disables a site. The clips default to
// 1.0 as in QuaRot's code; its 4-bit runs pass 0.95 (which costs 3% perplexity at 8 bits).
ActivationQuant default_activation_quant(int a_bits, int kv_bits, double a_clip = 1.0,
                                         double kv_clip = 1.0);

class ActQuantHooks final : public ForwardHooks {
 public:
  // `next` (optional, not owned) is called at every site after quantization.
  ActQuantHooks(const ModelConfig& config, ActivationQuant quant, ForwardHooks* next = nullptr);

  void at_site(Site site, int64_t layer, at::Tensor& x) override;
  void set_next(ForwardHooks* next) { next_ = next; }
  // The residual rotation R1 fused into the model (undefined: none), so that fp_massive can judge
  // tokens unrotated (x·R1ᵀ).
  void set_residual_rotation(const at::Tensor& r1);
  // Training mode: the quantizers pass gradients by `ste` (kNone: evaluation, no gradient). The
  // forward values do not change. fp_massive has no training form and is refused.
  void set_straight_through(StraightThrough ste);

 private:
  at::Tensor quantize(const at::Tensor& x, const QuantSpec& spec) const;
  at::Tensor quantize_kv(const at::Tensor& x, const QuantSpec& spec, bool group_as_row) const;

  at::Tensor quantize_block_input(const at::Tensor& x) const;

  ActivationQuant quant_;
  at::Tensor r1t_;  // R1ᵀ in the compute dtype
  QuantSpec o_proj_spec_;
  StraightThrough ste_ = StraightThrough::kNone;
  ForwardHooks* next_;
};

}  // namespace rotq
