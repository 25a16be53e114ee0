#include "runner/rotate/rotation_io.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "models/safetensors.h"
#include "runner/fuse/scalings.h"
#include "runner/rotate/rotation_methods.h"
#include "solvers/error.h"
#include "solvers/parse.h"

namespace rotq {
namespace {

constexpr double kOrthogonalityTolerance = 1e-8;

at::Tensor checked_rotation(const SafetensorsFile& f, const std::string& name, int64_t n) {
  at::Tensor r = f.tensor(name).to(at::kDouble).clone();
  require(r.dim() == 2 && r.size(0) == n && r.size(1) == n, f.path(), ": ", name, " is ", r.sizes(),
          ", expected ", n, "x", n);
  require(at::isfinite(r).all().item<bool>(), f.path(), ": ", name, " has NaN/Inf entries");
  const double err = orthogonality_error(r);
  require(err < kOrthogonalityTolerance, f.path(), ": ", name,
          " is not orthogonal (max|RᵀR-I| = ", err, ", expected < ", kOrthogonalityTolerance, ")");
  return r;
}

// "S.<layer>.<kind>": one layer's channel scaling (shapes are checked once all are read).
void read_scaling(const SafetensorsFile& f, const std::string& name, const ModelConfig& config,
                  Rotations& rot) {
  const size_t dot = name.find('.', 2);
  const std::string idx = name.substr(2, dot == std::string::npos ? std::string::npos : dot - 2);
  const std::optional<int64_t> layer = parse_integer(idx);
  require(dot != std::string::npos && layer && *layer >= 0 && *layer < config.n_layers &&
              idx.find_first_not_of("0123456789") == std::string::npos,
          f.path(), ": tensor '", name, "' names no layer of a ", config.n_layers,
          "-layer model (expected S.<layer>.<kind>)");
  const std::string kind = name.substr(dot + 1);
  const auto& kinds = scaling_kinds();
  const auto it =
      std::find_if(kinds.begin(), kinds.end(), [&](const auto& k) { return k.first == kind; });
  require(it != kinds.end(), f.path(), ": tensor '", name, "': unknown scaling '", kind,
          "' (expected attn, ffn, qk, ov or up_down)");
  rot.scales.resize(config.n_layers);
  rot.scales[*layer].*(it->second) = f.tensor(name).to(at::kDouble).clone();
}

}  // namespace

void save_rotations(const Rotations& rot, const std::string& path,
                    const std::map<std::string, std::string>& metadata) {
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  if (rot.r1.defined()) tensors.emplace_back("R1", rot.r1.to(at::kDouble).contiguous());
  for (size_t l = 0; l < rot.r2.size(); ++l) {
    if (rot.r2[l].defined()) {
      tensors.emplace_back("R2." + std::to_string(l), rot.r2[l].to(at::kDouble).contiguous());
    }
  }
  for (size_t l = 0; l < rot.scales.size(); ++l) {
    for (const auto& [kind, field] : scaling_kinds()) {
      const at::Tensor& t = rot.scales[l].*field;
      if (t.defined()) {
        tensors.emplace_back("S." + std::to_string(l) + "." + kind, t.to(at::kDouble).contiguous());
      }
    }
  }
  std::map<std::string, std::string> meta = metadata;
  meta["r3"] = rot.r3 ? "true" : "false";
  meta["r4"] = rot.r4 ? "true" : "false";
  write_safetensors(path, tensors, meta);
}

Rotations load_rotations(const std::string& path, const ModelConfig& config) {
  auto f = SafetensorsFile::open(path);
  Rotations rot;
  rot.r2.resize(config.n_layers);
  for (int64_t l = 0; l < config.n_layers; ++l) {
    const std::string name = "R2." + std::to_string(l);
    if (f->has(name)) rot.r2[l] = checked_rotation(*f, name, config.head_dim);
  }
  for (const std::string& name : f->names()) {
    if (name.rfind("S.", 0) == 0) {
      read_scaling(*f, name, config, rot);
      continue;
    }
    const bool known = name == "R1" || name.rfind("R2.", 0) == 0;
    require(known, path, ": unexpected tensor '", name,
            "' (expected R1, R2.<layer> and S.<layer>.<kind>)");
    if (name.rfind("R2.", 0) == 0) {
      const std::string idx = name.substr(3);
      const std::optional<int64_t> layer = parse_integer(idx);
      require(layer && *layer >= 0 && *layer < config.n_layers &&
                  idx.find_first_not_of("0123456789") == std::string::npos,
              path, ": tensor '", name, "' names no layer of a ", config.n_layers, "-layer model");
    }
  }
  // Without R1 the file would apply no residual rotation at all, silently: refuse it.
  require(f->has("R1"), path, ": no tensor R1 (expected R1 [", config.dim, ", ", config.dim,
          "] and optional R2.<layer> [", config.head_dim, ", ", config.head_dim, "])");
  rot.r1 = checked_rotation(*f, "R1", config.dim);
  const auto flag = [&](const char* key) {
    auto it = f->metadata().find(key);
    if (it == f->metadata().end()) return false;
    require(it->second == "true" || it->second == "false", path, ": metadata ", key, " = '",
            it->second, "', expected true or false");
    return it->second == "true";
  };
  rot.r3 = flag("r3");
  rot.r4 = flag("r4");
  for (size_t l = 0; l < rot.scales.size(); ++l) {
    try {
      validate_scalings(rot.scales[l], config, static_cast<int64_t>(l));
    } catch (const Error& e) {
      throw Error(path + ": " + e.what());
    }
  }
  return rot;
}

RotationMethod file_rotation_method() {
  RotationMethod m;
  m.name = "file";
  m.summary = "R1/R2 (and R3/R4 flags) saved by an earlier run (quantize-eval --save)";
  m.takes_argument = true;
  m.fixed = [](const RotationSpec& spec, const ModelConfig& config) {
    return load_rotations(spec.path, config);
  };
  return m;
}

}  // namespace rotq
