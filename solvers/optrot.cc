#include "solvers/optrot.h"

#include <ATen/ATen.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cmath>
#include <limits>

#include "solvers/error.h"
#include "solvers/orthogonal.h"

namespace rotq {

OptRotNorm parse_optrot_norm(const std::string& name) {
  if (name == "none") return OptRotNorm::kNone;
  if (name == "fro4") return OptRotNorm::kFrobenius4;
  if (name == "numel") return OptRotNorm::kNumel;
  fail("OptRot normalisation '", name, "' is not one of none, fro4, numel");
}

void FourthPowerObjective::add(const at::Tensor& reader_form, double weight) {
  require(reader_form.dim() == 2 && reader_form.size(1) == dim_, "OptRot: a matrix of shape ",
          reader_form.sizes(), " cannot be rotated by a ", dim_, "x", dim_, " rotation");
  const at::Tensor a = reader_form.to(at::kDouble);
  const double sq = a.pow(2).sum().item<double>();
  require(std::isfinite(sq), "OptRot: a matrix has NaN/Inf entries");
  double c = weight;
  if (norm_ == OptRotNorm::kFrobenius4 && sq > 0) c /= sq * sq;
  if (norm_ == OptRotNorm::kNumel && sq > 0) {
    const double n = static_cast<double>(a.numel());
    c /= n * (sq / n) * (sq / n);
  }
  terms_.push_back({reader_form, c});
  flops_ += 4.0 * static_cast<double>(a.size(0)) * dim_ * dim_;
}

double FourthPowerObjective::local_loss(const at::Tensor& r) const {
  double loss = 0;
  for (const Term& t : terms_) {
    const at::Tensor ar = at::matmul(t.a.to(at::kDouble), r);
    loss += t.c * ar.pow(4).sum().item<double>();
  }
  return loss;
}

at::Tensor FourthPowerObjective::local_gradient(const at::Tensor& r, double* loss) const {
  at::Tensor grad = at::zeros({dim_, dim_}, at::kDouble);
  double total = 0;
  for (const Term& t : terms_) {
    const at::Tensor a = t.a.to(at::kDouble);
    const at::Tensor ar = at::matmul(a, r);
    const at::Tensor cube = ar.pow(3);
    if (loss) total += t.c * at::sum(cube * ar).item<double>();
    grad.add_(at::matmul(a.t(), cube), 4.0 * t.c);
  }
  if (loss) *loss = total;
  return grad;
}

double fourth_power_loss(const FourthPowerObjective& obj, const at::Tensor& r, Comm* comm) {
  at::Tensor l = at::full({1}, obj.local_loss(r.to(at::kDouble)), at::kDouble);
  if (comm) comm->all_reduce(l, ReduceOp::kSum);
  return l.item<double>();
}

at::Tensor minimize_fourth_power(const FourthPowerObjective& obj, const at::Tensor& r0,
                                 const CayleySgdOptions& opts, Comm* comm, RotationTrace* trace) {
  require(r0.dim() == 2 && r0.size(0) == obj.dim() && r0.size(1) == obj.dim(),
          "OptRot: the initial rotation must be ", obj.dim(), "x", obj.dim());
  require(opts.steps >= 0 && opts.lr > 0, "OptRot: steps must be >= 0 and lr > 0");
  const auto t0 = std::chrono::steady_clock::now();
  at::Tensor r = r0.to(at::kDouble).clone();
  at::Tensor best = r.clone();
  double best_loss = std::numeric_limits<double>::infinity();
  at::Tensor velocity;
  std::vector<double> losses;
  for (int64_t step = 0; step <= opts.steps; ++step) {
    double local = 0;
    at::Tensor grad = obj.local_gradient(r, &local);
    // One reduction for both: the gradient and, in an extra row, the loss.
    at::Tensor packed = at::cat({grad.reshape({-1}), at::full({1}, local, at::kDouble)});
    if (comm) comm->all_reduce(packed, ReduceOp::kSum);
    const double loss = packed[-1].item<double>();
    require(std::isfinite(loss), "OptRot: the loss became non-finite at step ", step,
            " (learning rate ", opts.lr, " too large?)");
    grad = packed.narrow(0, 0, obj.dim() * obj.dim()).view({obj.dim(), obj.dim()});
    losses.push_back(loss);
    if (loss < best_loss) {
      best_loss = loss;
      best.copy_(r);
    }
    if (opts.log_every > 0 && (step % opts.log_every == 0 || step == opts.steps)) {
      spdlog::info("optrot step {}/{}: loss {:.6g}", step, opts.steps, loss);
    }
    if (step == opts.steps) break;
    at::Tensor skew = skew_gradient(r, grad);
    velocity = velocity.defined() && opts.momentum > 0 ? velocity.mul_(opts.momentum).add_(skew)
                                                        : skew;
    r = cayley_retract(r, velocity, opts.lr);
  }
  if (trace) {
    trace->loss = losses;
    trace->seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double c3 = std::pow(static_cast<double>(obj.dim()), 3);
    trace->flops = static_cast<double>(losses.size()) * obj.gradient_flops() +
                   static_cast<double>(opts.steps) * 9.0 * c3;
  }
  return polar_project(best);
}

}  // namespace rotq
