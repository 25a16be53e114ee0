#include "runner/eval/loglikelihood.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>

#include "runner/core/py_str.h"
#include "runner/dist/layer_pipeline.h"
#include "solvers/error.h"

namespace rotq {
namespace {

// The harness's tok_encode: BOS first when asked and the tokenizer has one.
std::vector<int32_t> tok_encode(const Tokenizer& tok, const std::string& s, bool add_bos) {
  return encode_with_bos(tok, s, add_bos && tok.bos_id() >= 0);
}

// One forward input: the (left-truncated) tokens the model reads and how many of its last
// positions predict continuation tokens; the requests scored from it.
struct Input {
  std::vector<int32_t> tokens;
  int64_t contlen = 0;
  std::vector<size_t> requests;
};

std::vector<Input> unique_inputs(const std::vector<LlRequest>& requests, int64_t L) {
  std::map<std::pair<std::vector<int32_t>, int64_t>, size_t> index;
  std::vector<Input> inputs;
  for (size_t r = 0; r < requests.size(); ++r) {
    const LlRequest& q = requests[r];
    const int64_t contlen = static_cast<int64_t>(q.continuation.size());
    require(contlen > 0 && !q.context.empty(), "loglikelihood request ", r,
            ": empty context or continuation");
    std::vector<int32_t> full = q.context;
    full.insert(full.end(), q.continuation.begin(), q.continuation.end());
    const size_t keep = std::min<size_t>(full.size(), static_cast<size_t>(L) + 1);
    std::vector<int32_t> inp(full.end() - static_cast<std::ptrdiff_t>(keep), full.end() - 1);
    // A continuation longer than the context (the harness asserts against it) keeps the score of
    // its last L tokens, the most the window predicts.
    const int64_t scored = std::min(contlen, L);
    auto [it, fresh] = index.emplace(std::make_pair(std::move(inp), scored), inputs.size());
    if (fresh) inputs.push_back({it->first.first, scored, {}});
    inputs[it->second].requests.push_back(r);
  }
  // The harness's order: longest first, ties by the tokens (deterministic, rank-independent).
  std::sort(inputs.begin(), inputs.end(), [](const Input& a, const Input& b) {
    if (a.tokens.size() != b.tokens.size()) return a.tokens.size() > b.tokens.size();
    return a.tokens < b.tokens;
  });
  return inputs;
}

struct Batch {
  size_t begin = 0, end = 0;  // inputs [begin, end)
  int64_t requests = 0;       // the requests they score
};

at::Tensor batch_tokens(const std::vector<Input>& inputs, const Batch& b) {
  int64_t T = 0;
  for (size_t i = b.begin; i < b.end; ++i) T = std::max<int64_t>(T, inputs[i].tokens.size());
  at::Tensor ids = at::zeros({static_cast<int64_t>(b.end - b.begin), T}, at::kLong);
  auto acc = ids.accessor<int64_t, 2>();
  for (size_t i = b.begin; i < b.end; ++i) {
    for (size_t t = 0; t < inputs[i].tokens.size(); ++t) acc[i - b.begin][t] = inputs[i].tokens[t];
  }
  return ids;
}

// Scores the requests of batch `b` from its final-normed hidden states h [b, T, D]: the
// continuation rows of each input, their log-softmax in float64 (in row chunks of bounded size),
// each request's tokens gathered from them.
void score_batch(const std::vector<Input>& inputs, const Batch& b,
                 const std::vector<LlRequest>& requests, const at::Tensor& h,
                 const at::Tensor& lm_head, at::Tensor& logprob, at::Tensor& greedy) {
  // A request's flags and sums are written only by the rank that scores it (zeros elsewhere), so
  // the all-reduce that follows is exact.
  auto lp_acc = logprob.accessor<double, 1>();
  auto gr_acc = greedy.accessor<double, 1>();
  std::vector<at::Tensor> rows;
  std::vector<int64_t> pair_row, pair_tok, pair_req;
  int64_t row0 = 0;
  for (size_t i = b.begin; i < b.end; ++i) {
    const Input& in = inputs[i];
    const int64_t len = static_cast<int64_t>(in.tokens.size());
    rows.push_back(h[static_cast<int64_t>(i - b.begin)].narrow(0, len - in.contlen, in.contlen));
    for (size_t r : in.requests) {
      gr_acc[static_cast<int64_t>(r)] = 1;  // cleared below by a token that is not the argmax
      const std::vector<int32_t>& cont = requests[r].continuation;
      const size_t skip = cont.size() - static_cast<size_t>(in.contlen);  // > 0: cut to L
      for (int64_t k = 0; k < in.contlen; ++k) {
        pair_row.push_back(row0 + k);
        pair_tok.push_back(cont[skip + k]);
        pair_req.push_back(static_cast<int64_t>(r));
      }
    }
    row0 += in.contlen;
  }
  const at::Tensor hidden = at::cat(rows);  // [R, D]
  const int64_t R = hidden.size(0), V = lm_head.size(0);
  const int64_t chunk = std::max<int64_t>(1, (int64_t{1} << 22) / V);
  size_t p = 0;  // pairs are ordered by row
  std::vector<size_t> order(pair_row.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t x, size_t y) { return pair_row[x] < pair_row[y]; });
  for (int64_t r0 = 0; r0 < R; r0 += chunk) {
    const int64_t n = std::min(chunk, R - r0);
    size_t q = p;
    while (q < order.size() && pair_row[order[q]] < r0 + n) ++q;
    if (q == p) continue;
    const at::Tensor lp =
        at::log_softmax(at::matmul(hidden.narrow(0, r0, n), lm_head.t()).to(at::kDouble), -1);
    const at::Tensor best = lp.argmax(-1);
    std::vector<int64_t> rr, tt;
    for (size_t k = p; k < q; ++k) {
      rr.push_back(pair_row[order[k]] - r0);
      tt.push_back(pair_tok[order[k]]);
    }
    const at::Tensor ri = at::tensor(rr, at::kLong).to(lp.device());
    const at::Tensor ti = at::tensor(tt, at::kLong).to(lp.device());
    const at::Tensor vals = lp.index({ri, ti}).cpu();
    const at::Tensor hit = best.index({ri}).eq(ti).cpu();
    const auto v = vals.accessor<double, 1>();
    const auto g = hit.accessor<bool, 1>();
    for (size_t k = p; k < q; ++k) {
      const int64_t req = pair_req[order[k]];
      lp_acc[req] += v[static_cast<int64_t>(k - p)];
      if (!g[static_cast<int64_t>(k - p)]) gr_acc[req] = 0;
    }
    p = q;
  }
}

}  // namespace

LlRequest encode_request(const Tokenizer& tok, const std::string& context,
                         const std::string& continuation, bool add_bos) {
  LlRequest q;
  if (context.empty()) {
    const int32_t prefix = tok.bos_id() >= 0 ? tok.bos_id() : tok.eos_id();
    require(prefix >= 0, "an empty context needs a BOS or EOS token; the tokenizer has neither");
    q.continuation = tok.encode(continuation);
    if (!q.continuation.empty() && q.continuation.front() == prefix) {
      q.context = {prefix};
      q.continuation.erase(q.continuation.begin());
    } else {
      q.context = {prefix};
    }
  } else {
    const std::string ctx = py_rstrip(context);  // Python's rstrip(): Unicode whitespace too
    const size_t cut = ctx.size();
    const std::string cont = context.substr(cut) + continuation;
    const std::vector<int32_t> whole = tok_encode(tok, ctx + cont, add_bos);
    q.context = tok_encode(tok, ctx, add_bos);
    if (q.context.size() < whole.size())
      q.continuation.assign(whole.begin() + q.context.size(), whole.end());
    if (q.context.empty()) {
      const int32_t prefix = tok.bos_id() >= 0 ? tok.bos_id() : tok.eos_id();
      require(prefix >= 0, "a blank context needs a BOS or EOS token; the tokenizer has neither");
      q.context = {prefix};
    }
  }
  require(!q.continuation.empty(), "the continuation '", continuation,
          "' has no tokens of its own after the context (tokenization merged it away)");
  return q;
}

std::vector<LlScore> score_requests(const Transformer& model,
                                    const std::vector<LlRequest>& requests, const LlOptions& opts,
                                    Comm& comm, ForwardHooks* hooks, const Placement& placement,
                                    const LlProgress& progress, LlStats* stats) {
  require(opts.batch > 0, "--batch-size must be positive, got ", opts.batch);
  const int64_t L = opts.max_length > 0 ? opts.max_length : model.config().max_seq_len;
  require(L <= model.config().max_seq_len, "--max-length ", L, " exceeds the model's context of ",
          model.config().max_seq_len);
  const std::vector<Input> inputs = unique_inputs(requests, L);
  if (stats) {
    *stats = {};
    for (const Input& in : inputs) {
      const auto len = static_cast<int64_t>(in.tokens.size());
      ++stats->inputs;
      stats->tokens += len;
      stats->tokens_sq += static_cast<double>(len) * static_cast<double>(len);
      stats->scored_rows += in.contlen;
      for (size_t r : in.requests) {
        stats->cut += requests[r].continuation.size() > static_cast<size_t>(in.contlen);
      }
    }
  }
  // A batch holds inputs of one length: no padding, so every score is computed exactly as it is
  // alone (a GEMM's rows do not depend on how many rows it has; a padded attention's would).
  std::vector<Batch> batches;
  for (size_t i = 0; i < inputs.size();) {
    size_t j = i + 1;
    while (j < inputs.size() && j - i < static_cast<size_t>(opts.batch) &&
           inputs[j].tokens.size() == inputs[i].tokens.size()) {
      ++j;
    }
    Batch b{i, j, 0};
    for (size_t k = i; k < j; ++k) b.requests += static_cast<int64_t>(inputs[k].requests.size());
    batches.push_back(b);
    i = j;
  }
  const int64_t n = static_cast<int64_t>(requests.size());
  at::Tensor logprob = at::zeros({n}, at::kDouble);
  at::Tensor greedy = at::zeros({n}, at::kDouble);
  at::NoGradGuard no_grad;
  const at::Tensor& lm_head = model.model().weights.lm_head;
  int64_t done = 0;
  if (placement.sharded()) {
    std::vector<at::Tensor> toks;
    for (const Batch& b : batches) toks.push_back(batch_tokens(inputs, b));
    pipeline_forward({&model}, {hooks}, placement, comm, toks,
                     [&](size_t m, const std::vector<at::Tensor>& outs) {
                       score_batch(inputs, batches[m], requests, model.final_norm(outs[0]), lm_head,
                                   logprob, greedy);
                       done += batches[m].requests;
                       if (progress) progress(done, n);
                     });
  } else {
    int64_t mine = 0;
    for (size_t k = comm.rank(); k < batches.size(); k += comm.size()) mine += batches[k].requests;
    for (size_t k = comm.rank(); k < batches.size(); k += comm.size()) {
      const at::Tensor h = model.hidden_states(batch_tokens(inputs, batches[k]), hooks);
      score_batch(inputs, batches[k], requests, h, lm_head, logprob, greedy);
      done += batches[k].requests;
      if (progress) progress(done, mine);
    }
  }
  comm.all_reduce(logprob, ReduceOp::kSum);
  comm.all_reduce(greedy, ReduceOp::kSum);
  std::vector<LlScore> out(requests.size());
  const auto lp = logprob.accessor<double, 1>();
  const auto gr = greedy.accessor<double, 1>();
  for (int64_t r = 0; r < n; ++r) {
    out[r].logprob = lp[r];
    out[r].greedy = gr[r] > 0.5;
    require(std::isfinite(out[r].logprob), "loglikelihood request ", r,
            ": the score is not finite (NaN/Inf in the model?)");
  }
  return out;
}

}  // namespace rotq
