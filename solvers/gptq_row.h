// One row of W through GPTQ's in-block column loop, for the CUDA kernel (one thread per row) and
// for the host test that checks it against the host kernel (detail::gptq_block). The operations
// per element, their order and type are the host kernel's: q = dequant(quant(w)), e = (w − q)/d,
// then w[j] −= e · U[c, j] for the block's later columns j.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define ROTQ_HOST_DEVICE __host__ __device__
#else
#define ROTQ_HOST_DEVICE
#endif

namespace rotq::detail {

// What every row of a block shares.
template <typename T>
struct GptqRowShared {
  int64_t count = 0;     // columns in the block
  const T* u = nullptr;  // U[i1, i1]: the block's corner of H⁻¹'s upper factor, row stride u_ld
  int64_t u_ld = 0;
  const T* d = nullptr;  // [count]: U[c, c] per column
  bool symmetric = true;
  T minq = 0, maxq = 0;
};

// Round half to even, as std::nearbyint in the default rounding mode (the host kernel's).
ROTQ_HOST_DEVICE inline float round_half_even(float x) { return rintf(x); }
ROTQ_HOST_DEVICE inline double round_half_even(double x) { return rint(x); }

template <typename T>
ROTQ_HOST_DEVICE inline T clamp_level(T v, T lo, T hi) {
  // std::min(std::max(v, lo), hi) as the host kernel writes it.
  const T m = v < lo ? lo : v;
  return hi < m ? hi : m;
}

// Column k of the block for this row is w[k·ws]; its error goes to e[k·es]; its quantizer params
// are s[k·ps], z[k·ps] (ps = 0 when the block's columns share them).
template <typename T>
ROTQ_HOST_DEVICE inline void gptq_row(T* w, int64_t ws, T* e, int64_t es, const T* s, const T* z,
                                      int64_t ps, const GptqRowShared<T>& b) {
  for (int64_t k = 0; k < b.count; ++k) {
    const T x = w[k * ws], sk = s[k * ps];
    T q;
    if (b.symmetric) {
      q = clamp_level(round_half_even(x / sk), b.minq, b.maxq) * sk;
    } else {
      const T zk = z[k * ps];
      q = (clamp_level(round_half_even(x / sk) + zk, T(0), b.maxq) - zk) * sk;
    }
    const T err = (x - q) / b.d[k];
    e[k * es] = err;
    w[k * ws] = q;
    const T* urow = b.u + k * b.u_ld;
    for (int64_t j = k + 1; j < b.count; ++j) w[j * ws] -= err * urow[j];
  }
}

}  // namespace rotq::detail
