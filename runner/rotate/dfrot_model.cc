#include "runner/rotate/dfrot_model.h"

#include <ATen/ATen.h>
#include <spdlog/spdlog.h>

#include <cmath>

#include "runner/core/stats.h"
#include "runner/dist/layer_pipeline.h"
#include "runner/rotate/block_inputs.h"
#include "solvers/error.h"

namespace rotq {

DfrotModelResult dfrot_rotations(const Model& model, const at::Tensor& windows,
                                 const RotationSpec& spec, Comm& comm, const Tokenizer* tok,
                                 const Placement& placement) {
  const ModelConfig& c = model.config;
  FixedRotationSpec start;
  start.kind = spec.dfrot_init;
  start.seed = spec.seed;
  start.r2 = spec.r2;
  DfrotModelResult res;
  res.rotations = make_rotations(start, c.dim, c.head_dim, c.n_layers);
  at::Tensor r0 = res.rotations.r1.defined() ? res.rotations.r1 : at::eye(c.dim, at::kDouble);
  r0 = r0.to(model_device(model));  // the Procrustes iterations run where the tokens are
  if (!res.rotations.r2.empty() && spec.dfrot_init == FixedRotation::kNone && spec.r2) {
    FixedRotationSpec had = start;
    had.kind = FixedRotation::kHadamard;
    res.rotations.r2 = make_rotations(had, c.dim, c.head_dim, c.n_layers).r2;
  }

  const bool sharded = placement.sharded();
  const BlockInputs all = collect_block_inputs(model, windows, spec.dfrot_layers, placement, &comm);
  const at::Tensor massive = flag_massive_tokens(all.x, spec.dfrot.massive);
  res.massive_report = describe_massive_tokens(all, massive, tok);
  // A shard sees its own layers' tokens: the fraction is over all ranks' tokens.
  at::Tensor counts =
      at::tensor({massive.sum().item<double>(), static_cast<double>(all.size())}, at::kDouble);
  if (sharded) comm.all_reduce(counts);
  res.massive_fraction = counts[0].item<double>() / std::max(1.0, counts[1].item<double>());
  if (sharded) {
    res.massive_report.insert(
        res.massive_report.begin(),
        "(rank " + std::to_string(comm.rank()) + "'s layers; all ranks: " +
            std::to_string(static_cast<int64_t>(counts[0].item<double>())) + " of " +
            std::to_string(static_cast<int64_t>(counts[1].item<double>())) + " tokens massive)");
  }
  for (const std::string& line : res.massive_report) spdlog::info("dfrot {}", line);
  if (res.massive_fraction > 0.5) {
    spdlog::warn(
        "dfrot: the {} rule flags {:.0f}% of the tokens as massive: it is not finding massive "
        "activations on this model (try --dfrot-rule random or a smaller --dfrot-threshold)",
        massive_rule_name(spec.dfrot.massive.rule), 100 * res.massive_fraction);
  }
  // Replicated: every rank has every token and takes a contiguous share; sharded: its own.
  const int64_t n = all.size(), r = sharded ? 0 : comm.rank(), p = sharded ? 1 : comm.size();
  const int64_t begin = n * r / p, end = n * (r + 1) / p;
  const at::Tensor x = all.x.narrow(0, begin, end - begin);
  const at::Tensor m = massive.narrow(0, begin, end - begin);
  res.rotations.r1 = dfrot_optimize(x, m, r0, spec.dfrot, &comm, &res.trace).cpu();
  spdlog::info(
      "dfrot R1: loss {:.6g} -> {:.6g} in {} iterations ({:.2f}s; median iteration {:.3f}s)",
      res.trace.loss.front(), *std::min_element(res.trace.loss.begin(), res.trace.loss.end()),
      spec.dfrot.iters, res.trace.seconds, median(res.trace.iteration_seconds));
  return res;
}

namespace {

Rotations learn_dfrot(const RotationContext& ctx, RotationLearning& learned) {
  const RotationSpec& spec = ctx.spec;
  const at::Tensor windows = ctx.calib.windows(spec.dfrot_nsamples, spec.dfrot_seqlen,
                                               ctx.calib_opts.seed, "DFRot", "--dfrot-seqlen");
  DfrotModelResult d = dfrot_rotations(ctx.model, windows, spec, ctx.comm, &ctx.tok, ctx.placement);
  learned.loss = d.trace.loss;
  learned.seconds = d.trace.seconds;
  learned.step_seconds = d.trace.iteration_seconds;
  learned.flops = d.trace.flops;
  learned.calib_tokens = d.trace.tokens;
  learned.massive_tokens = d.trace.massive;
  learned.massive_report = d.massive_report;
  d.rotations.r3 = d.rotations.r4 = spec.online;
  return d.rotations;
}

std::string describe_dfrot(const RotationSpec& spec) {
  const DfrotOptions& d = spec.dfrot;
  const std::string g = std::isinf(d.gamma) ? "inf" : std::to_string(d.gamma).substr(0, 6);
  return std::string(" from ") + fixed_rotation_name(spec.dfrot_init) + " gamma " + g + " iters " +
         std::to_string(d.iters) + (d.symmetric ? " sym" : " asym") + " " +
         massive_rule_name(d.massive.rule);
}

}  // namespace

RotationMethod dfrot_rotation_method() {
  RotationMethod m;
  m.name = "dfrot";
  m.summary = "R1 refined from calibration activations (massive tokens weighted by gamma)";
  m.needs_calibration = true;
  m.learn = learn_dfrot;
  m.describe = describe_dfrot;
  return m;
}

}  // namespace rotq
