// The forward pass against a float64 scalar reference, the llama2.c golden generation, and the
// perplexity protocol's invariances.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "models/checkpoint.h"
#include "models/synth.h"
#include "models/transformer.h"
#include "runner/data/text.h"
#include "runner/dist/comm.h"
#include "runner/eval/generate.h"
#include "runner/eval/perplexity.h"
#include "solvers/error.h"
#include "tests/reference_llama.h"
#include "tests/test_util.h"

namespace {

using rotq::Model;
using rotq::ModelConfig;
using rotq::Transformer;

const std::string kStories = rotq_test::shared_data("models/stories260K/stories260K.bin");
const std::string kTok512 = rotq_test::shared_data("models/stories260K/tok512.bin");

std::vector<int64_t> some_tokens(int64_t n, int64_t vocab, uint64_t seed) {
  std::vector<int64_t> t(n);
  uint64_t s = seed * 2654435761ull + 1;
  for (auto& v : t) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    v = static_cast<int64_t>((s >> 33) % vocab);
  }
  t[0] = 1;
  return t;
}

// Max |rotq - reference| over all logits, and the reference's max |logit| for scale.
std::pair<double, double> compare_to_reference(const Model& m, const std::vector<int64_t>& tokens) {
  Transformer tf(m);
  at::Tensor ids = at::tensor(tokens, at::kLong).unsqueeze(0);
  at::Tensor logits = tf.logits(tf.hidden_states(ids)[0]).to(at::kDouble);
  auto ref = rotq_test::reference_logits(m, tokens);
  double err = 0, scale = 0;
  for (size_t t = 0; t < tokens.size(); ++t) {
    for (size_t v = 0; v < ref[t].size(); ++v) {
      err = std::max(err, std::abs(logits[t][v].item<double>() - ref[t][v]));
      scale = std::max(scale, std::abs(ref[t][v]));
    }
  }
  return {err, scale};
}

TEST(Forward, Stories260KMatchesFloat64Reference) {
  const std::vector<int64_t> tokens = some_tokens(24, 512, 1);
  // float64 forward: the same arithmetic up to summation order.
  auto [err64, scale] = compare_to_reference(rotq::load_model(kStories, {at::kDouble}), tokens);
  EXPECT_LT(err64, 1e-10 * scale) << "float64 forward vs reference";
  // float32 forward: float32 rounding through 5 layers (stated tolerance 1e-5 relative).
  auto [err32, scale32] = compare_to_reference(rotq::load_model(kStories, {at::kFloat}), tokens);
  EXPECT_LT(err32, 1e-5 * scale32) << "float32 forward vs float64 reference";
}

struct ArchCase {
  std::string name;
  std::string dims;
  std::string rope;
};

// Keeps CTest's test names readable (gtest would print the struct's bytes).
void PrintTo(const ArchCase& c, std::ostream* os) { *os << c.name; }

class ForwardArch : public ::testing::TestWithParam<ArchCase> {};

TEST_P(ForwardArch, SyntheticMatchesFloat64Reference) {
  ModelConfig cfg = rotq::synth_preset("tiny");
  rotq::apply_dims(cfg, GetParam().dims);
  if (GetParam().rope == "llama3") cfg.rope_scaling = {"llama3", 8.0, 1.0, 4.0, 64};
  if (GetParam().rope == "linear") cfg.rope_scaling = {"linear", 2.0, 1.0, 4.0, 64};
  Model m = rotq::make_synthetic_model(cfg, 7, at::kDouble);
  auto [err, scale] = compare_to_reference(m, some_tokens(40, cfg.vocab_size, 3));
  EXPECT_LT(err, 1e-10 * scale) << GetParam().name;
}

INSTANTIATE_TEST_SUITE_P(
    Archs, ForwardArch,
    ::testing::Values(
        ArchCase{"llama_gqa", "dim=48,hidden=100,layers=2,heads=6,kv_heads=2", "none"},
        ArchCase{"llama_mha_untied", "dim=32,heads=4,kv_heads=4,tied=0", "none"},
        ArchCase{"llama3_rope", "dim=32,heads=2,kv_heads=1,ctx=256,theta=500000", "llama3"},
        ArchCase{"linear_rope", "dim=32,heads=4,kv_heads=2", "linear"},
        ArchCase{"qwen2_bias", "dim=32,heads=4,kv_heads=2,arch=Qwen2ForCausalLM", "none"},
        ArchCase{"qwen3_qknorm", "dim=32,heads=4,kv_heads=2,head_dim=16,arch=Qwen3ForCausalLM",
                 "none"},
        ArchCase{"llama_biases_gelu",
                 "dim=32,heads=4,kv_heads=2,attention_bias=1,mlp_bias=1,act=gelu", "none"},
        ArchCase{"llama_tanh_gelu", "dim=32,heads=4,kv_heads=2,act=gelu_pytorch_tanh", "none"},
        ArchCase{"mistral_relu", "dim=32,heads=4,kv_heads=2,arch=MistralForCausalLM,act=relu",
                 "none"},
        ArchCase{"qwen3_biases",
                 "dim=32,heads=4,kv_heads=2,head_dim=16,arch=Qwen3ForCausalLM,attention_bias=1",
                 "none"}),
    [](const auto& info) { return info.param.name; });

TEST(Forward, GreedyGenerationReproducesLlama2cGolden) {
  Model m = rotq::load_model(kStories);
  auto tok = rotq::load_tokenizer(kTok512, 512);
  Transformer tf(m);
  rotq::GenerateOptions o;
  o.steps = 200;
  o.temperature = 0;
  const rotq::GenerateResult r = rotq::generate(tf, *tok, o);
  std::string golden =
      rotq::read_file_bytes(rotq_test::shared_data("models/stories260K/greedy_t0_n200.txt"));
  while (!golden.empty() && golden.back() == '\n') golden.pop_back();
  std::string got = r.text;
  while (!got.empty() && got.back() == '\n') got.pop_back();
  EXPECT_EQ(got, golden);
}

// Records the tensor at one site; optionally ends the forward there.
class SiteProbe final : public rotq::ForwardHooks {
 public:
  SiteProbe(rotq::Site site, bool end) : site_(site), end_(end) {}
  void at_site(rotq::Site site, int64_t, at::Tensor& x) override {
    if (site == site_) seen = x.clone();
  }
  bool ends_after(rotq::Site site, int64_t) const override { return end_ && site == site_; }
  at::Tensor seen;

 private:
  rotq::Site site_;
  bool end_;
};

TEST(Forward, BlocksComposeToTheLayerAndACaptureEndsAtItsSite) {
  Model m = rotq::load_model(kStories);
  Transformer tf(m);
  at::manual_seed(3);
  const at::Tensor x = at::randn({2, 24, m.config.dim});
  const rotq::LayerWeights& w = m.weights.layers.at(2);
  const at::Tensor whole = tf.layer_forward(x, 2);
  const at::Tensor halves = tf.mlp_block(tf.attention_block(x, w, 2), w, 2);
  // The same operations in the same order: equal to float32 rounding of a different schedule at
  // most (they are in fact identical).
  EXPECT_LE((whole - halves).abs().max().item<double>(), 1e-6 * whole.abs().max().item<double>());
  for (rotq::Site site : {rotq::Site::kAttnIn, rotq::Site::kQ, rotq::Site::kOProjIn,
                          rotq::Site::kMlpIn, rotq::Site::kDownIn}) {
    SiteProbe full(site, false), early(site, true);
    tf.layer_forward(x, 2, &full);
    const at::Tensor before = x.clone();
    EXPECT_FALSE(tf.layer_forward(x, 2, &early).defined()) << rotq::site_name(site);
    EXPECT_TRUE(at::equal(x, before)) << rotq::site_name(site) << ": the input was written";
    ASSERT_TRUE(early.seen.defined()) << rotq::site_name(site);
    EXPECT_LE((early.seen - full.seen).abs().max().item<double>(),
              1e-6 * full.seen.abs().max().item<double>())
        << rotq::site_name(site);
  }
}

TEST(Forward, TokenNllMatchesDenseLogSoftmax) {
  at::manual_seed(0);
  at::Tensor h = at::randn({37, 16}, at::kDouble);
  at::Tensor w = at::randn({5000, 16}, at::kDouble);
  at::Tensor tgt = at::randint(0, 5000, {37}, at::kLong);
  at::Tensor got = rotq::token_nll(h, w, tgt);
  at::Tensor want =
      -at::log_softmax(at::matmul(h, w.t()), -1).gather(1, tgt.unsqueeze(1)).squeeze(1);
  EXPECT_LT((got - want).abs().max().item<double>(), 1e-12);
}

TEST(Forward, RopeLlama3ScalingKeepsHighFrequencies) {
  ModelConfig c = rotq::synth_preset("llama-3.2-1b");
  at::Tensor scaled = rotq::rope_inv_freq(c);
  c.rope_scaling.type = "none";
  at::Tensor plain = rotq::rope_inv_freq(c);
  // Highest frequency (short wavelength) unchanged; lowest divided by the factor.
  EXPECT_DOUBLE_EQ(scaled[0].item<double>(), plain[0].item<double>());
  EXPECT_NEAR(scaled[-1].item<double>(), plain[-1].item<double>() / 32.0, 1e-18);
}

class Perplexity : public ::testing::Test {
 protected:
  static std::vector<int32_t> stories_tokens() {
    auto tok = rotq::load_tokenizer(kTok512, 512);
    const std::string text =
        rotq::read_text(rotq_test::project_data("tinystories_sample.txt"), rotq::TextFormat::kRaw);
    return rotq::encode_with_bos(*tok, text, true);
  }
};

TEST_F(Perplexity, BatchSizeDoesNotChangeTheResult) {
  Model m = rotq::load_model(kStories);
  Transformer tf(m);
  auto comm = rotq::make_local_comm();
  const auto tokens = stories_tokens();
  rotq::PplOptions o;
  o.seqlen = 128;
  o.max_windows = 6;
  o.batch = 1;
  const double p1 = rotq::perplexity(tf, tokens, o, *comm).ppl;
  o.batch = 4;
  const double p4 = rotq::perplexity(tf, tokens, o, *comm).ppl;
  EXPECT_NEAR(p1, p4, 1e-5 * p1);
  EXPECT_GT(p1, 1.0);
  EXPECT_LT(p1, 100.0) << "stories260K should model TinyStories-like text well";
}

TEST_F(Perplexity, ProtocolIsMeanOfWindowMeans) {
  Model m = rotq::load_model(kStories, {at::kDouble});
  Transformer tf(m);
  auto comm = rotq::make_local_comm();
  const auto tokens = stories_tokens();
  rotq::PplOptions o;
  o.seqlen = 64;
  o.max_windows = 3;
  const rotq::PplResult r = rotq::perplexity(tf, tokens, o, *comm);
  ASSERT_EQ(r.windows, 3);
  double total = 0;
  for (int w = 0; w < 3; ++w) {
    std::vector<int64_t> win(tokens.begin() + w * 64, tokens.begin() + (w + 1) * 64);
    auto logits = rotq_test::reference_logits(m, win);
    double nll = 0;
    for (int t = 0; t + 1 < 64; ++t) {
      double mx = -1e300, z = 0;
      for (double v : logits[t]) mx = std::max(mx, v);
      for (double v : logits[t]) z += std::exp(v - mx);
      nll += std::log(z) + mx - logits[t][win[t + 1]];
    }
    total += nll / 63;
  }
  EXPECT_NEAR(r.ppl, std::exp(total / 3), 1e-9 * r.ppl);
}

TEST_F(Perplexity, RejectsImpossibleWindows) {
  Model m = rotq::load_model(kStories);
  Transformer tf(m);
  auto comm = rotq::make_local_comm();
  rotq::PplOptions o;
  o.seqlen = 512;
  std::vector<int32_t> short_text(100, 5);
  EXPECT_THROW(rotq::perplexity(tf, short_text, o, *comm), rotq::Error);
  o.seqlen = 1024;  // beyond the model's context of 512
  std::vector<int32_t> long_text(5000, 5);
  EXPECT_THROW(rotq::perplexity(tf, long_text, o, *comm), rotq::Error);
}

}  // namespace
