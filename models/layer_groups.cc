#include "models/layer_groups.h"

#include "solvers/error.h"

namespace rotq {

int64_t LayerGroup::input_width(const ModelConfig& c) const {
  switch (site) {
    case Site::kOProjIn:
      return c.q_dim();
    case Site::kDownIn:
      return c.hidden_dim;
    default:
      return c.dim;
  }
}

const std::vector<LayerGroup>& layer_groups() {
  using T = LayerTensor;
  static const std::vector<LayerGroup> groups = [] {
    std::vector<LayerGroup> g(4);
    g[0] = {Site::kAttnIn, T::kAttnNorm, {T::kWq, T::kWk, T::kWv}, true, false};
    g[1] = {Site::kOProjIn, std::nullopt, {T::kWo}, false, true};
    g[2] = {Site::kMlpIn, T::kFfnNorm, {T::kWGate, T::kWUp}, true, false};
    g[3] = {Site::kDownIn, std::nullopt, {T::kWDown}, false, false};
    return g;
  }();
  return groups;
}

const LayerGroup* find_layer_group(Site site) {
  for (const LayerGroup& g : layer_groups()) {
    if (g.site == site) return &g;
  }
  return nullptr;
}

LayerTensor bias_of(LayerTensor linear) {
  switch (linear) {
    case LayerTensor::kWq:
      return LayerTensor::kBq;
    case LayerTensor::kWk:
      return LayerTensor::kBk;
    case LayerTensor::kWv:
      return LayerTensor::kBv;
    case LayerTensor::kWo:
      return LayerTensor::kBo;
    case LayerTensor::kWGate:
      return LayerTensor::kBGate;
    case LayerTensor::kWUp:
      return LayerTensor::kBUp;
    case LayerTensor::kWDown:
      return LayerTensor::kBDown;
    default:
      fail("bias_of: ", layer_tensor_key(linear), " is not a linear's weight");
  }
}

}  // namespace rotq
