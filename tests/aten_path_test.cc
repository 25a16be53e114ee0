// The ATen-only kernel paths that tensors on a GPU take (solvers/kernel_path.h), checked on CPU
// against the hand-written host loops: the Hadamard butterfly, the quantizer's per-row parameters
// and MSE clip search, and GPTQ's column loop. The GPU then only changes where the same ATen ops
// run. Tolerances: float64 1e-12 (transform) and 1e-9 (GPTQ, as its float64 reference test);
// quantizer parameters are compared exactly (same operations in the same type).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "solvers/gptq.h"
#include "solvers/hadamard.h"
#include "solvers/kernel_path.h"
#include "solvers/quantizer.h"

namespace rotq {
namespace {

// Runs fn once on the host loops and once on the ATen-only path.
template <typename Fn>
std::pair<at::Tensor, at::Tensor> both_paths(const Fn& fn) {
  force_aten_kernels(false);
  at::Tensor host = fn();
  force_aten_kernels(true);
  at::Tensor aten;
  try {
    aten = fn();
  } catch (...) {
    force_aten_kernels(false);
    throw;
  }
  force_aten_kernels(false);
  return {host, aten};
}

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

QuantSpec spec(int bits, bool sym, int64_t group = 0, bool mse = false, double clip = 1.0) {
  QuantSpec s;
  s.bits = bits;
  s.symmetric = sym;
  s.group = group;
  s.mse_clip = mse;
  s.clip_ratio = clip;
  return s;
}

TEST(AtenPath, HadamardTransformMatchesButterfly) {
  // Pure powers of two (odd and even exponent: the a x b split), cores alone and Kronecker sizes
  // of the models (head_dim 128, LLaMA-2-7B's 11008 = 172·64, 4096).
  for (int64_t n : {2, 8, 32, 12, 20, 172, 688, 128, 4096, 11008}) {
    at::manual_seed(n);
    const at::Tensor x = at::randn({3, 5, n}, at::kDouble);
    auto [host, aten] = both_paths([&] { return hadamard_transform(x); });
    EXPECT_LT(max_abs_diff(host, aten), 1e-12) << "n = " << n;
    const at::Tensor xf = x.to(at::kFloat);
    auto [hf, af] = both_paths([&] { return hadamard_transform(xf); });
    EXPECT_EQ(af.scalar_type(), at::kFloat);
    EXPECT_LT(max_abs_diff(hf, af), 1e-5) << "float32, n = " << n;
    auto [hu, au] = both_paths([&] { return hadamard_transform_unnormalized(x); });
    EXPECT_LT(max_abs_diff(hu, au), 1e-9) << "unnormalized, n = " << n;
  }
  // Strided bf16 input, rounded back to bf16.
  const at::Tensor xb = at::randn({4, 64, 6}, at::kFloat).transpose(1, 2).to(at::kBFloat16);
  auto [hb, ab] = both_paths([&] { return hadamard_transform(xb); });
  EXPECT_EQ(ab.scalar_type(), at::kBFloat16);
  EXPECT_LT(max_abs_diff(hb, ab), 2e-2);
}

TEST(AtenPath, ActivationQuantizerMatchesHostLoops) {
  at::manual_seed(3);
  at::Tensor x = at::randn({6, 7, 64}, at::kFloat);
  x[0].zero_();                   // an all-zero row
  x[1].select(0, 2).fill_(0.75);  // a constant row (constant groups too)
  for (const QuantSpec& s : {spec(4, true), spec(4, false), spec(8, true, 0, false, 0.9),
                             spec(3, false, 16), spec(4, true, 32, false, 0.95)}) {
    auto [host, aten] = both_paths([&] { return fake_quantize(x, s); });
    EXPECT_TRUE(at::equal(host, aten)) << s.describe();
  }
}

// GPTQ's MSE criterion Σ |Q(x) − x|^2.4 of one row at (scale, zero), in float64.
double mse_error64(const at::Tensor& row, double scale, double zero, const QuantSpec& s) {
  QuantSpec one = s;
  one.mse_clip = false;
  const at::Tensor x = row.to(at::kDouble).reshape({1, -1});
  at::Tensor q = at::empty_like(x);
  detail::quant_dequant_out(q, x, at::full({1, 1}, scale, at::kDouble),
                            at::full({1, 1}, zero, at::kDouble), one);
  return (q - x).abs().pow(2.4).sum().item<double>();
}

TEST(AtenPath, WeightQuantizerAndMseSearchMatchHostLoops) {
  at::manual_seed(4);
  for (at::ScalarType dt : {at::kFloat, at::kDouble}) {
    at::Tensor w = at::randn({40, 96}, dt) * at::rand({40, 1}, dt);
    w[3].zero_();
    for (const QuantSpec& s :
         {spec(4, true), spec(3, false), spec(4, true, 32), spec(4, true, 0, true),
          spec(3, false, 0, true), spec(2, false, 32, true)}) {
      const at::Tensor rows = w.reshape({-1, s.group > 0 ? s.group : w.size(1)}).contiguous();
      auto [hs, as] = both_paths([&] { return find_quant_params(rows, s).scale; });
      auto [hz, az] = both_paths([&] { return find_quant_params(rows, s).zero; });
      if (!s.mse_clip) {
        EXPECT_TRUE(at::equal(hs, as) && at::equal(hz, az)) << s.describe();
        continue;
      }
      // The MSE search sums |e|^2.4 per row with different pow implementations and summation
      // orders on the two paths, so a row may pick another grid point only where the two tie:
      // within 1e-6 relative in float64.
      for (int64_t r = 0; r < rows.size(0); ++r) {
        if (hs[r].item<double>() == as[r].item<double>()) continue;
        const double eh = mse_error64(rows[r], hs[r].item<double>(), hz[r].item<double>(), s);
        const double ea = mse_error64(rows[r], as[r].item<double>(), az[r].item<double>(), s);
        EXPECT_LT(std::abs(eh - ea), 1e-6 * std::max(eh, ea))
            << s.describe() << " " << c10::toString(dt) << " row " << r << ": " << eh << " vs "
            << ea;
      }
    }
  }
}

TEST(AtenPath, GptqColumnLoopMatchesHostLoop) {
  at::manual_seed(5);
  const int64_t cols = 48;
  const at::Tensor basis = at::randn({cols, cols}, at::kDouble);
  const at::Tensor x = at::matmul(at::randn({256, cols}, at::kDouble), basis);
  at::Tensor h = at::matmul(x.t(), x) * (2.0 / 256);
  h[5].zero_();
  h.select(1, 5).zero_();  // a dead input column
  const at::Tensor w = at::randn({20, cols}, at::kDouble);
  struct Case {
    QuantSpec s;
    bool act_order, static_groups;
    int64_t block;
  };
  const std::vector<Case> cases = {
      {spec(4, true), false, false, 128},        {spec(3, false), true, false, 7},
      {spec(4, true, 0, true), true, false, 16}, {spec(4, false, 16), false, false, 5},
      {spec(3, true, 16), true, true, 128},      {spec(4, false, 8, true), true, false, 12}};
  for (const Case& c : cases) {
    GptqOptions o;
    o.act_order = c.act_order;
    o.static_groups = c.static_groups;
    o.blocksize = c.block;
    for (at::ScalarType dt : {at::kDouble, at::kFloat}) {
      auto [host, aten] =
          both_paths([&] { return gptq_quantize(w.to(dt), h, c.s, o, "t").weight; });
      const double tol = dt == at::kDouble ? 1e-9 : 1e-5;
      EXPECT_LT(max_abs_diff(host, aten), tol)
          << c.s.describe() << (c.act_order ? " act_order" : "") << " " << c10::toString(dt);
    }
  }
}

}  // namespace
}  // namespace rotq
