#include "solvers/mse_kernel.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "solvers/parallel.h"

namespace rotq::detail {
namespace {

// Lanes of the partial sums: one AVX-512 vector (two AVX2 ones); a fixed split, so a row's sum
// does not depend on the machine or the thread count.
constexpr int kLanes = 16;

inline float bits_to_float(int32_t i) {
  float f;
  std::memcpy(&f, &i, sizeof f);
  return f;
}

inline int32_t float_to_bits(float f) {
  int32_t i;
  std::memcpy(&i, &f, sizeof i);
  return i;
}

// a^2.4 for a >= 0, branch-free so that the loops calling it vectorize. With a = m·2^e
// (m ∈ [√½, √2)), a^2.4 = 2^k · exp(2.4·ln m + (r/5)·ln 2) where 12e = 5k + r, r ∈ {0..4}: the
// integer part of 2.4e goes to the exponent bits exactly, so the argument of exp stays below 1.5
// in magnitude and the result is within a few ulps for every a (a float ln a of large magnitude
// would lose ~|ln a| ulps). ln m from Cephes logf's polynomial, exp from Cephes expf's.
// Results below 2^-126 are 0, above 2^128 +inf.
inline float pow24(float a) {
  const int32_t bits = float_to_bits(a);
  float e = static_cast<float>(((bits >> 23) & 0xff) - 126);
  float m = bits_to_float((bits & 0x007fffff) | 0x3f000000);  // a = m·2^e, m ∈ [0.5, 1)
  const bool low = m < 0.707106781186547524f;
  e = low ? e - 1.0f : e;
  const float t = low ? m + m - 1.0f : m - 1.0f;
  const float z = t * t;
  float y = 7.0376836292E-2f;
  y = y * t - 1.1514610310E-1f;
  y = y * t + 1.1676998740E-1f;
  y = y * t - 1.2420140846E-1f;
  y = y * t + 1.4249322787E-1f;
  y = y * t - 1.6668057665E-1f;
  y = y * t + 2.0000714765E-1f;
  y = y * t - 2.4999993993E-1f;
  y = y * t + 3.3333331174E-1f;
  y = y * t * z;
  y += -0.5f * z;
  const float ln_m = t + y;

  // 12e = 5k + r (all exact in float: |12e| < 2000; the fractions of 12e/5 are multiples of 0.2).
  const float twelve_e = 12.0f * e;
  const float k = std::floor(twelve_e * 0.2f + 1e-3f);
  const float r = twelve_e - 5.0f * k;
  const float v = 2.4f * ln_m + r * 0.138629436111989061f;  // + (r/5)·ln 2
  const float n = std::floor(v * 1.44269504088896341f + 0.5f);
  float x = v - n * 0.693359375f;
  x = x - n * -2.12194440e-4f;
  const float x2 = x * x;
  float p = 1.9875691500E-4f;
  p = p * x + 1.3981999507E-3f;
  p = p * x + 8.3334519073E-3f;
  p = p * x + 4.1665795894E-2f;
  p = p * x + 1.6666665459E-1f;
  p = p * x + 5.0000001201E-1f;
  p = p * x2 + x + 1.0f;  // e^x, x ∈ [−ln2/2, ln2/2]
  // p·2^(k+n) as p·2^j1·2^j2 with each factor a normal float, so no step overflows early.
  const float kn = std::min(std::max(k + n, -300.0f), 300.0f);
  const float j1 = std::floor(kn * 0.5f), j2 = kn - j1;
  const float s1 =
      bits_to_float((static_cast<int32_t>(std::min(std::max(j1, -126.0f), 127.0f)) + 127) << 23);
  const float s2 =
      bits_to_float((static_cast<int32_t>(std::min(std::max(j2, -126.0f), 127.0f)) + 127) << 23);
  const float out = p * s1 * s2;
  // Bitwise | rather than ||: a short circuit is control flow, which stops the vectorizer.
  const bool tiny = (out < 1.17549435e-38f) | (a < 1.17549435e-38f);
  return tiny ? 0.0f : out;
}

// a^2.4 within a relative 1e-4 of pow24 (the tests check 2.5e-4 on every third mantissa at four
// exponents), at half its cost: a²·2^(0.4·log2 a), where the 0.4 shrinks the error of a degree-4
// log2 (8.8e-5 absolute on m ∈ [0.75, 1.5)) before a degree-3 2^f (7.5e-5 relative on [0, 1)). Zero
// where pow24 is, up to results at the edge of the normal range (survivors' slack).
inline float pow24_cheap(float a) {
  const int32_t bits = float_to_bits(a);
  float k = static_cast<float>(((bits >> 23) & 0xff) - 127);
  float m = bits_to_float((bits & 0x007fffff) | 0x3f800000);  // a = m·2^k, m ∈ [1, 2)
  const bool high = m >= 1.5f;
  m = high ? m * 0.5f : m;
  k = high ? k + 1.0f : k;
  const float t = m - 1.0f;
  float l = -0.2579460144042969f;
  l = l * t + 0.4974411725997925f;
  l = l * t - 0.7300876379013062f;
  l = l * t + 1.4425034523010254f;
  l = l * t + 8.656187856104225e-05f;
  const float y = 0.4f * (k + l);  // log2(a^0.4)
  const float n = std::floor(y);
  const float f = y - n;
  float p = 0.07802451401948929f;
  p = p * f + 0.2260671705007553f;
  p = p * f + 0.6958335638046265f;
  p = p * f + 0.9999251961708069f;
  const float two_n = bits_to_float((static_cast<int32_t>(n) + 127) << 23);
  const float out = a * a * p * two_n;
  // pow24's zero set: results below the normal range, or a below it.
  const bool tiny = (out < 1.17549435e-38f) | (a < 1.17549435e-38f);
  return tiny ? 0.0f : out;
}

// The quantizer in the reference's order: round(x / s), clamp (plus and minus the zero point when
// asymmetric), times s.
template <bool kSymmetric, typename T>
inline T dequantized(T x_over_s, T s, T zero, T minq, T maxq) {
  const T q = std::nearbyint(x_over_s);
  if (kSymmetric) return std::min(std::max(q, minq), maxq) * s;
  return (std::min(std::max(q + zero, T(0)), maxq) - zero) * s;
}

// One weight's |Q(x) − x|^2.4, cheap or exact.
template <bool kSymmetric, bool kCheap>
inline float error_term(float x, float s, float inv, float zero, float minq, float maxq) {
  const float e =
      std::fabs(dequantized<kSymmetric>(kCheap ? x * inv : x / s, s, zero, minq, maxq) - x);
  return kCheap ? pow24_cheap(e) : pow24(e);
}

// Elements between two looks at a row's running sum: a look reduces 16 lanes, ~4% of a chunk.
constexpr int64_t kChunk = 256;

// Adds the error terms of x[0, n) (n a multiple of kLanes) into the lane sums `part`.
//
// The cheap pass multiplies by 1/s in place of dividing by s (a division costs as much as the
// rest of the element here): the two differ by an ulp before rounding, so an element's level
// changes only when x/s is within an ulp of a half-integer, where both levels are as far from x
// and its error term moves by an ulp: well inside the pass's bound.
template <bool kSymmetric, bool kCheap>
__attribute__((target_clones("avx512f", "avx2", "default"))) void add_terms(
    const float* x, int64_t n, float s, float zero, float minq, float maxq, float* part) {
  const float inv = 1.0f / s;
  float acc[kLanes];
  std::memcpy(acc, part, sizeof acc);
  for (int64_t i = 0; i < n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      acc[l] += error_term<kSymmetric, kCheap>(x[i + l], s, inv, zero, minq, maxq);
    }
  }
  std::memcpy(part, acc, sizeof acc);
}

// The lanes in a fixed pairwise order, plus the tail.
float reduce_lanes(const float* part, float tail) {
  float t[kLanes];
  std::memcpy(t, part, sizeof t);
  for (int w = kLanes / 2; w >= 1; w /= 2) {
    for (int l = 0; l < w; ++l) t[l] += t[l + w];
  }
  return t[0] + tail;
}

// Σ |Q(x) − x|^2.4 over one row, or +inf as soon as the sum of a prefix exceeds `give_up`. The
// give-up never fires on a row whose whole sum is ≤ give_up: the terms are ≥ 0 and float addition
// rounds monotonically, so every lane's running sum is ≤ its final value, and the pairwise
// reduction is monotone in each lane. A row that completes has the same sum, bit for bit, as
// without the looks (same lanes, same order).
template <bool kSymmetric, bool kCheap>
float row_error(const float* x, int64_t n, float s, float zero, float minq, float maxq,
                float give_up = std::numeric_limits<float>::infinity()) {
  float part[kLanes] = {};
  const int64_t whole = n / kLanes * kLanes;
  for (int64_t c0 = 0; c0 < whole; c0 += kChunk) {
    const int64_t c1 = std::min(c0 + kChunk, whole);
    add_terms<kSymmetric, kCheap>(x + c0, c1 - c0, s, zero, minq, maxq, part);
    if (c1 < whole && reduce_lanes(part, 0.0f) > give_up) {
      return std::numeric_limits<float>::infinity();
    }
  }
  const float inv = 1.0f / s;
  float tail = 0;
  for (int64_t i = whole; i < n; ++i) {
    tail += error_term<kSymmetric, kCheap>(x[i], s, inv, zero, minq, maxq);
  }
  return reduce_lanes(part, tail);
}

// Relative bound on |cheap − exact| / exact of a row's error sum: pow24_cheap's 2.5e-4 per term
// plus float summation (≤ 256 terms per lane: 256·2^-24 each way), with margin.
constexpr float kCheapBound = 5e-4f;

template <typename T>
struct Candidate {
  T s, z;
};

// Grid point i of a row's range, in the row's type as the reference computes it.
template <typename T>
Candidate<T> candidate(T lo, T hi, int i, int grid, T maxq, bool symmetric) {
  const T p = static_cast<T>(1.0 - static_cast<double>(i) / grid);
  const T lo1 = p * lo, hi1 = p * hi;
  if (symmetric) return {hi1 / maxq, T(0)};
  const T s = (hi1 - lo1) / maxq;
  return {s, std::nearbyint(-lo1 / s)};
}

// Each row's first candidate of least exact error, found in two passes: every candidate's error
// from pow24_cheap, then the exact error only of those whose cheap error is within the bound of
// the least. That set holds the exact argmin i*: c(i*) ≤ (1+ε)·e(i*) ≤ (1+ε)·e(j) ≤
// (1+ε)/(1−ε)·c(j) for the cheap argmin j; and every earlier exact tie of i* is in it too, so
// the strict < in index order returns the same candidate as the full exact search.
//
// The cut: a candidate whose cheap error is above it cannot be the least. The absolute slack
// covers terms at the edge of the normal range, where one of the two powers may flush to 0 and
// the other not. Monotone in `least` (float rounding is), which the give-ups below rely on.
float prune_cut(float least, int64_t cols) {
  return least * ((1.0f + kCheapBound) / (1.0f - kCheapBound)) + static_cast<float>(cols) * 4e-38f;
}

// Which candidates can still be the least: those within the cut of the least cheap error (every
// candidate when that is not finite — NaN or overflowing weights — where no bound holds).
std::vector<char> survivors(const std::vector<float>& cheap, int64_t cols) {
  const float least = *std::min_element(cheap.begin(), cheap.end());
  std::vector<char> keep(cheap.size(), 1);
  if (!std::isfinite(least)) return keep;
  const float cut = prune_cut(least, cols);
  for (size_t i = 0; i < cheap.size(); ++i) keep[i] = cheap[i] <= cut;
  return keep;
}

// The cheap pass over every candidate, giving up on a candidate once its running sum is above
// the cut of the least finished one (+inf in `cheap` then). It visits the grid from `guess`
// outwards (the error is near unimodal in the shrink, so the least is found early and the far
// candidates give up after a few chunks). It changes no survivor: a candidate whose whole sum is
// within the final cut is within every earlier cut too (the least only falls, the cut is
// monotone), so it finishes with its exact sum; and so does the least candidate itself.
// Returns the index of the least.
template <bool kSymmetric, typename Cand>
int cheap_pass(const float* row, int64_t cols, int steps, int guess, float minq, float maxq,
               const Cand& cand, std::vector<float>& cheap) {
  float least = std::numeric_limits<float>::infinity();
  int arg = guess;
  for (int k = 0; k < 2 * steps; ++k) {
    // guess, guess + 1, guess − 1, guess + 2, ...
    const int i = guess + ((k & 1) ? (k + 1) / 2 : -(k / 2));
    if (i < 0 || i >= steps) continue;
    const float give_up =
        std::isfinite(least) ? prune_cut(least, cols) : std::numeric_limits<float>::infinity();
    const auto c = cand(i);
    cheap[i] = row_error<kSymmetric, true>(row, cols, c.s, c.z, minq, maxq, give_up);
    if (cheap[i] < least) {
      least = cheap[i];
      arg = i;
    }
  }
  return arg;
}

template <bool kSymmetric>
void search_rows(const float* x, int64_t r0, int64_t r1, int64_t cols, const float* lo,
                 const float* hi, float maxq, int steps, int grid, float* scale, float* zero) {
  const float minq = kSymmetric ? -(maxq + 1.0f) : 0.0f;
  std::vector<float> cheap(steps);
  int guess = steps / 4;  // then the previous row's least: neighbouring rows are alike
  for (int64_t r = r0; r < r1; ++r) {
    const float* row = x + r * cols;
    const auto cand = [&](int i) {
      return candidate<float>(lo[r], hi[r], i, grid, maxq, kSymmetric);
    };
    guess = cheap_pass<kSymmetric>(row, cols, steps, guess, minq, maxq, cand, cheap);
    const std::vector<char> keep = survivors(cheap, cols);
    float best = std::numeric_limits<float>::infinity();
    for (int i = 0; i < steps; ++i) {
      if (!keep[i]) continue;
      const auto c = cand(i);
      // Giving up above `best` loses nothing: such a candidate cannot pass the strict test.
      const float err = row_error<kSymmetric, false>(row, cols, c.s, c.z, minq, maxq, best);
      if (err < best) {  // strict, as the reference: the first of equals wins
        best = err;
        scale[r] = c.s;
        zero[r] = c.z;
      }
    }
  }
}

// float64 rows: the cheap pass on a float32 copy of the row with the float64 candidates rounded
// to float32 (rounding x and s moves each |e| by an ulp of x, inside the bound for rows whose
// errors are not all far below their values' ulps, where the slack takes over), then the
// surviving candidates exactly in float64 with std::pow.
void search_rows_f64(const double* x, int64_t r0, int64_t r1, int64_t cols, const double* lo,
                     const double* hi, bool symmetric, double maxq, int steps, int grid,
                     double* scale, double* zero) {
  const double minq = symmetric ? -(maxq + 1.0) : 0.0;
  std::vector<float> row32(cols), cheap(steps);
  std::vector<double> cs(steps), cz(steps);
  int guess = steps / 4;
  for (int64_t r = r0; r < r1; ++r) {
    const double* row = x + r * cols;
    for (int64_t c = 0; c < cols; ++c) row32[c] = static_cast<float>(row[c]);
    for (int i = 0; i < steps; ++i) {
      const auto c = candidate<double>(lo[r], hi[r], i, grid, maxq, symmetric);
      cs[i] = c.s;
      cz[i] = c.z;
    }
    const auto cand = [&](int i) {
      return Candidate<float>{static_cast<float>(cs[i]), static_cast<float>(cz[i])};
    };
    const float maxq32 = static_cast<float>(maxq);
    guess =
        symmetric
            ? cheap_pass<true>(row32.data(), cols, steps, guess, -(maxq32 + 1), maxq32, cand, cheap)
            : cheap_pass<false>(row32.data(), cols, steps, guess, 0.0f, maxq32, cand, cheap);
    const std::vector<char> keep = survivors(cheap, cols);
    double best = std::numeric_limits<double>::infinity();
    for (int i = 0; i < steps; ++i) {
      if (!keep[i]) continue;
      double err = 0;
      for (int64_t c = 0; c < cols; ++c) {
        const double xv = row[c];
        const double q = symmetric ? dequantized<true>(xv / cs[i], cs[i], cz[i], minq, maxq)
                                   : dequantized<false>(xv / cs[i], cs[i], cz[i], minq, maxq);
        err += std::pow(std::fabs(q - xv), 2.4);
        // Past `best` it cannot pass the strict test (a running sum of terms ≥ 0 only grows).
        if ((c + 1) % kChunk == 0 && err > best) break;
      }
      if (err < best) {
        best = err;
        scale[r] = cs[i];
        zero[r] = cz[i];
      }
    }
  }
}

}  // namespace

void mse_search_f64(const double* x, int64_t rows, int64_t cols, const double* lo, const double* hi,
                    bool symmetric, double maxq, int steps, int grid, double* scale, double* zero) {
  parallel_ranges(rows, [&](int64_t r0, int64_t r1) {
    search_rows_f64(x, r0, r1, cols, lo, hi, symmetric, maxq, steps, grid, scale, zero);
  });
}

void mse_search_f32_exhaustive(const float* x, int64_t rows, int64_t cols, const float* lo,
                               const float* hi, bool symmetric, float maxq, int steps, int grid,
                               float* scale, float* zero) {
  const float minq = symmetric ? -(maxq + 1.0f) : 0.0f;
  for (int64_t r = 0; r < rows; ++r) {
    float best = std::numeric_limits<float>::infinity();
    for (int i = 0; i < steps; ++i) {
      const auto c = candidate<float>(lo[r], hi[r], i, grid, maxq, symmetric);
      const float err = symmetric
                            ? row_error<true, false>(x + r * cols, cols, c.s, c.z, minq, maxq)
                            : row_error<false, false>(x + r * cols, cols, c.s, c.z, minq, maxq);
      if (err < best) {
        best = err;
        scale[r] = c.s;
        zero[r] = c.z;
      }
    }
  }
}

float pow_2_4(float a) { return pow24(std::fabs(a)); }
float pow_2_4_cheap(float a) { return pow24_cheap(std::fabs(a)); }

void mse_search_f32(const float* x, int64_t rows, int64_t cols, const float* lo, const float* hi,
                    bool symmetric, float maxq, int steps, int grid, float* scale, float* zero) {
  parallel_ranges(rows, [&](int64_t r0, int64_t r1) {
    if (symmetric) {
      search_rows<true>(x, r0, r1, cols, lo, hi, maxq, steps, grid, scale, zero);
    } else {
      search_rows<false>(x, r0, r1, cols, lo, hi, maxq, steps, grid, scale, zero);
    }
  });
}

}  // namespace rotq::detail
