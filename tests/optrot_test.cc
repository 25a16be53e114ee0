// Rotation optimizers on O(C): Procrustes and the Cayley retraction, and OptRot's fourth-power
// objective (gradient against finite differences, descent, orthogonality, determinism).
#include "solvers/optrot.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "models/checkpoint.h"
#include "models/transformer.h"
#include "runner/dist/comm.h"
#include "runner/fuse/fusion.h"
#include "runner/rotate/optrot_model.h"
#include "solvers/error.h"
#include "solvers/hadamard.h"
#include "solvers/orthogonal.h"
#include "solvers/rotation.h"
#include "solvers/tf32_scope.h"
#include "tests/test_util.h"

namespace {

using rotq::FourthPowerObjective;
using rotq::OptRotNorm;

TEST(Orthogonal, ProcrustesRecoversAPlantedRotation) {
  const at::Tensor x = rotq::seeded_gaussian(200, 24, 1);
  const at::Tensor q = rotq::random_orthogonal(24, 2);
  const at::Tensor r = rotq::procrustes(at::matmul(x.t(), at::matmul(x, q)));
  EXPECT_LT((r - q).abs().max().item<double>(), 1e-12);
}

TEST(Orthogonal, CayleyRetractionStaysOrthogonalAndDescends) {
  const at::Tensor r = rotq::random_orthogonal(16, 3);
  const at::Tensor g = rotq::seeded_gaussian(16, 16, 4);
  const at::Tensor a = rotq::skew_gradient(r, g);
  EXPECT_LT((a + a.t()).abs().max().item<double>(), 1e-14) << "skew";
  for (double t : {1e-3, 0.5, 10.0}) {
    EXPECT_LT(rotq::orthogonality_error(rotq::cayley_retract(r, a, t)), 1e-12) << t;
  }
  // f(R) = <G, R> decreases along the retraction for a small step.
  const auto f = [&](const at::Tensor& x) { return (g * x).sum().item<double>(); };
  EXPECT_LT(f(rotq::cayley_retract(r, a, 1e-3)), f(r));
  EXPECT_LT(rotq::orthogonality_error(rotq::polar_project(r + 1e-3 * g)), 1e-12);
}

FourthPowerObjective random_objective(OptRotNorm norm) {
  FourthPowerObjective obj(12, norm);
  obj.add(rotq::seeded_gaussian(30, 12, 5));
  // A matrix with an outlier column, as rotation is meant to spread.
  at::Tensor w = rotq::seeded_gaussian(20, 12, 6);
  w.select(1, 3).mul_(20);
  obj.add(w.to(at::kFloat), 2.0);
  return obj;
}

TEST(OptRot, GradientMatchesFiniteDifferences) {
  for (OptRotNorm norm : {OptRotNorm::kNone, OptRotNorm::kFrobenius4, OptRotNorm::kNumel}) {
    const FourthPowerObjective obj = random_objective(norm);
    const at::Tensor r = rotq::random_orthogonal(12, 7);
    const at::Tensor g = obj.local_gradient(r);
    // The objective is defined on all matrices: check directional derivatives along random E.
    for (uint64_t s = 0; s < 3; ++s) {
      const at::Tensor e = rotq::seeded_gaussian(12, 12, 100 + s);
      const double h = 1e-5;
      const double fd = (obj.local_loss(r + h * e) - obj.local_loss(r - h * e)) / (2 * h);
      const double an = (g * e).sum().item<double>();
      EXPECT_NEAR(fd, an, 1e-7 * std::max(1.0, std::abs(an)));
    }
  }
}

TEST(OptRot, CayleySgdDecreasesTheObjectiveAndStaysOrthogonal) {
  auto comm = rotq::make_local_comm();
  const FourthPowerObjective obj = random_objective(OptRotNorm::kNumel);
  const at::Tensor r0 = rotq::random_hadamard_matrix(12, 1);
  rotq::CayleySgdOptions o;
  o.steps = 200;
  o.lr = 0.02;
  o.cosine = false;
  o.log_every = 0;
  rotq::RotationTrace trace;
  const at::Tensor r = rotq::minimize_fourth_power(obj, r0, o, comm.get(), &trace);
  const double start = rotq::fourth_power_loss(obj, r0, comm.get());
  const double end = rotq::fourth_power_loss(obj, r, comm.get());
  EXPECT_LT(end, 0.9 * start);
  EXPECT_EQ(trace.loss.size(), 201u);
  EXPECT_DOUBLE_EQ(trace.loss.front(), start);
  EXPECT_LT(rotq::orthogonality_error(r), 1e-12);
  EXPECT_LT(rotq::orthogonality_error(r.to(at::kFloat)), 1e-6);
  // Same inputs, same rotation, bit for bit.
  EXPECT_TRUE(at::equal(r, rotq::minimize_fourth_power(obj, r0, o, comm.get())));
}

// Options for one of the two optimizers, quiet, with its own step size.
rotq::CayleySgdOptions optimizer_options(rotq::ManifoldOptimizer method, int64_t steps,
                                         double lr_sgd, double lr_adam) {
  rotq::CayleySgdOptions o;
  o.method = method;
  o.steps = steps;
  o.lr = method == rotq::ManifoldOptimizer::kCayleySgd ? lr_sgd : lr_adam;
  o.log_every = 0;
  return o;
}

// stories260K with its RMSNorm scales folded into the next linears, held in `dtype`.
rotq::Model fused_stories(at::ScalarType dtype) {
  rotq::LoadOptions lo;
  lo.dtype = dtype;
  rotq::Model m =
      rotq::load_model(rotq_test::shared_data("models/stories260K/stories260K.bin"), lo);
  rotq::fuse_norms(m);
  return m;
}

// R1's reader forms on stories260K's norm-fused weights, held in `dtype`: readers as themselves,
// writers (o, down) transposed.
std::vector<at::Tensor> stories_reader_forms(at::ScalarType dtype) {
  rotq::Model m = fused_stories(dtype);
  std::vector<at::Tensor> forms;
  for (const auto& l : m.weights.layers) {
    for (auto t : {rotq::LayerTensor::kWq, rotq::LayerTensor::kWk, rotq::LayerTensor::kWv,
                   rotq::LayerTensor::kWGate, rotq::LayerTensor::kWUp}) {
      forms.push_back(l[t]);
    }
    forms.push_back(l[rotq::LayerTensor::kWo].t());
    forms.push_back(l[rotq::LayerTensor::kWDown].t());
  }
  return forms;
}

// R1's objective on those forms.
FourthPowerObjective stories_objective(at::ScalarType dtype) {
  const std::vector<at::Tensor> forms = stories_reader_forms(dtype);
  FourthPowerObjective obj(forms.front().size(1), OptRotNorm::kNumel);
  for (const at::Tensor& a : forms) obj.add(a);
  return obj;
}

// The largest relative gap between two loss curves of the same length.
double worst_relative_gap(const std::vector<double>& got, const std::vector<double>& want) {
  double worst = 0;
  for (size_t i = 0; i < want.size(); ++i) worst = std::max(worst, std::abs(got[i] / want[i] - 1));
  return worst;
}

TEST(OptRot, ReducesTheFourthPowerOfStories260KWeights) {
  auto comm = rotq::make_local_comm();
  const FourthPowerObjective obj = stories_objective(at::kDouble);
  const at::Tensor rh = rotq::random_hadamard_matrix(obj.dim(), 0);
  rotq::CayleySgdOptions o;
  o.steps = 50;
  o.lr = 0.02;
  o.log_every = 0;
  const at::Tensor r = rotq::minimize_fourth_power(obj, rh, o, comm.get());
  EXPECT_LT(rotq::fourth_power_loss(obj, r, comm.get()),
            rotq::fourth_power_loss(obj, rh, comm.get()));
  EXPECT_LT(rotq::orthogonality_error(r), 1e-12);
}

// The float32 gradient (float64 rotation, sums and step) descends as the float64 path does: over
// 100 steps on stories260K's weights (as a float32 model holds them) the loss curves agree to
// 1e-6 relative, for Cayley SGD and Riemannian Adam; R stays orthogonal to float64 rounding.
// The step sizes are ones where the descent is smooth: at Cayley SGD's default 0.02 the loss jumps
// now and then on this model, and there any two roundings part (float64 against float64 with
// another summation order would too).
TEST(OptRot, Float32GradientFollowsTheFloat64LossCurve) {
  const FourthPowerObjective obj = stories_objective(at::kFloat);
  const at::Tensor rh = rotq::random_hadamard_matrix(obj.dim(), 0);
  for (auto method :
       {rotq::ManifoldOptimizer::kCayleySgd, rotq::ManifoldOptimizer::kRiemannianAdam}) {
    rotq::CayleySgdOptions o = optimizer_options(method, 100, 0.005, 0.001);
    rotq::RotationTrace t64, t32;
    rotq::minimize_fourth_power(obj, rh, o, nullptr, &t64);
    o.gradient_dtype = at::kFloat;
    const at::Tensor r32 = rotq::minimize_fourth_power(obj, rh, o, nullptr, &t32);
    ASSERT_EQ(t32.loss.size(), t64.loss.size());
    const double worst = worst_relative_gap(t32.loss, t64.loss);
    EXPECT_LT(worst, 1e-6) << "optimizer " << static_cast<int>(method) << ": loss " << t64.loss[0]
                           << " -> " << t64.loss.back() << " vs " << t32.loss[0] << " -> "
                           << t32.loss.back();
    EXPECT_LT(t64.loss.back(), 0.99 * t64.loss.front());
    EXPECT_LT(rotq::orthogonality_error(r32), 1e-12);
  }
}

// precision: bf16 is the gradient of the bfloat16-rounded problem with float32 sums: on a bfloat16
// model's weights (exactly bfloat16) its gradient is the float64 one at R rounded to bfloat16,
// with (A·R)^∘3 rounded to bfloat16 for the second product, and its loss Σ (AR)∘bf16((AR)^∘3) (read
// off the gradient as ⟨R, Aᵀ bf16((AR)^∘3)⟩ when A has at least C rows; 8.5e-6 from Σ (AR)^∘4
// here). Measured 2026-12-04: loss 9.6e-8, gradient 6.2e-7 relative (float32 sums; a float32 A·R
// rounds to another bfloat16 than the float64 one on a few entries). And the rounding is real: the
// float32 gradient at the unrounded R is 3.7e-4 away.
TEST(OptRot, Bfloat16GradientIsTheGradientOfTheRoundedProblem) {
  const FourthPowerObjective obj = stories_objective(at::kBFloat16);
  const at::Tensor r = rotq::random_hadamard_matrix(obj.dim(), 3);
  double loss16 = 0, loss32 = 0;
  const at::Tensor g16 = obj.local_gradient(r, &loss16, true, at::kBFloat16);
  const at::Tensor g32 = obj.local_gradient(r, &loss32, true, at::kFloat);

  const at::Tensor rb = r.to(at::kBFloat16).to(at::kDouble);
  at::Tensor want = at::zeros_like(rb);
  double want_loss = 0;
  for (const at::Tensor& form : stories_reader_forms(at::kBFloat16)) {
    const at::Tensor a = form.to(at::kDouble);
    const double n = static_cast<double>(a.numel()), ms = a.pow(2).sum().item<double>() / n;
    const double c = 1.0 / (n * ms * ms);  // kNumel
    const at::Tensor ar = a.matmul(rb);
    const at::Tensor cube16 = ar.pow(3).to(at::kBFloat16).to(at::kDouble);
    want_loss += c * (ar * cube16).sum().item<double>();
    want.add_(a.t().matmul(cube16), 4.0 * c);
  }
  EXPECT_NEAR(loss16 / want_loss, 1.0, 1e-6);
  const double rel = ((g16 - want).norm() / want.norm()).item<double>();
  EXPECT_LT(rel, 1e-5);
  const double from32 = ((g32 - want).norm() / want.norm()).item<double>();
  EXPECT_GT(from32, 1e-4);
  EXPECT_GT(from32, 30 * rel) << "bf16 " << rel << " float32 " << from32;
}

// bf16's per-term products are summed in float32 over runs of eight terms, each run then added in
// float64 (ProductSum in optrot.cc): over 19 weighted terms (two full runs and a partial one) the
// gradient and the loss read off it are the float64 sums of the same float32 products to 1e-6
// relative (eight float32 additions: ≤ 8·2⁻²⁴ ≈ 5e-7; measured 2026-12-04: see the output).
TEST(OptRot, Bfloat16SumsOverManyTermsKeepFloat64Accuracy) {
  const int64_t c = 16;
  FourthPowerObjective obj(c, OptRotNorm::kNone);
  std::vector<std::pair<at::Tensor, double>> terms;
  for (int k = 0; k < 19; ++k) {
    const at::Tensor a = rotq::seeded_gaussian(5 + 2 * k, c, 40 + k).to(at::kBFloat16);
    const double weight = 0.5 + 0.25 * (k % 7);
    // Every third term transposed in storage (a writer's reader form is a transposed view).
    terms.emplace_back(k % 3 == 2 ? a.t().contiguous().t() : a, weight);
    obj.add(terms.back().first, weight);
  }
  const at::Tensor r = rotq::random_orthogonal(c, 5);
  double loss = 0;
  const at::Tensor g = obj.local_gradient(r, &loss, true, at::kBFloat16);

  const at::Tensor rb = r.to(at::kBFloat16);
  at::Tensor want = at::zeros({c, c}, at::kDouble);
  double want_loss = 0;
  for (const auto& [a, weight] : terms) {
    // The products as the bf16 path forms them: A·R in float32, its cube rounded to bfloat16.
    const at::Tensor ar = at::mm(a.to(at::kFloat), rb.to(at::kFloat));
    const at::Tensor cube = ar.pow(3).to(at::kBFloat16).to(at::kDouble);
    const at::Tensor ad = a.to(at::kDouble);
    want.add_(ad.t().matmul(cube), 4.0 * weight);
    want_loss += weight * (ad.matmul(rb.to(at::kDouble)) * cube).sum().item<double>();
  }
  const double rel = ((g - want).norm() / want.norm()).item<double>();
  std::printf("bf16 sums over 19 terms: gradient %.3g, loss %.3g relative\n", rel,
              std::abs(loss / want_loss - 1));
  EXPECT_LT(rel, 1e-6);
  EXPECT_NEAR(loss / want_loss, 1.0, 1e-6);
}

// The bf16 gradient descends as the float64 one on the same (bfloat16) weights: over 100 Cayley
// SGD steps on stories260K the loss curves stay within 2e-3 relative of each other (measured
// 2026-12-04: 5.2e-4 at worst; R's bfloat16 rounding moves the loss at each step), and both fall.
TEST(OptRot, Bfloat16GradientFollowsTheFloat64LossCurve) {
  const FourthPowerObjective obj = stories_objective(at::kBFloat16);
  const at::Tensor rh = rotq::random_hadamard_matrix(obj.dim(), 0);
  rotq::CayleySgdOptions o = optimizer_options(rotq::ManifoldOptimizer::kCayleySgd, 100, 0.005, 0);
  rotq::RotationTrace t64, t16;
  rotq::minimize_fourth_power(obj, rh, o, nullptr, &t64);
  o.gradient_dtype = at::kBFloat16;
  const at::Tensor r16 = rotq::minimize_fourth_power(obj, rh, o, nullptr, &t16);
  ASSERT_EQ(t16.loss.size(), t64.loss.size());
  const double worst = worst_relative_gap(t16.loss, t64.loss);
  std::printf("bf16 vs float64 loss curve: worst %.3g relative; %.6g -> %.6g vs %.6g -> %.6g\n",
              worst, t64.loss.front(), t64.loss.back(), t16.loss.front(), t16.loss.back());
  EXPECT_LT(worst, 2e-3);
  EXPECT_LT(t16.loss.back(), 0.99 * t16.loss.front());
  EXPECT_LT(rotq::orthogonality_error(r16), 1e-12);
}

// precision: tf32 turns TF32 on for the gradient's GEMMs only: a CPU has none, so the curve is
// float32's (same products, same order: 1e-12 relative), and the process-wide setting is what it
// was before, either way.
TEST(OptRot, Tf32ScopeIsTheGradientsOnly) {
  const FourthPowerObjective obj = stories_objective(at::kFloat);
  const at::Tensor rh = rotq::random_hadamard_matrix(obj.dim(), 0);
  rotq::CayleySgdOptions o = optimizer_options(rotq::ManifoldOptimizer::kCayleySgd, 10, 0.005, 0);
  o.gradient_dtype = at::kFloat;
  rotq::RotationTrace t32, ttf;
  rotq::minimize_fourth_power(obj, rh, o, nullptr, &t32);
  for (bool before : {false, true}) {
    at::globalContext().setAllowTF32CuBLAS(before);
    {
      const rotq::Tf32Scope on(true);
      EXPECT_TRUE(at::globalContext().allowTF32CuBLAS());
      const rotq::Tf32Scope untouched(false);
      EXPECT_TRUE(at::globalContext().allowTF32CuBLAS());
    }
    EXPECT_EQ(at::globalContext().allowTF32CuBLAS(), before);
    o.tf32 = true;
    rotq::minimize_fourth_power(obj, rh, o, nullptr, &ttf);
    EXPECT_EQ(at::globalContext().allowTF32CuBLAS(), before);
    ASSERT_EQ(ttf.loss.size(), t32.loss.size());
    for (size_t i = 0; i < t32.loss.size(); ++i)
      EXPECT_NEAR(ttf.loss[i] / t32.loss[i], 1.0, 1e-12) << "step " << i;
  }
  at::globalContext().setAllowTF32CuBLAS(false);
}

TEST(OptRot, LearnedRotationsKeepTheModelAndLowerTheObjective) {
  auto comm = rotq::make_local_comm();
  rotq::LoadOptions lo;
  lo.dtype = at::kDouble;
  const std::string path = rotq_test::shared_data("models/stories260K/stories260K.bin");
  rotq::Model m = rotq::load_model(path, lo);
  const rotq::Model original = rotq::load_model(path, lo);
  rotq::fuse_norms(m);
  rotq::OptRotOptions o;
  o.sgd.steps = 30;
  o.sgd.log_every = 0;
  const rotq::Rotations rot = rotq::optrot_rotations(m, o, 0, *comm);
  const rotq::Rotations rh =
      rotq::make_rotations(rotq::FixedRotationSpec{rotq::FixedRotation::kHadamard}, m.config.dim,
                           m.config.head_dim, m.config.n_layers);
  const auto obj = rotq::r1_objective(m, o.norm);
  EXPECT_LE(rotq::fourth_power_loss(obj, rot.r1, nullptr),
            rotq::fourth_power_loss(obj, rh.r1, nullptr));
  for (int64_t l = 0; l < m.config.n_layers; ++l) {
    const auto o2 = rotq::r2_objective(m, l, rot.r1, o.norm);
    EXPECT_LE(rotq::fourth_power_loss(o2, rot.r2[l], nullptr),
              rotq::fourth_power_loss(o2, rh.r2[l], nullptr))
        << l;
    EXPECT_LT(rotq::orthogonality_error(rot.r2[l]), 1e-12);
  }
  rotq::fuse_rotations(m, rot);
  const at::Tensor tokens = (at::arange(64, at::kLong) * 13 + 1).remainder(512).view({1, 64});
  rotq::Transformer a(m), b(original);
  const at::Tensor la = a.logits(a.hidden_states(tokens)[0]),
                   lb = b.logits(b.hidden_states(tokens)[0]);
  EXPECT_LE((la - lb).abs().max().item<double>() / lb.abs().max().item<double>(), 1e-10);
}

// R2's problems solved side by side take each problem's own trajectory: stories260K's five layers
// (head_dim 8), the first layer twice, and one problem whose steps overshoot at the shared
// learning rate (its best iterate is not its last), both optimizers (SGD with momentum), float64
// and float32 products, against each problem solved alone. Fails if the batch mixes problems (a
// step or a best rotation taken from another, the best chosen by the summed loss).
TEST(OptRot, BatchedProblemsAreEachSolvedAlone) {
  rotq::Model m = fused_stories(at::kDouble);
  const rotq::Rotations rh =
      rotq::make_rotations(rotq::FixedRotationSpec{rotq::FixedRotation::kHadamard}, m.config.dim,
                           m.config.head_dim, m.config.n_layers);
  std::vector<FourthPowerObjective> objs;
  std::vector<at::Tensor> starts;
  for (int64_t l : {0, 1, 2, 3, 4, 0}) {
    objs.push_back(rotq::r2_objective(m, l, rh.r1, OptRotNorm::kNumel));
    starts.push_back(rh.r2[l]);
  }
  // Unnormalised and large: at the learning rate that suits the others its steps overshoot.
  objs.emplace_back(8, OptRotNorm::kNone);
  objs.back().add(rotq::seeded_gaussian(40, 8, 61) * 6.0);
  starts.push_back(rh.r2[0]);
  const size_t overshooting = objs.size() - 1;
  std::vector<const FourthPowerObjective*> ptrs;
  for (const FourthPowerObjective& o : objs) ptrs.push_back(&o);
  for (auto method :
       {rotq::ManifoldOptimizer::kCayleySgd, rotq::ManifoldOptimizer::kRiemannianAdam}) {
    for (at::ScalarType dt : {at::kDouble, at::kFloat}) {
      rotq::CayleySgdOptions o = optimizer_options(method, 25, 0.05, 0.01);
      o.momentum = 0.5;
      o.gradient_dtype = dt;
      SCOPED_TRACE(std::string(method == rotq::ManifoldOptimizer::kCayleySgd ? "sgd " : "adam ") +
                   c10::toString(dt));
      std::vector<rotq::RotationTrace> traces;
      const at::Tensor batched =
          rotq::minimize_fourth_power_batch(ptrs, at::stack(starts), o, &traces);
      ASSERT_EQ(batched.sizes(), (std::vector<int64_t>{7, 8, 8}));
      ASSERT_EQ(traces.size(), objs.size());
      for (size_t k = 0; k < objs.size(); ++k) {
        rotq::RotationTrace alone_trace;
        const at::Tensor alone =
            rotq::minimize_fourth_power(objs[k], starts[k], o, nullptr, &alone_trace);
        EXPECT_LT((batched[static_cast<int64_t>(k)] - alone).abs().max().item<double>(), 1e-12)
            << "problem " << k;
        ASSERT_EQ(traces[k].loss.size(), alone_trace.loss.size());
        for (size_t i = 0; i < alone_trace.loss.size(); ++i) {
          EXPECT_NEAR(traces[k].loss[i], alone_trace.loss[i], 1e-12 * alone_trace.loss[i])
              << "problem " << k << " step " << i;
        }
        // The rotation returned is the best iterate's (float64: the trace's losses are exact).
        if (dt == at::kDouble) {
          const double best = *std::min_element(traces[k].loss.begin(), traces[k].loss.end());
          EXPECT_NEAR(rotq::fourth_power_loss(objs[k], batched[static_cast<int64_t>(k)], nullptr),
                      best, 1e-9 * best)
              << "problem " << k;
        }
        if (k != overshooting) {
          EXPECT_LT(traces[k].loss.back(), traces[k].loss.front()) << "problem " << k;
        } else if (method == rotq::ManifoldOptimizer::kCayleySgd) {
          const auto& l = traces[k].loss;
          EXPECT_LT(std::min_element(l.begin(), l.end()) - l.begin(),
                    static_cast<std::ptrdiff_t>(l.size()) - 1)
              << "the overshooting problem's best iterate should come before its last";
        }
      }
      EXPECT_TRUE(at::equal(batched[0], batched[5]));
      EXPECT_EQ(traces[0].step_seconds.size(), 25u);
    }
  }
  // Problems of different widths, starts of the wrong shape and an empty batch are refused.
  FourthPowerObjective wide(16, OptRotNorm::kNumel);
  wide.add(rotq::seeded_gaussian(24, 16, 3));
  const rotq::CayleySgdOptions o =
      optimizer_options(rotq::ManifoldOptimizer::kCayleySgd, 2, 0.02, 0);
  EXPECT_THROW(
      rotq::minimize_fourth_power_batch({ptrs[0], &wide}, at::stack(starts).narrow(0, 0, 2), o),
      rotq::Error);
  EXPECT_THROW(rotq::minimize_fourth_power_batch({ptrs[0], ptrs[1]}, at::stack(starts), o),
               rotq::Error);
  EXPECT_THROW(rotq::minimize_fourth_power_batch({}, at::empty({0, 8, 8}, at::kDouble), o),
               rotq::Error);
}

// optrot_rotations' R2 batches change no rotation: one layer per batch (a 1-byte budget and one
// layer's bytes), batches of 2, 2, 1 and all five at once, with float64 and with bf16 products
// (the pipeline's bf16-kept stacks).
TEST(OptRot, R2BatchSizeChangesNoRotation) {
  auto comm = rotq::make_local_comm();
  rotq::Model m = fused_stories(at::kDouble);
  ASSERT_EQ(rotq::r2_layers_of_rank(m, *comm), (std::vector<int64_t>{0, 1, 2, 3, 4}));
  for (at::ScalarType dt : {at::kDouble, at::kBFloat16}) {
    rotq::OptRotOptions o;
    o.sgd.steps = 15;
    o.sgd.log_every = 0;
    o.sgd.gradient_dtype = dt;
    const int64_t layer_bytes =
        rotq::r2_objective(m, 0, at::Tensor(), o.norm, nullptr, o.matrices, dt).owned_bytes();
    ASSERT_GT(layer_bytes, 0);
    const rotq::Rotations all = rotq::optrot_rotations(m, o, 1, *comm);
    for (int64_t budget : {int64_t{1}, layer_bytes, 2 * layer_bytes + 1}) {
      const rotq::Rotations some = rotq::optrot_rotations(m, o, 1, *comm, nullptr, nullptr, budget);
      EXPECT_TRUE(at::equal(all.r1, some.r1));
      ASSERT_EQ(some.r2.size(), all.r2.size());
      for (size_t l = 0; l < all.r2.size(); ++l) {
        EXPECT_LT((all.r2[l] - some.r2[l]).abs().max().item<double>(), 1e-12)
            << c10::toString(dt) << " budget " << budget << " layer " << l;
      }
    }
    EXPECT_THROW(rotq::optrot_rotations(m, o, 1, *comm, nullptr, nullptr, 0), rotq::Error);
  }
}

// A rank and a rank count, and no peers: what r2_layers_of_rank and a rank without R2 layers see.
class RankOf final : public rotq::Comm {
 public:
  RankOf(int rank, int size) : rank_(rank), size_(size) {}
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "test"; }
  void all_reduce(at::Tensor&, rotq::ReduceOp) override {}
  void broadcast(at::Tensor&, int) override {}
  at::Tensor all_gather(const at::Tensor& t) override { return t.clone(); }
  void send(const at::Tensor&, int, int) override {}
  void recv(at::Tensor&, int, int) override {}
  void barrier() override {}
  [[noreturn]] void abort(int code) override { std::exit(code); }

 private:
  int rank_, size_;
};

// A replicated model's R2 layers over 1 to 7 ranks: each layer on exactly one rank, at most
// ⌈5/size⌉ per rank; a rank with none (rank 5 of 6) still runs optrot_rotations through.
TEST(OptRot, R2LayersAreSplitOncePerLayer) {
  rotq::Model m = fused_stories(at::kDouble);
  for (int size = 1; size <= 7; ++size) {
    std::vector<int> count(5, 0);
    for (int rank = 0; rank < size; ++rank) {
      const std::vector<int64_t> mine = rotq::r2_layers_of_rank(m, RankOf(rank, size));
      EXPECT_LE(static_cast<int>(mine.size()), (5 + size - 1) / size) << rank << "/" << size;
      for (int64_t l : mine) ++count[static_cast<size_t>(l)];
    }
    EXPECT_EQ(count, std::vector<int>(5, 1)) << size << " ranks";
  }
  RankOf idle(5, 6);
  ASSERT_TRUE(rotq::r2_layers_of_rank(m, idle).empty());
  rotq::OptRotOptions o;
  o.sgd.steps = 3;
  o.sgd.log_every = 0;
  EXPECT_EQ(rotq::optrot_rotations(m, o, 1, idle).r2.size(), 5u);
}

TEST(OptRot, MatrixSelection) {
  using rotq::LayerTensor;
  const auto m = rotq::parse_optrot_matrices("q,down,q");
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m[0], LayerTensor::kWq);
  EXPECT_EQ(m[1], LayerTensor::kWDown);
  EXPECT_THROW(rotq::parse_optrot_matrices("q,lm_head"), rotq::Error);
  EXPECT_THROW(rotq::parse_optrot_matrices(","), rotq::Error);
  rotq::Model model = fused_stories(at::kDouble);
  EXPECT_EQ(rotq::r1_objective(model, OptRotNorm::kNumel, 0, 1, nullptr, m).size(),
            10u);  // 5 layers
  EXPECT_EQ(rotq::r2_objective(model, 0, at::Tensor(), OptRotNorm::kNumel, nullptr, m).size(), 0u);
}

TEST(OptRot, BadInputsAreErrors) {
  FourthPowerObjective obj(8, OptRotNorm::kNone);
  EXPECT_THROW(obj.add(at::ones({3, 7}, at::kDouble)), rotq::Error);
  at::Tensor nan = at::ones({3, 8}, at::kDouble);
  nan[0][0] = std::nan("");
  EXPECT_THROW(obj.add(nan), rotq::Error);
  EXPECT_THROW(rotq::parse_optrot_norm("l2"), rotq::Error);
  auto comm = rotq::make_local_comm();
  obj.add(at::ones({3, 8}, at::kDouble));
  EXPECT_THROW(rotq::minimize_fourth_power(obj, at::eye(7, at::kDouble), {}, comm.get()),
               rotq::Error);
}

// A random SPD covariance with a few large directions, as activation outliers make.
at::Tensor spiky_covariance(int64_t c, uint64_t seed) {
  const at::Tensor x = rotq::seeded_gaussian(4 * c, c, seed);
  at::Tensor scale = at::ones({c}, at::kDouble);
  scale[0] = 20;
  scale[c / 2] = 8;
  const at::Tensor xs = x * scale;
  return at::matmul(xs.t(), xs);
}

TEST(OptRotPlus, WithIdentityCovariancesItIsOptRot) {
  const FourthPowerObjective plain = random_objective(OptRotNorm::kNumel);
  FourthPowerObjective plus(12, OptRotNorm::kNumel);
  // The same terms as random_objective, in one group whose covariance is 5·I.
  const int g = plus.add_covariance(5.0 * at::eye(12, at::kDouble));
  plus.add(rotq::seeded_gaussian(30, 12, 5), 1.0, g);
  at::Tensor w = rotq::seeded_gaussian(20, 12, 6);
  w.select(1, 3).mul_(20);
  plus.add(w.to(at::kFloat), 2.0, g);
  const at::Tensor r = rotq::random_orthogonal(12, 8);
  double lp = 0, lq = 0;
  const at::Tensor gp = plain.local_gradient(r, &lp), gq = plus.local_gradient(r, &lq);
  EXPECT_NEAR(lp, lq, 1e-12 * lp);
  // On the group the gradients differ only along directions the manifold ignores (φ's gradient is
  // R·sym); the Riemannian gradients agree.
  EXPECT_LT((rotq::skew_gradient(r, gp) - rotq::skew_gradient(r, gq)).abs().max().item<double>(),
            1e-10 * gp.abs().max().item<double>());
}

TEST(OptRotPlus, GradientMatchesFiniteDifferences) {
  FourthPowerObjective obj(12, OptRotNorm::kNumel);
  const int g0 = obj.add_covariance(spiky_covariance(12, 3));
  const int g1 = obj.add_covariance(spiky_covariance(12, 4));
  obj.add(rotq::seeded_gaussian(9, 12, 20), 1.0, g0);
  obj.add(rotq::seeded_gaussian(5, 12, 21), 1.0, g0);
  obj.add(rotq::seeded_gaussian(6, 12, 22), 1.0, g1);
  obj.add(rotq::seeded_gaussian(8, 12, 23));  // ungrouped (a writer)
  const at::Tensor r = rotq::random_orthogonal(12, 9);
  const at::Tensor grad = obj.local_gradient(r);
  for (uint64_t s = 0; s < 3; ++s) {
    const at::Tensor e = rotq::seeded_gaussian(12, 12, 200 + s);
    const double h = 1e-6;
    const double fd = (obj.local_loss(r + h * e) - obj.local_loss(r - h * e)) / (2 * h);
    const double an = (grad * e).sum().item<double>();
    EXPECT_NEAR(fd, an, 1e-6 * std::max(1.0, std::abs(an)));
  }
}

// With the gradient, the loss is read off the accumulated gradients (⟨R, ∂F⟩/4, per group and
// for the ungrouped terms); without it, summed term by term from (AR)^∘4. The two agree in every
// precision, for terms with fewer and more rows than C, grouped (OptRot+) and not: to float64
// rounding in float64, to the float32 sums' rounding in float32 and bfloat16 (whose loss is the
// rounded cube's in both).
TEST(OptRotPlus, LossReadOffTheGradientIsTheTermByTermLoss) {
  FourthPowerObjective obj(12, OptRotNorm::kNumel);
  const int g0 = obj.add_covariance(spiky_covariance(12, 3));
  obj.add(rotq::seeded_gaussian(9, 12, 20).to(at::kBFloat16), 1.0, g0);
  obj.add(rotq::seeded_gaussian(40, 12, 21).to(at::kBFloat16), 1.0, g0);
  obj.add(rotq::seeded_gaussian(8, 12, 23).to(at::kBFloat16));
  obj.add(rotq::seeded_gaussian(30, 12, 24).to(at::kBFloat16), 3.0);
  const at::Tensor r = rotq::random_orthogonal(12, 9);
  for (const auto& [dtype, tol] : {std::pair{at::kDouble, 1e-12}, std::pair{at::kFloat, 1e-6},
                                   std::pair{at::kBFloat16, 1e-6}}) {
    double with_gradient = 0, term_by_term = 0;
    obj.local_gradient(r, &with_gradient, true, dtype);
    obj.local_gradient(r, &term_by_term, false, dtype);
    EXPECT_NEAR(with_gradient / term_by_term, 1.0, tol) << dtype;
  }
  // bfloat16's loss is a different number (rounded R and cube): the comparison can tell.
  double l64 = 0, l16 = 0;
  obj.local_gradient(r, &l64, false, at::kDouble);
  obj.local_gradient(r, &l16, false, at::kBFloat16);
  EXPECT_GT(std::abs(l16 / l64 - 1.0), 1e-4);
}

// The largest entry of |got − want| relative to want's largest entry.
double max_relative(const at::Tensor& got, const at::Tensor& want) {
  return (got - want).abs().max().item<double>() / want.abs().max().item<double>();
}

// A stack kept in its products' dtype (R2's in bfloat16 or float32) gives the steps of the same
// stack kept in float64 and converted at each step: the same gradient and loss, bit for bit, and
// the weights c of the float64 values. Products of a higher precision than the rounded stack are
// refused; a stack given in float32 (not rounded by store_as) is read in float64 as before.
TEST(OptRotPlus, StackKeptInTheProductsDtypeGivesTheSameSteps) {
  const int64_t c = 16;
  const at::Tensor blocks = rotq::seeded_gaussian(5 * 40, c, 60).view({5, 40, c}) * 3.0;
  const at::Tensor r = rotq::random_orthogonal(c, 10);
  FourthPowerObjective kept64(c, OptRotNorm::kNumel);
  const int g = kept64.add_covariance(spiky_covariance(c, 5));
  kept64.add_stack(blocks, 1.0, {-1, g, g, -1, g});
  for (at::ScalarType dt : {at::kBFloat16, at::kFloat}) {
    FourthPowerObjective kept(c, OptRotNorm::kNumel);
    kept.add_covariance(spiky_covariance(c, 5));
    kept.add_stack(blocks, 1.0, {-1, g, g, -1, g}, dt);
    EXPECT_LT(kept.owned_bytes(), kept64.owned_bytes()) << dt;
    for (bool want_gradient : {true, false}) {
      double l64 = 0, lkept = 0;
      const at::Tensor g64 = kept64.local_gradient(r, &l64, want_gradient, dt);
      const at::Tensor gkept = kept.local_gradient(r, &lkept, want_gradient, dt);
      EXPECT_EQ(lkept, l64) << dt;
      if (want_gradient) {
        EXPECT_TRUE(at::equal(gkept, g64)) << dt;
      }
    }
    EXPECT_THROW(kept.local_gradient(r, nullptr, true, at::kDouble), rotq::Error) << dt;
  }
  FourthPowerObjective given32(c, OptRotNorm::kNumel), kept32(c, OptRotNorm::kNumel);
  given32.add_stack(blocks.to(at::kFloat));
  kept32.add_stack(blocks, 1.0, {}, at::kFloat);
  EXPECT_GT(given32.local_loss(r), 0);
  EXPECT_THROW(kept32.local_loss(r), rotq::Error);
  FourthPowerObjective bad(c, OptRotNorm::kNumel);
  EXPECT_THROW(bad.add_stack(blocks, 1.0, {}, at::kLong), rotq::Error);
  EXPECT_THROW(bad.add_stack(blocks, 1.0, {}, at::kHalf), rotq::Error);
}

// A stack (add_stack) is its slices added one by one: the same loss and gradient in every
// precision, with and without the gradient, its slices in two groups and ungrouped (OptRot+)
// beside a plain term; and its gradient matches finite differences. Tolerances: float64 rounding
// (1e-12) in float64; in float32 the products are summed in another order (one GEMM over the
// slices, a batched one back), and in bfloat16 the one-by-one route also sums runs of eight
// products in float32 where a stack adds each slice's to float64, so the float32 sums' 1e-6.
TEST(OptRotPlus, StackedTermsAreTheirSlices) {
  const int64_t c = 12;
  std::vector<at::Tensor> slices;
  for (uint64_t k = 0; k < 6; ++k) {
    slices.push_back(rotq::seeded_gaussian(16, c, 40 + k) * (1.0 + static_cast<double>(k)));
  }
  slices[2].select(1, 4).mul_(10);  // an outlier column
  const std::vector<int> groups = {-1, 0, 1, 0, -1, 1};
  FourthPowerObjective one_by_one(c, OptRotNorm::kNumel), stacked(c, OptRotNorm::kNumel);
  for (FourthPowerObjective* o : {&one_by_one, &stacked}) {
    o->add_covariance(spiky_covariance(c, 3));
    o->add_covariance(spiky_covariance(c, 4));
    o->add(rotq::seeded_gaussian(30, c, 50), 2.0);
  }
  for (size_t k = 0; k < slices.size(); ++k) one_by_one.add(slices[k], 3.0, groups[k]);
  stacked.add_stack(at::stack(slices), 3.0, groups);
  EXPECT_EQ(stacked.size(), one_by_one.size());
  EXPECT_EQ(stacked.gradient_flops(), one_by_one.gradient_flops());
  const at::Tensor r = rotq::random_orthogonal(c, 9);
  for (const auto& [dtype, tol] : {std::pair{at::kDouble, 1e-12}, std::pair{at::kFloat, 1e-6},
                                   std::pair{at::kBFloat16, 1e-6}}) {
    double la = 0, lb = 0;
    const at::Tensor ga = one_by_one.local_gradient(r, &la, true, dtype);
    const at::Tensor gb = stacked.local_gradient(r, &lb, true, dtype);
    EXPECT_NEAR(lb / la, 1.0, tol) << dtype;
    EXPECT_LT(max_relative(gb, ga), tol) << dtype;
    one_by_one.local_gradient(r, &la, false, dtype);
    stacked.local_gradient(r, &lb, false, dtype);
    EXPECT_NEAR(lb / la, 1.0, tol) << dtype << " without the gradient";
  }
  const at::Tensor grad = stacked.local_gradient(r);
  for (uint64_t s = 0; s < 3; ++s) {
    const at::Tensor e = rotq::seeded_gaussian(c, c, 300 + s);
    const double h = 1e-6;
    const double fd = (stacked.local_loss(r + h * e) - stacked.local_loss(r - h * e)) / (2 * h);
    const double an = (grad * e).sum().item<double>();
    EXPECT_NEAR(fd, an, 1e-6 * std::max(1.0, std::abs(an)));
  }
  // Slices of 240,000 entries go two to a CPU chunk (2¹⁹ entries): five of them take chunks of
  // 2, 2 and 1, each weighted into its own slots.
  FourthPowerObjective big_one_by_one(c, OptRotNorm::kNumel), big_stacked(c, OptRotNorm::kNumel);
  for (FourthPowerObjective* o : {&big_one_by_one, &big_stacked}) {
    o->add_covariance(spiky_covariance(c, 3));
    o->add_covariance(spiky_covariance(c, 4));
  }
  const std::vector<int> big_groups = {1, -1, 0, 1, -1};
  const at::Tensor big = rotq::seeded_gaussian(5 * 20000, c, 60).view({5, 20000, c});
  big_stacked.add_stack(big, 1.0, big_groups);
  for (int64_t k = 0; k < 5; ++k) big_one_by_one.add(big[k], 1.0, big_groups[k]);
  double lb1 = 0, lb2 = 0;
  const at::Tensor gb1 = big_one_by_one.local_gradient(r, &lb1),
                   gb2 = big_stacked.local_gradient(r, &lb2);
  EXPECT_NEAR(lb2 / lb1, 1.0, 1e-12);
  EXPECT_LT(max_relative(gb2, gb1), 1e-12);

  EXPECT_THROW(stacked.add_stack(at::stack(slices), 1.0, {0, 1}), rotq::Error);  // 2 of 6
  EXPECT_THROW(stacked.add_stack(at::stack(slices), 1.0, {0, 0, 0, 0, 0, 2}), rotq::Error);
  EXPECT_THROW(stacked.add_stack(at::ones({2, 3, c + 1}, at::kDouble)), rotq::Error);
  EXPECT_THROW(stacked.add_stack(at::ones({2, 0, c}, at::kDouble)), rotq::Error);
  at::Tensor nan = at::stack(slices);
  nan[3][0][0] = std::nan("");
  EXPECT_THROW(stacked.add_stack(nan), rotq::Error);
}

// OptRot+'s factors in batches of groups are the same as all at once (three groups, one per
// batch), the order the terms come in does not matter, and a group with a covariance but no terms
// adds nothing (F = 0) and holds no sum.
TEST(OptRotPlus, GroupBatchesAndEmptyGroupsChangeNothing) {
  const int64_t c = 12;
  // The terms in either order: groups get their sums in the order they receive a first term.
  const auto build = [&](bool with_empty_group, bool reversed = false) {
    FourthPowerObjective o(c, OptRotNorm::kNumel);
    std::vector<int> g;
    for (uint64_t k = 0; k < 3; ++k) g.push_back(o.add_covariance(spiky_covariance(c, 70 + k)));
    if (with_empty_group) o.add_covariance(spiky_covariance(c, 80));
    for (uint64_t i = 0; i < 6; ++i) {
      const uint64_t k = reversed ? 5 - i : i;
      o.add(rotq::seeded_gaussian(10, c, 90 + k), 1.0, g[k % 3]);
    }
    o.add(rotq::seeded_gaussian(10, c, 99));
    return o;
  };
  const at::Tensor r = rotq::random_orthogonal(c, 11);
  FourthPowerObjective all = build(false), one_by_one = build(false), with_empty = build(true);
  one_by_one.set_group_batch_bytes(1);
  double l_all = 0, l_one = 0, l_empty = 0;
  const at::Tensor g_all = all.local_gradient(r, &l_all);
  const at::Tensor g_one = one_by_one.local_gradient(r, &l_one);
  const at::Tensor g_empty = with_empty.local_gradient(r, &l_empty);
  EXPECT_NEAR(l_one / l_all, 1.0, 1e-12);
  EXPECT_LT(max_relative(g_one, g_all), 1e-12);
  EXPECT_NEAR(l_empty / l_all, 1.0, 1e-12);
  EXPECT_LT(max_relative(g_empty, g_all), 1e-12);
  double loss_only = 0;
  one_by_one.local_gradient(r, &loss_only, false);
  EXPECT_NEAR(loss_only / l_all, 1.0, 1e-12);
  double l_reversed = 0;
  const at::Tensor g_reversed = build(false, true).local_gradient(r, &l_reversed);
  EXPECT_NEAR(l_reversed / l_all, 1.0, 1e-12);
  EXPECT_LT(max_relative(g_reversed, g_all), 1e-12);
  EXPECT_THROW(all.set_group_batch_bytes(0), rotq::Error);
}

// R2's objective is each head's blocks: the rows of Wv·R1 of KV head h (reader form their
// transpose) and the columns of R1ᵀ·Wo of head h, with OptRot+'s per-head covariances on o's;
// built here head by head as separate terms, on stories260K (grouped-query: 4 KV heads for 8).
TEST(OptRotPlus, R2ObjectiveIsThePerHeadBlocks) {
  rotq::Model model = fused_stories(at::kDouble);
  const rotq::ModelConfig& cfg = model.config;
  ASSERT_LT(cfg.n_kv_heads, cfg.n_heads);
  const int64_t d = cfg.head_dim, layer = 1;
  const at::Tensor r1 = rotq::random_orthogonal(cfg.dim, 3);
  const rotq::LayerWeights& l = model.weights.layers[layer];
  const at::Tensor wv = at::matmul(l[rotq::LayerTensor::kWv], r1);
  const at::Tensor wo = at::matmul(r1.t(), l[rotq::LayerTensor::kWo]);
  rotq::LayerCovariances cov;
  for (int64_t h = 0; h < cfg.n_heads; ++h) cov.o_heads.push_back(spiky_covariance(d, 60 + h));
  const at::Tensor r2 = rotq::random_orthogonal(d, 4);
  for (bool plus : {false, true}) {
    FourthPowerObjective by_head(d, OptRotNorm::kNumel);
    for (int64_t h = 0; h < cfg.n_kv_heads; ++h) by_head.add(wv.narrow(0, h * d, d).t());
    for (int64_t h = 0; h < cfg.n_heads; ++h) {
      const int g = plus ? by_head.add_covariance(cov.o_heads[h]) : -1;
      by_head.add(wo.narrow(1, h * d, d), 1.0, g);
    }
    const FourthPowerObjective built =
        rotq::r2_objective(model, layer, r1, OptRotNorm::kNumel, plus ? &cov : nullptr);
    ASSERT_EQ(built.size(), by_head.size());
    double lb = 0, lh = 0;
    const at::Tensor gb = built.local_gradient(r2, &lb), gh = by_head.local_gradient(r2, &lh);
    EXPECT_NEAR(lb / lh, 1.0, 1e-12) << "plus " << plus;
    EXPECT_LT(max_relative(gb, gh), 1e-12) << "plus " << plus;
  }
}

TEST(OptRotPlus, BothOptimizersDescendFromHadamardAndStayOrthogonal) {
  auto comm = rotq::make_local_comm();
  FourthPowerObjective obj(16, OptRotNorm::kNumel);
  const int g = obj.add_covariance(spiky_covariance(16, 5));
  obj.add(rotq::seeded_gaussian(24, 16, 30), 1.0, g);
  obj.add(rotq::seeded_gaussian(24, 16, 31));
  const at::Tensor r0 = rotq::random_hadamard_matrix(16, 2);
  for (auto method :
       {rotq::ManifoldOptimizer::kCayleySgd, rotq::ManifoldOptimizer::kRiemannianAdam}) {
    const rotq::CayleySgdOptions o = optimizer_options(method, 150, 0.02, 0.01);
    const at::Tensor r = rotq::minimize_fourth_power(obj, r0, o, comm.get());
    EXPECT_LT(rotq::fourth_power_loss(obj, r, comm.get()),
              0.95 * rotq::fourth_power_loss(obj, r0, comm.get()))
        << static_cast<int>(method);
    EXPECT_LT(rotq::orthogonality_error(r), 1e-12);
    EXPECT_TRUE(at::equal(r, rotq::minimize_fourth_power(obj, r0, o, comm.get())));
  }
  EXPECT_EQ(rotq::parse_manifold_optimizer("adam"), rotq::ManifoldOptimizer::kRiemannianAdam);
  EXPECT_THROW(rotq::parse_manifold_optimizer("lbfgs"), rotq::Error);
  EXPECT_THROW(obj.add_covariance(at::zeros({16, 16}, at::kDouble)), rotq::Error);
  EXPECT_THROW(obj.add(rotq::seeded_gaussian(2, 16, 1), 1.0, 7), rotq::Error);
}

}  // namespace
