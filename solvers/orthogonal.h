// Small tools on the orthogonal group O(C), all in float64: the orthogonal Procrustes solution,
// the polar projection back onto the group, and the Cayley retraction that rotation optimizers
// step with (Li, Chen & Yu, ICLR 2020; SpinQuant's Cayley SGD).
#pragma once

#include <ATen/core/Tensor.h>

namespace rotq {

// argmax_R tr(Rᵀ M) over orthogonal R, i.e. argmin ‖X R − Y‖_F for M = Xᵀ Y: R = U Vᵀ from the SVD
// M = U S Vᵀ. M is C×C; the result is float64.
at::Tensor procrustes(const at::Tensor& m);

// The nearest orthogonal matrix to `r` (its polar factor U Vᵀ), float64.
at::Tensor polar_project(const at::Tensor& r);

// The Riemannian gradient direction of f at R on O(C) as a skew matrix A = G Rᵀ − R Gᵀ, where
// G = ∂f/∂R (Euclidean). Moving along R(t) = cayley(−t A)·R decreases f for small t.
at::Tensor skew_gradient(const at::Tensor& r, const at::Tensor& euclidean_grad);

// The Cayley retraction (I + t/2·A)⁻¹ (I − t/2·A) R of a skew A: orthogonal for any step t.
at::Tensor cayley_retract(const at::Tensor& r, const at::Tensor& skew, double t);

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

}  // namespace rotq
