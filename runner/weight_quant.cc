#include "runner/weight_quant.h"

#include <ATen/ATen.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <map>
#include <memory>

#include "models/transformer.h"
#include "runner/progress.h"
#include "solvers/error.h"

namespace rotq {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// The true-sequential order: each step's linears read the tensor at `site`.
struct SequentialStep {
  Site site;
  std::vector<LayerTensor> linears;
};

const std::vector<SequentialStep>& sequential_steps() {
  static const std::vector<SequentialStep> steps = {
      {Site::kAttnIn, {LayerTensor::kWq, LayerTensor::kWk, LayerTensor::kWv}},
      {Site::kOProjIn, {LayerTensor::kWo}},
      {Site::kMlpIn, {LayerTensor::kWGate, LayerTensor::kWUp}},
      {Site::kDownIn, {LayerTensor::kWDown}},
  };
  return steps;
}

// Accumulates Σxxᵀ of the tensor at one site of one layer, as the linear there sees it.
class HessianCapture final : public ForwardHooks {
 public:
  HessianCapture(Site site, int64_t layer, int64_t cols, at::ScalarType dtype)
      : site_(site), layer_(layer), acc_(cols, dtype) {}
  void at_site(Site site, int64_t layer, at::Tensor& x) override {
    if (site == site_ && layer == layer_) acc_.add(x);
  }
  HessianAccumulator& accumulator() { return acc_; }

 private:
  Site site_;
  int64_t layer_;
  HessianAccumulator acc_;
};

int64_t site_width(const ModelConfig& c, Site s) {
  switch (s) {
    case Site::kOProjIn:
      return c.q_dim();
    case Site::kDownIn:
      return c.hidden_dim;
    default:
      return c.dim;
  }
}

std::string linear_name(int64_t layer, LayerTensor t) {
  return "layer " + std::to_string(layer) + " " + layer_tensor_key(t);
}

// Runs `layer` over this rank's calibration states (in batches) with `hooks`; returns the outputs
// when `keep_outputs`.
at::Tensor run_layer(const Transformer& tf, const at::Tensor& states, int64_t layer,
                     int64_t batch, ForwardHooks* hooks, bool keep_outputs) {
  std::vector<at::Tensor> outs;
  for (int64_t b0 = 0; b0 < states.size(0); b0 += batch) {
    const int64_t n = std::min(batch, states.size(0) - b0);
    at::Tensor y = tf.layer_forward(states.narrow(0, b0, n), layer, hooks);
    if (keep_outputs) outs.push_back(y);
  }
  if (!keep_outputs) return at::Tensor();
  return outs.empty() ? states.narrow(0, 0, 0) : at::cat(outs, 0);
}

}  // namespace

WeightMethod parse_weight_method(const std::string& name) {
  if (name == "rtn") return WeightMethod::kRtn;
  if (name == "gptq") return WeightMethod::kGptq;
  fail("weight quantizer '", name, "' is not one of rtn, gptq");
}

const char* weight_method_name(WeightMethod m) { return m == WeightMethod::kRtn ? "rtn" : "gptq"; }

const std::vector<LayerTensor>& quantized_linears() {
  static const std::vector<LayerTensor> linears = {
      LayerTensor::kWq,    LayerTensor::kWk, LayerTensor::kWv,   LayerTensor::kWo,
      LayerTensor::kWGate, LayerTensor::kWUp, LayerTensor::kWDown};
  return linears;
}

WeightQuantReport quantize_weights_rtn(Model& model, const WeightQuantOptions& opts) {
  WeightQuantReport rep;
  if (!opts.spec.enabled()) return rep;
  const auto t0 = Clock::now();
  for (size_t l = 0; l < model.weights.layers.size(); ++l) {
    const auto tl = Clock::now();
    for (LayerTensor t : quantized_linears()) {
      at::Tensor& w = model.weights.layers[l][t];
      w = rtn_quantize_weight(w, opts.spec);
    }
    LayerQuantStats s;
    s.layer = static_cast<int64_t>(l) + model.layer_offset;
    s.seconds = s.quant_seconds = seconds_since(tl);
    rep.layers.push_back(s);
  }
  rep.seconds = rep.quant_seconds = seconds_since(t0);
  return rep;
}

WeightQuantReport quantize_weights_gptq(Model& model, const at::Tensor& calib,
                                        const WeightQuantOptions& opts, Comm& comm) {
  WeightQuantReport rep;
  if (!opts.spec.enabled()) return rep;
  require(calib.dim() == 2 && calib.size(0) > 0, "GPTQ: calibration windows must be [n, seqlen]");
  const ModelConfig& c = model.config;
  const auto t0 = Clock::now();
  Transformer tf(model);
  // Data parallel: this rank's windows are rows rank, rank + size, ...
  at::Tensor mine = calib.narrow(0, 0, 0);
  {
    std::vector<int64_t> idx;
    for (int64_t i = comm.rank(); i < calib.size(0); i += comm.size()) idx.push_back(i);
    if (!idx.empty()) mine = calib.index_select(0, at::tensor(idx, at::kLong));
  }
  at::Tensor states = tf.embed(mine);
  const int64_t n_layers = static_cast<int64_t>(model.weights.layers.size());
  Progress progress("gptq layers", n_layers, "layers");
  for (int64_t l = 0; l < n_layers; ++l) {
    const auto tl = Clock::now();
    LayerQuantStats s;
    s.layer = l + model.layer_offset;
    for (const SequentialStep& step : sequential_steps()) {
      HessianCapture capture(step.site, s.layer, site_width(c, step.site), opts.hessian_dtype);
      // Calibration sees floating-point activations (QuaRot configures activation quantizers
      // after GPTQ), but the online Hadamards are part of the forward.
      run_layer(tf, states, l, opts.calib_batch, &capture, /*keep_outputs=*/false);
      HessianAccumulator& acc = capture.accumulator();
      acc.all_reduce(comm);
      const at::Tensor H = acc.hessian();
      for (LayerTensor t : step.linears) {
        at::Tensor& w = model.weights.layers[l][t];
        GptqResult r = gptq_quantize(w, H, opts.spec, opts.gptq, linear_name(s.layer, t));
        w = r.weight;
        s.quant_seconds += r.seconds;
        s.quant_flops += r.flops;
      }
    }
    states = run_layer(tf, states, l, opts.calib_batch, nullptr, /*keep_outputs=*/true);
    s.seconds = seconds_since(tl);
    rep.quant_seconds += s.quant_seconds;
    rep.quant_flops += s.quant_flops;
    rep.layers.push_back(s);
    progress.update(l + 1, static_cast<double>(l + 1));
  }
  rep.seconds = seconds_since(t0);
  return rep;
}

}  // namespace rotq
