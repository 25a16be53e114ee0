// Exact ±1 Hadamard matrices for every dimension the supported LLMs use, the fast orthonormal
// Hadamard transform that applies them online, and QuaRot's randomized Hadamard rotation.
//
// Every matrix here is H = sylvester(2^k) ⊗ H_m: a Sylvester matrix of order pow2 = 2^k
// Kronecker-multiplied (on the left) by an exact "core" Hadamard matrix H_m of order m,
// so n = pow2 * m and H[b*m + a][d*m + c] = (-1)^popcount(b & d) * H_m[a][c]. The core comes from
// a construction, never from a pasted matrix (solvers/hadamard.cc has the table):
//   m = 1                 the Sylvester part alone;
//   m = q + 1             Paley I, q ≡ 3 (mod 4) a prime power;
//   m = 2(q + 1)          Paley II, q ≡ 1 (mod 4) a prime power;
//   m = 4t                Williamson array of four symmetric circulant matrices of order t, for
//                         the t tabulated in the literature (23, 29, 39, 43);
//   m = a * b             Kronecker product of two core orders a, b (both multiples of 4).
// The factorisation of n tries every m with n/m a power of two and picks the smallest m that
// has a construction (the transform's dense part costs m multiply-adds per element, so the
// smallest m is the cheapest); among the constructions of one m the order above is the
// preference. Everything is deterministic: the same n always gives the same matrix.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace rotq {

struct HadamardPlan {
  int64_t n = 0;
  int64_t m = 0;     // order of the core matrix H_m
  int64_t pow2 = 0;  // order of the Sylvester factor; n = m * pow2
  // The Kronecker product as built, e.g. "sylvester(2^6) x williamson(t=43)"; "sylvester(2^12)"
  // when m = 1, "paley1(q=43)" when pow2 = 1.
  std::string construction;
};

// Whether a construction of order n is available (false for n <= 0).
bool hadamard_exists(int64_t n);

// The factorisation hadamard_matrix(n) uses. Throws rotq::Error naming n when there is none.
HadamardPlan hadamard_plan(int64_t n);

// Every admissible factorisation of n (each m with n/m a power of two and a construction for m),
// smallest m first; hadamard_plan(n) is the first. Empty when there is none.
std::vector<HadamardPlan> hadamard_plans(int64_t n);

// The core matrix H_m of order m (kDouble, entries ±1), built by the first construction in the
// preference order above; hadamard_matrix(n) is sylvester(pow2) ⊗ hadamard_core(m) for its plan.
// Cached. Throws rotq::Error naming m when m is a power of two > 1 (that is the Sylvester part) or
// has no construction.
at::Tensor hadamard_core(int64_t m);

// The ±1 matrix H of order n (kDouble), H·Hᵀ = n·I exactly.
at::Tensor hadamard_matrix(int64_t n);

// x · Hᵀ / sqrt(n) along the last dimension (size n): orthonormal, same dtype and shape as x.
// float32 and float64 compute in their own type; bfloat16 and float16 compute in float32 and are
// rounded back. Any leading dims; non-contiguous input is copied once. Cost per element: m
// multiply-adds (one GEMM with H_mᵀ) plus log2(pow2) butterfly stages. Differentiable: for an x
// that requires a gradient (grad mode on) it is computed from ATen GEMMs that autograd records.
at::Tensor hadamard_transform(const at::Tensor& x);

// Same as hadamard_transform, written into `out` (contiguous, x's shape and dtype, not
// overlapping x), so hot loops can reuse one buffer.
void hadamard_transform_out(at::Tensor& out, const at::Tensor& x);

// x · Hᵀ without the 1/sqrt(n): exact for integer-valued float64 input (|entries| * n < 2^53).
at::Tensor hadamard_transform_unnormalized(const at::Tensor& x);

// The ±1 signs s (kDouble, length n) of random_hadamard_matrix(n, seed): s_i is the top bit of the
// i-th draw of std::mt19937_64(seed) (1 → -1), a sequence the C++ standard fixes, so it is the
// same on every machine and library.
at::Tensor random_hadamard_signs(int64_t n, uint64_t seed);

// QuaRot's randomized Hadamard rotation Q = diag(s) · H / sqrt(n) (kDouble, orthonormal), with s =
// random_hadamard_signs(n, seed). Built from the Kronecker structure (no dense products). For the
// online form: x · Qᵀ = hadamard_transform(x) * s, and x · Q = (x * s) · H / sqrt(n).
at::Tensor random_hadamard_matrix(int64_t n, uint64_t seed);

// The individual constructions, exposed for tests (they do not cache).
namespace hadamard_detail {
at::Tensor paley1(int64_t q);      // order q + 1, q ≡ 3 (mod 4) a prime power
at::Tensor paley2(int64_t q);      // order 2(q + 1), q ≡ 1 (mod 4) a prime power
at::Tensor williamson(int64_t t);  // order 4t, t one of the tabulated orders
at::Tensor sylvester(int64_t pow2);
// Quadratic character of GF(q) for each element (index = base-p digits of its coefficients over a
// primitive polynomial): 0 at 0, +1 on squares, -1 elsewhere.
std::vector<int> quadratic_character(int64_t q);
}  // namespace hadamard_detail

}  // namespace rotq
