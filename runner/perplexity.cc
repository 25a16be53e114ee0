#include "runner/perplexity.h"

#include <ATen/ATen.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>

#include "runner/progress.h"
#include "solvers/error.h"

namespace rotq {

int64_t default_window(const ModelConfig& c) { return std::min<int64_t>(2048, c.max_seq_len); }

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

}  // namespace

PplResult perplexity(const Transformer& model, const std::vector<int32_t>& tokens,
                     const PplOptions& opts, Comm& comm, ForwardHooks* hooks,
                     const Transformer* reference) {
  const int64_t T = opts.seqlen;
  require(T >= 2, "--seqlen ", T, ": a window needs at least 2 tokens");
  require(T <= model.config().max_seq_len, "--seqlen ", T, " exceeds the model's context of ",
          model.config().max_seq_len, " tokens");
  const int64_t n = static_cast<int64_t>(tokens.size());
  int64_t windows = n / T;
  require(windows > 0, "the text has ", n, " tokens, fewer than one window of --seqlen ", T);
  if (opts.max_windows > 0) windows = std::min(windows, opts.max_windows);
  const int64_t batch = opts.batch > 0 ? opts.batch : std::max<int64_t>(1, 2048 / T);

  // Window w goes to rank w % size: balanced, and the same windows for any batch size.
  std::vector<int64_t> mine;
  for (int64_t w = comm.rank(); w < windows; w += comm.size()) mine.push_back(w);

  at::Tensor all = at::from_blob(const_cast<int32_t*>(tokens.data()), {n}, at::kInt).to(at::kLong);
  at::Tensor window_nll = at::zeros({windows}, at::kDouble);
  at::Tensor kl = at::zeros({1}, at::kDouble);
  Progress progress("ppl windows", static_cast<int64_t>(mine.size()), "tok");
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < mine.size(); i += batch) {
    const int64_t b = std::min<int64_t>(batch, static_cast<int64_t>(mine.size() - i));
    std::vector<at::Tensor> rows;
    for (int64_t j = 0; j < b; ++j) rows.push_back(all.narrow(0, mine[i + j] * T, T));
    at::Tensor ids = at::stack(rows);                // [b, T]
    at::Tensor h = model.hidden_states(ids, hooks);  // [b, T, D]
    at::Tensor hidden = h.narrow(1, 0, T - 1).reshape({b * (T - 1), h.size(2)});
    at::Tensor targets = ids.narrow(1, 1, T - 1).reshape({-1});
    at::Tensor nll = token_nll(hidden, model.model().weights.lm_head, targets).view({b, T - 1});
    at::Tensor means = nll.mean(1);
    if (reference) {
      const at::Tensor hr =
          reference->hidden_states(ids).narrow(1, 0, T - 1).reshape({b * (T - 1), h.size(2)});
      kl[0] +=
          kl_sum(hr, reference->model().weights.lm_head, hidden, model.model().weights.lm_head);
    }
    for (int64_t j = 0; j < b; ++j) window_nll[mine[i + j]] = means[j];
    progress.update(static_cast<int64_t>(i + b), static_cast<double>((i + b) * T));
  }
  // Each window is owned by one rank, so the sum is exact and the same on every rank.
  comm.all_reduce(window_nll, ReduceOp::kSum);
  if (reference) comm.all_reduce(kl, ReduceOp::kSum);

  PplResult r;
  r.seqlen = T;
  r.windows = windows;
  r.text_tokens = n;
  r.scored_tokens = windows * (T - 1);
  r.window_nll.assign(window_nll.data_ptr<double>(), window_nll.data_ptr<double>() + windows);
  double sum = 0;
  for (double v : r.window_nll) {
    require(std::isfinite(v), "perplexity: a window's NLL is not finite (NaN/Inf in the model?)");
    sum += v;
  }
  r.mean_nll = sum / windows;
  r.ppl = std::exp(r.mean_nll);
  if (reference) r.kl = kl.item<double>() / static_cast<double>(r.scored_tokens);
  at::Tensor t = at::tensor({progress.elapsed()}, at::kDouble);
  comm.all_reduce(t, ReduceOp::kMax);
  r.seconds = t.item<double>();
  r.tokens_per_s = r.seconds > 0 ? static_cast<double>(windows * T) / r.seconds : 0;
  return r;
}

}  // namespace rotq
