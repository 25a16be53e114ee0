// Fake (simulated) integer quantization, with QuaRot's conventions so that rotq's numbers are
// comparable with the papers':
//  - symmetric: maxq = 2^(bits-1) - 1, scale = max|x| / maxq, q in [-(maxq+1), maxq];
//  - asymmetric: maxq = 2^bits - 1, scale = (xmax - xmin) / maxq, zero = round(-xmin / scale),
//    q = clamp(round(x / scale) + zero, 0, maxq), dequantized as scale * (q - zero).
// Two range conventions exist in the reference and both are kept:
//  - activations / KV cache (QuaRot's ActQuantizer, `fake_quantize`): per row the range is widened
//    to include 0; per group it is the group's raw [min, max]; both scaled by clip_ratio; an
//    all-zero row or group gets scale 1 (sym) or the range [-1, 1] (asym);
//  - weights (GPTQ's / QuaRot's WeightQuantizer, `find_quant_params`, `rtn_quantize_weight`,
//    GPTQ): the range always includes 0, the scale is at least 1e-5 / maxq, and the MSE clip
//    search may shrink it.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <string>

namespace rotq {

struct QuantSpec {
  int bits = 16;  // >= 16: not quantized (the hook is a no-op)
  bool symmetric = true;
  int64_t group = 0;        // 0: one scale per row; g > 0: groups of g consecutive last-dim columns
  double clip_ratio = 1.0;  // scales the row/group min and max (QuaRot's a/k/v_clip_ratio)
  bool mse_clip = false;    // weights: GPTQ's MSE clipping search
  bool enabled() const { return bits < 16; }
  std::string describe() const;  // e.g. "int4 sym g128 clip0.90 mse"; "none" when not enabled
};

// Throws rotq::Error naming `what` unless bits in [1, 16] (symmetric needs >= 2: its grid has
// 2^(bits-1) - 1 positive levels), group >= 0 and clip_ratio in (0, 1].
void validate(const QuantSpec& spec, const std::string& what);

// Activation/KV convention (see above), along the last dim; all leading dims are rows. Returns the
// dequantized tensor in x's dtype and shape, computed in float32 (float64 for float64 input).
// With spec.mse_clip the weight convention is used instead (rtn_quantize_weight on the rows).
at::Tensor fake_quantize(const at::Tensor& x, const QuantSpec& spec);

// Weight convention: one (scale, zero) per row of a 2-D matrix, in float32 (float64 for float64
// input), shapes [rows, 1]; zero is 0 when symmetric. spec.group is not used here: GPTQ and
// rtn_quantize_weight pass one group's columns (or groups reshaped into rows).
struct QuantParams {
  at::Tensor scale;
  at::Tensor zero;
};
QuantParams find_quant_params(const at::Tensor& w2d, const QuantSpec& spec);

// Quantizes then dequantizes every column of w2d [rows, cols] with the per-row params p; returns
// w2d's dtype.
at::Tensor quantize_dequantize(const at::Tensor& w2d, const QuantParams& p, const QuantSpec& spec);

// Round-to-nearest of a weight [out, in] with the weight convention: per output channel, or per
// group of spec.group input columns; MSE clip search when spec.mse_clip. Returns w's dtype.
at::Tensor rtn_quantize_weight(const at::Tensor& w, const QuantSpec& spec);

namespace detail {
// The integer grid of a spec: q in [minq, maxq] (QuaRot's convention, see above).
double max_level(const QuantSpec& spec);
double min_level(const QuantSpec& spec);
// out = dequantize(quantize(x)) with scale/zero broadcast against x; out may not alias x. Used in
// GPTQ's column loop, so it allocates nothing.
void quant_dequant_out(at::Tensor& out, const at::Tensor& x, const at::Tensor& scale,
                       const at::Tensor& zero, const QuantSpec& spec);
// float32 for bf16/f16/f32, float64 for float64; rotq::Error naming `what` for other dtypes.
at::ScalarType compute_dtype(const at::Tensor& x, const std::string& what);
}  // namespace detail

}  // namespace rotq
