#include "runner/quantize/weight_quant.h"

#include <ATen/ATen.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <map>
#include <memory>

#include "models/layer_groups.h"
#include "models/transformer.h"
#include "runner/core/progress.h"
#include "runner/dist/layer_pipeline.h"
#include "solvers/error.h"

namespace rotq {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int kStatesTag = 12;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Accumulates Σxxᵀ of the tensor at one site of one layer, as the linear there sees it.
class HessianCapture final : public ForwardHooks {
 public:
  HessianCapture(Site site, int64_t layer, int64_t cols, at::ScalarType dtype, at::Device device)
      : site_(site), layer_(layer), acc_(cols, dtype, device) {}
  void at_site(Site site, int64_t layer, at::Tensor& x) override {
    if (site == site_ && layer == layer_) acc_.add(x);
  }
  // Nothing downstream of the captured input is needed.
  bool ends_after(Site site, int64_t layer) const override {
    return site == site_ && layer == layer_;
  }
  HessianAccumulator& accumulator() { return acc_; }

 private:
  Site site_;
  int64_t layer_;
  HessianAccumulator acc_;
};

std::string linear_name(int64_t layer, LayerTensor t) {
  return "layer " + std::to_string(layer) + " " + layer_tensor_key(t);
}

// Runs one block of the layer (a Transformer member: attention_block or mlp_block) over this
// rank's calibration states in batches, with `hooks`; returns the outputs when `keep_outputs`.
template <typename Block>
at::Tensor run_block(const at::Tensor& states, int64_t batch, bool keep_outputs, Block&& block) {
  std::vector<at::Tensor> outs;
  for (int64_t b0 = 0; b0 < states.size(0); b0 += batch) {
    const int64_t n = std::min(batch, states.size(0) - b0);
    at::Tensor y = block(states.narrow(0, b0, n));
    if (keep_outputs) outs.push_back(y);
  }
  if (!keep_outputs) return at::Tensor();
  return outs.empty() ? states.narrow(0, 0, 0) : at::cat(outs, 0);
}

// Whether the forward reaches `site` before the residual add of the attention block.
bool in_attention_block(Site site) { return site != Site::kMlpIn && site != Site::kDownIn; }

}  // namespace

WeightMethod parse_weight_method(const std::string& name) {
  if (name == "rtn") return WeightMethod::kRtn;
  if (name == "gptq") return WeightMethod::kGptq;
  fail("weight quantizer '", name, "' is not one of rtn, gptq");
}

const char* weight_method_name(WeightMethod m) { return m == WeightMethod::kRtn ? "rtn" : "gptq"; }

const std::vector<LayerTensor>& quantized_linears() {
  static const std::vector<LayerTensor> linears = {
      LayerTensor::kWq,    LayerTensor::kWk,  LayerTensor::kWv,   LayerTensor::kWo,
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

namespace {

// This rank's calibration windows (rows rank, rank + size, ...) as layer-0 input states. A shard
// without the embedding receives them from rank 0, which embeds every rank's share in turn.
at::Tensor initial_states(const Model& model, const at::Tensor& calib, bool sharded, Comm& comm) {
  const auto share = [&](int r) {
    std::vector<int64_t> idx;
    for (int64_t i = r; i < calib.size(0); i += comm.size()) idx.push_back(i);
    return idx.empty() ? calib.narrow(0, 0, 0)
                       : calib.index_select(0, at::tensor(idx, at::kLong).to(calib.device()));
  };
  Transformer tf(model);
  if (!sharded) return tf.embed(share(comm.rank()));
  if (comm.rank() == 0) {
    for (int r = 1; r < comm.size(); ++r) {
      const at::Tensor x = share(r);
      if (x.size(0) > 0) comm.send(tf.embed(x).contiguous(), r, kStatesTag);
    }
    return tf.embed(share(0));
  }
  at::Tensor x =
      at::empty({share(comm.rank()).size(0), calib.size(1), model.config.dim},
                at::TensorOptions().dtype(shard_dtype(model)).device(model_device(model)));
  if (x.size(0) > 0) comm.recv(x, 0, kStatesTag);
  return x;
}

// Row-parallel GPTQ: rank r quantizes rows [r·⌈m/p⌉, (r+1)·⌈m/p⌉) of w with the common H (each
// row's result depends only on that row and H), and the slices are all-gathered in rank order.
at::Tensor gptq_row_parallel(const at::Tensor& w, const at::Tensor& H, const WeightQuantOptions& o,
                             const std::string& what, Comm& comm, LayerQuantStats& s) {
  if (comm.size() == 1) {
    GptqResult r = gptq_quantize(w, H, o.spec, o.gptq, what);
    s.quant_seconds += r.seconds;
    s.quant_flops += r.flops;
    return r.weight;
  }
  const int64_t rows = w.size(0), per = (rows + comm.size() - 1) / comm.size();
  const int64_t b = std::min(rows, comm.rank() * per), e = std::min(rows, b + per);
  at::Tensor mine = at::zeros({per, w.size(1)}, w.options());
  if (e > b) {
    GptqResult r = gptq_quantize(w.narrow(0, b, e - b), H, o.spec, o.gptq, what);
    mine.narrow(0, 0, e - b).copy_(r.weight);
    s.quant_seconds += r.seconds;
    s.quant_flops += r.flops;
  }
  return comm.all_gather(mine).narrow(0, 0, rows).contiguous();
}

// The linears that read the same input (q/k/v; gate/up) share its Hessian: one GPTQ solve of
// their rows stacked factors H once instead of once per linear. Every row's result depends only
// on that row and H, so this is the per-linear computation.
void quantize_sharing_hessian(LayerWeights& lw, const std::vector<LayerTensor>& linears,
                              const at::Tensor& H, int64_t l, const WeightQuantOptions& opts,
                              Comm& comm, LayerQuantStats& s) {
  if (linears.size() == 1) {
    lw[linears[0]] =
        gptq_row_parallel(lw[linears[0]], H, opts, linear_name(l, linears[0]), comm, s);
    return;
  }
  std::vector<at::Tensor> parts;
  std::string what;
  for (LayerTensor t : linears) {
    parts.push_back(lw[t]);
    what += (what.empty() ? "" : "+") + linear_name(l, t);
  }
  const at::Tensor joint = gptq_row_parallel(at::cat(parts, 0), H, opts, what, comm, s);
  int64_t row = 0;
  for (LayerTensor t : linears) {
    const int64_t rows = lw[t].size(0);
    lw[t] = joint.narrow(0, row, rows).clone();
    row += rows;
  }
}

}  // namespace

WeightQuantReport quantize_weights_gptq(Model& model, const at::Tensor& calib,
                                        const WeightQuantOptions& opts, Comm& comm,
                                        const Placement& placement) {
  WeightQuantReport rep;
  if (!opts.spec.enabled()) return rep;
  require(calib.dim() == 2 && calib.size(0) > 0, "GPTQ: calibration windows must be [n, seqlen]");
  const ModelConfig& c = model.config;
  const bool sharded = placement.sharded();
  require(sharded || holds_all_layers(model),
          "GPTQ: a model shard needs its placement (the layers of the other ranks are streamed)");
  const auto t0 = Clock::now();
  // Data parallel: each rank runs its share of the windows through every layer.
  at::Tensor states = initial_states(model, calib, sharded, comm);
  const int64_t n_layers = c.n_layers;
  const at::ScalarType dtype = shard_dtype(model);
  Progress progress("gptq layers", n_layers, "layers");
  for (int64_t l = 0; l < n_layers; ++l) {
    const auto tl = Clock::now();
    LayerQuantStats s;
    s.layer = l;
    // The layer as a one-layer model: the owner streams it to every rank when sharded.
    Model one;
    one.config = c;
    one.source = model.source;
    one.layer_offset = l;
    one.weights.layers.push_back(sharded ? broadcast_layer(model, placement, l, dtype, comm)
                                         : model.weights.layers[l]);
    Transformer tf(one);
    LayerWeights& lw = one.weights.layers[0];
    const auto attention = [&](ForwardHooks* hooks) {
      return
          [&tf, &lw, l, hooks](const at::Tensor& x) { return tf.attention_block(x, lw, l, hooks); };
    };
    const auto mlp = [&](ForwardHooks* hooks) {
      return [&tf, &lw, l, hooks](const at::Tensor& x) { return tf.mlp_block(x, lw, l, hooks); };
    };
    // True-sequential: each group's linears are quantized before the next group's input is seen.
    // A capture's forward ends at its site; the residual after the attention block is computed
    // once, when o_proj is final, and both MLP captures and the output start from it.
    const int64_t batch = opts.calib_batch;
    at::Tensor mid;
    const auto residual_after_attention = [&]() -> const at::Tensor& {
      if (!mid.defined()) mid = run_block(states, batch, /*keep_outputs=*/true, attention(nullptr));
      return mid;
    };
    for (const LayerGroup& step : layer_groups()) {
      HessianCapture capture(step.site, l, step.input_width(c), opts.hessian_dtype,
                             states.device());
      // Calibration sees floating-point activations (QuaRot configures activation quantizers
      // after GPTQ), but the online Hadamards are part of the forward.
      if (in_attention_block(step.site)) {
        run_block(states, batch, /*keep_outputs=*/false, attention(&capture));
      } else {
        // The capture ends before mlp_block's in-place residual add: `mid` stays as it is.
        run_block(residual_after_attention(), batch, /*keep_outputs=*/false, mlp(&capture));
      }
      HessianAccumulator& acc = capture.accumulator();
      acc.all_reduce(comm);
      const at::Tensor H = acc.hessian();
      quantize_sharing_hessian(lw, step.linears, H, l, opts, comm, s);
    }
    states = run_block(residual_after_attention(), batch, /*keep_outputs=*/true, mlp(nullptr));
    const int64_t local = l - model.layer_offset;
    if (local >= 0 && local < static_cast<int64_t>(model.weights.layers.size())) {
      for (LayerTensor t : quantized_linears()) model.weights.layers[local][t] = lw[t];
    }
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
