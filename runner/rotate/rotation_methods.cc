#include "runner/rotate/rotation_methods.h"

#include <spdlog/spdlog.h>

#include "solvers/error.h"

namespace rotq {

// The methods, each defined in its own file of runner/rotate/.
RotationMethod fixed_rotation_method(FixedRotation kind);     // method_fixed.cc
RotationMethod dfrot_rotation_method();                       // dfrot_model.cc
RotationMethod optrot_rotation_method(bool with_covariance);  // method_optrot.cc
RotationMethod file_rotation_method();                        // rotation_io.cc
RotationMethod walsh_rotation_method();                       // method_walsh.cc
RotationMethod spinquant_rotation_method();                   // method_spinquant.cc
RotationMethod ostquant_rotation_method();                    // method_ostquant.cc

// The registry: a new method is one line here.
const std::vector<RotationMethod>& rotation_methods() {
  static const std::vector<RotationMethod> all = {
      fixed_rotation_method(FixedRotation::kNone),
      fixed_rotation_method(FixedRotation::kRandom),
      fixed_rotation_method(FixedRotation::kHadamard),
      dfrot_rotation_method(),
      optrot_rotation_method(/*with_covariance=*/false),
      optrot_rotation_method(/*with_covariance=*/true),
      walsh_rotation_method(),
      spinquant_rotation_method(),
      ostquant_rotation_method(),
      file_rotation_method(),
  };
  return all;
}

const RotationMethod* find_rotation_method(const std::string& text) {
  const size_t colon = text.find(':');
  const std::string name = text.substr(0, colon);
  for (const RotationMethod& m : rotation_methods()) {
    if (m.name != name) continue;
    const bool has_arg = colon != std::string::npos && colon + 1 < text.size();
    if (m.takes_argument ? has_arg : colon == std::string::npos) return &m;
  }
  return nullptr;
}

std::string rotation_method_names() {
  std::string s;
  const auto& all = rotation_methods();
  for (size_t i = 0; i < all.size(); ++i) {
    if (i > 0) s += i + 1 == all.size() ? " or " : ", ";
    s += all[i].name + (all[i].takes_argument ? ":PATH" : "");
  }
  return s;
}

RotationSpec rotation_spec(const std::string& text) {
  const RotationMethod* m = find_rotation_method(text);
  require(m, "rotation '", text, "': expected ", rotation_method_names());
  RotationSpec s;
  s.method = m->name;
  if (m->takes_argument) s.path = text.substr(text.find(':') + 1);
  s.r2 = s.online = m->rotates;
  return s;
}

std::string RotationSpec::describe() const {
  const RotationMethod* m = find_rotation_method(text());
  std::string d = text();
  if (m && m->rotates && !m->takes_argument) d += " seed " + std::to_string(seed);
  if (m && m->describe) d += m->describe(*this);
  if (!r2 && m && m->rotates) d += " no-R2";
  if (online) d += " +R3R4";
  return d;
}

Rotations build_rotations(const RotationContext& ctx, RotationLearning& learned) {
  const RotationSpec& spec = ctx.spec;
  const RotationMethod* m = find_rotation_method(spec.text());
  require(m, "rotation '", spec.method, "': expected ", rotation_method_names());
  if (!m->learn) return resolve_rotations(spec, ctx.model.config);
  Rotations rot = m->learn(ctx, learned);
  if (!spec.r2) rot.r2.assign(ctx.model.config.n_layers, at::Tensor());
  return rot;
}

Rotations resolve_rotations(const RotationSpec& spec, const ModelConfig& config) {
  const RotationMethod* m = find_rotation_method(spec.text());
  require(m && m->fixed, "rotation '", spec.method,
          "': learned from a model (build_rotations), not from its sizes");
  Rotations rot = m->fixed(spec, config);
  if (!spec.r2) rot.r2.assign(config.n_layers, at::Tensor());
  return rot;
}

}  // namespace rotq
