// Folding RMSNorm scales and rotations into a model's weights, so that the rotated model computes
// the same function (up to rounding) with outlier-free weights and activations.
//
// With x' = x·R1 on the residual stream, RMSNorm without a scale commutes with R1, so every
// reader W (q, k, v, gate, up, lm_head: y = h·Wᵀ) becomes W·R1 and every writer (o, down) R1ᵀ·W;
// the embedding becomes E·R1. R2 rotates each value head: Wv's rows per head by R2ᵀ, Wo's columns
// per head by R2 (one R2 per layer, shared by all heads, so GQA groups stay consistent). R4 puts
// an orthonormal Hadamard Q on down_proj's input: Wd := Wd·Qᵀ here, and x := x·Qᵀ online.
// All arithmetic is float64; results are stored back in each tensor's dtype.
#pragma once

#include "models/weights.h"
#include "solvers/rotation.h"

namespace rotq {

// Folds every RMSNorm scale into the linears that read the normalized tensor (attn norm into
// q/k/v, ffn norm into gate/up, final norm into lm_head) and sets the scales to one. A tied
// lm_head is untied (it now differs from the embedding); config.tie_embeddings becomes false.
// Qwen3's per-head q/k norms act after the projections and are left alone.
void fuse_norms(Model& model);

// Whether fuse_norms has been applied (every residual-stream norm scale is exactly one).
bool norms_are_fused(const Model& model);

// Applies R1, R2 and R4 (as described above) to a norm-fused model and records the online
// transforms the forward pass must now apply (config.online_hadamard_down for R4,
// config.online_hadamard_qk for R3, which is purely online).
void fuse_rotations(Model& model, const Rotations& rot);

// R2 on one layer's weights (differentiable ATen ops in r2's dtype): the rows of w [heads·d, in]
// per head, block := R2ᵀ·block (v_proj), and the columns of w [out, heads·d] per head,
// block := block·R2 (o_proj).
at::Tensor rotate_head_rows(const at::Tensor& w, const at::Tensor& r2);
at::Tensor rotate_head_columns(const at::Tensor& w, const at::Tensor& r2);

}  // namespace rotq
