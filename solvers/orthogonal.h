// Small tools on the orthogonal group O(C), all in float64: the orthogonal Procrustes solution,
// the polar projection back onto the group, and the Cayley retraction that rotation optimizers
// step with (Li, Chen & Yu, ICLR 2020; SpinQuant's Cayley SGD).
#pragma once

#include <ATen/core/Tensor.h>

namespace rotq {

// How a polar factor was computed (polar_factor's report).
struct PolarReport {
  int iterations = 0;          // Newton iterations taken
  int float32_iterations = 0;  // of which in float32 (kNewtonMixed)
  int schulz_rounds = 0;       // Newton–Schulz rounds of the finish (polar_polish)
  bool svd = false;            // computed by the SVD (singular or non-converging input, or asked)
  // Why the Newton iteration gave way to the SVD ("" when it did not): "singular" (no inverse),
  // "ill-conditioned" (κ > 1e15 at the start), "no convergence" (30 iterations) or "no convergence
  // of the polish" (Newton–Schulz from the last iterate); `iterations` then counts the Newton
  // iterations paid before it.
  const char* fallback = "";
  // The bound √(‖M⁻¹‖₁‖M⁻¹‖∞‖M‖₁‖M‖∞) ≥ κ₂(M) the Newton path checked (0 if it stopped before).
  double condition_bound = 0;
  double residual = 0;  // ‖QᵀQ − I‖_max of the result (or a bound on it: polar_polish)
};

enum class PolarMethod { kNewton, kNewtonMixed, kSvd };

// The orthogonal polar factor Q = U Vᵀ of a square M = U S Vᵀ (float64): the nearest orthogonal
// matrix to M and argmax_R tr(Rᵀ M). kNewton (the default) iterates Higham's scaled Newton
// X ← (ζX + X⁻ᵀ/ζ)/2 with the 2-norm scaling ζ (Byers & Xu; norms by block power iteration) until
// a step below 1e-3, then polar_polish takes it to ‖XᵀX − I‖_max ≤ 1e-12: only
// LU inverses and GEMMs (fast on a GPU, where an SVD runs far below the GEMM rate), ≤ 10 inverses
// for any condition number below 1e15, one for a nearly orthogonal M. A singular (or numerically
// singular: κ > 1e15) M, whose polar factor is not unique, or one that has not converged in 30
// iterations goes to the SVD, as kSvd always does. kNewtonMixed runs the middle iterations (those
// whose iterate has κ ≲ 1e2) in float32 and the first and last in float64: the result is
// orthogonal to float64 rounding and the polar factor to ~1e-6 relative (float32's ε times those
// iterates' κ), at about half the float64 iteration's cost on a CPU.
at::Tensor polar_factor(const at::Tensor& m, PolarMethod method = PolarMethod::kNewton,
                        PolarReport* report = nullptr);

// The polar factor of a nearly orthogonal X (‖XᵀX − I‖₂ < ½: a drifted rotation, the end of an
// iteration) by third-order Newton–Schulz rounds X ← X(I − ½F + ⅜F²), F = XᵀX − I, each taking
// ‖F‖ to ≈ ⅝‖F‖³ with one half GEMM and two symmetric products (no inverse), float64. It ends once
// ‖XᵀX − I‖_max ≤ 1e-12: measured, or bounded after a round from the F it started from (⅝‖F‖₁³
// plus F's own rounding, γ_n), which saves the last product; the report gives that value and the
// rounds taken. X too far from orthogonal (‖F‖₁ ≥ ½) or not converging gives undefined.
at::Tensor polar_polish(const at::Tensor& x, PolarReport* report = nullptr);

// The polar factor of a wide M [N, C], N ≤ C: the N×C matrix U Vᵀ with orthonormal rows from the
// thin SVD M = U S Vᵀ (argmax tr(Bᵀ M) over B with B Bᵀ = I), float64. Computed as Mᵀ = Q R
// (Householder, 2N²C FLOPs) and polar_factor(Rᵀ)·Qᵀ, so the SVD or the Newton iteration runs on an
// N×N matrix. A rank-deficient M gets one of its maximizers, as polar_factor.
at::Tensor polar_factor_rows(const at::Tensor& m, PolarMethod method = PolarMethod::kNewton);

// argmax_R tr(Rᵀ M) over orthogonal R, i.e. argmin ‖X R − Y‖_F for M = Xᵀ Y: R = U Vᵀ from the SVD
// M = U S Vᵀ, computed by polar_factor. M is C×C; the result is float64.
at::Tensor procrustes(const at::Tensor& m, PolarMethod method = PolarMethod::kNewton);

// The nearest orthogonal matrix to `r` (its polar factor U Vᵀ), float64; `r` itself when it is
// orthogonal to 1e-13 already.
at::Tensor polar_project(const at::Tensor& r);

// The Riemannian gradient direction of f at R on O(C) as a skew matrix A = G Rᵀ − R Gᵀ, where
// G = ∂f/∂R (Euclidean). Moving along R(t) = cayley(−t A)·R decreases f for small t. Both this
// and cayley_retract also take batches [B, C, C], each matrix on its own.
at::Tensor skew_gradient(const at::Tensor& r, const at::Tensor& euclidean_grad);

// The Cayley retraction (I + t/2·A)⁻¹ (I − t/2·A) R of a skew A: orthogonal for any step t.
at::Tensor cayley_retract(const at::Tensor& r, const at::Tensor& skew, double t);

// The cosine learning-rate schedule lr·(1 + cos(π·step/steps))/2 (no warmup) that the rotation
// optimizers use (OptRot's Cayley SGD / Adam, SpinQuant).
double cosine_decay(double lr, int64_t step, int64_t steps);

// One step of SpinQuant's Cayley SGD (its SGDG optimizer: Stiefel, momentum 0) on an orthogonal
// P with Euclidean gradient G, all float64:
//   V = −Gᵀ,  Ŵ = V·P − ½·Pᵀ(P·V·P),  W = Ŵ − Ŵᵀ,  α = min(lr, 1/(‖W‖₁ + 1e-8)),
//   P ← ((I − αW/2)⁻¹ (I + αW/2) Pᵀ)ᵀ
// (‖·‖₁ the largest absolute column sum). The reference solves the Cayley system by five
// fixed-point iterations and re-orthonormalises (rows every step, a QR now and then); rotq solves
// it exactly, which is what the iteration converges to and keeps P orthogonal to rounding.
// `alpha` (optional) receives the step taken.
at::Tensor cayley_sgd_step(const at::Tensor& p, const at::Tensor& grad, double lr,
                           double* alpha = nullptr);

// Riemannian Adam on the orthogonal group as geoopt's RiemannianAdam does it on CanonicalStiefel
// (OSTQuant's optimizer), float64. Per step, with Euclidean gradient G at X:
//   g = G − X·Gᵀ·X                                 (the canonical Riemannian gradient)
//   m ← β1·m + (1 − β1)·g;  v ← β2·v + (1 − β2)·(‖g‖² − ½‖Xᵀg‖²)    (v: one scalar)
//   u = −lr·(m/(1 − β1ᵗ)) / (√(v/(1 − β2ᵗ)) + ε)
//   A = u·Xᵀ − X·uᵀ;  [X, m] ← (I − A/2)⁻¹ (I + A/2) [X, m]   (Cayley retraction, m transported)
//   every `stabilize` steps: X ← its polar factor, m ← m − X·mᵀ·X.
// (OptRot's "adam" (solvers/optrot.h) is rotq's own variant: elementwise moments of the skew
// direction in the Lie algebra. This one is geoopt's, for OSTQuant's protocol.)
struct RiemannianAdamState {
  at::Tensor m;      // first moment (tangent at X), float64
  double v = 0;      // second moment
  int64_t step = 0;  // steps taken
};
struct RiemannianAdamOptions {
  double lr = 0.01;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  int64_t stabilize = 10;  // 0: never
};
at::Tensor riemannian_adam_step(const at::Tensor& x, const at::Tensor& grad,
                                RiemannianAdamState& state, const RiemannianAdamOptions& o);

}  // namespace rotq
