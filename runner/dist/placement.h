// Where a model's weights live when it is sharded over ranks, and what each rank will need.
//
// Layers are split into contiguous ranges, one per rank, balanced by bytes (the embedding counts
// towards the first rank, the final norm and lm_head towards the last: they are where the
// pipeline starts and ends). The memory model predicts each rank's peak for the quantization
// pipeline (calibration + GPTQ + evaluation):
//
//   peak = shard + one streamed layer + calibration activations + max(forward, GPTQ, rotation)
//
//   shard        its layers (+ embedding / lm_head) in the storage dtype
//   streamed     the layer being calibrated, broadcast by its owner to every rank
//   activations  this rank's slice of the calibration windows, layer input and output, float32
//   forward      one calibration micro-batch through a layer: MLP intermediates and the attention
//                scores (batch × heads × T² floats: the forward materializes them)
//   GPTQ         the largest Hessian (float64) three times (H, its Cholesky factor, H⁻¹) plus
//                this rank's row slice of that linear in float64, twice (weights and errors)
//   rotation     DFRot/OptRot's C×C float64 matrices (R, gradient/Procrustes sum, SVD factors)
//
// Torch-free, so that `rotq plan` runs on a laptop from config.json alone.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "models/config.h"

namespace rotq {

struct PlacementOptions {
  int ranks = 1;
  int64_t weight_bytes = 0;  // bytes per stored weight; 0: the checkpoint's dtype
  int64_t nsamples = 128;    // calibration windows (GPTQ / OptRot+)
  int64_t seqlen = 2048;     // calibration window length (clamped to the model's context)
  int64_t calib_batch = 1;   // windows per calibration forward
};

struct RankMemory {
  int rank = 0;
  int64_t layer_begin = 0, layer_end = 0;  // layers [begin, end)
  bool embed = false, head = false;        // holds the embedding / final norm + lm_head
  double shard = 0, streamed = 0, activations = 0, forward = 0, gptq = 0, rotation = 0;
  double peak = 0;  // bytes
};

// How a model's layers are spread over the ranks: every rank holds them all (replicated: the ranks
// share the data) or each a contiguous range (layers: a pipeline). Every stage takes one
// `const Placement&`; a replicated model's is Placement::replicated(), never a null pointer.
struct Placement {
  enum class Kind { kReplicated, kLayers };
  Kind kind = Kind::kLayers;
  int ranks = 1;
  int64_t n_layers = 0;
  std::vector<int64_t> begin;  // kLayers: ranks + 1 boundaries; rank r owns [begin[r], begin[r+1])

  static const Placement& replicated();
  // Whether this rank holds only part of the model (a pipeline of two or more stages).
  bool sharded() const { return kind == Kind::kLayers && ranks > 1; }

  int owner(int64_t layer) const;  // rank holding `layer`
  int64_t layer_begin(int rank) const { return begin[rank]; }
  int64_t layer_end(int rank) const { return begin[rank + 1]; }
  int last() const { return ranks - 1; }
};

// Bytes of one decoder layer's weights (all its tensors) at `weight_bytes` per element.
int64_t layer_bytes(const ModelConfig& c, int64_t weight_bytes);
// Embedding, final norm + lm_head (the lm_head only when untied).
int64_t embed_bytes(const ModelConfig& c, int64_t weight_bytes);
int64_t head_bytes(const ModelConfig& c, int64_t weight_bytes);

// Contiguous ranges minimizing the largest rank's bytes (exact, by dynamic programming). Every
// rank gets at least one layer, so `ranks` may not exceed the layer count (rotq::Error).
Placement place_layers(const ModelConfig& c, int ranks, int64_t weight_bytes);

// The memory model above, per rank.
std::vector<RankMemory> predict_memory(const ModelConfig& c, const Placement& p,
                                       const PlacementOptions& o);

// Bytes moved per decoder layer by the distributed pipeline (what one rank sends into each
// collective; the wire volume of a ring is about 2(p-1)/p times that for all-reduce).
struct LayerTraffic {
  double layer_broadcast = 0;     // the owner streams the layer to every rank (storage dtype)
  double hessian_allreduce = 0;   // Σxxᵀ of the four GPTQ inputs, float64
  double rows_allgather = 0;      // quantized row slices back to every rank (storage dtype)
  double pipeline_send = 0;       // one window's activations to the next stage (float32)
  double rotation_allreduce = 0;  // DFRot/OptRot: one C×C float64 matrix per iteration
};
LayerTraffic layer_traffic(const ModelConfig& c, const PlacementOptions& o);

}  // namespace rotq
