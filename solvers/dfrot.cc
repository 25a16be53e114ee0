#include "solvers/dfrot.h"

#include <ATen/ATen.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cmath>
#include <memory>
#include <utility>
#include <vector>

#include "solvers/dfrot_route.h"
#include "solvers/error.h"
#include "solvers/lap_clock.h"
#include "solvers/orthogonal.h"
#include "solvers/rotation.h"

namespace rotq {
namespace {

QuantSpec per_token_spec(int bits, bool symmetric) {
  QuantSpec s;
  s.bits = bits;
  s.symmetric = symmetric;
  validate(s, "DFRot quantizer");
  return s;
}

void require_tokens(const at::Tensor& x, const at::Tensor& massive, const char* what) {
  require(x.dim() == 2, what, ": expected tokens [N, C], got ", x.sizes());
  require(massive.dim() == 1 && massive.size(0) == x.size(0) && massive.scalar_type() == at::kBool,
          what, ": expected a boolean mask of ", x.size(0), " tokens, got ", massive.sizes());
}

// Per-token weights of the objective from the global counts.
struct SetWeights {
  double normal = 0, massive = 0;
};

SetWeights set_weights(const DfrotOptions& o, int64_t n_normal, int64_t n_massive) {
  const bool inf = std::isinf(o.gamma);
  if (inf && n_massive == 0) return {n_normal > 0 ? 1.0 / static_cast<double>(n_normal) : 0, 0};
  const double g2 = inf ? 1.0 : o.gamma * o.gamma;
  SetWeights w;
  if (o.weighting == DfrotWeighting::kSum) {
    w.normal = inf ? 0 : 1;
    w.massive = g2;
  } else {
    w.normal = inf || n_normal == 0 ? 0 : 1.0 / static_cast<double>(n_normal);
    w.massive = n_massive == 0 ? 0 : g2 / static_cast<double>(n_massive);
  }
  return w;
}

// The full route: R (C×C) is the state, M = Σ w xᵀQ(xR) (C×C) the step's sum. The products run
// in the pass's dtype (float64, or float32 with each chunk's loss and xᵀη added into float64
// sums); the per-token quantizer computes in the products' type.
class FullRoute : public DfrotRoute {
 public:
  FullRoute(const at::Tensor& x, const at::Tensor& w, const at::Tensor& r0,
            const DfrotOptions& opts, const QuantSpec& spec, PolarMethod polar)
      : x_(x), w_(w.unsqueeze(1)), spec_(spec), opts_(opts), polar_(polar) {
    r_ = r0.contiguous().clone();
    best_ = r_.clone();
  }

  DfrotPass pass(bool want_sum) override {
    const int64_t n = x_.size(0), c = x_.size(1);
    const at::ScalarType dtype = opts_.pass_dtype;
    DfrotPass p;
    const auto opts = r_.options();
    if (want_sum) p.sum = at::zeros({c, c}, opts);
    at::Tensor loss = at::zeros({}, opts);
    const at::Tensor rp = r_.to(dtype);
    for (int64_t i = 0; i < n; i += opts_.chunk_rows) {
      const int64_t len = std::min(opts_.chunk_rows, n - i);
      const at::Tensor xc = x_.narrow(0, i, len).to(dtype);
      const WeightedCentroids wc =
          weighted_centroids(at::matmul(xc, rp), w_.narrow(0, i, len).to(dtype), spec_);
      loss.add_(wc.loss);
      if (want_sum) p.sum.add_(at::matmul(xc.t(), wc.weighted_eta));
    }
    p.loss = loss.item<double>();
    return p;
  }

  void step(const at::Tensor& sum) override {
    PolarReport rep;
    r_ = polar_factor(sum, polar_, &rep).contiguous();
    log_step_polar(rep);
  }
  at::Tensor& state() override { return r_; }
  void keep_as_best() override { best_.copy_(r_); }
  at::Tensor best() override { return best_; }
  at::Tensor last() override { return r_; }

  double flops_per_iteration() const override {
    // xR and xᵀη (2·N·C² each) and the polar factor (~22·C³ for an SVD).
    const double n = static_cast<double>(x_.size(0)), c = static_cast<double>(x_.size(1));
    return 4.0 * n * c * c + 22.0 * c * c * c;
  }

 private:
  at::Tensor x_, w_;
  QuantSpec spec_;
  DfrotOptions opts_;
  PolarMethod polar_;
  at::Tensor r_, best_;
};

// Per-token weights [N] (float64) from the massive flags.
at::Tensor token_weights(const at::Tensor& massive, const SetWeights& w) {
  return at::where(massive, w.massive, w.normal).to(at::kDouble);
}

// Every rank's tokens and weights, in rank order, on every rank (for the span route, which
// factors all tokens at once; with N < C they are no bigger than the C×C sum the full route
// all-reduces). Ranks may hold different counts: each pads to the largest.
std::pair<at::Tensor, at::Tensor> gather_tokens(const at::Tensor& x, const at::Tensor& w,
                                                Comm* comm) {
  if (!comm || comm->size() == 1) return {x, w};
  const at::Tensor counts =
      comm->all_gather(at::full({1}, static_cast<double>(x.size(0)), w.options())).cpu();
  const int64_t most = counts.max().item<double>();
  const auto pad = [&](const at::Tensor& t) {
    at::Tensor p = at::zeros({most, t.dim() == 2 ? t.size(1) : 1}, t.options());
    p.narrow(0, 0, t.size(0)).copy_(t.dim() == 2 ? t : t.unsqueeze(1));
    return comm->all_gather(p);
  };
  const at::Tensor xs = pad(x), ws = pad(w);
  std::vector<at::Tensor> xparts, wparts;
  for (int64_t r = 0; r < counts.size(0); ++r) {
    const int64_t len = static_cast<int64_t>(counts[r].item<double>());
    xparts.push_back(xs.narrow(0, r * most, len));
    wparts.push_back(ws.narrow(0, r * most, len).squeeze(1));
  }
  return {at::cat(xparts), at::cat(wparts)};
}

int64_t global_count(int64_t local, Comm* comm) {
  at::Tensor t = at::full({1}, static_cast<double>(local), at::kDouble);
  if (comm) comm->all_reduce(t, ReduceOp::kSum);
  return static_cast<int64_t>(t.item<double>());
}

}  // namespace

MassiveRule parse_massive_rule(const std::string& name) {
  if (name == "quant-error") return MassiveRule::kQuantError;
  if (name == "random") return MassiveRule::kRandomRotation;
  fail("massive-token rule '", name, "' is not one of quant-error, random");
}

const char* massive_rule_name(MassiveRule r) {
  return r == MassiveRule::kQuantError ? "quant-error" : "random";
}

at::Tensor per_token_quant_error(const at::Tensor& x, const QuantSpec& spec) {
  require(x.dim() == 2, "per_token_quant_error: expected tokens [N, C], got ", x.sizes());
  const at::Tensor xd = x.to(at::kDouble);
  return (xd - fake_quantize(xd, spec)).pow(2).sum(1).sqrt();
}

at::Tensor flag_massive_tokens(const at::Tensor& x, const MassiveOptions& opts) {
  require(x.dim() == 2, "flag_massive_tokens: expected tokens [N, C], got ", x.sizes());
  require(at::isfinite(x).all().item<bool>(), "DFRot: the calibration tokens have NaN/Inf entries");
  const QuantSpec q4 = per_token_spec(4, /*symmetric=*/true);
  const at::Tensor xd = x.to(at::kDouble);
  const at::Tensor err = per_token_quant_error(xd, q4);
  if (opts.rule == MassiveRule::kRandomRotation) {
    const at::Tensor ro =
        random_orthogonal(x.size(1), derive_seed(opts.seed, 0x0D0F)).to(xd.device());
    return per_token_quant_error(at::matmul(xd, ro), q4) >= err;
  }
  require(opts.threshold > 0, "DFRot: the massive-token threshold must be positive, got ",
          opts.threshold);
  const at::Tensor norm = xd.pow(2).sum(1).sqrt();
  return (err < opts.threshold * norm) & (norm > 0);
}

PolarMethod step_polar_method(const DfrotOptions& opts) {
  return opts.polar == PolarMethod::kNewton && opts.pass_dtype == at::kFloat
             ? PolarMethod::kNewtonMixed
             : opts.polar;
}

void log_step_polar(const PolarReport& rep) {
  if (rep.svd) {
    if (*rep.fallback) {
      spdlog::debug("dfrot polar factor: SVD (Newton: {} after {} iterations; κ ≤ {:.2g})",
                    rep.fallback, rep.iterations, rep.condition_bound);
    } else {
      spdlog::debug("dfrot polar factor: SVD");
    }
    return;
  }
  spdlog::debug(
      "dfrot polar factor: {} Newton iterations ({} in float32), {} Newton-Schulz rounds; κ ≤ "
      "{:.2g}",
      rep.iterations, rep.float32_iterations, rep.schulz_rounds, rep.condition_bound);
}

WeightedCentroids weighted_centroids(const at::Tensor& xr, const at::Tensor& w,
                                     const QuantSpec& spec) {
  const at::Tensor eta = fake_quantize(xr, spec);
  return {eta * w, ((xr - eta).pow(2) * w).sum(at::kDouble)};
}

double dfrot_loss(const at::Tensor& x, const at::Tensor& massive, const at::Tensor& r,
                  const DfrotOptions& opts, Comm* comm) {
  require_tokens(x, massive, "dfrot_loss");
  const int64_t nm = global_count(massive.sum().item<int64_t>(), comm);
  const int64_t nn = global_count(x.size(0), comm) - nm;
  const at::Tensor w = token_weights(massive, set_weights(opts, nn, nm));
  FullRoute route(x, w, r.to(x.device(), at::kDouble), opts,
                  per_token_spec(opts.bits, opts.symmetric), opts.polar);
  at::Tensor l = at::full({1}, route.pass(false).loss, at::kDouble);
  if (comm) comm->all_reduce(l, ReduceOp::kSum);
  return l.item<double>();
}

namespace {

// The span route when the tokens that count (positive weight) are fewer than the channels.
std::unique_ptr<DfrotRoute> choose_route(const at::Tensor& x, const at::Tensor& w,
                                         const at::Tensor& r0, const DfrotOptions& opts,
                                         const QuantSpec& spec, Comm* comm, int64_t* counted) {
  const int64_t c = x.size(1);
  const at::Tensor counts = w > 0;
  *counted = global_count(counts.sum().item<int64_t>(), comm);
  if (opts.span_route && *counted < c) {
    auto [x_all, w_all] = gather_tokens(x, w, comm);
    const at::Tensor keep = w_all > 0;
    x_all = x_all.index({keep});
    w_all = w_all.index({keep});
    const int64_t n = x_all.size(0), rank = comm ? comm->rank() : 0, size = comm ? comm->size() : 1;
    return make_span_route(x_all, w_all, n * rank / size, n * (rank + 1) / size, r0, opts, spec);
  }
  // With fewer tokens than channels M = Σ w xᵀη has rank < C: its polar factor is not unique and
  // the Newton iteration cannot invert it, so the SVD (one of the maximizers) is used directly.
  const PolarMethod polar = *counted < c ? PolarMethod::kSvd : step_polar_method(opts);
  return std::make_unique<FullRoute>(x, w, r0, opts, spec, polar);
}

}  // namespace

at::Tensor dfrot_optimize(const at::Tensor& x, const at::Tensor& massive, const at::Tensor& r0,
                          const DfrotOptions& opts, Comm* comm, DfrotTrace* trace) {
  require_tokens(x, massive, "DFRot");
  const int64_t c = x.size(1);
  require(r0.dim() == 2 && r0.size(0) == c && r0.size(1) == c,
          "DFRot: the initial rotation must be ", c, "x", c, ", got ", r0.sizes());
  require(opts.iters >= 0, "DFRot: iterations must be >= 0, got ", opts.iters);
  require(opts.gamma >= 0, "DFRot: gamma must be >= 0, got ", opts.gamma);
  require(opts.chunk_rows > 0, "DFRot: chunk_rows must be positive");
  require(opts.pass_dtype == at::kDouble || opts.pass_dtype == at::kFloat,
          "DFRot: the token pass runs in float32 or float64, got ", opts.pass_dtype);
  const auto t0 = std::chrono::steady_clock::now();
  const QuantSpec spec = per_token_spec(opts.bits, opts.symmetric);
  const int64_t nm = global_count(massive.sum().item<int64_t>(), comm);
  const int64_t n = global_count(x.size(0), comm);
  require(n > 0, "DFRot: no calibration tokens");
  const at::Tensor w = token_weights(massive, set_weights(opts, n - nm, nm));
  int64_t counted = 0;
  const std::unique_ptr<DfrotRoute> route =
      choose_route(x, w, r0.to(x.device(), at::kDouble).contiguous(), opts, spec, comm, &counted);
  require(counted > 0, "DFRot: every token has weight 0 (gamma ", opts.gamma, ")");

  double best_loss = std::numeric_limits<double>::infinity();
  std::vector<double> losses;
  LapClock laps;
  for (int64_t it = 0; it <= opts.iters; ++it) {
    const bool last = it == opts.iters;
    const DfrotPass p = route->pass(!last);
    // Over ranks, one reduction for the step's sum and the loss (an extra element).
    const bool reduce = comm && comm->size() > 1;
    at::Tensor sum = p.sum;  // undefined on the last pass
    double loss = p.loss;
    if (reduce) {
      const at::Tensor loss_t = at::full({1}, p.loss, route->state().options());
      at::Tensor packed = last ? loss_t : at::cat({p.sum.reshape({-1}), loss_t});
      comm->all_reduce(packed, ReduceOp::kSum);
      loss = packed[-1].item<double>();
      if (!last) sum = packed.narrow(0, 0, p.sum.numel()).view(p.sum.sizes());
    }
    // The loss's read above waited for the device: the first lap is the first pass whole, each
    // later one a Procrustes step and the next pass.
    const double lap = laps.lap();
    if (trace && it == 0) trace->first_pass_seconds = lap;
    if (trace && it > 0) trace->iteration_seconds.push_back(lap);
    require(std::isfinite(loss), "DFRot: the loss became non-finite at iteration ", it);
    losses.push_back(loss);
    if (loss < best_loss) {
      best_loss = loss;
      route->keep_as_best();
    }
    if (opts.log_every > 0 && (it % opts.log_every == 0 || last)) {
      spdlog::info("dfrot iteration {}/{}: loss {:.6g} (best {:.6g})", it, opts.iters, loss,
                   best_loss);
    } else {
      spdlog::debug("dfrot iteration {}/{}: loss {:.6g}", it, opts.iters, loss);
    }
    if (last) break;
    route->step(sum);
    // The polar factor is computed on every rank from the same sum; rank 0's copy makes them
    // identical even where LAPACK builds differ.
    if (reduce) comm->broadcast(route->state(), 0);
  }
  const at::Tensor best = polar_project(route->best());
  if (trace) {
    if (trace->want_last) trace->last = route->last();
    trace->loss = losses;
    trace->tokens = n;
    trace->massive = nm;
    trace->seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double cd = static_cast<double>(c);
    trace->flops = static_cast<double>(opts.iters) * route->flops_per_iteration() +
                   2.0 * static_cast<double>(n) * cd * cd;
  }
  return best;
}

}  // namespace rotq
