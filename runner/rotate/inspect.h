// Diagnostics that explain the rotation methods (`rotq inspect`): where the large activations are,
// which tokens are massive, how per-token 4-bit quantization treats each token under different
// rotations (the DFRot paper's Figures 2-4), and how heavy-tailed the weights are before and after
// a rotation. Each table is written as CSV; scripts/plot_inspect.py draws the PNGs.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "models/weights.h"

namespace rotq {

// Kurtosis E[(w−μ)⁴]/σ⁴ (3 for a Gaussian) and incoherence max|W|·√(mn)/‖W‖_F (≈√(2 ln mn) for
// a Gaussian; large when a few entries dominate) of a matrix.
struct MatrixStats {
  double kurtosis = 0;
  double incoherence = 0;
};
MatrixStats matrix_stats(const at::Tensor& w);

// The matrix as R1 sees it after fusion: readers (q/k/v/gate/up) W·R, writers (o/down) Rᵀ·W;
// `r` undefined leaves it as it is.
at::Tensor rotated_by_r1(const at::Tensor& w, LayerTensor t, const at::Tensor& r);

// Per-row relative error ‖x − Q(x)‖/‖x‖ of x [N, C] rotated by r (undefined: none), with Q the
// per-token `bits`-bit quantizer (symmetric as the DFRot reference's rule).
at::Tensor relative_token_error(const at::Tensor& x, const at::Tensor& r, int bits = 4,
                                bool symmetric = true);

// Writes `header` and `rows` as a CSV file (values quoted where they contain a comma or quote).
void write_csv(const std::string& path, const std::vector<std::string>& header,
               const std::vector<std::vector<std::string>>& rows);

}  // namespace rotq
