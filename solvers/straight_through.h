// Fake quantization that a gradient passes through (straight-through estimators), for rotations
// learned through the quantized network. The forward value is exactly the evaluation quantizer's
// (fake_quantize / rtn_quantize_weight), so a learned rotation is trained on the function it is
// later evaluated on.
//
//   identity   SpinQuant's STE: y = x + (q(x) − x) with the bracket detached, so ∂y/∂x = I
//              everywhere (clamped elements included) and no gradient reaches the scales.
//   clipped    OSTQuant's: the quantizer written as (clamp(round_ste(x/s) + z) − z)·s with the
//              row's scale s a function of the row's range (amin/amax, times the clip ratio) and
//              z = round(−lo/s) without a gradient. An element gets ∂y/∂x = 1 where it is not
//              clamped and 0 where it is; through s every element contributes
//              ∂y/∂s = (y − mask·x)/s to the row's extreme elements (LSQ's scale gradient), so a
//              learned scaling sees how it changes the quantization step.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

#include "solvers/quantizer.h"

namespace rotq {

enum class StraightThrough { kNone, kIdentity, kClipped };
const char* straight_through_name(StraightThrough s);

// fake_quantize(x, spec) in the forward; the gradient per `ste` (kNone: fake_quantize, no
// gradient through it). kClipped needs the activation convention (no spec.mse_clip).
at::Tensor fake_quantize_ste(const at::Tensor& x, const QuantSpec& spec, StraightThrough ste);

// rtn_quantize_weight(w, spec) in the forward, the identity in the backward (SpinQuant trains its
// weight quantizer this way, scales detached).
at::Tensor rtn_quantize_weight_ste(const at::Tensor& w, const QuantSpec& spec);

}  // namespace rotq
