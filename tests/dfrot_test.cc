// DFRot: the massive-token rules, the γ-weighted alternating Procrustes optimisation (descent,
// orthogonality, determinism), the QuaRot.FP16 hook, and the paper's mechanism on a synthetic model
// with planted massive activations: random orthogonal R1 is much worse than a randomized Hadamard
// at 4-bit activations because of the massive tokens, and DFRot's weighting repairs it.
#include "solvers/dfrot.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "models/quant_hooks.h"
#include "models/synth.h"
#include "models/tokenizers/tokenizer.h"
#include "runner/cell/run_cell.h"
#include "runner/dist/comm.h"
#include "solvers/error.h"
#include "solvers/hadamard.h"
#include "solvers/rotation.h"
#include "tests/test_util.h"

namespace {

constexpr int64_t kC = 256;

// Unit-RMS tokens: `normal` Gaussian rows with 8 outlier channels (×8), then `massive` rows whose
// energy sits in two channels, as LLaMA's normalized massive tokens.
struct Tokens {
  at::Tensor x, massive;
};
Tokens planted_tokens(int64_t normal, int64_t massive, uint64_t seed) {
  at::Tensor g = rotq::seeded_gaussian(normal + massive, kC, seed);
  for (int64_t c : {3, 20, 40, 70, 120, 150, 201, 230}) g.narrow(0, 0, normal).select(1, c).mul_(8);
  at::Tensor m = g.narrow(0, normal, massive);
  m.mul_(0.05);
  m.select(1, 11).fill_(300);
  m.select(1, 99).fill_(-280);
  const at::Tensor x = g / g.pow(2).mean(1, true).sqrt();
  at::Tensor flags = at::zeros({normal + massive}, at::kBool);
  flags.narrow(0, normal, massive).fill_(true);
  return {x.to(at::kFloat), flags};
}

TEST(Dfrot, MassiveRulesFlagThePlantedTokens) {
  const Tokens t = planted_tokens(300, 12, 1);
  rotq::MassiveOptions o;
  const at::Tensor by_error = rotq::flag_massive_tokens(t.x, o);
  EXPECT_TRUE(at::equal(by_error, t.massive)) << by_error.sum().item<int64_t>() << " flagged";
  o.rule = rotq::MassiveRule::kRandomRotation;
  const at::Tensor by_random = rotq::flag_massive_tokens(t.x, o);
  EXPECT_TRUE(at::equal(by_random, t.massive)) << by_random.sum().item<int64_t>() << " flagged";
  // Pure Gaussian tokens of a small width fall under the default threshold: the rule is relative
  // to LLaMA's d = 4096 and the runner warns when it flags most tokens.
  const at::Tensor small = rotq::seeded_gaussian(100, 64, 2);
  EXPECT_GT(rotq::flag_massive_tokens(small, {}).to(at::kDouble).mean().item<double>(), 0.5);
  EXPECT_THROW(rotq::parse_massive_rule("magnitude"), rotq::Error);
  at::Tensor nan = t.x.clone();
  nan[0][0] = std::nan("");
  EXPECT_THROW(rotq::flag_massive_tokens(nan, {}), rotq::Error);
}

TEST(Dfrot, GammaInfinityScoresOnlyTheMassiveTokens) {
  const Tokens t = planted_tokens(50, 5, 3);
  const at::Tensor r = rotq::random_orthogonal(kC, 4);
  rotq::DfrotOptions o;
  o.gamma = std::numeric_limits<double>::infinity();
  rotq::QuantSpec q;
  q.bits = 4;
  q.symmetric = false;
  const at::Tensor xr = at::matmul(t.x.to(at::kDouble), r);
  const at::Tensor err = (xr - rotq::fake_quantize(xr, q)).pow(2).sum(1);
  const double want = err.masked_select(t.massive).mean().item<double>();
  EXPECT_NEAR(rotq::dfrot_loss(t.x, t.massive, r, o, nullptr), want, 1e-7 * want);
  // γ = 1 with mean weighting: the two set means added.
  o.gamma = 1;
  const double both = want + err.masked_select(~t.massive).mean().item<double>();
  EXPECT_NEAR(rotq::dfrot_loss(t.x, t.massive, r, o, nullptr), both, 1e-7 * both);
  // The reference's weighting: plain sums, γ² on the massive tokens.
  o.gamma = 10;
  o.weighting = rotq::DfrotWeighting::kSum;
  const double sums = err.masked_select(~t.massive).sum().item<double>() +
                      100 * err.masked_select(t.massive).sum().item<double>();
  EXPECT_NEAR(rotq::dfrot_loss(t.x, t.massive, r, o, nullptr), sums, 1e-7 * sums);
}

TEST(Dfrot, AlternationDescendsStaysOrthogonalAndIsDeterministic) {
  auto comm = rotq::make_local_comm();
  const Tokens t = planted_tokens(400, 8, 5);
  rotq::DfrotOptions o;
  o.iters = 15;
  o.log_every = 0;
  for (const at::Tensor& r0 :
       {rotq::random_hadamard_matrix(kC, 1), rotq::random_orthogonal(kC, 1)}) {
    rotq::DfrotTrace trace;
    const at::Tensor r = rotq::dfrot_optimize(t.x, t.massive, r0, o, comm.get(), &trace);
    ASSERT_EQ(trace.loss.size(), 16u);
    EXPECT_EQ(trace.tokens, 408);
    EXPECT_EQ(trace.massive, 8);
    const double start = rotq::dfrot_loss(t.x, t.massive, r0, o, comm.get());
    EXPECT_DOUBLE_EQ(trace.loss.front(), start);
    EXPECT_LT(rotq::dfrot_loss(t.x, t.massive, r, o, comm.get()), 0.9 * start);
    EXPECT_LT(rotq::orthogonality_error(r), 1e-12);
    EXPECT_LT(rotq::orthogonality_error(r.to(at::kFloat)), 1e-6);
    EXPECT_TRUE(at::equal(r, rotq::dfrot_optimize(t.x, t.massive, r0, o, comm.get())));
  }
  EXPECT_THROW(rotq::dfrot_optimize(t.x, t.massive, at::eye(5, at::kDouble), o, nullptr),
               rotq::Error);
  EXPECT_THROW(
      rotq::dfrot_optimize(t.x, t.massive.narrow(0, 0, 3), at::eye(kC, at::kDouble), o, nullptr),
      rotq::Error);
}

// One Procrustes step by the Newton polar factor is the SVD's rotation (float64: 1e-10, or the
// κ(M)·ε to which M determines it). The
// float32 token pass (float64 sums and Procrustes) scores R0 as float64 does (1e-5: a few tokens'
// levels flip at rounding ties) and reaches
// as low a loss (within 1%): the alternation itself is discrete (each token's grid), so the two
// trajectories part after a few iterations and only their results are comparable.
TEST(Dfrot, Float32PassAndNewtonPolarFollowTheFloat64Svd) {
  const Tokens t = planted_tokens(400, 8, 5);
  rotq::DfrotOptions o;
  o.log_every = 0;
  o.iters = 1;
  const at::Tensor r0 = rotq::random_hadamard_matrix(kC, 1);
  o.polar = rotq::PolarMethod::kSvd;
  const at::Tensor r_svd = rotq::dfrot_optimize(t.x, t.massive, r0, o, nullptr);
  o.polar = rotq::PolarMethod::kNewton;
  // The step's M = Σ w xᵀQ(xR0): its polar factor is determined to ~κ(M)·ε in float64.
  const at::Tensor xd = t.x.to(at::kDouble);
  const at::Tensor w = at::where(t.massive, 100.0 * 100.0 / 8, 1.0 / 400).to(at::kDouble);
  rotq::QuantSpec q4;
  q4.bits = 4;
  q4.symmetric = false;
  const at::Tensor m =
      at::matmul((xd * w.unsqueeze(1)).t(), rotq::fake_quantize(at::matmul(xd, r0), q4));
  const at::Tensor sv = std::get<1>(at::linalg_svd(m, false));
  const double kappa = (sv.max() / sv.min()).item<double>();
  EXPECT_LT(
      (rotq::dfrot_optimize(t.x, t.massive, r0, o, nullptr) - r_svd).abs().max().item<double>(),
      std::max(1e-10, 10 * kappa * 2.2e-16))
      << "kappa " << kappa;
  EXPECT_LT((rotq::procrustes(m) - rotq::procrustes(m, rotq::PolarMethod::kSvd))
                .abs()
                .max()
                .item<double>(),
            std::max(1e-10, 10 * kappa * 2.2e-16));
  o.iters = 15;
  rotq::DfrotTrace ref, f32;
  rotq::dfrot_optimize(t.x, t.massive, r0, o, nullptr, &ref);
  o.pass_dtype = at::kFloat;
  const at::Tensor r32 = rotq::dfrot_optimize(t.x, t.massive, r0, o, nullptr, &f32);
  ASSERT_EQ(f32.loss.size(), ref.loss.size());
  EXPECT_NEAR(f32.loss[0], ref.loss[0], 1e-5 * ref.loss[0]);
  const double best_ref = *std::min_element(ref.loss.begin(), ref.loss.end());
  const double best_f32 = *std::min_element(f32.loss.begin(), f32.loss.end());
  EXPECT_LT(best_f32, 1.01 * best_ref);
  EXPECT_LT(best_f32, 0.9 * ref.loss[0]);
  EXPECT_LT(rotq::orthogonality_error(r32), 1e-12);
}

// Fewer weighted tokens than channels: the span route (N×C, N×N work) rotates the tokens as the
// C×C route does (losses to 1e-8 relative, x·R to 1e-7: both carry the polar factor's κ(L)·ε), and
// off the tokens' span it keeps the rotation nearest R0 (the C×C route's SVD leaves LAPACK's null
// vectors there).
TEST(Dfrot, SpanRouteRotatesTheTokensAsTheFullRoute) {
  const Tokens t = planted_tokens(120, 6, 11);
  const at::Tensor r0 = rotq::random_hadamard_matrix(kC, 2);
  const at::Tensor xd = t.x.to(at::kDouble);
  rotq::DfrotOptions o;
  o.iters = 6;
  o.log_every = 0;
  o.chunk_rows = 50;  // several chunks, one partial
  const auto run = [&](bool span, rotq::DfrotTrace* trace) {
    rotq::DfrotOptions oo = o;
    oo.span_route = span;
    return rotq::dfrot_optimize(t.x, t.massive, r0, oo, nullptr, trace);
  };
  const auto rel = [](const at::Tensor& a, const at::Tensor& b) {
    return ((a - b).abs().max() / b.abs().max()).item<double>();
  };
  rotq::DfrotTrace ts, tf;
  ts.want_last = tf.want_last = true;
  const at::Tensor rs = run(true, &ts), rf = run(false, &tf);
  ASSERT_EQ(ts.loss.size(), tf.loss.size());
  for (size_t i = 0; i < ts.loss.size(); ++i)
    EXPECT_NEAR(ts.loss[i], tf.loss[i], 1e-8 * tf.loss[i]);
  EXPECT_LT(ts.loss.back(), 0.9 * ts.loss.front());
  // x·R comes from the polar factor of L, which rounding moves by ~κ(L)·ε (1.3e-9 here).
  EXPECT_LT(rel(at::matmul(xd, rs), at::matmul(xd, rf)), 1e-7);
  EXPECT_LT(rel(at::matmul(xd, ts.last), at::matmul(xd, tf.last)), 1e-7);
  EXPECT_LT(rotq::orthogonality_error(rs), 1e-12);
  EXPECT_TRUE(at::equal(rs, run(true, nullptr)));
  EXPECT_LT((rs - r0).norm().item<double>(), (rf - r0).norm().item<double>());
  // Nearest R0 off the span: Z = Q_⊥ᵀR is the polar factor of A = Q_⊥ᵀR0(I − BᵀB), B = Q_xᵀR,
  // so A·Zᵀ is symmetric.
  const at::Tensor q = std::get<0>(at::linalg_qr(xd.t(), "complete"));
  const int64_t n = t.x.size(0);
  const at::Tensor qx = q.narrow(1, 0, n), qp = q.narrow(1, n, kC - n);
  const at::Tensor b = at::matmul(qx.t(), rs), z = at::matmul(qp.t(), rs);
  const at::Tensor k = at::matmul(qp.t(), r0);
  const at::Tensor az = at::matmul(k - at::matmul(at::matmul(k, b.t()), b), z.t());
  EXPECT_LT((az - az.t()).abs().max().item<double>(), 1e-10 * az.abs().max().item<double>());
  // γ = ∞ weighs only the 8 massive tokens of 408: the span of those 8, as the C×C route's SVD.
  // Two iterations: by the third, R fits 8 tokens onto the grid almost exactly (loss 1.33 → 0.07
  // → 0.004), their entries sit at rounding ties and the two routes' ~1e-15 differences pick
  // different grid points from there on.
  const Tokens many = planted_tokens(400, 8, 12);
  o.gamma = std::numeric_limits<double>::infinity();
  o.iters = 2;
  rotq::DfrotTrace ms, mf;
  rotq::dfrot_optimize(many.x, many.massive, r0, o, nullptr, &ms);
  o.span_route = false;
  rotq::dfrot_optimize(many.x, many.massive, r0, o, nullptr, &mf);
  ASSERT_EQ(ms.loss.size(), mf.loss.size());
  for (size_t i = 0; i < ms.loss.size(); ++i) {
    EXPECT_NEAR(ms.loss[i], mf.loss[i], 1e-8 * mf.loss[i]) << i;
  }
  EXPECT_LT(ms.loss.back(), ms.loss.front());
  // Without want_last the last rotation is not completed (a second completion when the best is
  // not the last).
  EXPECT_FALSE(ms.last.defined());
  // The float32 pass on the span route scores R0 as float64 does (1e-5, as the C×C route).
  o.gamma = 100;
  o.span_route = true;
  o.iters = 1;
  o.pass_dtype = at::kFloat;
  rotq::DfrotTrace s32;
  EXPECT_LT(rotq::orthogonality_error(rotq::dfrot_optimize(t.x, t.massive, r0, o, nullptr, &s32)),
            1e-12);
  EXPECT_NEAR(s32.loss[0], ts.loss[0], 1e-5 * ts.loss[0]);
}

TEST(Dfrot, Fp16MassiveTokensSkipQuantization) {
  const Tokens t = planted_tokens(20, 4, 7);
  rotq::ModelConfig cfg;
  cfg.dim = kC;
  cfg.head_dim = 32;
  rotq::ActivationQuant q = rotq::default_activation_quant(4, 16);
  q.fp_massive = 9.5 / 64;
  rotq::ActQuantHooks hooks(cfg, q);
  const at::Tensor r = rotq::random_orthogonal(kC, 9).to(at::kFloat);
  hooks.set_residual_rotation(r);
  const at::Tensor xr = at::matmul(t.x, r);
  at::Tensor y = xr.clone();
  hooks.at_site(rotq::Site::kAttnIn, 0, y);
  const at::Tensor same = (y == xr).all(1);
  EXPECT_TRUE(at::equal(same, t.massive));
}

// The synthetic model of the paper's mechanism, scored by the KL divergence from its own
// floating-point predictions on real text (its perplexity there means nothing).
class PlantedModel : public ::testing::Test {
 protected:
  static rotq::Model model() {
    rotq::ModelConfig c = rotq::synth_preset("tiny");
    rotq::apply_dims(c, "dim=256,hidden=688,layers=5,heads=8,kv_heads=8,ctx=256,vocab=512,tied=0");
    return rotq::make_synthetic_model(
        c, 1, at::kFloat, rotq::MassiveSpec::parse("tokens=1;426,logit_scale=4,outliers=4"));
  }
  static double kl(const std::string& rotation, double fp_massive = 0,
                   const std::string& init = "hadamard", int a_bits = 4) {
    auto comm = rotq::make_local_comm();
    const auto tok = rotq::load_tokenizer(rotq_test::project_data("stories260K/tok512.bin"));
    rotq::Model m = model();
    rotq::QuantCell cell;
    cell.rotation = rotq::rotation_spec(rotation);
    cell.rotation.dfrot_init = rotq::parse_fixed_rotation(init);
    cell.rotation.dfrot.log_every = 0;
    rotq::ActivationQuant a = rotq::default_activation_quant(a_bits, 16);
    a.fp_massive = fp_massive;
    cell.acts = {a};
    cell.calib_text = rotq_test::project_data("tinystories_sample.txt");
    cell.ppl_texts = {cell.calib_text};
    cell.ppl.seqlen = 0;
    cell.ppl.max_windows = 6;
    cell.kl = true;
    return rotq::run_quant_cell(m, *tok, cell, *comm).ppl.at(0).kl;
  }
};

TEST_F(PlantedModel, RandomOrthogonalLosesToHadamardOnMassiveTokensAndDfrotRepairsIt) {
  EXPECT_LT(kl("dfrot", 0, "hadamard", 16), 1e-6) << "the DFRot-rotated model is not the FP model";
  const double ro = kl("random"), rh = kl("hadamard");
  const double ro_fp16 = kl("random", 9.5 / 64);
  const double dfrot_rh = kl("dfrot"), dfrot_ro = kl("dfrot", 0, "random");
  std::printf("KL at A4: RO %.4f RH %.4f RO+fp16-massive %.4f DFRot(RH) %.4f DFRot(RO) %.4f\n", ro,
              rh, ro_fp16, dfrot_rh, dfrot_ro);
  EXPECT_GT(ro, 1.5 * rh) << "RO should be much worse than RH";
  EXPECT_LT(ro_fp16, ro - 0.5 * (ro - rh)) << "keeping massive tokens in FP closes most of the gap";
  EXPECT_LT(dfrot_ro, ro - 0.1 * (ro - rh)) << "DFRot from RO repairs part of the gap";
  // DFRot keeps its best iterate, RH included, so its objective never rises; the KL it is judged
  // by here may differ by a little across CPUs (the alternating quantization is discontinuous):
  // 0.5335 vs RH 0.5341 on one machine, other optima seen on a GPU. 10% is a real regression.
  EXPECT_LT(dfrot_rh, 1.10 * rh) << "DFRot from RH is no worse than RH";
}

}  // namespace
