#include "models/transformer.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "solvers/error.h"
#include "solvers/hadamard.h"

namespace rotq {
namespace {

// Attention scores are formed for blocks of query rows so that [B, H, Tq, T] stays bounded.
constexpr int64_t kMaxScoreElements = int64_t{1} << 26;  // 256 MiB of float32
// Logit rows per chunk are chosen so a chunk's [rows, vocab] stays near this size.
constexpr int64_t kMaxLogitElements = int64_t{1} << 24;

at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  return b.defined() ? at::linear(x, w, b) : at::matmul(x, w.t());
}

// The MLP's gate activation (transformers' ACT2FN; swish is silu, gelu_new is the tanh form).
at::Tensor activation(const std::string& name, const at::Tensor& x) {
  if (name == "silu" || name == "swish") return at::silu(x);
  if (name == "gelu") return at::gelu(x, "none");
  if (name == "gelu_pytorch_tanh" || name == "gelu_new") return at::gelu(x, "tanh");
  if (name == "relu") return at::relu(x);
  fail("hidden_act '", name, "' is not computed by rotq");
}

bool any_requires_grad(const LayerWeights& w) {
  for (const at::Tensor& t : w.tensors) {
    if (t.defined() && t.requires_grad()) return true;
  }
  return false;
}

// Runs the hooks at a site; true when the forward ends there.
bool hook(ForwardHooks* hooks, Site s, int64_t layer, at::Tensor& x) {
  if (!hooks) return false;
  hooks->at_site(s, layer, x);
  return hooks->ends_after(s, layer);
}

// Causal attention with grouped query heads: q [B, KVH, G, T, d], k/v [B, KVH, 1, T, d].
at::Tensor causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  const int64_t T = q.size(3);
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(4)));
  const int64_t rows_per_query = q.size(0) * q.size(1) * q.size(2) * T;
  const int64_t block = std::max<int64_t>(
      1, std::min<int64_t>(T, kMaxScoreElements / std::max<int64_t>(1, rows_per_query)));
  at::Tensor kt = k.transpose(-1, -2);
  if (block >= T) {
    at::Tensor scores = at::matmul(q, kt).mul_(scale);
    at::Tensor mask = at::ones({T, T}, scores.options().dtype(at::kBool)).triu_(1);
    scores.masked_fill_(mask, -std::numeric_limits<double>::infinity());
    return at::matmul(at::softmax(scores, -1), v);
  }
  std::vector<at::Tensor> outs;
  for (int64_t q0 = 0; q0 < T; q0 += block) {
    const int64_t q1 = std::min(T, q0 + block);
    // Queries [q0, q1) attend to keys [0, q1).
    at::Tensor scores = at::matmul(q.narrow(3, q0, q1 - q0), kt.narrow(-1, 0, q1)).mul_(scale);
    at::Tensor mask = at::ones({q1 - q0, q1}, scores.options().dtype(at::kBool)).triu_(q0 + 1);
    scores.masked_fill_(mask, -std::numeric_limits<double>::infinity());
    outs.push_back(at::matmul(at::softmax(scores, -1), v.narrow(3, 0, q1)));
  }
  return at::cat(outs, 3);
}

}  // namespace

const char* site_name(Site s) {
  switch (s) {
    case Site::kAttnIn:
      return "attn_in";
    case Site::kQ:
      return "q";
    case Site::kKCache:
      return "k_cache";
    case Site::kVCache:
      return "v_cache";
    case Site::kOProjIn:
      return "o_proj_in";
    case Site::kMlpIn:
      return "mlp_in";
    case Site::kDownIn:
      return "down_in";
  }
  return "?";
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  // Reduced precision inputs are normalized in float32, as HF does.
  const bool upcast = x.scalar_type() == at::kBFloat16 || x.scalar_type() == at::kHalf;
  at::Tensor xf = upcast ? x.to(at::kFloat) : x;
  at::Tensor inv = at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps);
  at::Tensor y = xf * inv;
  if (upcast) y = y.to(x.scalar_type());
  return weight.defined() ? y * weight : y;
}

Transformer::Transformer(const Model& model) : model_(model) {}

const RopeCache& Transformer::rope(int64_t T) const {
  if (rope_.max_pos() < T) {
    // A pipeline shard past the first stage has no embedding: its layers give the dtype.
    const at::ScalarType dt = model_.weights.embed.defined()
                                  ? model_.weights.embed.scalar_type()
                                  : model_.weights.layers.at(0)[LayerTensor::kWq].scalar_type();
    // Sized by what is asked (at least the usual context), never by the config alone: a config's
    // max_position_embeddings may be millions of positions no input uses.
    const int64_t usual = std::min<int64_t>(model_.config.max_seq_len, 8192);
    rope_ = make_rope_cache(model_.config, std::max(T, usual), dt);
    const at::Device device = model_device(model_);
    rope_.cos = rope_.cos.to(device);
    rope_.sin = rope_.sin.to(device);
  }
  return rope_;
}

at::Tensor Transformer::embed(const at::Tensor& tokens) const {
  require(tokens.dim() == 2, "forward: tokens must be [batch, seq]");
  const int64_t V = model_.config.vocab_size;
  if (tokens.numel() > 0) {
    const int64_t lo = tokens.min().item<int64_t>(), hi = tokens.max().item<int64_t>();
    require(lo >= 0 && hi < V, "forward: token id ", lo < 0 ? lo : hi,
            " outside the vocabulary [0, ", V, ")");
  }
  return at::embedding(model_.weights.embed, tokens.to(model_.weights.embed.device()));
}

at::Tensor Transformer::layer_forward(const at::Tensor& x_in, int64_t layer,
                                      ForwardHooks* hooks) const {
  return layer_forward(x_in, model_.weights.layers.at(layer), layer + model_.layer_offset, hooks);
}

at::Tensor Transformer::layer_forward(const at::Tensor& x_in, const LayerWeights& w, int64_t li,
                                      ForwardHooks* hooks) const {
  at::Tensor x = attention_block(x_in, w, li, hooks);
  return x.defined() ? mlp_block(x, w, li, hooks) : x;
}

at::Tensor Transformer::attention_block(const at::Tensor& x_in, const LayerWeights& w, int64_t li,
                                        ForwardHooks* hooks) const {
  const ModelConfig& c = model_.config;
  const int64_t B = x_in.size(0), T = x_in.size(1);
  const int64_t H = c.n_heads, KVH = c.n_kv_heads, G = H / KVH, d = c.head_dim;
  require(c.sliding_window == 0 || T <= c.sliding_window, model_.source,
          ": config.json sliding_window ", c.sliding_window, " is shorter than this sequence of ",
          T,
          " tokens; rotq computes full causal attention, which equals the model's only within "
          "the window (use --seqlen <= ",
          c.sliding_window, ")");

  at::Tensor h = rms_norm(x_in, w[LayerTensor::kAttnNorm], c.norm_eps);
  if (hook(hooks, Site::kAttnIn, li, h)) return at::Tensor();
  at::Tensor q = linear(h, w[LayerTensor::kWq], w[LayerTensor::kBq]).view({B, T, H, d});
  at::Tensor k = linear(h, w[LayerTensor::kWk], w[LayerTensor::kBk]).view({B, T, KVH, d});
  at::Tensor v = linear(h, w[LayerTensor::kWv], w[LayerTensor::kBv]).view({B, T, KVH, d});
  if (w[LayerTensor::kQNorm].defined()) {
    q = rms_norm(q, w[LayerTensor::kQNorm], c.norm_eps);
    k = rms_norm(k, w[LayerTensor::kKNorm], c.norm_eps);
  }
  const RopeCache& rc = rope(T);
  q = apply_rope(q.transpose(1, 2), rc);  // [B, H, T, d]
  k = apply_rope(k.transpose(1, 2), rc);  // [B, KVH, T, d]
  v = v.transpose(1, 2);                  // [B, KVH, T, d]
  if (c.online_hadamard_qk) {             // R3: q·kᵀ is unchanged, only what a KV quantizer sees
    q = hadamard_transform(q);
    k = hadamard_transform(k);
  }
  if (hook(hooks, Site::kQ, li, q) || hook(hooks, Site::kKCache, li, k) ||
      hook(hooks, Site::kVCache, li, v)) {
    return at::Tensor();
  }
  at::Tensor a = causal_attention(q.reshape({B, KVH, G, T, d}), k.unsqueeze(2), v.unsqueeze(2));
  a = a.reshape({B, H, T, d}).transpose(1, 2).reshape({B, T, H * d});
  if (hook(hooks, Site::kOProjIn, li, a)) return at::Tensor();
  return x_in + linear(a, w[LayerTensor::kWo], w[LayerTensor::kBo]);
}

at::Tensor Transformer::mlp_block(at::Tensor x, const LayerWeights& w, int64_t li,
                                  ForwardHooks* hooks) const {
  const ModelConfig& c = model_.config;
  // Under autograd the in-place updates below would overwrite tensors the backward needs.
  const bool graph = at::GradMode::is_enabled() && (x.requires_grad() || any_requires_grad(w));
  at::Tensor h = rms_norm(x, w[LayerTensor::kFfnNorm], c.norm_eps);
  if (hook(hooks, Site::kMlpIn, li, h)) return at::Tensor();
  at::Tensor gate =
      activation(c.hidden_act, linear(h, w[LayerTensor::kWGate], w[LayerTensor::kBGate]));
  const at::Tensor up = linear(h, w[LayerTensor::kWUp], w[LayerTensor::kBUp]);
  at::Tensor m = graph ? gate * up : gate.mul_(up);
  if (c.online_hadamard_down) m = hadamard_transform(m);  // R4: its inverse is fused into Wd
  if (hook(hooks, Site::kDownIn, li, m)) return at::Tensor();
  const at::Tensor down = linear(m, w[LayerTensor::kWDown], w[LayerTensor::kBDown]);
  return graph ? x + down : x.add_(down);
}

at::Tensor Transformer::final_norm(const at::Tensor& x) const {
  return rms_norm(x, model_.weights.final_norm, model_.config.norm_eps);
}

at::Tensor Transformer::hidden_states(const at::Tensor& tokens, ForwardHooks* hooks) const {
  at::Tensor x = embed(tokens);
  for (int64_t l = 0; l < static_cast<int64_t>(model_.weights.layers.size()); ++l) {
    x = layer_forward(x, l, hooks);
  }
  return final_norm(x);
}

at::Tensor Transformer::logits(const at::Tensor& hidden) const {
  return at::matmul(hidden, model_.weights.lm_head.t());
}

at::Tensor token_nll(const at::Tensor& hidden, const at::Tensor& lm_head,
                     const at::Tensor& targets) {
  const int64_t N = hidden.size(0);
  const int64_t V = lm_head.size(0);
  const int64_t rows = std::max<int64_t>(1, kMaxLogitElements / V);
  at::Tensor out = at::empty({N}, at::kDouble);
  for (int64_t r0 = 0; r0 < N; r0 += rows) {
    const int64_t n = std::min(rows, N - r0);
    at::Tensor logits = at::matmul(hidden.narrow(0, r0, n), lm_head.t());
    if (logits.scalar_type() != at::kDouble && logits.scalar_type() != at::kFloat) {
      logits = logits.to(at::kFloat);
    }
    at::Tensor lse = at::logsumexp(logits, -1);
    at::Tensor tgt =
        logits.gather(1, targets.narrow(0, r0, n).to(logits.device()).unsqueeze(1)).squeeze(1);
    out.narrow(0, r0, n).copy_((lse - tgt).to(at::kDouble));
  }
  return out;
}

}  // namespace rotq
