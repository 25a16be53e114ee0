// optrot / optrot+: R1 and R2 minimising the fourth powers of the rotated weights
// (runner/rotate/optrot_model.h), optrot+ weighting them by the calibration inputs' covariances.
#include <string>

#include "runner/rotate/covariances.h"
#include "runner/rotate/optrot_model.h"
#include "runner/rotate/rotation_methods.h"

namespace rotq {
namespace {

OptRotOptions optrot_options(const RotationSpec& spec) {
  OptRotOptions o;
  o.sgd.steps = spec.optrot_steps;
  o.sgd.lr = spec.optrot_lr;
  o.sgd.method = parse_manifold_optimizer(spec.optrot_optimizer);
  o.sgd.cosine = spec.optrot_cosine;
  o.sgd.gradient_dtype = spec.optrot_precision == "float64" ? at::kDouble
                         : spec.optrot_precision == "bf16"  ? at::kBFloat16
                                                            : at::kFloat;
  o.sgd.tf32 = spec.optrot_precision == "tf32";
  o.norm = parse_optrot_norm(spec.optrot_norm);
  o.matrices = parse_optrot_matrices(spec.optrot_matrices);
  o.r2 = spec.r2;
  return o;
}

Rotations learn(const RotationContext& ctx, RotationLearning& learned, bool with_covariance) {
  std::vector<LayerCovariances> covs;
  if (with_covariance) {
    const at::Tensor windows = ctx.calib.windows(ctx.calib_opts.nsamples, ctx.calib_opts.seqlen,
                                                 ctx.calib_opts.seed, "OptRot+", "--calib-seqlen");
    covs = collect_layer_covariances(ctx.model, windows, ctx.comm, ctx.calib_opts.batch,
                                     ctx.placement);
  }
  RotationTrace trace;
  Rotations rot = optrot_rotations(ctx.model, optrot_options(ctx.spec), ctx.spec.seed, ctx.comm,
                                   &trace, covs.empty() ? nullptr : &covs);
  learned.loss = trace.loss;
  learned.seconds = trace.seconds;
  learned.step_seconds = trace.step_seconds;
  learned.flops = trace.flops;
  rot.r3 = rot.r4 = ctx.spec.online;
  return rot;
}

Rotations learn_optrot(const RotationContext& ctx, RotationLearning& learned) {
  return learn(ctx, learned, /*with_covariance=*/false);
}
Rotations learn_optrot_plus(const RotationContext& ctx, RotationLearning& learned) {
  return learn(ctx, learned, /*with_covariance=*/true);
}

std::string describe_optrot(const RotationSpec& s) {
  return " " + s.optrot_optimizer + " steps " + std::to_string(s.optrot_steps) + " lr " +
         std::to_string(s.optrot_lr).substr(0, 6) + " " + s.optrot_norm;
}

}  // namespace

RotationMethod optrot_rotation_method(bool with_covariance) {
  RotationMethod m;
  m.name = with_covariance ? "optrot+" : "optrot";
  m.summary = with_covariance ? "OptRot with the calibration inputs' covariance"
                              : "data-free: minimise the fourth powers of the rotated weights";
  m.needs_calibration = with_covariance;
  m.learn = with_covariance ? learn_optrot_plus : learn_optrot;
  m.describe = describe_optrot;
  return m;
}

}  // namespace rotq
