#include "models/quant_hooks.h"

#include <ATen/ATen.h>

#include "solvers/error.h"

namespace rotq {
namespace {

std::string spec_or_fp(const QuantSpec& s) { return s.enabled() ? s.describe() : "fp"; }

}  // namespace

std::string ActivationQuant::describe() const {
  std::string d = "act " + spec_or_fp(act);
  if (o_proj_per_head && act.enabled()) d += " (o_proj per head)";
  if (fp_massive > 0 && act.enabled()) {
    d += " (massive tokens fp < " + std::to_string(fp_massive).substr(0, 5) + ")";
  }
  return d + ", k " + spec_or_fp(k_cache) + ", v " + spec_or_fp(v_cache);
}

ActivationQuant default_activation_quant(int a_bits, int kv_bits, double a_clip, double kv_clip) {
  ActivationQuant q;
  q.act.bits = a_bits;
  q.act.symmetric = true;
  q.act.clip_ratio = a_clip;
  for (QuantSpec* kv : {&q.k_cache, &q.v_cache}) {
    kv->bits = kv_bits;
    kv->symmetric = false;
    kv->group = 128;
    kv->clip_ratio = kv_clip;
  }
  validate(q.act, "activation quantizer");
  validate(q.k_cache, "KV-cache quantizer");
  return q;
}

ActQuantHooks::ActQuantHooks(const ModelConfig& config, ActivationQuant quant, ForwardHooks* next)
    : quant_(std::move(quant)), next_(next) {
  o_proj_spec_ = quant_.act;
  if (quant_.o_proj_per_head) o_proj_spec_.group = config.head_dim;
}

// x [B, KVH, T, d]: quantized per token over the KV heads' concatenation, in groups of
// spec.group (capped at the row, so small models get one group per token). Keys follow QuaRot's
// QKRotationWrapper, which reshapes each group into a row of its own (so the range includes 0);
// values its grouped output quantizer (the group's raw range).
at::Tensor ActQuantHooks::quantize_kv(const at::Tensor& x, const QuantSpec& spec,
                                      bool group_as_row) const {
  const int64_t B = x.size(0), KVH = x.size(1), T = x.size(2), d = x.size(3);
  QuantSpec s = spec;
  const int64_t row = KVH * d;
  if (s.group <= 0 || s.group > row) s.group = 0;
  at::Tensor rows = x.transpose(1, 2).reshape({B, T, row});
  if (group_as_row && s.group > 0) {
    require(row % s.group == 0, "KV-cache group ", s.group, " does not divide the KV row of ", row,
            " (KV heads x head_dim)");
    rows = rows.reshape({B, T, row / s.group, s.group});
    s.group = 0;
  }
  return quantize(rows, s).reshape({B, T, KVH, d}).transpose(1, 2);
}

void ActQuantHooks::set_straight_through(StraightThrough ste) {
  require(ste == StraightThrough::kNone || quant_.fp_massive <= 0,
          "activation quantizer: the massive-token exemption (fp_massive) has no training form; "
          "learned rotations need fp_massive 0");
  ste_ = ste;
}

at::Tensor ActQuantHooks::quantize(const at::Tensor& x, const QuantSpec& spec) const {
  return fake_quantize_ste(x, spec, ste_);
}

void ActQuantHooks::set_residual_rotation(const at::Tensor& r1) {
  r1t_ = r1.defined() ? r1.t().contiguous() : at::Tensor();
}

at::Tensor ActQuantHooks::quantize_block_input(const at::Tensor& x) const {
  at::Tensor q = quantize(x, quant_.act);
  if (quant_.fp_massive <= 0) return q;
  const at::Tensor orig = r1t_.defined() ? at::matmul(x, r1t_.to(x.device(), x.scalar_type())) : x;
  const at::Tensor err = (orig - fake_quantize(orig, quant_.act)).pow(2).sum(-1, true).sqrt();
  const at::Tensor norm = orig.pow(2).sum(-1, true).sqrt();
  return at::where(err < quant_.fp_massive * norm, x, q);
}

void ActQuantHooks::at_site(Site site, int64_t layer, at::Tensor& x) {
  switch (site) {
    case Site::kAttnIn:
    case Site::kMlpIn:
      if (quant_.act.enabled()) x = quantize_block_input(x);
      break;
    case Site::kDownIn:
      if (quant_.act.enabled()) x = quantize(x, quant_.act);
      break;
    case Site::kOProjIn:
      if (o_proj_spec_.enabled()) x = quantize(x, o_proj_spec_);
      break;
    case Site::kQ:
      break;
    case Site::kKCache:
      if (quant_.k_cache.enabled()) x = quantize_kv(x, quant_.k_cache, /*group_as_row=*/true);
      break;
    case Site::kVCache:
      if (quant_.v_cache.enabled()) x = quantize_kv(x, quant_.v_cache, /*group_as_row=*/false);
      break;
  }
  if (next_) next_->at_site(site, layer, x);
}

}  // namespace rotq
