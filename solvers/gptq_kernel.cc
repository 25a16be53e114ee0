#include "solvers/gptq_kernel.h"

#include <algorithm>
#include <cmath>

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

// Serial on purpose: between the block GEMMs OpenBLAS's threads spin, and a threaded loop here
// measured 3× slower (and slowed the GEMMs that followed); the tiles keep it in cache instead.
template <typename T>
void run_block(const GptqBlock<T>& b) {
  for (int64_t r0 = 0; r0 < b.ld; r0 += kTileRows)
    block_tile(b, r0, std::min(kTileRows, b.ld - r0));
}

}  // namespace

void gptq_block(const GptqBlock<float>& b) { run_block(b); }
void gptq_block(const GptqBlock<double>& b) { run_block(b); }

}  // namespace rotq::detail
