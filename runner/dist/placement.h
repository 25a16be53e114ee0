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

// Rotations learned end to end (SpinQuant; runner/rotate/rotated_forward.h): data-parallel over
// the ranks, each layer run from a streamed copy with per-layer activation checkpointing. Per rank:
//
//   peak = resident + globals + streamed + layer inputs + max(layer graph, head) + rotations
//
//   resident      the weights the device keeps: its shard (sharded), the whole model
//                 (replicated), nothing (offload: the model waits in host memory)
//   globals       embedding and lm_head whole on every rank, where not already resident
//   streamed      the layer being run: a received copy (non-owners, offload) and its rotated
//                 form with the autograd graph (float32 products; the widened copy of narrower
//                 weights and the cast back), the R2/R4 copies of v, o and down, and the gradient
//                 of the largest linear
//   layer inputs  (layers + 2) × this rank's windows × T × C in the compute dtype (every layer's
//                 input, the last layer's output, the gradient flowing back)
//   layer graph   one micro-batch through one layer with its graph (the activations autograd
//                 saves, about 24·C + 9·q + 12·kv + 8·F values per token, and the attention
//                 probabilities heads × T²), doubled for the backward's gradients
//   head          one chunk of logit rows × vocab in float32: logits, log-softmax, gradient
//   rotations     R1 (parameter, gradient, the Cayley step's ~8 temporaries) and the R2s, float64
struct TrainingOptions {
  int ranks = 1;
  bool sharded = false;       // layers placed over the ranks (else each rank holds all)
  bool offload = false;       // the model in host memory, layers copied in when used
  int64_t weight_bytes = 0;   // storage; 0: the checkpoint's dtype
  int64_t act_bytes = 0;      // compute dtype of activations; 0: the weights'
  int64_t seqlen = 2048;      // clamped to the context
  int64_t batch = 8;          // windows per step, all ranks together
  int64_t micro_batch = 1;    // windows per forward/backward
  int64_t logit_rows = 4096;  // head rows per chunk
  // OSTQuant: the floating-point teacher's hidden states ride along with the layer inputs and each
  // head chunk also forms the teacher's logits (KL-Top); the scaled weight copies and the clipped
  // STE's saved tensors add to a layer's graph; the scalings carry Adam's moments.
  bool ostquant = false;
};

struct TrainingMemory {
  int rank = 0;
  double resident = 0, globals = 0, streamed = 0, layer_inputs = 0, graph = 0, head = 0,
         rotations = 0, host = 0;  // host: what offload keeps in host memory
  double peak = 0;                 // device bytes
};
std::vector<TrainingMemory> predict_training_memory(const ModelConfig& c, const Placement& p,
                                                    const TrainingOptions& o);

// Bytes a rank receives or sends per training step.
struct TrainingTraffic {
  double layer_streams = 0;       // sharded: every layer broadcast twice (forward, recompute)
  double host_copies = 0;         // offload: every layer copied to the device twice
  double gradient_allreduce = 0;  // ∇R1 and ∇R2s, float64
};
TrainingTraffic training_traffic(const ModelConfig& c, const TrainingOptions& o);

}  // namespace rotq
