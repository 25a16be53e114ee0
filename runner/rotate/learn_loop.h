// The training loop the end-to-end learned methods share (SpinQuant, OSTQuant): per step, this
// rank's share of the step's windows through RotatedForward, the loss and the gradients summed over
// the ranks and averaged over the step's tokens, the global gradient norm clipped, then the
// method's update; progress per step (loss, |grad|, lr, s/step, ETA) and the loss curve into
// `learned`. Every rank takes identical steps.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <optional>
#include <string>

#include "runner/rotate/rotated_forward.h"
#include "runner/rotate/rotation_methods.h"
#include "solvers/comm.h"

namespace rotq {

// The training forward's options every learned method shares: the spec's target activations and
// (when simulated) weights, its online R3/R4, the micro-batch, the device (offload).
RotatedForwardOptions learned_forward_options(const RotationSpec& spec, const LearnOptions& o,
                                              std::optional<at::Device> device);

// The randomized Hadamard of spec.seed (R2 and R3/R4 as the spec says) as float64 leaves on
// `device`, with all-ones channel scalings when `scalings`.
RotationParams learned_start(const ModelConfig& c, const RotationSpec& spec, bool scalings,
                             at::Device device);

// The method's training windows from the cell's calibration text (o.nsamples of o.seqlen tokens,
// seeded by the spec); `name` for messages.
at::Tensor learning_windows(const RotationContext& ctx, const LearnOptions& o,
                            const std::string& name);

// " steps N lr X batch B windows W" for RotationSpec::describe().
std::string describe_learning(const LearnOptions& o);

// The method's update of step `step` (gradients in the params' .grad()); returns the learning
// rate it used, for the progress line.
using LearnUpdate = std::function<double(RotationParams& params, int64_t step)>;

void learn_steps(const std::string& name, RotatedForward& forward, RotationParams& params,
                 const at::Tensor& windows, const LearnOptions& o, Comm& comm,
                 const LearnUpdate& update, RotationLearning& learned);

// The learning rate of step `step` of `steps` (transformers' schedules without warmup).
double scheduled_lr(LrSchedule schedule, double lr, int64_t step, int64_t steps);

// This rank's windows of step `step`: the step takes the next `batch` windows in order (wrapping
// around after the last), split into equal contiguous shares by rank.
at::Tensor step_windows(const at::Tensor& windows, const LearnOptions& o, int64_t step,
                        const Comm& comm);

}  // namespace rotq
