// Rotations and their fusion: a rotated model computes the same function as the original (the
// premise of every method rotq compares), rotations are deterministic and checked on load, and
// the online Hadamards survive a save/load round trip.
#include "solvers/rotation.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <set>

#include "models/checkpoint.h"
#include "models/safetensors.h"
#include "models/synth.h"
#include "models/transformer.h"
#include "runner/cell/run_cell.h"
#include "runner/fuse/fusion.h"
#include "runner/rotate/rotation_io.h"
#include "runner/rotate/rotation_methods.h"
#include "solvers/error.h"
#include "tests/test_util.h"

namespace {

using rotq::Model;
using rotq::RotationSpec;

const std::string kStories = rotq_test::shared_data("models/stories260K/stories260K.bin");

// A synthetic model whose sizes need non-power-of-two Hadamards: dim 192 = 12·16 (R1),
// intermediate 688 = 172·4 (R4), head_dim 32 (R2, R3), GQA 6 heads over 2 KV heads, untied.
// `extra` adds --dims keys: the biases and activations of other LLaMA-family configs.
Model synthetic_model(at::ScalarType dtype, const std::string& extra = "") {
  rotq::ModelConfig cfg = rotq::synth_preset("tiny");
  rotq::apply_dims(
      cfg, "dim=192,hidden=688,layers=2,heads=6,kv_heads=2,vocab=300,tied=0,ctx=128" + extra);
  Model m = rotq::make_synthetic_model(cfg, 5, dtype);
  // Non-trivial (seeded) norm scales, so that norm fusion is exercised.
  uint64_t stream = 0;
  const auto scales = [&](const at::Tensor& like) {
    return (rotq::seeded_gaussian(1, like.numel(), ++stream).abs() + 0.5)
        .view(like.sizes())
        .to(dtype);
  };
  for (auto& l : m.weights.layers) {
    for (auto t : {rotq::LayerTensor::kAttnNorm, rotq::LayerTensor::kFfnNorm}) l[t] = scales(l[t]);
  }
  m.weights.final_norm = scales(m.weights.final_norm);
  return m;
}

Model stories(at::ScalarType dtype) {
  rotq::LoadOptions lo;
  lo.dtype = dtype;
  return rotq::load_model(kStories, lo);
}

at::Tensor logits_of(const Model& m, int64_t T = 48) {
  at::Tensor tokens =
      (at::arange(2 * T, at::kLong) * 37 + 1).remainder(m.config.vocab_size).view({2, T});
  rotq::Transformer tf(m);
  at::Tensor h = tf.hidden_states(tokens);
  return tf.logits(h.reshape({-1, h.size(-1)}));
}

double relative_error(const at::Tensor& a, const at::Tensor& b) {
  at::Tensor ad = a.to(at::kDouble), bd = b.to(at::kDouble);
  return (ad - bd).abs().max().item<double>() / bd.abs().max().item<double>();
}

RotationSpec spec_of(const std::string& kind, uint64_t seed) {
  RotationSpec s = rotq::rotation_spec(kind);
  s.seed = seed;
  s.r2 = true;
  s.online = true;  // R3 and R4 on for every kind, "none" included
  return s;
}

struct InvarianceCase {
  const char* model;
  at::ScalarType dtype;
  double tol;  // relative to max |logit|
  const char* dims = "";
};

void PrintTo(const InvarianceCase& c, std::ostream* os) {
  *os << c.model << (c.dtype == at::kFloat ? " float32" : " float64");
}

class RotationInvariance : public ::testing::TestWithParam<InvarianceCase> {};

TEST_P(RotationInvariance, RotatedModelHasTheSameLogits) {
  const InvarianceCase& p = GetParam();
  const auto load = [&] {
    return std::string(p.model) == "stories260K" ? stories(p.dtype)
                                                 : synthetic_model(p.dtype, p.dims);
  };
  const Model original = load();
  const at::Tensor want = logits_of(original);
  rotq_test::TempDir dir;
  for (const std::string kind : {"none", "random", "hadamard", "walsh", "file"}) {
    Model m = load();
    rotq::Rotations rot;
    if (kind == "file") {
      // A file written from a random rotation (different seed): loaded, checked, fused.
      const RotationSpec src = spec_of("random", 99);
      rotq::save_rotations(rotq::resolve_rotations(src, m.config), dir.str("rot.safetensors"));
      rot = rotq::resolve_rotations(rotq::rotation_spec("file:" + dir.str("rot.safetensors")),
                                    m.config);
      ASSERT_TRUE(rot.r1.defined());
      EXPECT_TRUE(rot.r3 && rot.r4);
    } else {
      rot = rotq::resolve_rotations(spec_of(kind, 7), m.config);
    }
    rotq::rotate_model(m, rot, true);
    EXPECT_TRUE(m.config.online_hadamard_down && m.config.online_hadamard_qk);
    EXPECT_FALSE(m.config.tie_embeddings);
    const double err = relative_error(logits_of(m), want);
    EXPECT_LE(err, p.tol) << p.model << " " << kind;
    // The rotation did change the weights (except the identity R1 of "none").
    if (kind != "none") {
      EXPECT_GT((m.weights.layers[0][rotq::LayerTensor::kWq].to(at::kDouble) -
                 original.weights.layers[0][rotq::LayerTensor::kWq].to(at::kDouble))
                    .abs()
                    .max()
                    .item<double>(),
                1e-3);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Models, RotationInvariance,
                         ::testing::Values(InvarianceCase{"stories260K", at::kFloat, 1e-5},
                                           InvarianceCase{"stories260K", at::kDouble, 1e-10},
                                           InvarianceCase{"synthetic", at::kFloat, 1e-5},
                                           InvarianceCase{"synthetic", at::kDouble, 1e-10},
                                           // Llama with attention_bias, mlp_bias and a GELU gate:
                                           // o/down biases turn with R1, the others stay.
                                           InvarianceCase{"llama_biases", at::kFloat, 1e-5,
                                                          ",attention_bias=1,mlp_bias=1,"
                                                          "act=gelu_pytorch_tanh"},
                                           InvarianceCase{"llama_biases", at::kDouble, 1e-10,
                                                          ",attention_bias=1,mlp_bias=1,act=gelu"},
                                           // Qwen3: q/k norms, head_dim 48 != 192/6, biases.
                                           InvarianceCase{"qwen3_biases", at::kFloat, 1e-5,
                                                          ",arch=Qwen3ForCausalLM,head_dim=48,"
                                                          "attention_bias=1"},
                                           InvarianceCase{"qwen2", at::kFloat, 1e-5,
                                                          ",arch=Qwen2ForCausalLM"}),
                         [](const auto& info) {
                           return std::string(info.param.model) +
                                  (info.param.dtype == at::kFloat ? "_f32" : "_f64");
                         });

TEST(Rotation, NormFusionAloneKeepsLogitsAndUntiesTheHead) {
  Model m = stories(at::kDouble);
  ASSERT_TRUE(m.config.tie_embeddings);
  const at::Tensor want = logits_of(m);
  rotq::fuse_norms(m);
  EXPECT_TRUE(rotq::norms_are_fused(m));
  EXPECT_FALSE(m.weights.lm_head.is_same(m.weights.embed));
  EXPECT_LE(relative_error(logits_of(m), want), 1e-12);
}

TEST(Rotation, FusingIntoUnfusedNormsIsRefused) {
  Model m = stories(at::kFloat);
  rotq::Rotations rot = rotq::resolve_rotations(spec_of("random", 1), m.config);
  EXPECT_THROW(rotq::fuse_rotations(m, rot), rotq::Error);
}

TEST(Rotation, SameSeedSameMatricesAndOrthogonal) {
  for (const std::string kind : {"random", "hadamard"}) {
    const auto make = [&](uint64_t seed) {
      rotq::FixedRotationSpec f;
      f.kind = rotq::parse_fixed_rotation(kind);
      f.seed = seed;
      return rotq::make_rotations(f, 192, 32, 2);
    };
    const auto a = make(3), b = make(3), c = make(4);
    EXPECT_TRUE(at::equal(a.r1, b.r1)) << kind;
    EXPECT_TRUE(at::equal(a.r2[1], b.r2[1])) << kind;
    EXPECT_FALSE(at::equal(a.r1, c.r1)) << kind;
    EXPECT_FALSE(at::equal(a.r2[0], a.r2[1])) << kind << ": layers get their own R2";
    EXPECT_LT(rotq::orthogonality_error(a.r1), 1e-12) << kind;
    EXPECT_LT(rotq::orthogonality_error(a.r2[0]), 1e-12) << kind;
    EXPECT_EQ(a.r1.scalar_type(), at::kDouble);
  }
  // A fixed draw: guards against accidental changes of the generator (results/ depend on it).
  const at::Tensor g = rotq::seeded_gaussian(1, 2, 0);
  EXPECT_NEAR(g[0][0].item<double>(), rotq::seeded_gaussian(1, 2, 0)[0][0].item<double>(), 0);
  EXPECT_TRUE(std::isfinite(g[0][1].item<double>()));
}

// walsh: the plain normalized Hadamard, the same whatever the seed, orthogonal.
TEST(Rotation, WalshIsSeedIndependentAndOrthogonal) {
  const rotq::ModelConfig c = stories(at::kFloat).config;
  const rotq::Rotations a = rotq::resolve_rotations(spec_of("walsh", 1), c);
  const rotq::Rotations b = rotq::resolve_rotations(spec_of("walsh", 2), c);
  EXPECT_TRUE(at::equal(a.r1, b.r1));
  EXPECT_LT(rotq::orthogonality_error(a.r1), 1e-12);
  EXPECT_LT(rotq::orthogonality_error(a.r2.at(0)), 1e-12);
  EXPECT_FALSE(at::equal(a.r1, rotq::resolve_rotations(spec_of("hadamard", 1), c).r1));
}

TEST(Rotation, RandomOrthogonalIsSignFixedQr) {
  const at::Tensor q = rotq::random_orthogonal(16, 11);
  // Q·R = G with diag(R) > 0: R = Qᵀ G is upper triangular with a positive diagonal.
  const at::Tensor r = at::matmul(q.t(), rotq::seeded_gaussian(16, 16, 11));
  EXPECT_LT(at::tril(r, -1).abs().max().item<double>(), 1e-12);
  EXPECT_GT(r.diagonal().min().item<double>(), 0);
}

TEST(Rotation, SpecParsing) {
  EXPECT_EQ(rotq::rotation_spec("hadamard").method, "hadamard");
  EXPECT_EQ(rotq::rotation_spec("file:/x/y").path, "/x/y");
  EXPECT_EQ(rotq::rotation_spec("file:/x/y").text(), "file:/x/y");
  EXPECT_FALSE(rotq::rotation_spec("none").online);
  EXPECT_TRUE(rotq::rotation_spec("random").online);
  EXPECT_THROW(rotq::rotation_spec("spin"), rotq::Error);
  EXPECT_THROW(rotq::rotation_spec("file:"), rotq::Error);
  EXPECT_THROW(rotq::rotation_spec("dfrot:x"), rotq::Error);
  // Every method is registered once, and the names the options accept come from the registry.
  std::set<std::string> names;
  for (const rotq::RotationMethod& m : rotq::rotation_methods()) {
    EXPECT_TRUE(names.insert(m.name).second) << m.name;
    EXPECT_TRUE((m.fixed != nullptr) != (m.learn != nullptr)) << m.name;
    EXPECT_NE(rotq::rotation_method_names().find(m.name), std::string::npos) << m.name;
  }
}

TEST(Rotation, BadRotationFilesAreRejected) {
  rotq_test::TempDir dir;
  const Model m = stories(at::kFloat);
  const auto write = [&](const std::string& name, at::Tensor r1) {
    rotq::write_safetensors(dir.str(name), {{"R1", r1}});
    return dir.str(name);
  };
  const auto expect_error = [&](const std::string& path, const std::string& needle) {
    try {
      rotq::load_rotations(path, m.config);
      ADD_FAILURE() << "no error for " << path;
    } catch (const rotq::Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error(write("shape.safetensors", at::eye(32, at::kDouble)), "expected 64x64");
  expect_error(write("skew.safetensors", at::eye(64, at::kDouble) * 1.01), "not orthogonal");
  at::Tensor nan = at::eye(64, at::kDouble);
  nan[3][3] = std::nan("");
  expect_error(write("nan.safetensors", nan), "NaN");
  expect_error(dir.str("missing.safetensors"), "missing.safetensors");
}

TEST(Rotation, SavedRotatedModelReloadsWithItsOnlineHadamards) {
  rotq_test::TempDir dir;
  Model m = synthetic_model(at::kFloat);
  const at::Tensor want = logits_of(m);
  rotq::rotate_model(m, rotq::resolve_rotations(spec_of("hadamard", 2), m.config), true);
  rotq::save_hf_checkpoint(m, dir.str("rotated"));
  Model back = rotq::load_model(dir.str("rotated"));
  EXPECT_TRUE(back.config.online_hadamard_down);
  EXPECT_TRUE(back.config.online_hadamard_qk);
  EXPECT_LE(relative_error(logits_of(back), want), 1e-5);
  // Rotating twice would need the online transforms twice: refused.
  EXPECT_THROW(
      rotq::rotate_model(back, rotq::resolve_rotations(spec_of("random", 1), back.config), true),
      rotq::Error);
}

}  // namespace
