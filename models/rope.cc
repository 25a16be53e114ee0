#include "models/rope.h"

#include <ATen/ATen.h>

#include <cmath>

#include "solvers/error.h"

namespace rotq {

at::Tensor rope_inv_freq(const ModelConfig& cfg) {
  const int64_t half = cfg.head_dim / 2;
  at::Tensor inv = at::empty({half}, at::kDouble);
  double* f = inv.data_ptr<double>();
  const RopeScaling& rs = cfg.rope_scaling;
  for (int64_t i = 0; i < half; ++i) {
    double freq = std::pow(cfg.rope_theta, -2.0 * static_cast<double>(i) / cfg.head_dim);
    if (rs.type == "linear") {
      freq /= rs.factor;
    } else if (rs.type == "llama3") {
      // Long wavelengths are slowed by `factor`, short ones kept, the band between blended.
      const double old_ctx = static_cast<double>(rs.original_max_position);
      const double low_wavelen = old_ctx / rs.low_freq_factor;
      const double high_wavelen = old_ctx / rs.high_freq_factor;
      const double wavelen = 2.0 * M_PI / freq;
      if (wavelen > low_wavelen) {
        freq /= rs.factor;
      } else if (wavelen >= high_wavelen) {
        const double smooth =
            (old_ctx / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
        freq = (1.0 - smooth) * freq / rs.factor + smooth * freq;
      }
    }
    f[i] = freq;
  }
  return inv;
}

RopeCache make_rope_cache(const ModelConfig& cfg, int64_t max_pos, at::ScalarType dtype) {
  at::Tensor pos = at::arange(max_pos, at::kDouble);
  at::Tensor angles = at::outer(pos, rope_inv_freq(cfg));
  return RopeCache{at::cos(angles).to(dtype), at::sin(angles).to(dtype)};
}

at::Tensor apply_rope(const at::Tensor& x, const RopeCache& rope, int64_t pos0) {
  const int64_t T = x.size(-2);
  const int64_t half = x.size(-1) / 2;
  require(pos0 + T <= rope.max_pos(), "RoPE: positions up to ", pos0 + T, " exceed the cache of ",
          rope.max_pos());
  at::Tensor cos = rope.cos.narrow(0, pos0, T);
  at::Tensor sin = rope.sin.narrow(0, pos0, T);
  at::Tensor x1 = x.narrow(-1, 0, half);
  at::Tensor x2 = x.narrow(-1, half, half);
  return at::cat({x1 * cos - x2 * sin, x2 * cos + x1 * sin}, -1);
}

}  // namespace rotq
