#include "runner/rotate/learn_loop.h"

#include <ATen/ATen.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cmath>

#include "runner/fuse/scalings.h"
#include "solvers/error.h"
#include "solvers/lap_clock.h"
#include "solvers/orthogonal.h"

namespace rotq {
namespace {

using Clock = std::chrono::steady_clock;

// torch.nn.utils.clip_grad_norm_: scale every gradient by max_norm / (‖g‖ + 1e-6) when above.
double clip_gradients(RotationParams& p, double max_norm) {
  const double norm = p.gradient_norm();
  if (max_norm > 0 && norm > max_norm) {
    const double scale = max_norm / (norm + 1e-6);
    for (at::Tensor t : p.tensors()) t.mutable_grad().mul_(scale);
  }
  return norm;
}

}  // namespace

at::Tensor step_windows(const at::Tensor& windows, const LearnOptions& o, int64_t step,
                        const Comm& comm) {
  const int64_t share = o.batch / comm.size();
  at::Tensor idx = at::arange(share, at::kLong) + (step * o.batch + comm.rank() * share);
  return windows.index_select(0, idx.remainder(windows.size(0)));
}

void learn_steps(const std::string& name, RotatedForward& forward, RotationParams& params,
                 const at::Tensor& windows, const LearnOptions& o, Comm& comm,
                 const LearnUpdate& update, RotationLearning& learned) {
  require(o.batch % comm.size() == 0, name, ": ", o.batch,
          " windows per step do not split evenly over ", comm.size(), " ranks");
  const double tokens = static_cast<double>(o.batch) * (windows.size(1) - 1);
  const auto t0 = Clock::now();
  LapClock laps;
  for (int64_t step = 0; step < o.steps; ++step) {
    params.zero_gradients();
    at::Tensor loss = at::full(
        {1}, forward.loss_and_backward(params, step_windows(windows, o, step, comm)), at::kDouble);
    if (comm.size() > 1) comm.all_reduce(loss, ReduceOp::kSum);
    const double mean = loss.item<double>() / tokens;  // waits for the device: a step's end
    const double lap = laps.lap();
    if (step > 0) learned.step_seconds.push_back(lap);
    require(std::isfinite(mean), name, ": the loss became non-finite at step ", step,
            " (learning rate ", o.lr, " too large?)");
    params.all_reduce_gradients(comm, 1.0 / tokens);
    const double gnorm = clip_gradients(params, o.grad_clip);
    const double lr = update(params, step);
    learned.loss.push_back(mean);
    const double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
    spdlog::info("{} step {}/{}: loss {:.5f}, |grad| {:.3g}, lr {:.4g}, {:.2f} s/step, ETA {:.0f}s",
                 name, step + 1, o.steps, mean, gnorm, lr, elapsed / (step + 1),
                 elapsed / (step + 1) * (o.steps - step - 1));
  }
  learned.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
}

RotatedForwardOptions learned_forward_options(const RotationSpec& spec, const LearnOptions& o,
                                              std::optional<at::Device> device) {
  RotatedForwardOptions fo;
  fo.acts = spec.learn_acts;
  fo.weights = spec.learn_weights;
  fo.online = spec.online;
  fo.micro_batch = o.micro_batch;
  fo.device = device;
  return fo;
}

RotationParams learned_start(const ModelConfig& c, const RotationSpec& spec, bool scalings,
                             at::Device device) {
  const FixedRotationSpec init{FixedRotation::kHadamard, spec.seed, spec.r2, spec.online};
  Rotations start = make_rotations(init, c.dim, c.head_dim, c.n_layers);
  if (scalings) start.scales.assign(c.n_layers, unit_scalings(c));
  return RotationParams::from(start, device);
}

at::Tensor learning_windows(const RotationContext& ctx, const LearnOptions& o,
                            const std::string& name) {
  const std::string flag = "rotation." + ctx.spec.method + ".seqlen";
  return ctx.calib.windows(o.nsamples, o.seqlen, ctx.spec.seed, name.c_str(), flag.c_str());
}

std::string describe_learning(const LearnOptions& o) {
  return " steps " + std::to_string(o.steps) + " lr " + std::to_string(o.lr).substr(0, 6) +
         " batch " + std::to_string(o.batch) + " windows " + std::to_string(o.nsamples);
}

double scheduled_lr(LrSchedule schedule, double lr, int64_t step, int64_t steps) {
  switch (schedule) {
    case LrSchedule::kConstant:
      return lr;
    case LrSchedule::kCosine:
      return cosine_decay(lr, step, steps);
    case LrSchedule::kLinear:  // transformers' linear schedule without warmup
      return steps > 0 ? lr * static_cast<double>(steps - step) / steps : lr;
  }
  return lr;
}

}  // namespace rotq
