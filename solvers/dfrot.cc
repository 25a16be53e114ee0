#include "solvers/dfrot.h"

#include <ATen/ATen.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cmath>

#include "solvers/error.h"
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

// One pass over the tokens at R: the weighted loss and M = Σ w xᵀQ(xR), both local sums.
struct Pass {
  at::Tensor m;
  double loss = 0;
};

// The products run in `dtype` (float64, or float32 with each chunk's loss and xᵀη added into
// float64 sums); the per-token quantizer computes in the products' type.
Pass weighted_pass(const at::Tensor& x, const at::Tensor& massive, const at::Tensor& r,
                   const SetWeights& w, const QuantSpec& spec, int64_t chunk, bool want_m,
                   at::ScalarType dtype) {
  const int64_t n = x.size(0), c = x.size(1);
  Pass p;
  const auto opts = x.options().dtype(at::kDouble);
  if (want_m) p.m = at::zeros({c, c}, opts);
  at::Tensor loss = at::zeros({}, opts);
  const at::Tensor rp = r.to(dtype);
  for (int64_t i = 0; i < n; i += chunk) {
    const int64_t len = std::min(chunk, n - i);
    const at::Tensor xc = x.narrow(0, i, len).to(dtype);
    const at::Tensor wt =
        at::where(massive.narrow(0, i, len), w.massive, w.normal).to(dtype).unsqueeze(1);
    const at::Tensor xr = at::matmul(xc, rp);
    const at::Tensor eta = fake_quantize(xr, spec);
    loss.add_(((xr - eta).pow(2) * wt).sum(at::kDouble));
    if (want_m) p.m.add_(at::matmul((xc * wt).t(), eta));
  }
  p.loss = loss.item<double>();
  return p;
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

double dfrot_loss(const at::Tensor& x, const at::Tensor& massive, const at::Tensor& r,
                  const DfrotOptions& opts, Comm* comm) {
  require_tokens(x, massive, "dfrot_loss");
  const int64_t nm = global_count(massive.sum().item<int64_t>(), comm);
  const int64_t nn = global_count(x.size(0), comm) - nm;
  const Pass p = weighted_pass(x, massive, r.to(x.device(), at::kDouble), set_weights(opts, nn, nm),
                               per_token_spec(opts.bits, opts.symmetric), opts.chunk_rows, false,
                               opts.pass_dtype);
  at::Tensor l = at::full({1}, p.loss, at::kDouble);
  if (comm) comm->all_reduce(l, ReduceOp::kSum);
  return l.item<double>();
}

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
  const SetWeights w = set_weights(opts, n - nm, nm);
  // With fewer tokens than channels M = Σ w xᵀη has rank < C: its polar factor is not unique and
  // the Newton iteration cannot invert it, so the SVD (one of the maximizers) is used directly.
  const PolarMethod polar = n < c ? PolarMethod::kSvd : opts.polar;

  at::Tensor r = r0.to(x.device(), at::kDouble).contiguous().clone();
  at::Tensor best = r.clone();
  double best_loss = std::numeric_limits<double>::infinity();
  std::vector<double> losses;
  for (int64_t it = 0; it <= opts.iters; ++it) {
    const bool last = it == opts.iters;
    const auto tp = std::chrono::steady_clock::now();
    Pass p = weighted_pass(x, massive, r, w, spec, opts.chunk_rows, !last, opts.pass_dtype);
    // One reduction for M and the loss (an extra element).
    const at::Tensor loss_t = at::full({1}, p.loss, r.options());
    at::Tensor packed = last ? loss_t : at::cat({p.m.reshape({-1}), loss_t});
    if (comm) comm->all_reduce(packed, ReduceOp::kSum);
    const double loss = packed[-1].item<double>();
    if (it == 0 && trace) {
      // The loss's read above waited for the device: the pass is timed whole.
      trace->first_pass_seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - tp).count();
    }
    require(std::isfinite(loss), "DFRot: the loss became non-finite at iteration ", it);
    losses.push_back(loss);
    if (loss < best_loss) {
      best_loss = loss;
      best.copy_(r);
    }
    if (opts.log_every > 0 && (it % opts.log_every == 0 || last)) {
      spdlog::info("dfrot iteration {}/{}: loss {:.6g} (best {:.6g})", it, opts.iters, loss,
                   best_loss);
    } else {
      spdlog::debug("dfrot iteration {}/{}: loss {:.6g}", it, opts.iters, loss);
    }
    if (last) break;
    r = procrustes(packed.narrow(0, 0, c * c).view({c, c}), polar).contiguous();
    // The polar factor is computed on every rank from the same sum; rank 0's copy makes them
    // identical even where LAPACK builds differ.
    if (comm && comm->size() > 1) comm->broadcast(r, 0);
  }
  if (trace) {
    trace->last = r;
    trace->loss = losses;
    trace->tokens = n;
    trace->massive = nm;
    trace->seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double cd = static_cast<double>(c);
    trace->flops = static_cast<double>(opts.iters) *
                       (4.0 * static_cast<double>(n) * cd * cd + 22.0 * cd * cd * cd) +
                   2.0 * static_cast<double>(n) * cd * cd;
  }
  return polar_project(best);
}

}  // namespace rotq
