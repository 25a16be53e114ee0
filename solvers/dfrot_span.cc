// DFRot in the calibration tokens' span, for fewer tokens than channels (N < C).
//
// With Xᵀ = Q R_x (Householder; Q = [Q_x Q_⊥], Q_x C×N spanning the tokens, R_x N×N upper):
//   XR = R_xᵀ·B with B = Q_xᵀ R (N×C, orthonormal rows), and
//   M = Xᵀ W η = Q_x·L with L = R_x·(W η) (N×C),
// so every maximizer of tr(RᵀM) has Q_xᵀR = polar(L) (polar_factor_rows: an N×C QR and an N×N
// polar). An iteration is then ~10·N²C + O(N³) FLOPs instead of 4·N·C² + a C×C polar, and the
// tokens' rotations are the full route's up to rounding.
//
// The rotation outside the span is not determined by the tokens (the full route's SVD leaves it
// to LAPACK's choice of null vectors). Here it is the rotation closest to R0 there: R = Q_x B +
// Q_⊥ Z with Z = polar(Q_⊥ᵀ R0 (I − BᵀB)), i.e. argmin ‖R − R0‖_F subject to Q_xᵀR = B, so the
// directions the calibration never saw keep the start's (e.g. the Hadamard's) spreading.
#include <ATen/ATen.h>

#include <cstdint>

#include "solvers/blas.h"
#include "solvers/dfrot_route.h"
#include "solvers/error.h"
#include "solvers/orthogonal.h"

namespace rotq {
namespace {

class SpanRoute : public DfrotRoute {
 public:
  SpanRoute(const at::Tensor& x_all, const at::Tensor& w_all, int64_t begin, int64_t end,
            const at::Tensor& r0, const DfrotOptions& opts, const QuantSpec& spec)
      : spec_(spec), opts_(opts), r0_(r0) {
    n_ = x_all.size(0);
    c_ = x_all.size(1);
    require(n_ > 0 && n_ < c_, "DFRot span route: expected fewer tokens than channels, got ", n_,
            " tokens of ", c_);
    auto [q, r] = at::linalg_qr(x_all.to(at::kDouble).t(), "complete");
    q_x_ = q.narrow(1, 0, n_);
    q_perp_ = q.narrow(1, n_, c_ - n_);
    // This rank's rows of R_xᵀ: its tokens are R_xᵀ[rows]·Q_xᵀ.
    r_x_ = r.narrow(0, 0, n_).contiguous();
    begin_ = begin;
    rows_ = end - begin;
    w_ = w_all.narrow(0, begin, end - begin).to(at::kDouble).unsqueeze(1);
    state_ = at::cat({at::eye(n_, r0.options()), at::matmul(q_x_.t(), r0)}, 1);
    best_ = state_.clone();
  }

  DfrotPass pass(bool want_sum) override {
    DfrotPass p;
    if (want_sum) p.sum = at::zeros({n_, c_}, state_.options());
    at::Tensor loss = at::zeros({}, state_.options());
    // X[rows]·R = R_xᵀ[rows]·B = (R_xᵀ[rows]·G)·L, in float64: G·L amplifies rounding by κ(L),
    // so only the quantizer runs in the pass's type.
    const at::Tensor t = tokens_times(g());
    for (int64_t i = 0; i < rows_; i += opts_.chunk_rows) {
      const int64_t len = std::min(opts_.chunk_rows, rows_ - i);
      const at::Tensor xr = at::matmul(t.narrow(0, i, len), l()).to(opts_.pass_dtype);
      const WeightedCentroids wc =
          weighted_centroids(xr, w_.narrow(0, i, len).to(opts_.pass_dtype), spec_);
      loss.add_(wc.loss);
      if (want_sum) add_token_sum(p.sum, begin_ + i, wc.weighted_eta.to(at::kDouble));
    }
    p.loss = loss.item<double>();
    return p;
  }

  // B = polar(L) without forming the QR's Q: with Lᵀ = Q_L R_L and P = polar(R_Lᵀ),
  // B = P·Q_Lᵀ = (P·R_L⁻ᵀ)·L = G·L (a triangular solve in place of Q_L's 4N²C FLOPs).
  void step(const at::Tensor& sum) override {
    auto [a, tau] = at::geqrf(sum.t());
    const at::Tensor r_l = a.narrow(0, 0, n_).triu().contiguous();
    PolarReport rep;
    const at::Tensor p = polar_factor(r_l.t(), step_polar_method(opts_), &rep);
    log_step_polar(rep);
    if (!rep.svd) {
      const at::Tensor g = upper_triangular_solve(r_l, p, /*transpose_u=*/true, /*left=*/false);
      state_ = at::cat({g, sum}, 1);
    } else {
      // L is rank-deficient (R_L singular): Q_L itself, and B = P·Q_Lᵀ (one of the maximizers).
      const at::Tensor q_l = at::linalg_householder_product(a, tau);
      state_ = at::cat({at::eye(n_, sum.options()), at::matmul(p, q_l.t())}, 1);
    }
    last_ = at::Tensor();
    ++steps_;
  }

  at::Tensor& state() override { return state_; }

  void keep_as_best() override {
    best_.copy_(state_);
    best_steps_ = steps_;
  }

  // The completions cost a few N×C products and one polar each: made once, at the end.
  at::Tensor best() override {
    if (best_steps_ == 0) return r0_;
    return best_steps_ == steps_ ? last() : complete(best_);
  }

  at::Tensor last() override {
    if (steps_ == 0) return r0_;
    if (!last_.defined()) last_ = complete(state_);
    return last_;
  }

  double flops_per_iteration() const override {
    // xR = (R_xᵀG)·L (2N³ + 2N²C), L = R_x·(wη) (2N²C), the QR of Lᵀ (2N²C − 2N³/3), G by a
    // triangular solve (N³) and the N×N polar (≈ 16N³: eight Newton inverses).
    const double n = static_cast<double>(n_), c = static_cast<double>(c_);
    return 6.0 * n * n * c + 18.0 * n * n * n;
  }

 private:
  at::Tensor g() const { return state_.narrow(1, 0, n_); }

  // R_xᵀ[rows]·Y for this rank's tokens: R_x[:, rows]ᵀ has zeros right of the diagonal block, so
  // the rows above it by a GEMM and the block by a triangular product (half its FLOPs).
  at::Tensor tokens_times(const at::Tensor& y) const {
    at::Tensor t = upper_triangular_times(r_x_.narrow(0, begin_, rows_).narrow(1, begin_, rows_),
                                          y.narrow(0, begin_, rows_), /*transpose_u=*/true);
    if (begin_ > 0) {
      t.addmm_(r_x_.narrow(0, 0, begin_).narrow(1, begin_, rows_).t(), y.narrow(0, 0, begin_));
    }
    return t;
  }

  // L += R_x[:, g0:g0+len]·E for tokens g0.. (R_x upper: rows above g0 by a GEMM, the diagonal
  // block by a triangular product).
  void add_token_sum(at::Tensor& l, int64_t g0, const at::Tensor& e) const {
    const int64_t len = e.size(0);
    if (g0 > 0) l.narrow(0, 0, g0).addmm_(r_x_.narrow(0, 0, g0).narrow(1, g0, len), e);
    l.narrow(0, g0, len)
        .add_(upper_triangular_times(r_x_.narrow(0, g0, len).narrow(1, g0, len), e));
  }
  at::Tensor l() const { return state_.narrow(1, n_, c_); }

  // B = G·L, its rows re-orthonormalized in float64 (one Newton–Schulz step: G·L carries κ(L)·ε),
  // then R = Q_x B + Q_⊥ Z with Z = polar(Q_⊥ᵀR0(I − BᵀB)).
  at::Tensor complete(const at::Tensor& state) {
    at::Tensor b = at::matmul(state.narrow(1, 0, n_), state.narrow(1, n_, c_));
    b = 1.5 * b - 0.5 * at::matmul(at::matmul(b, b.t()), b);
    const at::Tensor k = at::matmul(q_perp_.t(), r0_);
    const at::Tensor k_perp = k - at::matmul(at::matmul(k, b.t()), b);
    const at::Tensor z = polar_factor_rows(k_perp, opts_.polar);
    return at::matmul(q_x_, b) + at::matmul(q_perp_, z);
  }

  QuantSpec spec_;
  DfrotOptions opts_;
  at::Tensor r0_;
  int64_t n_ = 0, c_ = 0;
  at::Tensor q_x_, q_perp_, r_x_, w_;
  int64_t begin_ = 0, rows_ = 0;    // this rank's tokens
  at::Tensor state_, best_, last_;  // [G | L] (N×(N+C)): B = G·L
  int64_t steps_ = 0, best_steps_ = 0;
};

}  // namespace

std::unique_ptr<DfrotRoute> make_span_route(const at::Tensor& x_all, const at::Tensor& w_all,
                                            int64_t begin, int64_t end, const at::Tensor& r0,
                                            const DfrotOptions& opts, const QuantSpec& spec) {
  return std::make_unique<SpanRoute>(x_all, w_all, begin, end, r0, opts, spec);
}

}  // namespace rotq
