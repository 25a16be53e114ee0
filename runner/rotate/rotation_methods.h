// The rotation methods, one registry: each entry says its name, whether it reads calibration text,
// and how it builds R1/R2 (and R3/R4 flags) for a model whose norms are fused. Validation, help
// texts, `rotq run --schema` and the tables read it. A new method is one file defining its
// RotationMethod and one line in rotation_methods.cc's list.
//
//   none      identity (the unrotated baseline: norms kept, no online Hadamards)
//   random    Haar-random orthogonal (solvers/rotation.h)
//   hadamard  QuaRot's randomized Hadamard
//   file:PATH matrices saved by an earlier run (runner/rotate/rotation_io.h)
//   dfrot     R1 refined from calibration activations (solvers/dfrot.h), from `hadamard`
//   optrot    learned from the weights (runner/rotate/optrot_model.h), from `hadamard`
//   optrot+   OptRot with the calibration inputs' covariance
//   spinquant R1/R2 learned end to end through the quantized model
//   (runner/rotate/method_spinquant.cc)
//   ostquant  R1/R2 and channel scalings learned end to end against the floating-point model
//   (runner/rotate/method_ostquant.cc)
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "models/config.h"
#include "models/quant_hooks.h"
#include "models/tokenizers/tokenizer.h"
#include "models/weights.h"
#include "runner/data/calibration.h"
#include "runner/dist/placement.h"
#include "solvers/comm.h"
#include "solvers/dfrot.h"
#include "solvers/rotation.h"

namespace rotq {

// Learning-rate schedules of the learned methods: constant, or decaying to 0 over the steps
// (no warmup). runner/rotate/learn_loop.h computes them.
enum class LrSchedule { kConstant, kCosine, kLinear };

// Rotations learned end to end (SpinQuant, OSTQuant): the optimisation's settings. `batch` counts
// windows per step over all ranks together, so the same settings give the same steps on any rank
// count. The defaults are SpinQuant's; ostquant_learn_options() gives OSTQuant's.
struct LearnOptions {
  int64_t steps = 100;
  double lr = 1.5;  // SpinQuant: Cayley SGD; OSTQuant: Riemannian Adam on the rotations
  LrSchedule schedule = LrSchedule::kCosine;
  int64_t nsamples = 800;   // calibration windows, used in order, batch by batch
  int64_t seqlen = 0;       // 0: min(2048, context)
  int64_t batch = 8;        // windows per step, all ranks together
  int64_t micro_batch = 1;  // windows per forward/backward on a rank
  double grad_clip = 1.0;   // global gradient-norm clip (0: none)
  // Keep the model in (pinned) host memory while learning and copy each layer to the device when
  // it is used: the device then holds one layer, not the model (runner/cell/run_cell.cc).
  bool offload = false;
  // OSTQuant only.
  double smooth_lr = 0;  // Adam's learning rate for the channel scalings (0: no scalings)
  int64_t kl_top = 0;    // KL-Top's k (0: the next token's cross-entropy)
};
LearnOptions ostquant_learn_options();

// A cell's rotation: the method and every method's options (runner/cell/cell_options.cc fills
// them).
struct RotationSpec {
  std::string method = "none";  // a registry name
  std::string path;             // the argument of NAME:ARG methods (file:PATH)
  uint64_t seed = 0;
  bool r2 = false;      // per-head R2 on v/o (a rotating method's default: true)
  bool online = false;  // R3 (q/k after RoPE) and R4 (down_proj input) online Hadamards
  // optrot / optrot+: steps, learning rate, per-matrix normalisation (none | fro4 | numel),
  // optimizer (cayley | adam), cosine decay, the matrices in the objective.
  int64_t optrot_steps = 1000;
  double optrot_lr = 0.02;
  std::string optrot_norm = "numel";
  std::string optrot_optimizer = "cayley";
  std::string optrot_precision = "float64";  // the gradient's products: float64 | float32 | tf32
  bool optrot_cosine = true;
  std::string optrot_matrices = "q,k,v,o,gate,up,down";
  // dfrot: the solver's options, its start, how many layers give calibration tokens (0: all) and
  // the calibration windows (1 × min(2048, context) by default).
  DfrotOptions dfrot;
  FixedRotation dfrot_init = FixedRotation::kHadamard;
  int64_t dfrot_layers = 0;
  int64_t dfrot_nsamples = 1;
  int64_t dfrot_seqlen = 0;
  // Learned end to end: the optimisation, and the quantizers the training forward simulates
  // (activations/KV with a straight-through estimator; weights when they will be RTN or when
  // nothing else is quantized: runner/cell/cell_options.cc decides).
  LearnOptions spinquant;
  LearnOptions ostquant = ostquant_learn_options();
  const LearnOptions& learning() const {  // the learned method's options (spinquant's otherwise)
    return method == "ostquant" ? ostquant : spinquant;
  }
  ActivationQuant learn_acts = default_activation_quant(16, 16);
  QuantSpec learn_weights;

  std::string text() const { return path.empty() ? method : method + ":" + path; }  // "file:PATH"
  std::string describe() const;  // "dfrot seed 0 from hadamard gamma 100 ... +R3R4"
};

// What a learned rotation's optimisation did (empty for fixed rotations).
struct RotationLearning {
  std::vector<double> loss;  // per step/iteration (OptRot's R1 or DFRot's R1)
  double seconds = 0;
  double flops = 0;
  // Per step/iteration after the first (DFRot's and OptRot's traces): the figure the per-step
  // speed targets are stated in, without the setup and the final projection `seconds` includes.
  std::vector<double> step_seconds;
  int64_t calib_tokens = 0;  // DFRot
  int64_t massive_tokens = 0;
  std::vector<std::string> massive_report;
};

// What a method may read: the model (norms fused; a layer shard when `shard` is set), its
// tokenizer, the cell's calibration text and windows, the ranks.
struct RotationContext {
  const Model& model;
  const Tokenizer& tok;
  const RotationSpec& spec;
  CalibrationText& calib;
  const CalibOptions& calib_opts;
  Comm& comm;
  const Placement& placement = Placement::replicated();
  // Where a learning method computes when the model has been moved to host memory for it
  // (rotation.spinquant.offload); unset: the model's device.
  std::optional<at::Device> device = std::nullopt;
};

struct RotationMethod {
  std::string name;  // written NAME, or NAME:ARG when takes_argument
  std::string summary;
  bool takes_argument = false;
  bool needs_calibration = false;
  bool rotates = true;  // false: the model keeps its norms and gets no R2/online rotations
  // Methods built from the spec and the model's sizes alone (also used without a model).
  Rotations (*fixed)(const RotationSpec& spec, const ModelConfig& config) = nullptr;
  // Methods that learn from the model (and calibration data); `learned` receives the trace.
  Rotations (*learn)(const RotationContext& ctx, RotationLearning& learned) = nullptr;
  // The method's own part of RotationSpec::describe() (after "NAME seed S"); may be null.
  std::string (*describe)(const RotationSpec& spec) = nullptr;
};

const std::vector<RotationMethod>& rotation_methods();
// The method of "NAME" or "NAME:ARG", or null.
const RotationMethod* find_rotation_method(const std::string& text);
// "none, random, ..., or file:PATH": what a rotation option accepts.
std::string rotation_method_names();

// The spec of "NAME" / "NAME:ARG" with the method's defaults (r2 and online on for a rotating
// method); rotq::Error naming the accepted names otherwise.
RotationSpec rotation_spec(const std::string& text);

// The rotations of `ctx.spec` (learned or fixed), r2 dropped when the spec says so.
Rotations build_rotations(const RotationContext& ctx, RotationLearning& learned);
// The same for a method that needs no model (rotq::Error for a learned one).
Rotations resolve_rotations(const RotationSpec& spec, const ModelConfig& config);

}  // namespace rotq
