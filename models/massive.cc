#include "models/massive.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <sstream>

#include "models/weights.h"
#include "solvers/error.h"
#include "solvers/parse.h"

namespace rotq {
namespace {

constexpr double kSignature = 12.0;  // trigger tokens' signature value (embedding RMS is 1)
constexpr double kDc = 3.0;          // the constant every embedding carries for the sink query

double number_for(const std::string& key, const std::string& v) {
  const std::optional<double> x = parse_number(v);
  require(x && std::isfinite(*x), "--massive ", key, "=", v, ": expected a number");
  return *x;
}

bool layer_tensor_named(const std::string& name, LayerTensor t, int64_t* layer, int64_t n_layers) {
  for (int64_t l = 0; l < n_layers; ++l) {
    if (hf_layer_tensor_name(t, l) == name) {
      *layer = l;
      return true;
    }
  }
  return false;
}

}  // namespace

MassiveSpec MassiveSpec::parse(const std::string& text) {
  MassiveSpec s;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    const size_t eq = item.find('=');
    require(eq != std::string::npos, "--massive ", item, ": expected key=value");
    const std::string k = item.substr(0, eq), v = item.substr(eq + 1);
    const double x = k == "tokens" ? 0 : number_for(k, v);
    if (k == "layer")
      s.layer = static_cast<int64_t>(x);
    else if (k == "channels")
      s.channels = static_cast<int64_t>(x);
    else if (k == "magnitude")
      s.magnitude = x;
    else if (k == "outliers")
      s.outliers = static_cast<int64_t>(x);
    else if (k == "outlier_scale")
      s.outlier_scale = x;
    else if (k == "sinks")
      s.sinks = static_cast<int64_t>(x);
    else if (k == "sink_logit")
      s.sink_logit = x;
    else if (k == "sink_gain")
      s.sink_gain = x;
    else if (k == "logit_scale")
      s.logit_scale = x;
    else if (k == "tokens") {
      s.tokens.clear();
      std::stringstream ts(v);
      std::string id;
      while (std::getline(ts, id, ';')) {
        if (!id.empty()) s.tokens.push_back(static_cast<int32_t>(number_for("tokens", id)));
      }
    } else {
      fail("--massive ", k,
           ": unknown key (expected layer, channels, magnitude, tokens, outliers, "
           "outlier_scale, sinks, sink_logit, sink_gain, logit_scale)");
    }
  }
  require(s.layer >= 0 && s.channels >= 1 && s.magnitude > 0 && s.outliers >= 0 &&
              s.outlier_scale > 0 && s.logit_scale > 0 && !s.tokens.empty(),
          "--massive ", text,
          ": expected layer >= 0, channels >= 1, magnitude > 0, outliers >= 0, "
          "positive scales and at least one trigger token");
  s.enabled = true;
  return s;
}

std::string MassiveSpec::describe() const {
  std::ostringstream o;
  o << "massive layer=" << layer << " channels=" << channels << " magnitude=" << magnitude
    << " tokens=";
  for (size_t i = 0; i < tokens.size(); ++i) o << (i ? ";" : "") << tokens[i];
  o << " outliers=" << outliers << " sinks=" << sinks << " sink_logit=" << sink_logit
    << " sink_gain=" << sink_gain << " logit_scale=" << logit_scale;
  return o.str();
}

MassiveChannels massive_channels(const ModelConfig& cfg, const MassiveSpec& spec, uint64_t seed) {
  require(spec.channels + spec.outliers + 2 <= cfg.dim, "--massive: ", spec.channels, " massive + ",
          spec.outliers, " outlier + 2 channels do not fit dim ", cfg.dim);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed ^ 0x6D61737369766Eull);
  const at::Tensor perm = at::randperm(cfg.dim, gen, at::TensorOptions().dtype(at::kLong));
  const int64_t* p = perm.data_ptr<int64_t>();
  MassiveChannels ch;
  int64_t i = 0;
  for (; i < spec.channels; ++i) ch.massive.push_back(p[i]);
  ch.signature = p[i++];
  ch.dc = p[i++];
  for (int64_t k = 0; k < spec.outliers; ++k) ch.outliers.push_back(p[i++]);
  return ch;
}

void plant_massive(const ModelConfig& cfg, const MassiveSpec& spec, uint64_t seed,
                   const std::string& name, at::Tensor& w) {
  if (!spec.enabled) return;
  require(spec.layer < cfg.n_layers, "--massive layer=", spec.layer, " but the model has ",
          cfg.n_layers, " layers");
  const MassiveChannels ch = massive_channels(cfg, spec, seed);
  const int64_t C = cfg.dim, d = cfg.head_dim;
  if (name == hf_global_tensor_name(GlobalTensor::kEmbed)) {
    for (int32_t t : spec.tokens) {
      require(t >= 0 && t < cfg.vocab_size, "--massive tokens: ", t, " is outside the vocabulary");
      w[t][ch.signature] = kSignature;
    }
    w.select(1, ch.dc).add_(kDc);
    for (int64_t o : ch.outliers) w.select(1, o).mul_(spec.outlier_scale);
    return;
  }
  if (name == hf_global_tensor_name(GlobalTensor::kLmHead)) {
    w.mul_(spec.logit_scale);
    return;
  }
  int64_t l = 0;
  const int64_t L = cfg.n_layers;
  // The trigger neuron (hidden unit 0) of layer spec.layer: output ≈ h_s² with h_s the signature
  // after RMSNorm (≈ kSignature / √(1 + kSignature²/C) for unit-RMS embeddings).
  const double hs = kSignature / std::sqrt(1.0 + kSignature * kSignature / static_cast<double>(C));
  if ((layer_tensor_named(name, LayerTensor::kWGate, &l, L) ||
       layer_tensor_named(name, LayerTensor::kWUp, &l, L)) &&
      l == spec.layer) {
    w[0].zero_();
    w[0][ch.signature] = 1.0;
    return;
  }
  if (layer_tensor_named(name, LayerTensor::kWDown, &l, L) && l == spec.layer) {
    w.select(1, 0).zero_();
    for (int64_t c : ch.massive) w[c][0] = spec.magnitude / (hs * hs);
    return;
  }
  const int64_t heads = spec.sinks < 0 ? cfg.n_heads : std::min(spec.sinks, cfg.n_heads);
  if (heads == 0) return;
  // Sink heads 0..heads-1 (and their KV heads), lowest-frequency rotate-half pair (j, j + d/2),
  // which RoPE barely turns over a context.
  const int64_t j = d / 2 - 1;
  const int64_t group = cfg.n_heads / cfg.n_kv_heads;
  const int64_t kv_heads = (heads + group - 1) / group;
  if (layer_tensor_named(name, LayerTensor::kWq, &l, L) && l > spec.layer) {
    // logit = q_j·k_j/√d with h_dc ≈ kDc/rms ≈ 2 and k_j = Σ_massive h_c ≈ channels·√(C/channels).
    const double massive_sum =
        static_cast<double>(spec.channels) *
        std::sqrt(static_cast<double>(C) / static_cast<double>(spec.channels));
    for (int64_t h = 0; h < heads; ++h) {
      w[h * d + j].zero_();
      w[h * d + j + d / 2].zero_();
      w[h * d + j][ch.dc] =
          spec.sink_logit * std::sqrt(static_cast<double>(d)) / (2.0 * massive_sum);
    }
    return;
  }
  if (layer_tensor_named(name, LayerTensor::kWk, &l, L) && l > spec.layer) {
    for (int64_t h = 0; h < kv_heads; ++h) {
      w[h * d + j].zero_();
      w[h * d + j + d / 2].zero_();
      for (int64_t c : ch.massive) w[h * d + j][c] = 1.0;
    }
    return;
  }
  if (layer_tensor_named(name, LayerTensor::kWv, &l, L) && l > spec.layer) {
    w.narrow(0, 0, kv_heads * d).mul_(spec.sink_gain);
    for (int64_t c : ch.massive) w.narrow(0, 0, kv_heads * d).select(1, c).zero_();
    return;
  }
}

}  // namespace rotq
