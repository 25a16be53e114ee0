#include "runner/dist/placement.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "models/arch.h"
#include "solvers/error.h"

namespace rotq {

const Placement& Placement::replicated() {
  static const Placement p = [] {
    Placement r;
    r.kind = Kind::kReplicated;
    return r;
  }();
  return p;
}

int Placement::owner(int64_t layer) const {
  require(kind == Kind::kLayers, "placement: a replicated model has no layer owners");
  require(layer >= 0 && layer < n_layers, "placement: layer ", layer, " outside [0, ", n_layers,
          ")");
  const auto it = std::upper_bound(begin.begin(), begin.end(), layer);
  return static_cast<int>(it - begin.begin()) - 1;
}

// Bytes per stored weight: as asked, or the checkpoint's dtype (0).
int64_t storage_bytes(const ModelConfig& c, int64_t weight_bytes) {
  return weight_bytes > 0 ? weight_bytes : dtype_bytes(c.dtype);
}

int64_t layer_bytes(const ModelConfig& c, int64_t weight_bytes) {
  const ArchSpec& arch = arch_spec(c.architecture);
  int64_t n = c.dim * c.q_dim() + 2 * c.dim * c.kv_dim() + c.q_dim() * c.dim +
              3 * c.dim * c.hidden_dim + 2 * c.dim;
  if (arch.qkv_bias || c.qkv_bias) n += c.q_dim() + 2 * c.kv_dim();
  if (c.o_bias) n += c.dim;
  if (c.mlp_bias) n += 2 * c.hidden_dim + c.dim;
  if (arch.qk_norm) n += 2 * c.head_dim;
  return n * weight_bytes;
}

int64_t embed_bytes(const ModelConfig& c, int64_t weight_bytes) {
  return c.vocab_size * c.dim * weight_bytes;
}

int64_t head_bytes(const ModelConfig& c, int64_t weight_bytes) {
  // A tied head is read from the embedding into the last rank too: it is a separate copy there
  // unless the first and last rank are the same.
  return (c.vocab_size * c.dim + c.dim) * weight_bytes;
}

Placement place_layers(const ModelConfig& c, int ranks, int64_t weight_bytes) {
  const int64_t L = c.n_layers;
  require(ranks >= 1, "placement: ", ranks, " ranks, expected at least 1");
  require(ranks <= L, "placement: ", ranks, " ranks for a model of ", L,
          " layers: every rank needs at least one layer (use fewer ranks)");
  const double lb = static_cast<double>(layer_bytes(c, weight_bytes));
  const double eb = static_cast<double>(embed_bytes(c, weight_bytes));
  const double hb = static_cast<double>(head_bytes(c, weight_bytes));
  // cost(r, b, e): bytes of rank r owning layers [b, e).
  const auto cost = [&](int r, int64_t b, int64_t e) {
    double bytes = static_cast<double>(e - b) * lb;
    if (r == 0) bytes += eb;
    if (r == ranks - 1) bytes += hb;
    return bytes;
  };
  // best[r][e]: the smallest possible maximum over ranks 0..r-1 holding layers [0, e).
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<std::vector<double>> best(ranks + 1, std::vector<double>(L + 1, inf));
  std::vector<std::vector<int64_t>> cut(ranks + 1, std::vector<int64_t>(L + 1, 0));
  best[0][0] = 0;
  for (int r = 1; r <= ranks; ++r) {
    for (int64_t e = r; e <= L - (ranks - r); ++e) {
      for (int64_t b = r - 1; b < e; ++b) {
        if (best[r - 1][b] == inf) continue;
        const double m = std::max(best[r - 1][b], cost(r - 1, b, e));
        // Ties go to the later cut, which gives earlier ranks more layers: the first stage then
        // starts the pipeline with the longest run of work, the last (with lm_head) the shortest.
        if (m <= best[r][e]) {
          best[r][e] = m;
          cut[r][e] = b;
        }
      }
    }
  }
  Placement p;
  p.ranks = ranks;
  p.n_layers = L;
  p.begin.assign(ranks + 1, 0);
  p.begin[ranks] = L;
  for (int r = ranks; r >= 1; --r) p.begin[r - 1] = cut[r][p.begin[r]];
  return p;
}

std::vector<RankMemory> predict_memory(const ModelConfig& c, const Placement& p,
                                       const PlacementOptions& o) {
  const int64_t wb = storage_bytes(c, o.weight_bytes);
  const int64_t T = std::min(o.seqlen, c.max_seq_len);
  const double f32 = 4, f64 = 8;
  const double windows = static_cast<double>((o.nsamples + p.ranks - 1) / p.ranks);
  const double lb = static_cast<double>(layer_bytes(c, wb));
  // The widest linear input (down_proj's) and the most rows (gate/up's) bound GPTQ's buffers.
  const double widest = static_cast<double>(std::max({c.dim, c.q_dim(), c.hidden_dim}));
  std::vector<RankMemory> out;
  for (int r = 0; r < p.ranks; ++r) {
    RankMemory m;
    m.rank = r;
    m.layer_begin = p.layer_begin(r);
    m.layer_end = p.layer_end(r);
    m.embed = r == 0;
    m.head = r == p.last();
    m.shard = static_cast<double>(m.layer_end - m.layer_begin) * lb;
    if (m.embed) m.shard += static_cast<double>(embed_bytes(c, wb));
    if (m.head) m.shard += static_cast<double>(head_bytes(c, wb));
    // A non-owner holds the streamed layer in the compute dtype (float32 on CPU).
    m.streamed = p.ranks > 1 ? static_cast<double>(layer_bytes(c, 4)) : 0.0;
    m.activations = 2 * windows * T * c.dim * f32;
    const double b = static_cast<double>(o.calib_batch);
    const double mlp = b * T * 3.0 * c.hidden_dim * f32;
    const double attn = b * c.n_heads * static_cast<double>(T) * T * f32 * 2 +
                        b * T * (c.q_dim() + 2.0 * c.kv_dim()) * f32;
    m.forward = std::max(mlp, attn);
    const double rows = std::ceil(widest / p.ranks);
    m.gptq = 3 * widest * widest * f64 + 2 * rows * widest * f64;
    m.rotation = 6.0 * c.dim * c.dim * f64;
    m.peak = m.shard + m.streamed + m.activations + std::max({m.forward, m.gptq, m.rotation});
    out.push_back(m);
  }
  return out;
}

LayerTraffic layer_traffic(const ModelConfig& c, const PlacementOptions& o) {
  const int64_t wb = storage_bytes(c, o.weight_bytes);
  const int64_t T = std::min(o.seqlen, c.max_seq_len);
  LayerTraffic t;
  t.layer_broadcast = static_cast<double>(layer_bytes(c, wb));
  const auto sq = [](int64_t n) { return static_cast<double>(n) * static_cast<double>(n); };
  t.hessian_allreduce = 8.0 * (2 * sq(c.dim) + sq(c.q_dim()) + sq(c.hidden_dim));
  t.rows_allgather = static_cast<double>(layer_bytes(c, wb) - 2 * c.dim * wb);
  t.pipeline_send = 4.0 * static_cast<double>(T) * c.dim;
  t.rotation_allreduce = 8.0 * sq(c.dim);
  return t;
}

namespace {

// Weights of one layer's linears (the R1/R2 products touch exactly these).
double linear_params(const ModelConfig& c) {
  return static_cast<double>(c.dim) * (2.0 * c.q_dim() + 2.0 * c.kv_dim() + 3.0 * c.hidden_dim);
}

// Values autograd keeps per token for one layer (see the header): norms and residuals in C, q in
// q_dim, k and v in kv_dim, the MLP in F, each with its rotated / quantized / transformed copies.
double graph_values_per_token(const ModelConfig& c) {
  return 24.0 * c.dim + 9.0 * c.q_dim() + 12.0 * c.kv_dim() + 8.0 * c.hidden_dim;
}

}  // namespace

std::vector<TrainingMemory> predict_training_memory(const ModelConfig& c, const Placement& p,
                                                    const TrainingOptions& o) {
  const double wb = static_cast<double>(storage_bytes(c, o.weight_bytes));
  const double ab = o.act_bytes > 0 ? static_cast<double>(o.act_bytes) : wb;
  const double T = static_cast<double>(std::min(o.seqlen, c.max_seq_len));
  const double f32 = 4, f64 = 8;
  const double local = static_cast<double>(o.batch) / o.ranks;
  const double mb = static_cast<double>(std::min<int64_t>(o.micro_batch, o.batch / o.ranks));
  const double lp = linear_params(c), layer = static_cast<double>(layer_bytes(c, 1));
  const double embed = static_cast<double>(c.vocab_size) * c.dim * wb;
  const double widest = static_cast<double>(c.dim) * std::max(c.hidden_dim, c.q_dim());
  std::vector<TrainingMemory> out;
  for (int r = 0; r < o.ranks; ++r) {
    TrainingMemory m;
    m.rank = r;
    const bool owns_all = !o.sharded;
    const double shard_layers = owns_all ? c.n_layers : p.layer_end(r) - p.layer_begin(r);
    const bool has_embed = owns_all || r == 0, has_head = owns_all || r == p.last();
    const double weights = shard_layers * layer * wb + (has_embed ? embed : 0) +
                           (has_head ? static_cast<double>(head_bytes(c, wb)) : 0);
    m.resident = o.offload ? 0 : weights;
    m.host = o.offload ? weights : 0;
    // Offloaded or not, embedding and lm_head live whole on the device.
    m.globals = (o.offload || !has_embed ? embed : 0) + (o.offload || !has_head ? embed : 0);
    const bool copied = o.offload || o.sharded;
    const double widen = wb < f32 ? f32 : 0, narrow = ab < f32 ? ab : 0;
    const double rpo = static_cast<double>(c.kv_dim() + c.q_dim() + c.hidden_dim) * c.dim;
    m.streamed =
        (copied ? layer * wb : 0) + lp * (f32 + widen + narrow) + rpo * f32 + 2 * widest * f32;
    // + the backward's gradients (and the teacher's hidden states)
    m.layer_inputs = (c.n_layers + 2.0 + (o.ostquant ? 1 : 0)) * local * T * c.dim * ab;
    m.graph = 2 * mb * (T * graph_values_per_token(c) * ab + c.n_heads * T * T * ab);
    if (o.ostquant) {
      // Scaled copies of the linears (before and after the rotations, and down's differentiable
      // Hadamard), and per quantized site the clipped STE's mask and scale factor.
      const double sites = 2.0 * c.dim + c.q_dim() + c.hidden_dim + 2.0 * c.kv_dim();
      m.streamed += 3 * lp * f32;
      m.graph += 2 * mb * 2 * T * sites * f32;
    }
    m.head = std::min<double>(o.logit_rows, T - 1) * c.vocab_size * f32 * (o.ostquant ? 5 : 3);
    m.rotations = 10.0 * c.dim * c.dim * f64 + 2.0 * c.n_layers * c.head_dim * c.head_dim * f64;
    // Scalings with their gradients and Adam's two moments.
    if (o.ostquant) {
      m.rotations += 4.0 * c.n_layers * (2 * c.dim + 2 * c.kv_dim() + c.hidden_dim) * f64;
    }
    m.peak = m.resident + m.globals + m.streamed + m.layer_inputs + std::max(m.graph, m.head) +
             m.rotations;
    out.push_back(m);
  }
  return out;
}

TrainingTraffic training_traffic(const ModelConfig& c, const TrainingOptions& o) {
  const double wb = static_cast<double>(storage_bytes(c, o.weight_bytes));
  const double model_layers = static_cast<double>(c.n_layers) * layer_bytes(c, 1) * wb;
  TrainingTraffic t;
  if (o.sharded && o.ranks > 1) t.layer_streams = 2 * model_layers;
  if (o.offload) t.host_copies = 2 * model_layers;
  t.gradient_allreduce = 8.0 * (static_cast<double>(c.dim) * c.dim +
                                static_cast<double>(c.n_layers) * c.head_dim * c.head_dim);
  return t;
}

}  // namespace rotq
