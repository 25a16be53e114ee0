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

}  // namespace rotq
