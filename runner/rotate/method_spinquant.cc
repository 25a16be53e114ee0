// spinquant: R1 and per-layer R2 learned end to end (Liu et al. 2024, facebookresearch/SpinQuant),
// by Cayley SGD on the next-token cross-entropy of the model with its activations (and KV cache)
// fake-quantized through a straight-through estimator; R3/R4 stay fixed Hadamards. The protocol,
// read from the reference code (runner/rotate/LEARNED_ROTATIONS.md): start from the randomized
// Hadamard; per step the gradient is averaged over the step's windows (all ranks), its global norm
// clipped to 1.0, and every matrix takes one Cayley SGD step with lr 1.5 under a cosine decay over
// 100 steps; 800 windows of 2048 tokens, 8 per step.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <spdlog/spdlog.h>

#include <string>

#include "runner/rotate/learn_loop.h"
#include "runner/rotate/rotated_forward.h"
#include "runner/rotate/rotation_methods.h"
#include "runner/rotate/spinquant.h"
#include "solvers/error.h"
#include "solvers/orthogonal.h"

namespace rotq {
namespace {

void cayley_steps(RotationParams& p, double lr) {
  at::NoGradGuard no_grad;
  for (at::Tensor t : p.rotations()) t.copy_(cayley_sgd_step(t.detach(), t.grad(), lr));
}

Rotations learn_spinquant(const RotationContext& ctx, RotationLearning& learned) {
  const at::Tensor windows = learning_windows(ctx, ctx.spec.spinquant, "SpinQuant");
  return spinquant_rotations(ctx.model, windows, ctx.spec, ctx.comm, ctx.placement, learned,
                             ctx.device);
}

std::string describe_spinquant(const RotationSpec& s) {
  return describe_learning(s.spinquant) + " for " + s.learn_acts.describe();
}

}  // namespace

Rotations spinquant_rotations(const Model& model, const at::Tensor& windows,
                              const RotationSpec& spec, Comm& comm, const Placement& placement,
                              RotationLearning& learned, std::optional<at::Device> device) {
  const LearnOptions& o = spec.spinquant;
  const ModelConfig& c = model.config;
  // Offloaded (the model in host memory): the matrices live where the training computes.
  RotationParams params = learned_start(c, spec, false, device.value_or(model_device(model)));
  const RotatedForwardOptions fo = learned_forward_options(spec, o, device);
  RotatedForward forward(model, placement, comm, fo);
  spdlog::info(
      "SpinQuant: {} steps of {} windows x {} tokens ({} per rank), lr {} {}; training {}{}",
      o.steps, o.batch, windows.size(1), o.batch / comm.size(), o.lr,
      o.schedule == LrSchedule::kCosine ? "cosine" : "constant", fo.acts.describe(),
      fo.weights.enabled() ? ", weights " + fo.weights.describe() : "");
  learn_steps(
      "SpinQuant", forward, params, windows, o, comm,
      [&](RotationParams& p, int64_t step) {
        const double lr = scheduled_lr(o.schedule, o.lr, step, o.steps);
        cayley_steps(p, lr);
        return lr;
      },
      learned);
  Rotations rot = params.detached();
  rot.r3 = rot.r4 = spec.online;
  return rot;
}

RotationMethod spinquant_rotation_method() {
  RotationMethod m;
  m.name = "spinquant";
  m.summary = "R1/R2 learned through the quantized model (Cayley SGD on cross-entropy, SpinQuant)";
  m.needs_calibration = true;
  m.learn = learn_spinquant;
  m.describe = describe_spinquant;
  return m;
}

}  // namespace rotq
