// Rotations learned end to end (SpinQuant, OSTQuant): the training forward's gradient (of the
// rotations and of OSTQuant's channel scalings) is the exact derivative of the quantized loss
// under the straight-through estimator, checkpointed recompute changes nothing, the learned
// matrices stay orthogonal, and the function trained on is the one the fused model computes.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <fstream>
#include <map>

#include "models/checkpoint.h"
#include "models/quant_hooks.h"
#include "models/synth.h"
#include "models/transformer.h"
#include "runner/data/calibration.h"
#include "runner/dist/comm.h"
#include "runner/fuse/fusion.h"
#include "runner/fuse/scalings.h"
#include "runner/record/results.h"
#include "runner/rotate/ostquant.h"
#include "runner/rotate/rotated_forward.h"
#include "runner/rotate/rotation_io.h"
#include "runner/rotate/spinquant.h"
#include "solvers/error.h"
#include "solvers/hadamard.h"
#include "solvers/orthogonal.h"
#include "solvers/rotation.h"
#include "tests/test_util.h"

namespace {

using rotq::Model;

// dim 48 = 12·4 (R1), intermediate 80 = 20·4 (R4), head_dim 12 (R2, R3): non-power-of-two
// Hadamards everywhere; GQA 4 heads over 2 KV heads; norms with seeded scales, then fused.
Model tiny_model(at::ScalarType dtype, const std::string& extra = "") {
  rotq::ModelConfig cfg = rotq::synth_preset("tiny");
  rotq::apply_dims(cfg,
                   "dim=48,hidden=80,layers=2,heads=4,kv_heads=2,vocab=64,tied=0,ctx=32" + extra);
  Model m = rotq::make_synthetic_model(cfg, 3, dtype);
  uint64_t stream = 100;
  for (auto& l : m.weights.layers) {
    for (auto t : {rotq::LayerTensor::kAttnNorm, rotq::LayerTensor::kFfnNorm}) {
      l[t] = (rotq::seeded_gaussian(1, l[t].numel(), ++stream).abs() + 0.5)
                 .view(l[t].sizes())
                 .to(dtype);
    }
  }
  rotq::fuse_norms(m);
  return m;
}

at::Tensor windows_of(const Model& m, int64_t n, int64_t T, int64_t mult = 37) {
  return (at::arange(n * T, at::kLong) * mult + 5).remainder(m.config.vocab_size).view({n, T});
}

rotq::Rotations hadamard_init(const Model& m, uint64_t seed) {
  rotq::FixedRotationSpec f{rotq::FixedRotation::kHadamard, seed, true, true};
  return rotq::make_rotations(f, m.config.dim, m.config.head_dim, m.config.n_layers);
}

rotq::ActivationQuant w16a4kv4() {
  rotq::ActivationQuant q = rotq::default_activation_quant(4, 4);
  q.k_cache.group = q.v_cache.group = 0;
  return q;
}

// Quantization noise frozen at one point: the first forward records q(x) − x at every site (the
// quantizers' value there), later forwards add the recorded offsets. Its loss is smooth in the
// rotations, and its exact derivative at the recording point is what the straight-through
// estimator computes.
class FrozenNoise final : public rotq::ForwardHooks {
 public:
  explicit FrozenNoise(const rotq::ModelConfig& c) : quant_(c, w16a4kv4()) {}
  void at_site(rotq::Site site, int64_t layer, at::Tensor& x) override {
    const auto key = std::make_pair(static_cast<int>(site), layer);
    if (recording_) {
      at::Tensor q = x.detach().clone();
      quant_.at_site(site, layer, q);
      offsets_[key] = q - x.detach();
    }
    x = x + offsets_.at(key);
  }
  void freeze() { recording_ = false; }

 private:
  rotq::ActQuantHooks quant_;
  bool recording_ = true;
  std::map<std::pair<int, int64_t>, at::Tensor> offsets_;
};

// SpinQuant for W16A4KV4, `steps` steps of `batch` windows.
rotq::RotationSpec spinquant_spec(int64_t steps, int64_t batch) {
  rotq::RotationSpec spec = rotq::rotation_spec("spinquant");
  spec.spinquant.steps = steps;
  spec.spinquant.batch = batch;
  spec.learn_acts = w16a4kv4();
  return spec;
}

rotq::RotationParams params_at(const rotq::Rotations& r) {
  return rotq::RotationParams::from(r, at::kCPU);
}

rotq::Rotations shifted(const rotq::Rotations& r, const rotq::Rotations& d, double eps) {
  rotq::Rotations out = r;
  out.r1 = r.r1 + eps * d.r1;
  for (size_t l = 0; l < r.r2.size(); ++l) out.r2[l] = r.r2[l] + eps * d.r2[l];
  return out;
}

TEST(LearnedRotation, GradientIsTheDerivativeOfTheQuantizedLossUnderTheSte) {
  const Model m = tiny_model(at::kDouble);
  auto comm = rotq::make_local_comm();
  const at::Tensor w = windows_of(m, 2, 24);
  const rotq::Rotations r0 = hadamard_init(m, 1);
  // The gradient with the straight-through quantizers (W16A4KV4).
  rotq::RotatedForwardOptions o;
  o.acts = w16a4kv4();
  o.micro_batch = 2;  // one forward per call: FrozenNoise keys its offsets by (site, layer)
  rotq::RotatedForward ste(m, rotq::Placement::replicated(), *comm, o);
  rotq::RotationParams p = params_at(r0);
  ste.loss_and_backward(p, w);
  // The same loss at r0 through the frozen-noise surrogate, then its central differences.
  FrozenNoise noise(m.config);
  rotq::RotatedForwardOptions fo;
  fo.hooks = &noise;
  fo.micro_batch = 2;
  rotq::RotatedForward frozen(m, rotq::Placement::replicated(), *comm, fo);
  rotq::RotationParams p0 = params_at(r0);
  const double l_ste = ste.loss(p0, w), l_frozen = frozen.loss(p0, w);
  noise.freeze();
  EXPECT_NEAR(l_frozen, l_ste, 1e-9 * std::abs(l_ste));
  // Random directions on every matrix at once and on R1 / one R2 alone.
  for (int dir = 0; dir < 3; ++dir) {
    rotq::Rotations d;
    d.r1 = dir == 2 ? at::zeros_like(r0.r1) : rotq::seeded_gaussian(48, 48, 10 + dir);
    for (size_t l = 0; l < r0.r2.size(); ++l) {
      d.r2.push_back(dir == 1 || (dir == 2 && l == 0) ? rotq::seeded_gaussian(12, 12, 20 + l)
                                                      : at::zeros({12, 12}, at::kDouble));
    }
    const double eps = 1e-6;
    rotq::RotationParams plus = params_at(shifted(r0, d, eps)),
                         minus = params_at(shifted(r0, d, -eps));
    const double fd = (frozen.loss(plus, w) - frozen.loss(minus, w)) / (2 * eps);
    double analytic = (p.r1.grad() * d.r1).sum().item<double>();
    for (size_t l = 0; l < r0.r2.size(); ++l) {
      analytic += (p.r2[l].grad() * d.r2[l]).sum().item<double>();
    }
    EXPECT_NEAR(analytic, fd, 1e-6 * std::max(1.0, std::abs(fd))) << "direction " << dir;
    EXPECT_GT(std::abs(fd), 1e-3) << "direction " << dir;  // the check is not vacuous
  }
  // One Cayley SGD step along that gradient lowers the loss it is the gradient of.
  rotq::Rotations stepped = r0;
  stepped.r1 = rotq::cayley_sgd_step(r0.r1, p.r1.grad(), 1e-3);
  for (size_t l = 0; l < r0.r2.size(); ++l) {
    stepped.r2[l] = rotq::cayley_sgd_step(r0.r2[l], p.r2[l].grad(), 1e-3);
  }
  EXPECT_LT(frozen.loss(params_at(stepped), w), l_frozen - 1e-4);
}

TEST(LearnedRotation, CheckpointedRecomputeEqualsThePlainBackward) {
  for (const char* extra : {"", ",arch=Qwen2ForCausalLM"}) {
    const Model m = tiny_model(at::kDouble, extra);
    auto comm = rotq::make_local_comm();
    const at::Tensor w = windows_of(m, 3, 20);
    const rotq::Rotations r0 = hadamard_init(m, 2);
    rotq::RotatedForwardOptions o;
    o.acts = w16a4kv4();
    o.weights.bits = 4;  // and weights through the STE
    o.logit_rows = 7;    // several head chunks per window
    std::vector<rotq::RotationParams> grads;
    std::vector<double> losses;
    for (auto [checkpoint, micro] : {std::pair{false, 3}, {true, 1}, {true, 2}}) {
      o.checkpoint = checkpoint;
      o.micro_batch = micro;
      rotq::RotatedForward f(m, rotq::Placement::replicated(), *comm, o);
      grads.push_back(params_at(r0));
      losses.push_back(f.loss_and_backward(grads.back(), w));
    }
    for (size_t i = 1; i < grads.size(); ++i) {
      EXPECT_NEAR(losses[i], losses[0], 1e-10 * losses[0]) << extra;
      const auto a = grads[0].tensors(), b = grads[i].tensors();
      ASSERT_EQ(a.size(), b.size());
      for (size_t k = 0; k < a.size(); ++k) {
        const double scale = a[k].grad().abs().max().item<double>();
        EXPECT_GT(scale, 0) << extra << " matrix " << k;
        EXPECT_LT((a[k].grad() - b[k].grad()).abs().max().item<double>(), 1e-10 * scale)
            << extra << " case " << i << " matrix " << k;
      }
    }
  }
}

// The training forward at the learned rotations and the fused model under the same quantizers
// compute the same loss: the rotation is trained on the function that is evaluated.
double fused_quantized_loss(const Model& base, const rotq::Rotations& rot, const at::Tensor& w,
                            const rotq::ActivationQuant& acts) {
  Model m = rotq::clone_model(base);
  rotq::fuse_rotations(m, rot);
  rotq::Transformer tf(m);
  rotq::ActQuantHooks hooks(m.config, acts);
  const at::Tensor h = tf.hidden_states(w, acts.any() ? &hooks : nullptr);
  const at::Tensor hidden = h.narrow(1, 0, w.size(1) - 1).reshape({-1, h.size(-1)});
  const at::Tensor targets = w.narrow(1, 1, w.size(1) - 1).reshape({-1});
  return rotq::token_nll(hidden, m.weights.lm_head, targets).sum().item<double>();
}

TEST(LearnedRotation, SpinQuantStaysOrthogonalAndTrainsTheFusedFunction) {
  const Model m = tiny_model(at::kDouble);
  auto comm = rotq::make_local_comm();
  const at::Tensor w = windows_of(m, 4, 24);
  rotq::RotationSpec spec = spinquant_spec(12, 4);  // every step on the same windows
  spec.seed = 3;
  spec.spinquant.lr = 0.5;
  rotq::RotationLearning learned;
  const rotq::Rotations rot =
      rotq::spinquant_rotations(m, w, spec, *comm, rotq::Placement::replicated(), learned);
  rotq::RotatedForwardOptions o;
  o.acts = spec.learn_acts;
  rotq::RotatedForward f(m, rotq::Placement::replicated(), *comm, o);
  const double f0 = f.loss(params_at(hadamard_init(m, 3)), w) / (4 * 23);
  ASSERT_EQ(learned.loss.size(), 12u);
  EXPECT_NEAR(learned.loss[0], f0, 1e-12 * f0);  // the first step's loss is the start's
  EXPECT_LT(rotq::orthogonality_error(rot.r1), 1e-10);
  ASSERT_EQ(rot.r2.size(), 2u);
  for (const at::Tensor& r2 : rot.r2) EXPECT_LT(rotq::orthogonality_error(r2), 1e-10);
  EXPECT_GT((rot.r1 - hadamard_init(m, 3).r1).abs().max().item<double>(), 1e-3);  // it moved
  const double trained = f.loss(params_at(rot), w);
  const double fused = fused_quantized_loss(m, rot, w, spec.learn_acts);
  EXPECT_NEAR(fused, trained, 1e-9 * trained);
  // Floating point: the fused model is the original model (1e-10 relative in float64).
  const double fp_rot = fused_quantized_loss(m, rot, w, rotq::default_activation_quant(16, 16));
  const double fp = fused_quantized_loss(m, {}, w, rotq::default_activation_quant(16, 16));
  EXPECT_NEAR(fp_rot, fp, 1e-10 * fp);
}

TEST(LearnedRotation, Float32FusedModelKeepsTheFunction) {
  const Model m64 = tiny_model(at::kDouble);
  Model m32 = rotq::clone_model(m64);
  rotq::cast_weights(m32.weights, at::kFloat);
  auto comm = rotq::make_local_comm();
  const at::Tensor w = windows_of(m64, 2, 24);
  const rotq::RotationSpec spec = spinquant_spec(3, 2);
  rotq::RotationLearning learned;
  const rotq::Rotations rot =
      rotq::spinquant_rotations(m32, w, spec, *comm, rotq::Placement::replicated(), learned);
  const rotq::ActivationQuant fp = rotq::default_activation_quant(16, 16);
  const double base = fused_quantized_loss(m32, {}, w, fp);
  EXPECT_NEAR(fused_quantized_loss(m32, rot, w, fp), base, 1e-5 * base);
  // The float32 training forward's unquantized loss at the learned rotation agrees too.
  rotq::RotatedForwardOptions o;
  o.acts = fp;
  rotq::RotatedForward f(m32, rotq::Placement::replicated(), *comm, o);
  EXPECT_NEAR(f.loss(params_at(rot), w), base, 1e-5 * base);
}

// An experiment cell learns SpinQuant on stories260K and stores what it learned: the loss curve
// (one value per step) and, with runtime.save_rotations, R1 and every R2, orthogonal.
TEST(LearnedRotation, ExperimentCellStoresTheLossCurveAndTheMatrices) {
  rotq_test::TempDir dir;
  std::ofstream(dir.str("exp.yaml"))
      << "name: learned\noutput: " << dir.str("out.h5")
      << "\nmodels:\n  - {name: stories260K, path: "
      << rotq_test::project_data("stories260K/stories260K.bin")
      << ", tokenizer: " << rotq_test::project_data("stories260K/tok512.bin") << "}\n"
      << "calibration: {text: " << rotq_test::project_data("tinystories_sample.txt") << "}\n"
      << "rotation: {method: spinquant, spinquant: {steps: 3, nsamples: 4, seqlen: 64, batch: 2}}\n"
      << "evaluation: {ppl_texts: [" << rotq_test::project_data("tinystories_sample.txt")
      << "], acts: [16/16, 4/4], seqlen: 64, max_windows: 2}\n"
      << "runtime: {save_rotations: true}\n";
  const auto r = rotq_test::run_command(std::string(ROTQ_BINARY) + " --log-level warn run " +
                                        dir.str("exp.yaml"));
  ASSERT_EQ(r.status, 0) << r.output;
  const auto cells = rotq::read_results(dir.str("out.h5"));
  ASSERT_EQ(cells.size(), 1u);
  const rotq::CellRecord& c = cells.begin()->second;
  EXPECT_EQ(c.rotation_loss.size(), 3u);
  EXPECT_GT(c.seconds.at("rotation_learning"), 0);
  // One time per step after the first, each within the learning's whole time.
  ASSERT_EQ(c.series.at("rotation_step_seconds").size(), 2u);
  for (double s : c.series.at("rotation_step_seconds")) {
    EXPECT_GT(s, 0);
    EXPECT_LE(s, c.seconds.at("rotation_learning"));
  }
  ASSERT_EQ(c.r1_dim, 64);
  ASSERT_EQ(c.r2_dim, 8);
  ASSERT_EQ(c.r2.size(), 5u * 8 * 8);
  const at::Tensor r1 = at::tensor(c.r1, at::kDouble).view({64, 64});
  EXPECT_LT(rotq::orthogonality_error(r1), 1e-10);
  const at::Tensor r2 = at::tensor(c.r2, at::kDouble).view({5, 8, 8});
  for (int64_t l = 0; l < 5; ++l) EXPECT_LT(rotq::orthogonality_error(r2[l]), 1e-10) << l;
  EXPECT_GT(
      (r1 - rotq::random_hadamard_matrix(64, rotq::derive_seed(0, 0))).abs().max().item<double>(),
      1e-3);  // learned, not the start
}

// bfloat16 weights and activations (float32 products, float64 masters): the same loss as float32
// to bfloat16's precision, and the masters stay orthogonal.
TEST(LearnedRotation, Bfloat16TrainsWithFloat64Masters) {
  const Model m64 = tiny_model(at::kDouble);
  auto comm = rotq::make_local_comm();
  const at::Tensor w = windows_of(m64, 2, 24);
  const rotq::RotationSpec spec = spinquant_spec(2, 2);
  std::vector<double> first;
  for (at::ScalarType dt : {at::kFloat, at::kBFloat16}) {
    Model m = rotq::clone_model(m64);
    rotq::cast_weights(m.weights, dt);
    rotq::RotationLearning learned;
    const rotq::Rotations rot =
        rotq::spinquant_rotations(m, w, spec, *comm, rotq::Placement::replicated(), learned);
    EXPECT_EQ(rot.r1.scalar_type(), at::kDouble);
    EXPECT_LT(rotq::orthogonality_error(rot.r1), 1e-10);
    first.push_back(learned.loss.at(0));
  }
  EXPECT_NEAR(first[1], first[0], 0.03 * first[0]);
}

TEST(LearnedRotation, BadInputIsOneClearError) {
  const Model m = tiny_model(at::kDouble);
  auto comm = rotq::make_local_comm();
  rotq::RotationSpec spec = rotq::rotation_spec("spinquant");
  rotq::RotationLearning learned;
  spec.learn_acts = w16a4kv4();
  spec.learn_acts.fp_massive = 0.1;
  EXPECT_THROW(rotq::spinquant_rotations(m, windows_of(m, 8, 8), spec, *comm,
                                         rotq::Placement::replicated(), learned),
               rotq::Error);
  Model unfused = tiny_model(at::kDouble);
  unfused.weights.layers[0][rotq::LayerTensor::kAttnNorm].mul_(2);
  rotq::RotatedForwardOptions o;
  try {
    rotq::RotatedForward f(unfused, rotq::Placement::replicated(), *comm, o);
    FAIL() << "an unfused model was accepted";
  } catch (const rotq::Error& e) {
    EXPECT_NE(std::string(e.what()).find("norm-fused"), std::string::npos) << e.what();
  }
}

// Scalings away from one (so that every pair is exercised at a general point): exp(0.3·N(0, 1)).
std::vector<rotq::ChannelScalings> random_scalings(const Model& m, uint64_t seed) {
  std::vector<rotq::ChannelScalings> out;
  for (int64_t l = 0; l < m.config.n_layers; ++l) {
    rotq::ChannelScalings s = rotq::unit_scalings(m.config);
    for (const auto& [kind, field] : rotq::scaling_kinds()) {
      at::Tensor& t = s.*field;
      t = at::exp(0.3 * rotq::seeded_gaussian(1, t.numel(), ++seed)).view(t.sizes());
    }
    out.push_back(s);
  }
  return out;
}

rotq::Rotations with_scalings(rotq::Rotations r, std::vector<rotq::ChannelScalings> s) {
  r.scales = std::move(s);
  return r;
}

// Every scaling moved by eps·d (the rotations kept).
rotq::Rotations scalings_shifted(const rotq::Rotations& r, const std::vector<at::Tensor>& d,
                                 double eps) {
  rotq::Rotations out = r;
  size_t i = 0;
  for (rotq::ChannelScalings& s : out.scales) {
    for (const auto& [kind, field] : rotq::scaling_kinds()) s.*field = s.*field + eps * d[i++];
  }
  return out;
}

// The gradient of every channel scaling (all five kinds, on LLaMA, Qwen2 with q/k/v biases and
// Qwen3 with per-head q/k norms) is the central difference of the frozen-noise quantized loss,
// under KL-Top against the floating-point model as OSTQuant trains it.
TEST(OstQuant, GradientOfTheScalingsIsTheDerivativeOfTheQuantizedLoss) {
  for (const char* extra : {"", ",arch=Qwen2ForCausalLM", ",arch=Qwen3ForCausalLM"}) {
    SCOPED_TRACE(extra);
    const Model m = tiny_model(at::kDouble, extra);
    auto comm = rotq::make_local_comm();
    const at::Tensor w = windows_of(m, 2, 24);
    const rotq::Rotations r0 = with_scalings(hadamard_init(m, 4), random_scalings(m, 40));
    FrozenNoise noise(m.config);
    rotq::RotatedForwardOptions fo;
    fo.hooks = &noise;
    fo.micro_batch = 2;
    fo.loss = rotq::LearnLoss::kKlTop;
    fo.kl_top = 10;
    rotq::RotatedForward frozen(m, rotq::Placement::replicated(), *comm, fo);
    rotq::RotationParams p = params_at(r0);
    const double l0 = frozen.loss_and_backward(p, w);  // records the noise at r0
    noise.freeze();
    EXPECT_GT(l0, 0);
    const std::vector<at::Tensor> grads = p.scalings();
    ASSERT_EQ(grads.size(), 2u * 5);
    for (int dir = 0; dir < 3; ++dir) {
      std::vector<at::Tensor> d;
      for (size_t i = 0; i < grads.size(); ++i) {
        const bool on = dir == 0 || static_cast<int>(i % 5) == (dir == 1 ? 2 : 4);  // all; qk; up
        d.push_back(on ? rotq::seeded_gaussian(1, grads[i].numel(), 60 + 10 * dir + i)
                             .view(grads[i].sizes())
                       : at::zeros_like(grads[i]).detach());
      }
      const double eps = 1e-6;
      const double fd = (frozen.loss(params_at(scalings_shifted(r0, d, eps)), w) -
                         frozen.loss(params_at(scalings_shifted(r0, d, -eps)), w)) /
                        (2 * eps);
      double analytic = 0;
      for (size_t i = 0; i < grads.size(); ++i) {
        analytic += (grads[i].grad() * d[i]).sum().item<double>();
      }
      EXPECT_NEAR(analytic, fd, 1e-6 * std::max(1.0, std::abs(fd))) << "direction " << dir;
      EXPECT_GT(std::abs(fd), 1e-4) << "direction " << dir;  // the check is not vacuous
    }
  }
}

// KL-Top is what it says: with k = the vocabulary it is the full KL(p_fp ‖ p_q) of the fused
// quantized model against the original; with k < vocabulary the same sum over the FP model's top k.
TEST(OstQuant, KlTopIsTheKlOfTheFusedQuantizedModelOnTheTeachersTopK) {
  const Model m = tiny_model(at::kDouble);
  auto comm = rotq::make_local_comm();
  const at::Tensor w = windows_of(m, 2, 16);
  const rotq::Rotations r = with_scalings(hadamard_init(m, 5), random_scalings(m, 80));
  Model fused = rotq::clone_model(m);
  rotq::fuse_rotations(fused, r);
  rotq::ActQuantHooks hooks(fused.config, w16a4kv4());
  const auto logits_of = [&](const Model& model, rotq::ForwardHooks* h) {
    const at::Tensor hid = rotq::Transformer(model).hidden_states(w, h).narrow(1, 0, 15);
    return at::matmul(hid, model.weights.lm_head.t()).reshape({-1, m.config.vocab_size});
  };
  const at::Tensor log_p = at::log_softmax(logits_of(m, nullptr), 1);
  const at::Tensor log_q = at::log_softmax(logits_of(fused, &hooks), 1);
  for (int64_t k : {64, 5}) {
    const at::Tensor top = std::get<1>(at::topk(log_p, k, 1));
    const at::Tensor lp = log_p.gather(1, top), lq = log_q.gather(1, top);
    const double expected = (lp.exp() * (lp - lq)).sum().item<double>();
    rotq::RotatedForwardOptions o;
    o.acts = w16a4kv4();
    o.loss = rotq::LearnLoss::kKlTop;
    o.kl_top = k;
    o.logit_rows = 6;
    rotq::RotatedForward f(m, rotq::Placement::replicated(), *comm, o);
    EXPECT_NEAR(f.loss(params_at(r), w), expected, 1e-9 * expected) << "k " << k;
    EXPECT_GT(expected, 1e-3);
    // Without quantization the student is the teacher.
    o.acts = rotq::default_activation_quant(16, 16);
    rotq::RotatedForward fp(m, rotq::Placement::replicated(), *comm, o);
    EXPECT_LT(std::abs(fp.loss(params_at(r), w)), 1e-10) << "k " << k;
  }
}

// OSTQuant learns: rotations orthogonal, scalings moved and positive, the trained function is the
// fused model's (quantized, 1e-9), and the fused model keeps the floating-point function (1e-10 in
// float64, 1e-5 in float32). The scalings survive a rotation file.
TEST(OstQuant, LearnsAndTheFusedModelComputesWhatWasTrained) {
  const Model m = tiny_model(at::kDouble, ",arch=Qwen2ForCausalLM");
  auto comm = rotq::make_local_comm();
  const at::Tensor w = windows_of(m, 4, 24);
  rotq::RotationSpec spec = rotq::rotation_spec("ostquant");
  spec.ostquant.steps = 8;
  spec.ostquant.batch = 4;
  spec.ostquant.lr = 0.05;
  spec.ostquant.smooth_lr = 0.05;
  spec.ostquant.kl_top = 16;
  spec.learn_acts = w16a4kv4();
  rotq::RotationLearning learned;
  const rotq::Rotations rot =
      rotq::ostquant_rotations(m, w, spec, *comm, rotq::Placement::replicated(), learned);
  ASSERT_EQ(learned.loss.size(), 8u);
  EXPECT_LT(learned.loss.back(), learned.loss.front());  // the same windows every step
  EXPECT_LT(rotq::orthogonality_error(rot.r1), 1e-10);
  for (const at::Tensor& r2 : rot.r2) EXPECT_LT(rotq::orthogonality_error(r2), 1e-10);
  ASSERT_EQ(rot.scales.size(), 2u);
  for (const rotq::ChannelScalings& s : rot.scales) {
    for (const auto& [kind, field] : rotq::scaling_kinds()) {
      ASSERT_TRUE((s.*field).defined()) << kind;
      EXPECT_GT((s.*field - 1).abs().max().item<double>(), 1e-3) << kind;  // learned
      EXPECT_GT((s.*field).min().item<double>(), 0) << kind;
    }
  }
  rotq::RotatedForwardOptions o;
  o.acts = spec.learn_acts;
  rotq::RotatedForward ce(m, rotq::Placement::replicated(), *comm, o);
  const double trained = ce.loss(params_at(rot), w);
  EXPECT_NEAR(fused_quantized_loss(m, rot, w, spec.learn_acts), trained, 1e-9 * trained);
  const rotq::ActivationQuant none = rotq::default_activation_quant(16, 16);
  const double fp = fused_quantized_loss(m, {}, w, none);
  EXPECT_NEAR(fused_quantized_loss(m, rot, w, none), fp, 1e-10 * fp);
  Model m32 = rotq::clone_model(m);
  rotq::cast_weights(m32.weights, at::kFloat);
  const double fp32 = fused_quantized_loss(m32, {}, w, none);
  EXPECT_NEAR(fused_quantized_loss(m32, rot, w, none), fp32, 1e-5 * fp32);

  rotq_test::TempDir dir;
  rotq::save_rotations(rot, dir.str("rot.safetensors"));
  const rotq::Rotations back = rotq::load_rotations(dir.str("rot.safetensors"), m.config);
  ASSERT_EQ(back.scales.size(), 2u);
  EXPECT_TRUE(at::equal(back.scales[1].up_down, rot.scales[1].up_down));
  EXPECT_NEAR(fused_quantized_loss(m, back, w, spec.learn_acts), trained, 1e-9 * trained);
  rotq::Rotations bad = rot;
  bad.scales[0].ov = -bad.scales[0].ov;
  rotq::save_rotations(bad, dir.str("bad.safetensors"));
  try {
    rotq::load_rotations(dir.str("bad.safetensors"), m.config);
    FAIL() << "a negative scaling was accepted";
  } catch (const rotq::Error& e) {
    EXPECT_NE(std::string(e.what()).find("scaling ov"), std::string::npos) << e.what();
  }
}

}  // namespace
