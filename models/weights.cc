#include "models/weights.h"

#include <ATen/ATen.h>

#include <sstream>

#include "solvers/error.h"

namespace rotq {
namespace {

std::string shape_str(at::IntArrayRef s) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << "]";
  return os.str();
}

}  // namespace

std::vector<int64_t> expected_shape(const ModelConfig& c, LayerTensor t) {
  if (!has_tensor(c, t)) return {};
  switch (t) {
    case LayerTensor::kAttnNorm:
    case LayerTensor::kFfnNorm:
      return {c.dim};
    case LayerTensor::kWq:
      return {c.q_dim(), c.dim};
    case LayerTensor::kWk:
    case LayerTensor::kWv:
      return {c.kv_dim(), c.dim};
    case LayerTensor::kWo:
      return {c.dim, c.q_dim()};
    case LayerTensor::kBq:
      return {c.q_dim()};
    case LayerTensor::kBk:
    case LayerTensor::kBv:
      return {c.kv_dim()};
    case LayerTensor::kBo:
    case LayerTensor::kBDown:
      return {c.dim};
    case LayerTensor::kBGate:
    case LayerTensor::kBUp:
      return {c.hidden_dim};
    case LayerTensor::kQNorm:
    case LayerTensor::kKNorm:
      return {c.head_dim};
    case LayerTensor::kWGate:
    case LayerTensor::kWUp:
      return {c.hidden_dim, c.dim};
    case LayerTensor::kWDown:
      return {c.dim, c.hidden_dim};
    case LayerTensor::kCount:
      break;
  }
  return {};
}

std::vector<int64_t> expected_shape(const ModelConfig& c, GlobalTensor t) {
  switch (t) {
    case GlobalTensor::kEmbed:
    case GlobalTensor::kLmHead:
      return {c.vocab_size, c.dim};
    case GlobalTensor::kFinalNorm:
      return {c.dim};
  }
  return {};
}

void check_shape(const at::Tensor& t, const std::vector<int64_t>& expected,
                 const std::string& what) {
  require(t.defined(), what, ": missing tensor");
  require(t.sizes().vec() == expected, what, ": shape ", shape_str(t.sizes()), ", expected ",
          shape_str(expected));
}

namespace {

// Applies `f` to every defined tensor; a tied head stays the embedding's alias.
template <typename F>
void convert_weights(ModelWeights& w, F f) {
  const bool tied = w.lm_head.defined() && w.embed.defined() && w.lm_head.is_same(w.embed);
  auto apply = [&](at::Tensor& t) {
    if (t.defined()) t = f(t);
  };
  apply(w.embed);
  apply(w.final_norm);
  if (tied) {
    w.lm_head = w.embed;
  } else {
    apply(w.lm_head);
  }
  for (LayerWeights& l : w.layers) {
    for (at::Tensor& t : l.tensors) apply(t);
  }
}

}  // namespace

void cast_weights(ModelWeights& w, at::ScalarType dtype) {
  convert_weights(w, [&](const at::Tensor& t) { return t.to(dtype); });
}

void move_weights(ModelWeights& w, at::Device device) {
  convert_weights(w, [&](const at::Tensor& t) { return t.to(device); });
}

at::Device model_device(const Model& m) {
  const ModelWeights& w = m.weights;
  if (w.embed.defined()) return w.embed.device();
  for (const LayerWeights& l : w.layers) {
    for (const at::Tensor& t : l.tensors) {
      if (t.defined()) return t.device();
    }
  }
  if (w.lm_head.defined()) return w.lm_head.device();
  return at::Device(at::kCPU);
}

at::ScalarType scalar_type_from_name(const std::string& name) {
  if (name == "float32" || name == "fp32" || name == "f32") return at::kFloat;
  if (name == "float64" || name == "fp64" || name == "f64") return at::kDouble;
  if (name == "bfloat16" || name == "bf16") return at::kBFloat16;
  if (name == "float16" || name == "fp16" || name == "f16") return at::kHalf;
  fail("dtype ", name, ": expected float32, float64, bfloat16 or float16");
}

std::string scalar_type_name(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return "float32";
    case at::kDouble:
      return "float64";
    case at::kBFloat16:
      return "bfloat16";
    case at::kHalf:
      return "float16";
    default:
      return c10::toString(t);
  }
}

Model clone_model(const Model& m) {
  Model out = m;
  const auto copy = [](const at::Tensor& t) { return t.defined() ? t.clone() : t; };
  const bool tied = m.weights.lm_head.defined() && m.weights.embed.defined() &&
                    m.weights.lm_head.is_same(m.weights.embed);
  out.weights.embed = copy(m.weights.embed);
  out.weights.final_norm = copy(m.weights.final_norm);
  out.weights.lm_head = tied ? out.weights.embed : copy(m.weights.lm_head);
  for (size_t l = 0; l < m.weights.layers.size(); ++l) {
    for (size_t i = 0; i < m.weights.layers[l].tensors.size(); ++i) {
      out.weights.layers[l].tensors[i] = copy(m.weights.layers[l].tensors[i]);
    }
  }
  return out;
}

}  // namespace rotq
