#include "runner/fuse/scalings.h"

#include <ATen/ATen.h>

#include "models/arch.h"
#include "solvers/error.h"

namespace rotq {
namespace {

at::Tensor like(const at::Tensor& s, const at::Tensor& w) {
  return s.to(w.device(), w.scalar_type());
}

// w's rows ÷ s (or × s): y = x·wᵀ, so the output channel j is scaled.
at::Tensor scale_rows(const at::Tensor& w, const at::Tensor& s, bool divide) {
  const at::Tensor f = like(s, w);
  return divide ? w / f.unsqueeze(1) : w * f.unsqueeze(1);
}

at::Tensor scale_vector(const at::Tensor& b, const at::Tensor& s, bool divide) {
  const at::Tensor f = like(s, b);
  return divide ? b / f : b * f;
}

at::Tensor scale_columns(const at::Tensor& w, const at::Tensor& s) {
  return w * like(s, w).unsqueeze(0);
}

// Rows and (if any) bias of one projection.
void scale_output(LayerWeights& out, LayerTensor w, LayerTensor b, const at::Tensor& s,
                  bool divide) {
  out[w] = scale_rows(out[w], s, divide);
  if (out[b].defined()) out[b] = scale_vector(out[b], s, divide);
}

// [kv_heads or 1, d/2] → per channel of a head, equal on each rotary pair: [kv_heads or 1, d].
at::Tensor rotary_pairs(const at::Tensor& qk) { return at::cat({qk, qk}, 1); }

void require_shape(const at::Tensor& t, at::IntArrayRef shape, int64_t layer, const char* what) {
  if (!t.defined()) return;
  require(t.sizes() == shape, "layer ", layer, " scaling ", what, ": expected shape ", shape,
          ", got ", t.sizes());
  require(t.scalar_type() == at::kDouble, "layer ", layer, " scaling ", what, ": expected float64");
  require(at::all(at::isfinite(t)).item<bool>() && at::all(t > 0).item<bool>(), "layer ", layer,
          " scaling ", what, ": expected finite positive values");
}

// One scale per rotary pair of each KV head; with per-head q/k norms, one set shared by the heads.
std::vector<int64_t> qk_shape(const ModelConfig& c) {
  return {has_tensor(c, LayerTensor::kQNorm) ? 1 : c.n_kv_heads, c.head_dim / 2};
}

}  // namespace

const std::vector<std::pair<std::string, ScalingField>>& scaling_kinds() {
  static const std::vector<std::pair<std::string, ScalingField>> kinds = {
      {"attn", &ChannelScalings::attn},
      {"ffn", &ChannelScalings::ffn},
      {"qk", &ChannelScalings::qk},
      {"ov", &ChannelScalings::ov},
      {"up_down", &ChannelScalings::up_down}};
  return kinds;
}

ChannelScalings unit_scalings(const ModelConfig& c) {
  const auto ones = [](at::IntArrayRef shape) { return at::ones(shape, at::kDouble); };
  ChannelScalings s;
  s.attn = ones({c.dim});
  s.ffn = ones({c.dim});
  s.qk = ones(qk_shape(c));
  s.ov = ones({c.kv_dim()});
  s.up_down = ones({c.hidden_dim});
  return s;
}

void validate_scalings(const ChannelScalings& s, const ModelConfig& c, int64_t layer) {
  require(!s.qk.defined() || c.head_dim % 2 == 0, "layer ", layer,
          " scaling qk: head_dim must be even (rotary pairs)");
  require_shape(s.attn, {c.dim}, layer, "attn");
  require_shape(s.ffn, {c.dim}, layer, "ffn");
  require_shape(s.qk, qk_shape(c), layer, "qk");
  require_shape(s.ov, {c.kv_dim()}, layer, "ov");
  require_shape(s.up_down, {c.hidden_dim}, layer, "up_down");
}

LayerWeights scale_inner(const LayerWeights& w, const ChannelScalings& s, const ModelConfig& c) {
  LayerWeights out = w;
  const int64_t group = c.n_heads / c.n_kv_heads;
  if (s.qk.defined()) {
    const at::Tensor per = rotary_pairs(s.qk);  // [kv_heads or 1, d]
    if (w[LayerTensor::kQNorm].defined()) {
      const at::Tensor h = per.reshape({-1});
      out[LayerTensor::kQNorm] = scale_vector(w[LayerTensor::kQNorm], h, /*divide=*/true);
      out[LayerTensor::kKNorm] = scale_vector(w[LayerTensor::kKNorm], h, /*divide=*/false);
    } else {
      scale_output(out, LayerTensor::kWk, LayerTensor::kBk, per.reshape({-1}), false);
      scale_output(out, LayerTensor::kWq, LayerTensor::kBq,
                   per.repeat_interleave(group, 0).reshape({-1}), true);
    }
  }
  if (s.ov.defined()) {
    scale_output(out, LayerTensor::kWv, LayerTensor::kBv, s.ov, true);
    const at::Tensor per_q = s.ov.reshape({c.n_kv_heads, c.head_dim}).repeat_interleave(group, 0);
    out[LayerTensor::kWo] = scale_columns(w[LayerTensor::kWo], per_q.reshape({-1}));
  }
  if (s.up_down.defined()) {
    scale_output(out, LayerTensor::kWUp, LayerTensor::kBUp, s.up_down, true);
    out[LayerTensor::kWDown] = scale_columns(w[LayerTensor::kWDown], s.up_down);
  }
  return out;
}

LayerWeights scale_norms(const LayerWeights& w, const ChannelScalings& s) {
  LayerWeights out = w;
  const auto apply = [&](const at::Tensor& sc, LayerTensor norm,
                         std::initializer_list<LayerTensor> readers) {
    if (!sc.defined()) return;
    require(w[norm].defined(), "scale_norms: the layer has no ", layer_tensor_key(norm));
    out[norm] = scale_vector(w[norm], sc, /*divide=*/true);
    for (LayerTensor t : readers) out[t] = scale_columns(w[t], sc);
  };
  apply(s.attn, LayerTensor::kAttnNorm, {LayerTensor::kWq, LayerTensor::kWk, LayerTensor::kWv});
  apply(s.ffn, LayerTensor::kFfnNorm, {LayerTensor::kWGate, LayerTensor::kWUp});
  return out;
}

}  // namespace rotq
