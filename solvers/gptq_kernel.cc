#include "solvers/gptq_kernel.h"

#include <algorithm>
#include <cmath>

#include "solvers/parallel.h"

namespace rotq::detail {
namespace {

// Rows per tile: a 128-column block of them (128 KiB in float32) stays in a core's L2 cache.
constexpr int64_t kTileRows = 256;

template <typename T>
__attribute__((target_clones("avx512f", "avx2", "default"))) void quantize_tile_column(
    T* __restrict w, T* __restrict e, const T* __restrict s, const T* __restrict z, int64_t n, T d,
    bool symmetric, T minq, T maxq) {
  if (symmetric) {
    for (int64_t r = 0; r < n; ++r) {
      const T x = w[r];
      const T q = std::min(std::max(std::nearbyint(x / s[r]), minq), maxq) * s[r];
      e[r] = (x - q) / d;
      w[r] = q;
    }
  } else {
    for (int64_t r = 0; r < n; ++r) {
      const T x = w[r];
      const T q = (std::min(std::max(std::nearbyint(x / s[r]) + z[r], T(0)), maxq) - z[r]) * s[r];
      e[r] = (x - q) / d;
      w[r] = q;
    }
  }
}

// w −= e · u over a tile: the reference's rank-1 update (W1[:, i:] −= err1 ⊗ Hinv1[i, i:]).
template <typename T>
__attribute__((target_clones("avx512f", "avx2", "default"))) void axpy_tile(T* __restrict w,
                                                                            const T* __restrict e,
                                                                            T u, int64_t n) {
  for (int64_t r = 0; r < n; ++r) w[r] -= e[r] * u;
}

template <typename T>
void block_tile(const GptqBlock<T>& b, int64_t r0, int64_t n) {
  for (int64_t c = b.i1; c < b.i2; ++c) {
    const int64_t k = c - b.i1;
    T* wc = b.wt + c * b.ld + r0;
    T* ec = b.err + k * b.ld + r0;
    quantize_tile_column<T>(wc, ec, b.scale[k] + r0, b.zero[k] + r0, n, b.d[k], b.symmetric, b.minq,
                            b.maxq);
    const T* urow = b.u + c * b.u_ld;
    for (int64_t j = c + 1; j < b.i2; ++j) axpy_tile<T>(b.wt + j * b.ld + r0, ec, urow[j], n);
  }
}

template <typename T>
void run_block(const GptqBlock<T>& b) {
  const int64_t tiles = (b.ld + kTileRows - 1) / kTileRows;
  const auto body = ([&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t r0 = t * kTileRows;
      block_tile(b, r0, std::min(kTileRows, b.ld - r0));
    }
  });
  body(0, tiles);
}

}  // namespace

void gptq_block(const GptqBlock<float>& b) { run_block(b); }
void gptq_block(const GptqBlock<double>& b) { run_block(b); }

}  // namespace rotq::detail
