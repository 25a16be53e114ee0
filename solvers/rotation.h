// Orthogonal rotations for the residual stream (R1) and the attention heads (R2), built in
// float64 from a seed, so that the same config and seed give the same matrices on every machine.
//
//   none      identity (no R1/R2)
//   random    Q of the QR of a Gaussian matrix, columns sign-fixed by diag(R) (Haar-distributed)
//   hadamard  QuaRot's randomized Hadamard diag(±1)·H/√n
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace rotq {

// The rotations built from a seed alone (the learned ones and rotation files are the runner's
// methods, runner/rotate/rotation_methods.h, which start from these).
enum class FixedRotation { kNone, kRandom, kHadamard };
const char* fixed_rotation_name(FixedRotation k);
// "none" | "random" | "hadamard"; rotq::Error otherwise.
FixedRotation parse_fixed_rotation(const std::string& name);

struct FixedRotationSpec {
  FixedRotation kind = FixedRotation::kNone;
  uint64_t seed = 0;
  bool r2 = true;      // per-head R2 on v/o (same kind as R1)
  bool online = true;  // R3 (q/k after RoPE) and R4 (down_proj input) online Hadamards
};

// One layer's learned channel scalings (OSTQuant's equivalent-transformation pairs), float64 and
// positive, undefined = none. Each divides an activation channel and multiplies the weights that
// consume it, so the floating-point function is unchanged (runner/fuse/scalings.h).
struct ChannelScalings {
  at::Tensor attn;  // [dim]: the attention norm's output in the R1 basis; q/k/v columns
  at::Tensor ffn;   // [dim]: the MLP norm's output in the R1 basis; gate/up columns
  at::Tensor qk;    // [kv_heads, head_dim/2] ([1, ·] with q/k norms): q ÷, k × per rotary pair
  at::Tensor ov;    // [kv_heads·head_dim]: v's output ÷, o's input ×
  at::Tensor up_down;  // [hidden_dim]: up's output ÷, down's input ×
};

// The rotations of one model: r1 [dim, dim], r2[l] [head_dim, head_dim] (undefined = identity),
// all kDouble and orthogonal, and optionally every layer's channel scalings.
struct Rotations {
  at::Tensor r1;
  std::vector<at::Tensor> r2;
  bool r3 = false;  // online head-wise Hadamard on q and k after RoPE
  bool r4 = false;  // Hadamard fused into down_proj's input side, applied online to its input
  std::vector<ChannelScalings> scales;  // per layer of the full model; empty: none
};

// A deterministic stream of seeds: the same (seed, stream) always gives the same value, and
// different streams are decorrelated (splitmix64).
uint64_t derive_seed(uint64_t seed, uint64_t stream);

// [rows, cols] standard normal draws in float64 from mt19937_64 + Box–Muller (portable, unlike
// std::normal_distribution whose algorithm is implementation-defined).
at::Tensor seeded_gaussian(int64_t rows, int64_t cols, uint64_t seed);

// Haar-random orthogonal n×n matrix (float64).
at::Tensor random_orthogonal(int64_t n, uint64_t seed);

// R1 and R2 for a model with the given sizes. R1 uses stream 0 of the seed, R2 of layer l stream
// l + 1.
Rotations make_rotations(const FixedRotationSpec& spec, int64_t dim, int64_t head_dim,
                         int64_t n_layers);

// max |QᵀQ − I| in float64.
double orthogonality_error(const at::Tensor& q);

}  // namespace rotq
