// The quantization pipeline on the real model: calibration windows, activation/KV hooks, GPTQ on
// stories260K's own layers against RTN, and one full cell.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <set>

#include "models/checkpoint.h"
#include "models/layer_groups.h"
#include "models/quant_hooks.h"
#include "models/tokenizers/tokenizer.h"
#include "models/transformer.h"
#include "runner/cell/run_cell.h"
#include "runner/data/calibration.h"
#include "runner/data/text.h"
#include "runner/dist/comm.h"
#include "runner/eval/perplexity.h"
#include "runner/quantize/weight_quant.h"
#include "solvers/error.h"
#include "solvers/gptq.h"
#include "tests/test_util.h"

namespace {

using rotq::LayerTensor;
using rotq::Model;
using rotq::Site;

const std::string kStories = rotq_test::project_data("stories260K/stories260K.bin");
const std::string kTok = rotq_test::project_data("stories260K/tok512.bin");
const std::string kText = rotq_test::project_data("tinystories_sample.txt");

std::vector<int32_t> sample_tokens() {
  auto tok = rotq::load_tokenizer(kTok, 512);
  return rotq::encode_with_bos(*tok, rotq::read_text(kText, rotq::TextFormat::kRaw), true);
}

TEST(Calibration, SeededWindowsAreSlicesOfTheText) {
  std::vector<int32_t> tokens(1000);
  for (int i = 0; i < 1000; ++i) tokens[i] = i;
  const at::Tensor a = rotq::calibration_windows(tokens, 16, 100, 3);
  const at::Tensor b = rotq::calibration_windows(tokens, 16, 100, 3);
  const at::Tensor c = rotq::calibration_windows(tokens, 16, 100, 4);
  EXPECT_TRUE(at::equal(a, b));
  EXPECT_FALSE(at::equal(a, c));
  std::set<int64_t> starts;
  for (int64_t s = 0; s < 16; ++s) {
    const int64_t start = a[s][0].item<int64_t>();
    starts.insert(start);
    EXPECT_LE(start, 1000 - 100 - 1);
    EXPECT_TRUE(at::equal(a[s], at::arange(start, start + 100, at::kLong)));
  }
  EXPECT_GT(starts.size(), 10u);
  EXPECT_THROW(rotq::calibration_windows(tokens, 4, 1000, 0), rotq::Error);
}

// Σ x xᵀ of the input of `layer`'s linears at `site` over calibration windows, FP model.
class Capture final : public rotq::ForwardHooks {
 public:
  Capture(Site site, int64_t layer, int64_t cols)
      : acc_(cols, at::kDouble), site_(site), layer_(layer) {}
  void at_site(Site site, int64_t layer, at::Tensor& x) override {
    if (site == site_ && layer == layer_) acc_.add(x);
  }
  rotq::HessianAccumulator acc_;

 private:
  Site site_;
  int64_t layer_;
};

double output_error(const at::Tensor& w, const at::Tensor& q, const at::Tensor& H) {
  at::Tensor d = (w - q).to(at::kDouble);
  return at::trace(at::matmul(at::matmul(d, H), d.t())).item<double>();
}

TEST(Gptq, BeatsRtnOnStories260KLayers) {
  Model m = rotq::load_model(kStories);
  rotq::Transformer tf(m);
  const at::Tensor calib = rotq::calibration_windows(sample_tokens(), 32, 256, 0);
  struct Case {
    Site site;
    int64_t layer;
    LayerTensor t;
    int64_t cols;
  };
  for (const Case& c :
       {Case{Site::kAttnIn, 1, LayerTensor::kWq, 64}, Case{Site::kAttnIn, 3, LayerTensor::kWv, 64},
        Case{Site::kOProjIn, 2, LayerTensor::kWo, 64}, Case{Site::kMlpIn, 4, LayerTensor::kWUp, 64},
        Case{Site::kDownIn, 0, LayerTensor::kWDown, 172}}) {
    Capture cap(c.site, c.layer, c.cols);
    tf.hidden_states(calib, &cap);
    const at::Tensor H = cap.acc_.hessian();
    const at::Tensor w = m.weights.layers[c.layer][c.t];
    for (int bits : {3, 4}) {
      for (int64_t group : {int64_t{0}, int64_t{32}}) {
        if (c.cols % std::max<int64_t>(group, 1) != 0) continue;
        rotq::QuantSpec spec;
        spec.bits = bits;
        spec.group = group;
        spec.mse_clip = true;
        rotq::GptqOptions go;
        go.act_order = true;
        go.static_groups = group > 0;
        const at::Tensor g = rotq::gptq_quantize(w, H.to(at::kFloat), spec, go).weight;
        const at::Tensor r = rotq::rtn_quantize_weight(w, spec);
        EXPECT_LT(output_error(w, g, H), output_error(w, r, H))
            << "layer " << c.layer << " " << rotq::layer_tensor_key(c.t) << " w" << bits << " g"
            << group;
      }
    }
  }
}

// GPTQ's true-sequential capture ends each forward at its site and starts the MLP captures from
// the residual after the attention block: the protocol of full layer forwards with a capture at
// each group (QuaRot's), which this test spells out, gives the same weights.
TEST(Gptq, TrueSequentialEqualsTheFullForwardProtocol) {
  const at::Tensor calib = rotq::calibration_windows(sample_tokens(), 8, 96, 5);
  rotq::WeightQuantOptions o;
  o.method = rotq::WeightMethod::kGptq;
  o.spec.bits = 4;
  o.spec.mse_clip = true;
  o.calib_batch = 3;  // batches of 3, 3, 2 windows
  auto local = rotq::make_local_comm();
  Model got = rotq::load_model(kStories);
  rotq::quantize_weights_gptq(got, calib, o, *local);

  Model want = rotq::load_model(kStories);
  rotq::Transformer tf(want);
  const auto forward = [&](int64_t l, rotq::ForwardHooks* hooks, const at::Tensor& states) {
    std::vector<at::Tensor> outs;
    for (int64_t b0 = 0; b0 < states.size(0); b0 += o.calib_batch) {
      const int64_t n = std::min(o.calib_batch, states.size(0) - b0);
      outs.push_back(tf.layer_forward(states.narrow(0, b0, n), l, hooks));
    }
    return at::cat(outs, 0);
  };
  at::Tensor states = tf.embed(calib);
  for (int64_t l = 0; l < want.config.n_layers; ++l) {
    rotq::LayerWeights& lw = want.weights.layers[l];
    for (const rotq::LayerGroup& g : rotq::layer_groups()) {
      Capture cap(g.site, l, g.input_width(want.config));
      forward(l, &cap, states);
      std::vector<at::Tensor> parts;
      for (LayerTensor t : g.linears) parts.push_back(lw[t]);
      const at::Tensor q =
          rotq::gptq_quantize(at::cat(parts, 0), cap.acc_.hessian(), o.spec, o.gptq).weight;
      int64_t row = 0;
      for (LayerTensor t : g.linears) {
        lw[t] = q.narrow(0, row, lw[t].size(0)).clone();
        row += lw[t].size(0);
      }
    }
    states = forward(l, nullptr, states);
  }
  for (int64_t l = 0; l < want.config.n_layers; ++l) {
    for (LayerTensor t : rotq::quantized_linears()) {
      const at::Tensor a = got.weights.layers[l][t], b = want.weights.layers[l][t];
      // The same operations on the same batches: identical, but for a grid tie at most.
      const double same = (a == b).to(at::kDouble).mean().item<double>();
      EXPECT_GE(same, 0.9999) << "layer " << l << " " << rotq::layer_tensor_key(t);
    }
  }
}

TEST(ActQuant, SixteenBitHooksChangeNothing) {
  Model m = rotq::load_model(kStories);
  rotq::Transformer tf(m);
  const at::Tensor tokens = rotq::calibration_windows(sample_tokens(), 2, 64, 1);
  rotq::ActQuantHooks hooks(m.config, rotq::default_activation_quant(16, 16));
  EXPECT_TRUE(at::equal(tf.hidden_states(tokens), tf.hidden_states(tokens, &hooks)));
}

// Counts the distinct values per row at a site, as the next linear sees them.
class Levels final : public rotq::ForwardHooks {
 public:
  void at_site(Site site, int64_t, at::Tensor& x) override {
    if (site == Site::kAttnIn || site == Site::kDownIn) {
      at::Tensor rows = x.reshape({-1, x.size(-1)});
      for (int64_t r = 0; r < rows.size(0); r += 17) {
        max_act = std::max<int64_t>(max_act, std::get<0>(at::_unique(rows[r])).numel());
      }
    }
    if (site == Site::kKCache) {
      // Per token across KV heads (the capped group of the stories model).
      at::Tensor rows = x.transpose(1, 2).reshape({-1, x.size(1) * x.size(3)});
      for (int64_t r = 0; r < rows.size(0); r += 17) {
        max_kv = std::max<int64_t>(max_kv, std::get<0>(at::_unique(rows[r])).numel());
      }
    }
  }
  int64_t max_act = 0, max_kv = 0;
};

TEST(ActQuant, QuantizedSitesHaveAtMostTwoToTheBitsLevels) {
  Model m = rotq::load_model(kStories);
  rotq::Transformer tf(m);
  const at::Tensor tokens = rotq::calibration_windows(sample_tokens(), 2, 64, 1);
  Levels levels;
  rotq::ActQuantHooks hooks(m.config, rotq::default_activation_quant(4, 3), &levels);
  tf.hidden_states(tokens, &hooks);
  EXPECT_GT(levels.max_act, 4);
  EXPECT_LE(levels.max_act, 16);
  EXPECT_GT(levels.max_kv, 2);
  EXPECT_LE(levels.max_kv, 8);
}

rotq::QuantCell cell(const std::string& rotation, int w_bits, const std::string& method, int a_bits,
                     int kv_bits) {
  rotq::QuantCell c;
  c.rotation = rotq::rotation_spec(rotation);
  c.weights.method = rotq::parse_weight_method(method);
  c.weights.spec.bits = w_bits;
  c.weights.spec.mse_clip = true;
  c.acts = {rotq::default_activation_quant(a_bits, kv_bits)};
  c.calib_text = kText;
  c.calib.nsamples = 16;
  c.calib.seqlen = 256;
  c.ppl_texts = {kText};
  c.ppl.seqlen = 256;
  c.ppl.max_windows = 16;
  return c;
}

TEST(Pipeline, UnquantizedCellsReproduceTheFloatingPointPerplexity) {
  auto tok = rotq::load_tokenizer(kTok, 512);
  auto comm = rotq::make_local_comm();
  Model fp = rotq::load_model(kStories);
  const double want =
      rotq::run_quant_cell(fp, *tok, cell("none", 16, "rtn", 16, 16), *comm).ppl.at(0).ppl;
  for (const std::string rotation : {"random", "hadamard"}) {
    Model m = rotq::load_model(kStories);
    const double got =
        rotq::run_quant_cell(m, *tok, cell(rotation, 16, "rtn", 16, 16), *comm).ppl.at(0).ppl;
    EXPECT_NEAR(got, want, 1e-4 * want) << rotation;
  }
}

TEST(Pipeline, EightBitsIsCloseAndFourBitsIsNot) {
  auto tok = rotq::load_tokenizer(kTok, 512);
  auto comm = rotq::make_local_comm();
  Model fp = rotq::load_model(kStories);
  const double base =
      rotq::run_quant_cell(fp, *tok, cell("none", 16, "rtn", 16, 16), *comm).ppl.at(0).ppl;
  Model m8 = rotq::load_model(kStories);
  const double w8a8 =
      rotq::run_quant_cell(m8, *tok, cell("hadamard", 8, "gptq", 8, 8), *comm).ppl.at(0).ppl;
  EXPECT_NEAR(w8a8, base, 0.03 * base);
  Model m4 = rotq::load_model(kStories);
  const auto r4 = rotq::run_quant_cell(m4, *tok, cell("hadamard", 4, "gptq", 4, 4), *comm);
  EXPECT_GT(r4.ppl.at(0).ppl, base * 1.05);
  EXPECT_EQ(r4.weights.layers.size(), 5u);
  EXPECT_GT(r4.weights.quant_flops, 0);
}

}  // namespace
