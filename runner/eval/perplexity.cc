#include "runner/eval/perplexity.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>

#include "models/base/resources.h"
#include "runner/core/progress.h"
#include "runner/dist/layer_pipeline.h"
#include "solvers/error.h"

namespace rotq {

namespace {

// Σ over rows of KL(softmax(h_ref W_refᵀ) ‖ softmax(h W ᵀ)), in row chunks of bounded size.
double kl_sum(const at::Tensor& h_ref, const at::Tensor& w_ref, const at::Tensor& h,
              const at::Tensor& w) {
  const int64_t rows = h.size(0), vocab = w.size(0);
  const int64_t chunk = std::max<int64_t>(1, (int64_t{1} << 22) / std::max<int64_t>(1, vocab));
  double total = 0;
  for (int64_t r = 0; r < rows; r += chunk) {
    const int64_t n = std::min(chunk, rows - r);
    const at::Tensor lp_ref =
        at::log_softmax(at::matmul(h_ref.narrow(0, r, n), w_ref.t()).to(at::kDouble), -1);
    const at::Tensor lp = at::log_softmax(at::matmul(h.narrow(0, r, n), w.t()).to(at::kDouble), -1);
    total += (lp_ref.exp() * (lp_ref - lp)).sum().item<double>();
  }
  return total;
}

// What every variant shares: the window count and batch size, and scoring one batch of windows
// from their final-normed hidden states.
struct WindowPlan {
  int64_t T = 0, n = 0, windows = 0, batch = 0;
};

WindowPlan plan_windows(const ModelConfig& c, const std::vector<int32_t>& tokens,
                        const PplOptions& opts) {
  WindowPlan w;
  w.T = opts.seqlen;
  require(w.T >= 2, "--seqlen ", w.T, ": a window needs at least 2 tokens");
  require(w.T <= c.max_seq_len, "--seqlen ", w.T, " exceeds the model's context of ", c.max_seq_len,
          " tokens");
  w.n = static_cast<int64_t>(tokens.size());
  w.windows = w.n / w.T;
  require(w.windows > 0, "the text has ", w.n, " tokens, fewer than one window of --seqlen ", w.T);
  if (opts.max_windows > 0) w.windows = std::min(w.windows, opts.max_windows);
  w.batch = opts.batch > 0 ? opts.batch : std::max<int64_t>(1, 2048 / w.T);
  // The largest temporaries of one forward: a layer's attention scores and the logits.
  const double scores = static_cast<double>(w.batch) * c.n_heads * w.T * w.T * 4;
  const double logits = static_cast<double>(w.batch) * w.T * c.vocab_size * 8;
  require_memory(scores + logits,
                 "a forward of " + std::to_string(w.batch) + " window(s) of " +
                     std::to_string(w.T) + " tokens",
                 "use a smaller --seqlen or --batch");
  return w;
}

at::Tensor token_tensor(const std::vector<int32_t>& tokens) {
  return at::from_blob(const_cast<int32_t*>(tokens.data()), {static_cast<int64_t>(tokens.size())},
                       at::kInt)
      .to(at::kLong);
}

at::Tensor window_batch(const at::Tensor& all, const std::vector<int64_t>& ids, size_t i, int64_t b,
                        int64_t T) {
  std::vector<at::Tensor> rows;
  for (int64_t j = 0; j < b; ++j) rows.push_back(all.narrow(0, ids[i + j] * T, T));
  return at::stack(rows);  // [b, T]
}

// Scores windows `ids` [b, T] from final-normed hidden states h [b, T, D] (and the reference's,
// when given): their mean NLLs go to window_nll[ids[i..i+b)], the KL sum to `kl`.
void score_batch(const at::Tensor& ids, const at::Tensor& h, const at::Tensor& lm_head,
                 const at::Tensor* h_ref, const at::Tensor* ref_head,
                 const std::vector<int64_t>& window_ids, size_t i, at::Tensor& window_nll,
                 at::Tensor& kl) {
  const int64_t b = ids.size(0), T = ids.size(1);
  at::Tensor hidden = h.narrow(1, 0, T - 1).reshape({b * (T - 1), h.size(2)});
  at::Tensor targets = ids.narrow(1, 1, T - 1).reshape({-1});
  at::Tensor means = token_nll(hidden, lm_head, targets).view({b, T - 1}).mean(1);
  if (h_ref) {
    const at::Tensor hr = h_ref->narrow(1, 0, T - 1).reshape({b * (T - 1), h.size(2)});
    kl[0] += kl_sum(hr, *ref_head, hidden, lm_head);
  }
  for (int64_t j = 0; j < b; ++j) window_nll[window_ids[i + j]] = means[j];
}

// All-reduces the per-window NLLs (each window filled by one rank: exact) and the KL sum.
PplResult finish(const WindowPlan& w, at::Tensor& window_nll, at::Tensor& kl, bool with_kl,
                 double elapsed, Comm& comm) {
  comm.all_reduce(window_nll, ReduceOp::kSum);
  if (with_kl) comm.all_reduce(kl, ReduceOp::kSum);
  PplResult r;
  r.seqlen = w.T;
  r.windows = w.windows;
  r.text_tokens = w.n;
  r.scored_tokens = w.windows * (w.T - 1);
  r.window_nll.assign(window_nll.data_ptr<double>(), window_nll.data_ptr<double>() + w.windows);
  double sum = 0;
  for (double v : r.window_nll) {
    require(std::isfinite(v), "perplexity: a window's NLL is not finite (NaN/Inf in the model?)");
    sum += v;
  }
  r.mean_nll = sum / w.windows;
  r.ppl = std::exp(r.mean_nll);
  if (with_kl) r.kl = kl.item<double>() / static_cast<double>(r.scored_tokens);
  at::Tensor t = at::tensor({elapsed}, at::kDouble);
  comm.all_reduce(t, ReduceOp::kMax);
  r.seconds = t.item<double>();
  r.tokens_per_s = r.seconds > 0 ? static_cast<double>(w.windows * w.T) / r.seconds : 0;
  return r;
}

}  // namespace

PplResult perplexity(const Transformer& model, const std::vector<int32_t>& tokens,
                     const PplOptions& opts, Comm& comm, ForwardHooks* hooks,
                     const Transformer* reference) {
  const WindowPlan w = plan_windows(model.config(), tokens, opts);
  // Window i goes to rank i % size: balanced, and the same windows for any batch size.
  std::vector<int64_t> mine;
  for (int64_t i = comm.rank(); i < w.windows; i += comm.size()) mine.push_back(i);
  const at::Tensor all = token_tensor(tokens);
  at::Tensor window_nll = at::zeros({w.windows}, at::kDouble);
  at::Tensor kl = at::zeros({1}, at::kDouble);
  Progress progress("ppl windows", static_cast<int64_t>(mine.size()), "tok");
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < mine.size(); i += w.batch) {
    const int64_t b = std::min<int64_t>(w.batch, static_cast<int64_t>(mine.size() - i));
    const at::Tensor ids = window_batch(all, mine, i, b, w.T);
    const at::Tensor h = model.hidden_states(ids, hooks);
    at::Tensor hr;
    if (reference) hr = reference->hidden_states(ids);
    score_batch(ids, h, model.model().weights.lm_head, reference ? &hr : nullptr,
                reference ? &reference->model().weights.lm_head : nullptr, mine, i, window_nll, kl);
    progress.update(static_cast<int64_t>(i + b), static_cast<double>((i + b) * w.T));
  }
  return finish(w, window_nll, kl, reference != nullptr, progress.elapsed(), comm);
}

PplResult perplexity_pipeline(const Transformer& shard, const Placement& p,
                              const std::vector<int32_t>& tokens, const PplOptions& opts,
                              Comm& comm, ForwardHooks* hooks, const Transformer* reference) {
  const WindowPlan w = plan_windows(shard.config(), tokens, opts);
  std::vector<int64_t> ids(w.windows);
  for (int64_t i = 0; i < w.windows; ++i) ids[i] = i;
  const at::Tensor all = token_tensor(tokens);
  // Micro-batches of consecutive windows, as the one-process run batches them.
  std::vector<at::Tensor> batches;
  std::vector<size_t> starts;
  for (size_t i = 0; i < ids.size(); i += w.batch) {
    const int64_t b = std::min<int64_t>(w.batch, static_cast<int64_t>(ids.size() - i));
    batches.push_back(window_batch(all, ids, i, b, w.T));
    starts.push_back(i);
  }
  at::Tensor window_nll = at::zeros({w.windows}, at::kDouble);
  at::Tensor kl = at::zeros({1}, at::kDouble);
  Progress progress("ppl windows (pipeline)", w.windows, "tok");
  std::vector<const Transformer*> stages = {&shard};
  std::vector<ForwardHooks*> stage_hooks = {hooks};
  if (reference) {
    stages.push_back(reference);
    stage_hooks.push_back(nullptr);
  }
  pipeline_forward(
      stages, stage_hooks, p, comm, batches, [&](size_t m, const std::vector<at::Tensor>& outs) {
        const at::Tensor h = shard.final_norm(outs[0]);
        at::Tensor hr;
        if (reference) hr = reference->final_norm(outs[1]);
        score_batch(batches[m], h, shard.model().weights.lm_head, reference ? &hr : nullptr,
                    reference ? &reference->model().weights.lm_head : nullptr, ids, starts[m],
                    window_nll, kl);
        const int64_t done = static_cast<int64_t>(starts[m]) + batches[m].size(0);
        progress.update(done, static_cast<double>(done * w.T));
      });
  return finish(w, window_nll, kl, reference != nullptr, progress.elapsed(), comm);
}

}  // namespace rotq
