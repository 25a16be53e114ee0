// Orthogonal rotations for the residual stream (R1) and the attention heads (R2), built in
// float64 from a seed, so that the same config and seed give the same matrices on every machine.
//
//   none      identity (no R1/R2; no online Hadamards unless asked)
//   random    Q of the QR of a Gaussian matrix, columns sign-fixed by diag(R) (Haar-distributed)
//   hadamard  QuaRot's randomized Hadamard diag(±1)·H/√n
//   file      matrices saved by an earlier run (see runner/rotation_io.h)
//   optrot    learned from the weights (solvers/optrot_model.h), started from `hadamard`
//   optrot+   OptRot with the calibration inputs' covariance (solvers/optrot_model.h)
//   dfrot     R1 learned from calibration activations (solvers/dfrot.h), from `hadamard`
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "solvers/dfrot.h"

namespace rotq {

enum class RotationKind { kNone, kRandom, kHadamard, kFile, kOptRot, kOptRotPlus, kDfrot };
const char* rotation_kind_name(RotationKind k);

struct RotationSpec {
  RotationKind kind = RotationKind::kNone;
  uint64_t seed = 0;
  std::string path;    // kFile: the rotations file
  bool r2 = true;      // per-head R2 on v/o (same kind as R1)
  bool online = true;  // R3 (q/k after RoPE) and R4 (down_proj input) online Hadamards
  // kOptRot: Cayley SGD steps, learning rate, per-matrix normalisation (none | fro4 | numel).
  int64_t optrot_steps = 1000;
  double optrot_lr = 0.02;
  std::string optrot_norm = "numel";
  std::string optrot_optimizer = "cayley";  // "cayley" (SGD) | "adam" (Riemannian Adam)
  bool optrot_cosine = true;                // cosine learning-rate decay
  std::string optrot_matrices = "q,k,v,o,gate,up,down";  // which matrices enter the objective
  // kDfrot: the solver's options, its start (hadamard | random | none), how many layers give
  // calibration tokens (0: all) and the calibration windows (1 × min(2048, context) by default).
  DfrotOptions dfrot;
  RotationKind dfrot_init = RotationKind::kHadamard;
  int64_t dfrot_layers = 0;
  int64_t dfrot_nsamples = 1;
  int64_t dfrot_seqlen = 0;

  bool learned() const {
    return kind == RotationKind::kOptRot || kind == RotationKind::kOptRotPlus ||
           kind == RotationKind::kDfrot;
  }

  // "none" | "random" | "hadamard" | "optrot" | "optrot+" | "dfrot" | "file:PATH"; throws
  // rotq::Error otherwise.
  static RotationSpec parse(const std::string& text);
  std::string describe() const;
};

// The rotations of one model: r1 [dim, dim], r2[l] [head_dim, head_dim] (undefined = identity),
// all kDouble and orthogonal.
struct Rotations {
  at::Tensor r1;
  std::vector<at::Tensor> r2;
  bool r3 = false;  // online head-wise Hadamard on q and k after RoPE
  bool r4 = false;  // Hadamard fused into down_proj's input side, applied online to its input
};

// A deterministic stream of seeds: the same (seed, stream) always gives the same value, and
// different streams are decorrelated (splitmix64).
uint64_t derive_seed(uint64_t seed, uint64_t stream);

// [rows, cols] standard normal draws in float64 from mt19937_64 + Box–Muller (portable, unlike
// std::normal_distribution whose algorithm is implementation-defined).
at::Tensor seeded_gaussian(int64_t rows, int64_t cols, uint64_t seed);

// Haar-random orthogonal n×n matrix (float64).
at::Tensor random_orthogonal(int64_t n, uint64_t seed);

// R1 and R2 for a model with the given sizes (kNone/kRandom/kHadamard; kFile is loaded by the
// runner). R1 uses stream 0 of the seed, R2 of layer l stream l + 1.
Rotations make_rotations(const RotationSpec& spec, int64_t dim, int64_t head_dim, int64_t n_layers);

// max |QᵀQ − I| in float64.
double orthogonality_error(const at::Tensor& q);

}  // namespace rotq
