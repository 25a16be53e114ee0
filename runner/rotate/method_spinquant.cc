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

#include <chrono>
#include <cmath>
#include <string>

#include "runner/rotate/rotated_forward.h"
#include "runner/rotate/rotation_methods.h"
#include "runner/rotate/spinquant.h"
#include "solvers/error.h"
#include "solvers/orthogonal.h"

namespace rotq {
namespace {

using Clock = std::chrono::steady_clock;

double step_lr(const LearnOptions& o, int64_t step) {
  return o.cosine ? cosine_decay(o.lr, step, o.steps) : o.lr;
}

// This rank's windows of step `step`: the step takes the next `batch` windows in order (wrapping
// around after the last), split into equal contiguous shares by rank.
at::Tensor step_windows(const at::Tensor& windows, const LearnOptions& o, int64_t step,
                        const Comm& comm) {
  const int64_t share = o.batch / comm.size();
  at::Tensor idx = at::arange(share, at::kLong) + (step * o.batch + comm.rank() * share);
  return windows.index_select(0, idx.remainder(windows.size(0)));
}

// torch.nn.utils.clip_grad_norm_: scale every gradient by max_norm / (‖g‖ + 1e-6) when above.
double clip_gradients(RotationParams& p, double max_norm) {
  const double norm = p.gradient_norm();
  if (max_norm > 0 && norm > max_norm) {
    const double scale = max_norm / (norm + 1e-6);
    for (at::Tensor t : p.tensors()) t.mutable_grad().mul_(scale);
  }
  return norm;
}

void cayley_steps(RotationParams& p, double lr) {
  at::NoGradGuard no_grad;
  for (at::Tensor t : p.tensors()) t.copy_(cayley_sgd_step(t.detach(), t.grad(), lr));
}

Rotations learn_spinquant(const RotationContext& ctx, RotationLearning& learned) {
  const LearnOptions& o = ctx.spec.spinquant;
  const at::Tensor windows = ctx.calib.windows(o.nsamples, o.seqlen, ctx.spec.seed, "SpinQuant",
                                               "rotation.spinquant.seqlen");
  return spinquant_rotations(ctx.model, windows, ctx.spec, ctx.comm, ctx.placement, learned,
                             ctx.device);
}

std::string describe_spinquant(const RotationSpec& s) {
  const LearnOptions& o = s.spinquant;
  return " steps " + std::to_string(o.steps) + " lr " + std::to_string(o.lr).substr(0, 6) +
         " batch " + std::to_string(o.batch) + " windows " + std::to_string(o.nsamples) + " for " +
         s.learn_acts.describe();
}

}  // namespace

Rotations spinquant_rotations(const Model& model, const at::Tensor& windows,
                              const RotationSpec& spec, Comm& comm, const Placement& placement,
                              RotationLearning& learned, std::optional<at::Device> device) {
  const LearnOptions& o = spec.spinquant;
  const ModelConfig& c = model.config;
  require(o.batch % comm.size() == 0, "rotation.spinquant.batch ", o.batch,
          " windows per step do not split evenly over ", comm.size(), " ranks");
  FixedRotationSpec init{FixedRotation::kHadamard, spec.seed, spec.r2, spec.online};
  RotationParams params = RotationParams::from(make_rotations(init, c.dim, c.head_dim, c.n_layers),
                                               model_device(model));
  RotatedForwardOptions fo;
  fo.acts = spec.learn_acts;
  fo.weights = spec.learn_weights;
  fo.online = spec.online;
  fo.micro_batch = o.micro_batch;
  RotatedForward forward(model, placement, comm, fo);
  spdlog::info(
      "SpinQuant: {} steps of {} windows x {} tokens ({} per rank), lr {} {}; training {}{}",
      o.steps, o.batch, windows.size(1), o.batch / comm.size(), o.lr,
      o.cosine ? "cosine" : "constant", fo.acts.describe(),
      fo.weights.enabled() ? ", weights " + fo.weights.describe() : "");
  const double tokens = static_cast<double>(o.batch) * (windows.size(1) - 1);
  const auto t0 = Clock::now();
  for (int64_t step = 0; step < o.steps; ++step) {
    params.zero_gradients();
    at::Tensor loss = at::full(
        {1}, forward.loss_and_backward(params, step_windows(windows, o, step, comm)), at::kDouble);
    if (comm.size() > 1) comm.all_reduce(loss, ReduceOp::kSum);
    const double mean = loss.item<double>() / tokens;
    require(std::isfinite(mean), "SpinQuant: the loss became non-finite at step ", step,
            " (learning rate ", o.lr, " too large?)");
    params.all_reduce_gradients(comm, 1.0 / tokens);
    const double gnorm = clip_gradients(params, o.grad_clip);
    const double lr = step_lr(o, step);
    cayley_steps(params, lr);
    learned.loss.push_back(mean);
    const double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
    spdlog::info(
        "SpinQuant step {}/{}: loss {:.5f}, |grad| {:.3g}, lr {:.4g}, {:.2f} s/step, ETA {:.0f}s",
        step + 1, o.steps, mean, gnorm, lr, elapsed / (step + 1),
        elapsed / (step + 1) * (o.steps - step - 1));
  }
  learned.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
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
