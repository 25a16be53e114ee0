#include "runner/eval/generate.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <numeric>
#include <random>

#include "solvers/error.h"

namespace rotq {
namespace {

// llama2.c's safe_printf: single raw bytes that are neither printable nor whitespace are dropped.
bool printable(const std::string& piece) {
  if (piece.empty()) return false;
  if (piece.size() == 1) {
    const unsigned char b = static_cast<unsigned char>(piece[0]);
    return std::isprint(b) || std::isspace(b);
  }
  return true;
}

int64_t sample(const at::Tensor& logits, const GenerateOptions& o, std::mt19937_64& rng) {
  if (o.temperature <= 0) return logits.argmax().item<int64_t>();
  at::Tensor p = at::softmax(logits.to(at::kDouble) / o.temperature, -1).contiguous();
  const double* pp = p.data_ptr<double>();
  const int64_t V = p.numel();
  std::vector<int64_t> idx(V);
  std::iota(idx.begin(), idx.end(), 0);
  int64_t keep = V;
  if (o.top_p < 1.0) {
    // Nucleus: the smallest set of most likely tokens whose mass exceeds top_p.
    std::sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return pp[a] > pp[b]; });
    double mass = 0;
    for (keep = 0; keep < V && mass < o.top_p; ++keep) mass += pp[idx[keep]];
  }
  double total = 0;
  for (int64_t i = 0; i < keep; ++i) total += pp[idx[i]];
  double r = std::uniform_real_distribution<double>(0.0, total)(rng);
  for (int64_t i = 0; i < keep; ++i) {
    r -= pp[idx[i]];
    if (r <= 0) return idx[i];
  }
  return idx[keep - 1];
}

}  // namespace

GenerateResult generate(const Transformer& model, const Tokenizer& tok, const GenerateOptions& o,
                        const std::function<void(const std::string&)>& on_piece) {
  require(o.steps > 0, "--steps ", o.steps, ": expected a positive number");
  require(o.steps <= model.config().max_seq_len, "--steps ", o.steps,
          " exceeds the model's context of ", model.config().max_seq_len, " tokens");
  require(o.temperature >= 0, "--temperature ", o.temperature, ": expected >= 0");
  require(o.top_p > 0 && o.top_p <= 1, "--top-p ", o.top_p, ": expected in (0, 1]");
  // The tokenizer's BOS policy (a SentencePiece vocabulary: BOS first; Qwen: none). A sequence
  // must start somewhere: with no BOS, the prompt's first token.
  const bool add_bos = resolve_bos(tok, o.bos);
  const int32_t bos = tok.bos_id() >= 0 ? tok.bos_id() : model.config().bos_id;
  const int32_t eos = tok.eos_id() >= 0 ? tok.eos_id() : model.config().eos_id;
  std::vector<int32_t> prompt = encode_with_bos(tok, o.prompt, add_bos);
  require(!prompt.empty(), "generate: the tokenizer adds no BOS, so give a --prompt");
  require(static_cast<int64_t>(prompt.size()) <= o.steps, "the prompt has ", prompt.size(),
          " tokens, more than --steps ", o.steps);

  GenerateResult res;
  if (!add_bos) {  // the first token is text, not a BOS: it is shown too
    const std::string first = tok.decode_piece(bos, prompt[0]);
    res.text += first;
    if (on_piece) on_piece(first);
  }
  std::mt19937_64 rng(o.seed);
  std::vector<int64_t> seq(prompt.begin(), prompt.end());
  const auto t0 = std::chrono::steady_clock::now();
  at::NoGradGuard no_grad;
  // Each step re-runs the sequence so far (no KV cache): generation is a check of the forward
  // pass here, not a serving path.
  for (int64_t pos = 0; pos < o.steps; ++pos) {
    int64_t next;
    if (pos + 1 < static_cast<int64_t>(prompt.size())) {
      next = prompt[pos + 1];
    } else {
      at::Tensor ids =
          at::tensor(std::vector<int64_t>(seq.begin(), seq.begin() + pos + 1), at::kLong)
              .unsqueeze(0);
      at::Tensor h = model.hidden_states(ids);
      at::Tensor logits = model.logits(h[0][pos].unsqueeze(0))[0];
      next = sample(logits, o, rng);
      seq.push_back(next);
    }
    // llama2.c's models end a story with BOS; HF models with EOS.
    if (next == bos || next == eos) break;
    const std::string piece =
        tok.decode_piece(static_cast<int32_t>(seq[pos]), static_cast<int32_t>(next));
    if (printable(piece)) {
      res.text += piece;
      if (on_piece) on_piece(piece);
    }
    ++res.tokens;
  }
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return res;
}

}  // namespace rotq
