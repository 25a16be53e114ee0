// Quantizers (RTN, QuaRot's conventions, GPTQ's MSE clip search), the Hessian accumulator and GPTQ.
// References are written plainly here in float64: the MSE search as GPTQ's find_params loop, and
// GPTQ column by column with explicit Schur-complement updates of H⁻¹ (no Cholesky, no lazy
// blocks), which the lazy-block Cholesky form must reproduce up to rounding.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "solvers/error.h"
#include "solvers/gptq.h"
#include "solvers/mse_kernel.h"
#include "solvers/quantizer.h"
#include "tests/gptq_cases.h"

namespace rotq {
namespace {

constexpr double kTight = 1e-9;  // float64 paths against the float64 references

QuantSpec make_spec(int bits, bool symmetric, int64_t group = 0, bool mse = false,
                    double clip = 1.0) {
  QuantSpec s;
  s.bits = bits;
  s.symmetric = symmetric;
  s.group = group;
  s.mse_clip = mse;
  s.clip_ratio = clip;
  return s;
}

at::Tensor dbl(std::vector<double> v) { return at::tensor(v, at::kDouble); }

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

// ---- float64 references --------------------------------------------------------------------

double ref_maxq(const QuantSpec& s) {
  return s.symmetric ? std::pow(2.0, s.bits - 1) - 1 : std::pow(2.0, s.bits) - 1;
}

double ref_qdq(double x, double scale, double zero, const QuantSpec& s) {
  const double maxq = ref_maxq(s);
  double q = std::nearbyint(x / scale);
  if (s.symmetric) return std::min(std::max(q, -(maxq + 1)), maxq) * scale;
  q = std::min(std::max(q + zero, 0.0), maxq);
  return scale * (q - zero);
}

struct RefParams {
  std::vector<double> scale, zero;
};

// GPTQ/QuaRot WeightQuantizer.find_params on the rows of w (float64), with the MSE search.
RefParams ref_weight_params(const at::Tensor& w, const QuantSpec& s) {
  const at::Tensor x = w.to(at::kDouble).contiguous();
  const int64_t rows = x.size(0), cols = x.size(1);
  const auto a = x.accessor<double, 2>();
  const double maxq = ref_maxq(s);
  RefParams p{std::vector<double>(rows), std::vector<double>(rows)};
  for (int64_t r = 0; r < rows; ++r) {
    double lo = 0, hi = 0;
    for (int64_t c = 0; c < cols; ++c) {
      lo = std::min(lo, a[r][c]);
      hi = std::max(hi, a[r][c]);
    }
    if (s.symmetric) {
      hi = std::max(std::max(std::abs(lo), hi), 1e-5);
      p.scale[r] = hi / maxq;
      p.zero[r] = 0;
    } else {
      if (lo == 0 && hi == 0) lo = -1, hi = 1;
      p.scale[r] = std::max(hi - lo, 1e-5) / maxq;
      p.zero[r] = std::nearbyint(-lo / p.scale[r]);
    }
    if (!s.mse_clip) continue;
    double best = std::numeric_limits<double>::infinity();
    for (int i = 0; i < 80; ++i) {
      const double f = 1 - i / 100.0;
      const double scale = s.symmetric ? f * hi / maxq : (f * hi - f * lo) / maxq;
      const double zero = s.symmetric ? 0 : std::nearbyint(-(f * lo) / scale);
      double err = 0;
      for (int64_t c = 0; c < cols; ++c) {
        err += std::pow(std::abs(ref_qdq(a[r][c], scale, zero, s) - a[r][c]), 2.4);
      }
      if (err < best) best = err, p.scale[r] = scale, p.zero[r] = zero;
    }
  }
  return p;
}

// Σ |Q(x) - x|^2.4 of each row, in float64.
std::vector<double> row_norm24(const at::Tensor& q, const at::Tensor& x) {
  const at::Tensor e = (q.to(at::kDouble) - x.to(at::kDouble)).abs().pow(2.4).sum(1);
  return std::vector<double>(e.data_ptr<double>(), e.data_ptr<double>() + e.numel());
}

// GPTQ as in the paper, in float64: columns one by one; each column's error spread over the later
// columns through the current H⁻¹, which then drops the column by a Schur complement.
at::Tensor ref_gptq(const at::Tensor& w_in, const at::Tensor& h_in, const QuantSpec& s,
                    bool act_order, bool static_groups, double percdamp = 0.01) {
  at::Tensor W = w_in.to(at::kDouble).clone();
  at::Tensor H = h_in.to(at::kDouble).clone();
  const int64_t rows = W.size(0), cols = W.size(1), g = s.group;
  RefParams cur;
  if (g == 0) cur = ref_weight_params(W, s);
  for (int64_t i = 0; i < cols; ++i) {
    if (H[i][i].item<double>() == 0) {
      H[i][i] = 1.0;
      W.select(1, i).zero_();
    }
  }
  std::vector<RefParams> groups;
  if (g > 0 && static_groups) {
    for (int64_t j = 0; j < cols; j += g) groups.push_back(ref_weight_params(W.narrow(1, j, g), s));
  }
  std::vector<int64_t> perm(cols);
  std::iota(perm.begin(), perm.end(), 0);
  if (act_order) {
    const at::Tensor d = H.diagonal().contiguous();
    const double* dp = d.data_ptr<double>();
    std::stable_sort(perm.begin(), perm.end(), [&](int64_t a, int64_t b) { return dp[a] > dp[b]; });
  }
  const at::Tensor pidx = at::tensor(perm, at::kLong);
  W = W.index_select(1, pidx).contiguous();
  H = H.index_select(0, pidx).index_select(1, pidx);
  H.diagonal().add_(percdamp * H.diagonal().mean().item<double>());
  at::Tensor Hinv = at::inverse(H).contiguous();
  at::Tensor Q = at::zeros_like(W);
  auto wa = W.accessor<double, 2>();
  auto qa = Q.accessor<double, 2>();
  std::vector<double> err(rows);
  for (int64_t i = 0; i < cols; ++i) {
    if (g > 0 && static_groups) cur = groups[perm[i] / g];
    if (g > 0 && !static_groups && i % g == 0) cur = ref_weight_params(W.narrow(1, i, g), s);
    const auto ha = Hinv.accessor<double, 2>();
    for (int64_t r = 0; r < rows; ++r) {
      qa[r][i] = ref_qdq(wa[r][i], cur.scale[r], cur.zero[r], s);
      err[r] = (wa[r][i] - qa[r][i]) / ha[i][i];
    }
    for (int64_t j = i + 1; j < cols; ++j) {
      for (int64_t r = 0; r < rows; ++r) wa[r][j] -= err[r] * ha[i][j];
    }
    Hinv = Hinv - at::outer(Hinv.select(1, i), Hinv.select(0, i)) / ha[i][i];
  }
  return Q.index_select(1, at::argsort(pidx));
}

// Calibration inputs with correlated features, as real activations have: X = Z·A.
at::Tensor correlated_inputs(int64_t n, int64_t cols, at::ScalarType dtype = at::kDouble) {
  const at::Tensor z = at::randn({n, cols}, at::kDouble);
  const at::Tensor a = at::randn({cols, cols}, at::kDouble) / std::sqrt(static_cast<double>(cols));
  return z.mm(a + at::eye(cols, at::kDouble) * 0.3).to(dtype);
}

at::Tensor hessian_of(const at::Tensor& x, at::ScalarType acc = at::kDouble) {
  HessianAccumulator h(x.size(-1), acc);
  h.add(x);
  return h.hessian();
}

// ‖X (W - Q)ᵀ‖²: the layer output error GPTQ minimises.
double output_error(const at::Tensor& w, const at::Tensor& q, const at::Tensor& x) {
  return x.to(at::kDouble)
      .mm((w.to(at::kDouble) - q.to(at::kDouble)).t())
      .pow(2)
      .sum()
      .item<double>();
}

// ---- QuantSpec ---------------------------------------------------------------------------------

TEST(QuantSpec, DescribesItself) {
  EXPECT_EQ(make_spec(4, true, 128, true, 0.9).describe(), "int4 sym g128 clip0.90 mse");
  EXPECT_EQ(make_spec(8, false).describe(), "int8 asym");
  EXPECT_EQ(QuantSpec{}.describe(), "none");
  EXPECT_FALSE(QuantSpec{}.enabled());
}

TEST(QuantSpec, RejectsBadSpecs) {
  const at::Tensor x = at::randn({4, 64});
  for (const QuantSpec& s :
       {make_spec(0, false), make_spec(17, true), make_spec(1, true), make_spec(4, true, -1),
        make_spec(4, true, 0, false, 0.0), make_spec(4, true, 0, false, 1.5)}) {
    EXPECT_THROW(validate(s, "test"), Error) << s.bits << " " << s.group << " " << s.clip_ratio;
    EXPECT_THROW(fake_quantize(x, s), Error);
  }
  EXPECT_NO_THROW(validate(make_spec(1, false), "test"));
  try {
    validate(make_spec(4, true, 0, false, 2.0), "layer 3 k-cache");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("layer 3 k-cache"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("clip"), std::string::npos) << e.what();
  }
}

TEST(QuantSpec, RejectsNonDivisibleGroupsAndNonFloatTensors) {
  EXPECT_THROW(fake_quantize(at::randn({4, 64}), make_spec(4, true, 48)), Error);
  EXPECT_THROW(rtn_quantize_weight(at::randn({4, 64}), make_spec(4, true, 48)), Error);
  EXPECT_THROW(fake_quantize(at::ones({4, 64}, at::kInt), make_spec(4, true)), Error);
  EXPECT_THROW(rtn_quantize_weight(at::randn({2, 4, 64}), make_spec(4, true)), Error);
}

// ---- RTN: exact values -------------------------------------------------------------------------

TEST(RtnQuant, SymmetricFourBitGridIsExact) {
  // max|x| = 7 → scale 1: q = round-half-even(x) on [-8, 7].
  const at::Tensor x = dbl({7, -7, 3.4, -2.6, 0.5, 1.5, 2.5, -0.2}).view({1, 8});
  const at::Tensor want = dbl({7, -7, 3, -3, 0, 2, 2, 0}).view({1, 8});
  const QuantSpec s = make_spec(4, true);
  EXPECT_TRUE(fake_quantize(x, s).equal(want)) << fake_quantize(x, s);
  EXPECT_TRUE(rtn_quantize_weight(x, s).equal(want));
  EXPECT_TRUE(fake_quantize(x.to(at::kFloat), s).equal(want.to(at::kFloat)));
  // The negative side has one more level: -8 is reachable when min = -max·8/7.
  const at::Tensor y = dbl({-8, 7, 0, 1}).view({1, 4});
  const QuantParams p = find_quant_params(y, s);
  EXPECT_DOUBLE_EQ(p.scale.item<double>(), 8.0 / 7.0);
  EXPECT_TRUE(p.zero.eq(0).all().item<bool>());
}

TEST(RtnQuant, AsymmetricThreeBitGridIsExact) {
  // [min, max] = [-2, 5], maxq = 7 → scale 1, zero 2.
  const at::Tensor x = dbl({-2, 5, 0.4, 2.5, -1.5, 4.6}).view({1, 6});
  const QuantSpec s = make_spec(3, false);
  const QuantParams p = find_quant_params(x, s);
  EXPECT_DOUBLE_EQ(p.scale.item<double>(), 1.0);
  EXPECT_DOUBLE_EQ(p.zero.item<double>(), 2.0);
  const at::Tensor want = dbl({-2, 5, 0, 2, -2, 5}).view({1, 6});
  EXPECT_TRUE(fake_quantize(x, s).equal(want)) << fake_quantize(x, s);
  EXPECT_TRUE(quantize_dequantize(x, p, s).equal(want));
  // An all-positive row still includes 0 in its range (per row, weights and activations alike).
  const at::Tensor pos = dbl({1, 7, 3.2, 1.5}).view({1, 4});
  EXPECT_TRUE(fake_quantize(pos, s).equal(dbl({1, 7, 3, 2}).view({1, 4})));
}

TEST(RtnQuant, GroupsHaveTheirOwnScales) {
  // Second group = first / 4: scale 1/4, exact.
  const at::Tensor x = dbl({7, -7, 3.4, 0.5, 1.75, -1.75, 0.85, 0.125}).view({1, 8});
  const at::Tensor want = dbl({7, -7, 3, 0, 1.75, -1.75, 0.75, 0}).view({1, 8});
  const QuantSpec s = make_spec(4, true, 4);
  EXPECT_TRUE(fake_quantize(x, s).equal(want)) << fake_quantize(x, s);
  EXPECT_TRUE(rtn_quantize_weight(x, s).equal(want));
  // Leading dims are rows: a [2, 2, 8] tensor is 4 rows of two groups.
  const at::Tensor x3 = x.expand({2, 2, 8}).contiguous();
  EXPECT_TRUE(fake_quantize(x3, s).equal(want.expand({2, 2, 8})));
}

TEST(RtnQuant, ActivationGroupsUseTheRawRangeWeightsIncludeZero) {
  // QuaRot's per-group activation quantizer takes [min, max] = [1, 8]: scale 1, zero -1; the
  // weight quantizer widens to [0, 8]: scale 8/7.
  const at::Tensor x = dbl({1, 8, 4.4, 2, 1, 8, 4.4, 2}).view({1, 8});
  const QuantSpec s = make_spec(3, false, 4);
  EXPECT_TRUE(fake_quantize(x, s).equal(dbl({1, 8, 4, 2, 1, 8, 4, 2}).view({1, 8})))
      << fake_quantize(x, s);
  const at::Tensor w = rtn_quantize_weight(x, s);
  EXPECT_NEAR(w[0][2].item<double>(), 4 * 8.0 / 7.0, 1e-12);
  // A constant group is represented exactly, not NaN.
  const at::Tensor c = at::full({2, 8}, 3.0, at::kDouble);
  EXPECT_TRUE(fake_quantize(c, s).equal(c));
  EXPECT_TRUE(fake_quantize(at::zeros({2, 8}), s).equal(at::zeros({2, 8})));
  EXPECT_TRUE(fake_quantize(at::zeros({2, 8}), make_spec(4, true, 4)).equal(at::zeros({2, 8})));
}

// ---- RTN: properties ---------------------------------------------------------------------------

std::vector<QuantSpec> property_specs() {
  std::vector<QuantSpec> v;
  for (int bits : {2, 3, 4, 8}) {
    for (bool sym : {true, false}) {
      for (int64_t g : {0, 32}) v.push_back(make_spec(bits, sym, g));
    }
  }
  return v;
}

TEST(RtnQuant, IsIdempotentUpToRounding) {
  at::manual_seed(1);
  const at::Tensor x = at::randn({3, 5, 64});
  for (const QuantSpec& s : property_specs()) {
    const at::Tensor q = fake_quantize(x, s);
    EXPECT_TRUE(at::allclose(fake_quantize(q, s), q, 1e-6, 1e-7)) << s.describe();
    const at::Tensor w = x.view({15, 64});
    const at::Tensor qw = rtn_quantize_weight(w, s);
    EXPECT_TRUE(at::allclose(rtn_quantize_weight(qw, s), qw, 1e-6, 1e-7)) << s.describe();
  }
}

TEST(RtnQuant, UsesAtMostTwoToTheBitsLevelsPerRowOrGroup) {
  at::manual_seed(2);
  const at::Tensor x = at::randn({16, 256}) * at::rand({16, 1}) * 10;
  for (const QuantSpec& s : property_specs()) {
    const int64_t len = s.group > 0 ? s.group : 256;
    for (const at::Tensor& q : {fake_quantize(x, s), rtn_quantize_weight(x, s)}) {
      const at::Tensor rows = q.reshape({-1, len});
      int64_t most = 0;
      for (int64_t r = 0; r < rows.size(0); ++r) {
        most = std::max(most, std::get<0>(at::_unique(rows[r])).numel());
      }
      EXPECT_LE(most, int64_t{1} << s.bits) << s.describe();
      EXPECT_GE(most, std::min<int64_t>(len, int64_t{1} << (s.bits - 1))) << s.describe();
    }
  }
}

TEST(RtnQuant, ClipRatioShrinksTheRange) {
  at::manual_seed(3);
  const at::Tensor x = at::randn({8, 128});
  const at::Tensor amax = x.abs().amax(1);
  for (bool sym : {true, false}) {
    const at::Tensor full = fake_quantize(x, make_spec(4, sym));
    const at::Tensor clipped = fake_quantize(x, make_spec(4, sym, 0, false, 0.5));
    EXPECT_FALSE(clipped.equal(full));
    // Sym: the grid tops out at 8/7 of the clipped max; asym: at the clipped range.
    // The grid ends within a step of the clipped range: 8/7 of it bounds both conventions.
    const at::Tensor bound = amax * 0.5 * (8.0 / 7.0) * (1 + 1e-6);
    EXPECT_TRUE((clipped.abs().amax(1) <= bound).all().item<bool>()) << sym;
    if (sym) {
      EXPECT_LT(max_abs_diff(full.abs().amax(1), amax), 1e-6);
    }
  }
}

TEST(RtnQuant, SixteenBitsIsANoOp) {
  at::manual_seed(4);
  const at::Tensor x = at::randn({4, 32}).to(at::kBFloat16);
  const QuantSpec s = make_spec(16, true, 0, true);
  EXPECT_TRUE(fake_quantize(x, s).equal(x));
  EXPECT_TRUE(rtn_quantize_weight(x, s).equal(x));
}

TEST(RtnQuant, Bf16InputIsQuantizedInFloat32) {
  at::manual_seed(5);
  const at::Tensor x = at::randn({2, 3, 64}).to(at::kBFloat16);
  for (const QuantSpec& s : {make_spec(4, true), make_spec(4, false, 16)}) {
    const at::Tensor q = fake_quantize(x, s);
    EXPECT_EQ(q.scalar_type(), at::kBFloat16);
    EXPECT_EQ(q.sizes(), x.sizes());
    EXPECT_TRUE(q.equal(fake_quantize(x.to(at::kFloat), s).to(at::kBFloat16))) << s.describe();
  }
  const at::Tensor w = x.view({6, 64});
  EXPECT_TRUE(rtn_quantize_weight(w, make_spec(4, true, 0, true))
                  .equal(rtn_quantize_weight(w.to(at::kFloat), make_spec(4, true, 0, true))
                             .to(at::kBFloat16)));
}

TEST(RtnQuant, FindParamsAndQuantizeDequantizeMatchRtn) {
  at::manual_seed(6);
  const at::Tensor w = at::randn({16, 96});
  for (const QuantSpec& s :
       {make_spec(4, true), make_spec(3, false), make_spec(4, true, 0, true)}) {
    const QuantParams p = find_quant_params(w, s);
    EXPECT_EQ(p.scale.sizes(), (std::vector<int64_t>{16, 1}));
    EXPECT_EQ(p.zero.sizes(), (std::vector<int64_t>{16, 1}));
    EXPECT_TRUE(quantize_dequantize(w, p, s).equal(rtn_quantize_weight(w, s))) << s.describe();
  }
  // Weight RTN with groups = per-row params of each group's columns.
  const QuantSpec g = make_spec(4, false, 32, true);
  const at::Tensor rtn = rtn_quantize_weight(w, g);
  for (int64_t j = 0; j < 96; j += 32) {
    const at::Tensor cols = w.narrow(1, j, 32).contiguous();
    EXPECT_TRUE(
        quantize_dequantize(cols, find_quant_params(cols, g), g).equal(rtn.narrow(1, j, 32)));
  }
}

// ---- MSE clip search ---------------------------------------------------------------------------

TEST(QuantMse, NeverWorseThanMinMaxPerRow) {
  at::manual_seed(7);
  at::Tensor w = at::randn({64, 256});
  w.index_put_({at::indexing::Slice(), 0}, w.select(1, 0) * 8);  // outliers make clipping pay
  for (int bits : {3, 4}) {
    for (bool sym : {true, false}) {
      for (int64_t g : {0, 64}) {
        const QuantSpec plain = make_spec(bits, sym, g), mse = make_spec(bits, sym, g, true);
        const int64_t len = g > 0 ? g : 256;
        const at::Tensor rows = w.reshape({-1, len});
        const auto e_plain = row_norm24(rtn_quantize_weight(w, plain).reshape({-1, len}), rows);
        const auto e_mse = row_norm24(rtn_quantize_weight(w, mse).reshape({-1, len}), rows);
        double total_plain = 0, total_mse = 0;
        for (size_t r = 0; r < e_plain.size(); ++r) {
          EXPECT_LE(e_mse[r], e_plain[r] * (1 + 1e-5)) << mse.describe() << " row " << r;
          total_plain += e_plain[r];
          total_mse += e_mse[r];
        }
        EXPECT_LT(total_mse, total_plain) << mse.describe();
      }
    }
  }
}

TEST(QuantMse, MatchesFloat64FindParamsLoop) {
  at::manual_seed(8);
  const at::Tensor w = at::randn({24, 128}, at::kDouble) * at::rand({24, 1}, at::kDouble);
  for (int bits : {2, 3, 4}) {
    for (bool sym : {true, false}) {
      const QuantSpec s = make_spec(bits, sym, 0, true);
      const QuantParams p = find_quant_params(w, s);
      const RefParams ref = ref_weight_params(w, s);
      const auto sa = p.scale.accessor<double, 2>();
      const auto za = p.zero.accessor<double, 2>();
      for (int64_t r = 0; r < 24; ++r) {
        EXPECT_DOUBLE_EQ(sa[r][0], ref.scale[r]) << s.describe() << " row " << r;
        EXPECT_EQ(za[r][0], ref.zero[r]) << s.describe() << " row " << r;
      }
    }
  }
  // The grid's last point (shrink 0.21) is searched: a row whose bulk sits exactly on the 2-bit
  // grid of 0.21·max, next to a lone outlier at max, picks it.
  at::Tensor row = at::empty({1, 4096}, at::kDouble);
  for (int64_t c = 0; c < 4096; ++c) row[0][c] = 0.21 * static_cast<double>(c % 4 - 2);
  row[0][0] = 1.0;
  const QuantParams p = find_quant_params(row, make_spec(2, true, 0, true));
  EXPECT_NEAR(p.scale.item<double>(), 0.21, 1e-15);
  EXPECT_DOUBLE_EQ(p.scale.item<double>(),
                   ref_weight_params(row, make_spec(2, true, 0, true)).scale[0]);
}

TEST(QuantMse, Float32SearchPicksTheFloat64Optimum) {
  at::manual_seed(9);
  const at::Tensor w = at::randn({32, 512});
  const QuantSpec s = make_spec(4, true, 0, true);
  const auto got = row_norm24(rtn_quantize_weight(w, s), w);
  const RefParams ref = ref_weight_params(w.to(at::kDouble), s);
  at::Tensor want = at::empty({32, 512}, at::kDouble);
  const at::Tensor wd = w.to(at::kDouble);
  for (int64_t r = 0; r < 32; ++r) {
    for (int64_t c = 0; c < 512; ++c) {
      want[r][c] = ref_qdq(wd[r][c].item<double>(), ref.scale[r], ref.zero[r], s);
    }
  }
  const auto best = row_norm24(want, w);
  for (int64_t r = 0; r < 32; ++r) EXPECT_NEAR(got[r], best[r], 1e-4 * best[r]) << r;
}

// The search with pruning and give-ups returns the parameters of the search that computes every
// candidate's exact error, bit for bit: rows long enough for many give-up checks (and a tail that
// is not a whole vector), Gaussian, heavy-tailed, on a grid with outliers, constant, all but
// zero, tiny (near float32's normal limit), huge and with a NaN.
TEST(MseKernel, GivingUpChangesNoParameter) {
  at::manual_seed(23);
  for (const int64_t cols : {int64_t{4096}, int64_t{1037}}) {
    at::Tensor w = at::randn({40, cols}, at::kFloat);
    w.narrow(0, 8, 8).pow_(3);
    w.narrow(0, 16, 6).copy_(at::randint(-7, 8, {6, cols}, at::kFloat) * 0.125);
    w.narrow(0, 16, 6).select(1, 11).fill_(4);
    w[22].fill_(0.3);
    w[23].zero_();
    w[23][5] = 1e-3;
    w[24].mul_(1e-17);
    w[25].mul_(1e25);
    w[26][100] = std::numeric_limits<float>::quiet_NaN();
    const int64_t rows = w.size(0);
    const float* x = w.data_ptr<float>();
    for (const bool sym : {true, false}) {
      for (const int bits : {2, 3, 4}) {
        std::vector<float> lo(rows), hi(rows);
        for (int64_t r = 0; r < rows; ++r) {
          float mn = 0, mx = 0;
          for (int64_t c = 0; c < cols; ++c) {
            mn = std::min(mn, x[r * cols + c]);
            mx = std::max(mx, x[r * cols + c]);
          }
          const float m = std::max(-mn, mx);
          lo[r] = sym ? -m : mn;
          hi[r] = sym ? m : mx;
          if (hi[r] == lo[r]) hi[r] = lo[r] + 1;
        }
        const float maxq = sym ? static_cast<float>((1 << (bits - 1)) - 1) : (1 << bits) - 1;
        std::vector<float> s1(rows, -1), z1(rows, -1), s2(rows, -1), z2(rows, -1);
        detail::mse_search_f32(x, rows, cols, lo.data(), hi.data(), sym, maxq, 80, 100, s1.data(),
                               z1.data());
        detail::mse_search_f32_exhaustive(x, rows, cols, lo.data(), hi.data(), sym, maxq, 80, 100,
                                          s2.data(), z2.data());
        for (int64_t r = 0; r < rows; ++r) {
          EXPECT_EQ(std::memcmp(&s1[r], &s2[r], sizeof(float)), 0)
              << cols << " cols, " << bits << " bits " << (sym ? "sym" : "asym") << " row " << r
              << ": " << s1[r] << " vs " << s2[r];
          EXPECT_EQ(std::memcmp(&z1[r], &z2[r], sizeof(float)), 0) << r;
        }
      }
    }
  }
}

// ---- HessianAccumulator ------------------------------------------------------------------------

// The MSE search's |a|^2.4 against float64 pow over every third float32 mantissa at four exponents
// and a log-spaced sweep of 1e-15 .. 1e4: the exact one within 5e-7 relative (a few ulps), the
// cheap one within the 2.5e-4 its pruning assumes (mse_kernel.cc's kCheapBound is 5e-4), and
// both zero below ~1.6e-16 (where 2.4·ln a underflows float32's exp) and nowhere else.
TEST(MseKernel, PowIsAccurateAndTheCheapBoundHolds) {
  double worst = 0, worst_cheap = 0;
  auto check = [&](float a) {
    const double truth = std::pow(static_cast<double>(a), 2.4);
    const float exact = detail::pow_2_4(a), cheap = detail::pow_2_4_cheap(a);
    if (exact == 0 || cheap == 0) {  // flushed below the normal range (both, or one at its edge)
      ASSERT_TRUE(exact < 2e-38f && cheap < 2e-38f && a < 2e-16f)
          << a << " " << exact << " " << cheap;
      return;
    }
    worst = std::max(worst, std::abs(exact / truth - 1));
    worst_cheap = std::max(worst_cheap, std::abs(static_cast<double>(cheap) / exact - 1));
  };
  for (int e : {-40, -3, 0, 7}) {
    for (uint32_t m = 0; m < (1u << 23); m += 3) check(std::ldexp(1.0f + m * 0x1p-23f, e));
  }
  for (double x = -15; x < 4; x += 1e-4) check(static_cast<float>(std::pow(10.0, x)));
  EXPECT_EQ(detail::pow_2_4(0.0f), 0.0f);
  EXPECT_EQ(detail::pow_2_4(-2.0f), detail::pow_2_4(2.0f));
  EXPECT_LT(worst, 5e-7);
  EXPECT_LT(worst_cheap, 2.5e-4);
}

// The two-pass search returns the grid point of least float64 error except where two points tie
// within float32 summation noise (float64 rows: within float64's), on rows built to have many
// near-ties (few distinct values, a few outliers, constant rows).
TEST(MseKernel, PrunedSearchPicksTheFloat64Optimum) {
  at::manual_seed(21);
  at::Tensor w = at::randn({64, 512}, at::kFloat);
  w.narrow(0, 0, 16).copy_(at::randint(-3, 4, {16, 512}, at::kFloat) * 0.25);
  w.narrow(0, 16, 8).mul_(0.01).select(1, 7).fill_(5);
  w[30].fill_(0.5);
  for (const bool sym : {true, false}) {
    for (const at::ScalarType dt : {at::kFloat, at::kDouble}) {
      QuantSpec s;
      s.bits = sym ? 4 : 3;
      s.symmetric = sym;
      s.mse_clip = true;
      const QuantParams p = find_quant_params(w.to(dt), s);
      const double maxq = detail::max_level(s);
      const at::Tensor x = w.to(at::kDouble);
      for (int64_t r = 0; r < w.size(0); ++r) {
        const double lo = std::min(0.0, x[r].min().item<double>());
        const double hi = std::max(0.0, x[r].max().item<double>());
        double best = std::numeric_limits<double>::infinity();
        for (int i = 0; i < 80; ++i) {
          // The candidate in the row's type, as the reference computes it.
          const auto in_type = [&](double v) {
            return dt == at::kFloat ? static_cast<double>(static_cast<float>(v)) : v;
          };
          const double pf = in_type(1.0 - i / 100.0);
          const double lo1 = in_type(pf * in_type(sym ? -std::max(-lo, hi) : lo));
          const double hi1 = in_type(pf * in_type(sym ? std::max(-lo, hi) : hi));
          const double sc = in_type(sym ? hi1 / maxq : in_type(hi1 - lo1) / maxq);
          const double z = sym ? 0.0 : std::nearbyint(in_type(-lo1 / sc));
          at::Tensor q = at::empty({1, 512}, at::kDouble);
          QuantSpec plain = s;
          plain.mse_clip = false;
          detail::quant_dequant_out(q, x[r].reshape({1, -1}), at::full({1, 1}, sc, at::kDouble),
                                    at::full({1, 1}, z, at::kDouble), plain);
          best = std::min(best, (q - x[r]).abs().pow(2.4).sum().item<double>());
        }
        at::Tensor q = at::empty({1, 512}, at::kDouble);
        QuantSpec plain = s;
        plain.mse_clip = false;
        detail::quant_dequant_out(q, x[r].reshape({1, -1}),
                                  p.scale[r].to(at::kDouble).reshape({1, 1}),
                                  p.zero[r].to(at::kDouble).reshape({1, 1}), plain);
        const double chosen = (q - x[r]).abs().pow(2.4).sum().item<double>();
        EXPECT_LE(chosen, best * (1 + (dt == at::kFloat ? 1e-6 : 1e-12)) + 1e-30)
            << (sym ? "sym" : "asym") << " " << c10::toString(dt) << " row " << r;
      }
    }
  }
}

TEST(HessianAccumulator, EqualsTwoOverNXtXOverBatches) {
  at::manual_seed(10);
  const at::Tensor a = at::randn({2, 5, 16}), b = at::randn({7, 16}), c = at::randn({1, 3, 16});
  const at::Tensor all = at::cat({a.reshape({-1, 16}), b, c.reshape({-1, 16})}).to(at::kDouble);
  const at::Tensor want = all.t().mm(all) * (2.0 / all.size(0));
  for (at::ScalarType acc : {at::kDouble, at::kFloat}) {
    HessianAccumulator h(16, acc);
    h.add(a);
    // A read between adds (the CPU sum keeps one triangle until it is read) changes nothing.
    EXPECT_EQ(h.sum().size(0), 16);
    h.add(b);
    h.add(c);
    EXPECT_EQ(h.count(), 20);
    EXPECT_EQ(h.hessian().scalar_type(), acc);
    EXPECT_LT(max_abs_diff(h.hessian(), want), acc == at::kDouble ? 1e-13 : 1e-5);
    EXPECT_TRUE(h.hessian().equal(h.hessian().t())) << "the Hessian is exactly symmetric";
  }
  HessianAccumulator from_bf16(16), from_f32(16);
  from_bf16.add(b.to(at::kBFloat16));
  from_f32.add(b.to(at::kBFloat16).to(at::kFloat));
  EXPECT_TRUE(from_bf16.sum().equal(from_f32.sum()));
  // GPTQ.add_batch's running average, one sample per row, gives the same matrix.
  at::Tensor running = at::zeros({16, 16}, at::kDouble);
  int64_t n = 0;
  for (int64_t r = 0; r < all.size(0); ++r) {
    running *= static_cast<double>(n) / (n + 1);
    ++n;
    const at::Tensor x = all[r].unsqueeze(1) * std::sqrt(2.0 / n);
    running += x.mm(x.t());
  }
  HessianAccumulator h(16, at::kDouble);
  h.add(all);
  EXPECT_LT(max_abs_diff(h.hessian(), running), 1e-12);
  EXPECT_LT(max_abs_diff(h.hessian(), want), 1e-12);
}

TEST(HessianAccumulator, MergeOfTwoHalvesEqualsTheWhole) {
  at::manual_seed(11);
  const at::Tensor x = at::randn({40, 24}, at::kDouble);
  HessianAccumulator whole(24, at::kDouble), lo(24, at::kDouble), hi(24, at::kDouble);
  whole.add(x);
  lo.add(x.narrow(0, 0, 15));
  hi.add(x.narrow(0, 15, 25));
  lo.merge(hi.sum(), hi.count());
  EXPECT_EQ(lo.count(), 40);
  EXPECT_LT(max_abs_diff(lo.sum(), whole.sum()), 1e-12);
  EXPECT_LT(max_abs_diff(lo.hessian(), whole.hessian()), 1e-13);
  EXPECT_THROW(HessianAccumulator(24).hessian(), Error);
  EXPECT_THROW(lo.add(at::randn({3, 23})), Error);
  EXPECT_THROW(lo.merge(at::zeros({23, 23}), 1), Error);
}

// ---- GPTQ --------------------------------------------------------------------------------------

using rotq_test::describe;
using rotq_test::GptqCase;
using rotq_test::options;

TEST(GptqQuant, MatchesPlainFloat64Reference) {
  at::manual_seed(12);
  const at::Tensor w = at::randn({8, 16}, at::kDouble);
  const at::Tensor h = hessian_of(correlated_inputs(64, 16));
  std::vector<GptqCase> cases;
  for (bool act : {false, true}) {
    cases.push_back({make_spec(4, true), act, false, 128});
    cases.push_back({make_spec(3, false), act, false, 5});
    cases.push_back({make_spec(4, true, 0, true), act, false, 3});
    for (bool stat : {false, true}) {
      cases.push_back({make_spec(3, true, 4), act, stat, 128});
      cases.push_back({make_spec(4, false, 4, true), act, stat, 5});  // blocks straddle groups
      cases.push_back({make_spec(2, false, 8), act, stat, 4});
    }
  }
  for (const GptqCase& c : cases) {
    const GptqResult got = gptq_quantize(w, h, c.spec, options(c), "test");
    const at::Tensor want = ref_gptq(w, h, c.spec, c.act_order, c.static_groups);
    EXPECT_EQ(got.weight.scalar_type(), at::kDouble);
    EXPECT_LT(max_abs_diff(got.weight, want), kTight) << describe(c);
    EXPECT_GT(got.flops, 0);
  }
}

TEST(GptqQuant, Float32PathAgreesWithFloat64Reference) {
  at::manual_seed(13);
  const at::Tensor w = at::randn({32, 64});
  const at::Tensor x = correlated_inputs(256, 64);
  const at::Tensor h = hessian_of(x, at::kFloat);
  for (const GptqCase& c : {GptqCase{make_spec(4, true), true, false, 128},
                            GptqCase{make_spec(4, false, 16), true, false, 128}}) {
    const at::Tensor got = gptq_quantize(w, h, c.spec, options(c)).weight;
    EXPECT_EQ(got.scalar_type(), at::kFloat);
    const at::Tensor want = ref_gptq(w, h, c.spec, c.act_order, c.static_groups);
    // float32 rounding may move a rare value to the next level: compare mostly-equal and the
    // objective.
    const double frac =
        ((got.to(at::kDouble) - want).abs() < 1e-4).to(at::kDouble).mean().item<double>();
    EXPECT_GT(frac, 0.97) << describe(c);
    EXPECT_NEAR(output_error(w, got, x), output_error(w, want, x), 0.02 * output_error(w, want, x))
        << describe(c);
  }
}

TEST(GptqQuant, BeatsRtnOnCorrelatedInputs) {
  at::manual_seed(14);
  const int64_t rows = 256, cols = 512;
  const at::Tensor w = at::randn({rows, cols}) / std::sqrt(static_cast<double>(cols));
  const at::Tensor x = correlated_inputs(1024, cols, at::kFloat);
  const at::Tensor h = hessian_of(x, at::kFloat);
  GptqOptions o;
  o.act_order = true;
  for (int bits : {3, 4}) {
    for (int64_t g : {0, 128}) {
      const QuantSpec s = make_spec(bits, true, g);
      const double e_gptq = output_error(w, gptq_quantize(w, h, s, o).weight, x);
      const double e_rtn = output_error(w, rtn_quantize_weight(w, s), x);
      EXPECT_LT(e_gptq, 0.8 * e_rtn) << s.describe() << ": gptq " << e_gptq << " rtn " << e_rtn;
    }
  }
}

TEST(GptqQuant, BlocksizeDoesNotChangeTheResult) {
  at::manual_seed(15);
  const at::Tensor w = at::randn({24, 96}, at::kDouble);
  const at::Tensor h = hessian_of(correlated_inputs(200, 96));
  for (const GptqCase& base : {GptqCase{make_spec(4, true), true, false, 0},
                               GptqCase{make_spec(3, false, 32), true, false, 0},
                               GptqCase{make_spec(4, true, 32, true), true, true, 0},
                               GptqCase{make_spec(4, true, 16), false, false, 0}}) {
    GptqCase c = base;
    c.blocksize = 128;
    const at::Tensor ref = gptq_quantize(w, h, c.spec, options(c)).weight;
    for (int64_t bs : {16, 7, 1}) {
      c.blocksize = bs;
      EXPECT_LT(max_abs_diff(gptq_quantize(w, h, c.spec, options(c)).weight, ref), kTight)
          << describe(c);
    }
  }
  // float32: equal up to rounding.
  const at::Tensor wf = w.to(at::kFloat), hf = h.to(at::kFloat);
  GptqOptions a, b;
  a.blocksize = 128;
  b.blocksize = 16;
  const at::Tensor qa = gptq_quantize(wf, hf, make_spec(4, true), a).weight;
  const at::Tensor qb = gptq_quantize(wf, hf, make_spec(4, true), b).weight;
  EXPECT_GT((qa - qb).abs().lt(1e-5).to(at::kDouble).mean().item<double>(), 0.99);
}

TEST(GptqQuant, DiagonalHessianGivesRtn) {
  // No correlation between inputs: nothing to compensate, so GPTQ is RTN with the same params.
  at::manual_seed(16);
  const at::Tensor w = at::randn({32, 64});
  const at::Tensor h = at::diag(at::rand({64}) + 0.5);
  for (const GptqCase& c : {GptqCase{make_spec(4, true), false, false, 128},
                            GptqCase{make_spec(3, false, 0, true), true, false, 16},
                            GptqCase{make_spec(4, true, 16), false, false, 128},
                            GptqCase{make_spec(4, false, 16, true), true, true, 128}}) {
    EXPECT_TRUE(
        gptq_quantize(w, h, c.spec, options(c)).weight.equal(rtn_quantize_weight(w, c.spec)))
        << describe(c);
  }
}

TEST(GptqQuant, RowsAreIndependent) {
  // Ranks quantize row slices with the same H.
  at::manual_seed(17);
  const at::Tensor w = at::randn({30, 48}, at::kDouble);
  const at::Tensor h = hessian_of(correlated_inputs(100, 48));
  GptqOptions o;
  o.act_order = true;
  const QuantSpec s = make_spec(4, false, 16, true);
  const at::Tensor whole = gptq_quantize(w, h, s, o).weight;
  const at::Tensor part = gptq_quantize(w.narrow(0, 10, 12), h, s, o).weight;
  EXPECT_LT(max_abs_diff(part, whole.narrow(0, 10, 12)), kTight);
}

TEST(GptqQuant, DeadColumnsAreZeroedAndHandled) {
  at::manual_seed(18);
  const at::Tensor w = at::randn({8, 16}, at::kDouble);
  at::Tensor x = correlated_inputs(64, 16);
  for (int64_t dead : {2, 9, 15}) x.select(1, dead).zero_();
  const at::Tensor h = hessian_of(x);
  for (const GptqCase& c : {GptqCase{make_spec(4, true), true, false, 128},
                            GptqCase{make_spec(3, false, 4), false, true, 3},
                            GptqCase{make_spec(3, false, 4), true, false, 128}}) {
    const at::Tensor q = gptq_quantize(w, h, c.spec, options(c)).weight;
    for (int64_t dead : {2, 9, 15}) EXPECT_TRUE(q.select(1, dead).eq(0).all().item<bool>());
    EXPECT_LT(max_abs_diff(q, ref_gptq(w, h, c.spec, c.act_order, c.static_groups)), kTight)
        << describe(c);
  }
  // An all-dead layer: every weight is zero.
  const at::Tensor q = gptq_quantize(w, at::zeros({16, 16}), make_spec(4, true)).weight;
  EXPECT_TRUE(q.eq(0).all().item<bool>());
}

TEST(GptqQuant, RejectsHessiansThatAreNotPositiveDefinite) {
  const at::Tensor w = at::randn({4, 8});
  GptqOptions no_damp;
  no_damp.percdamp = 0;
  auto expect_error = [&](const at::Tensor& h, const GptqOptions& o, const char* why) {
    try {
      gptq_quantize(w, h, make_spec(4, true), o, "layers.3.mlp.down_proj");
      ADD_FAILURE() << why << ": no error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("layers.3.mlp.down_proj"), std::string::npos)
          << e.what();
    }
  };
  expect_error(-at::eye(8), GptqOptions{}, "negative definite");
  expect_error(at::ones({8, 8}), no_damp, "rank one without damping");
  at::Tensor indefinite = at::eye(8);
  indefinite[0][1] = indefinite[1][0] = 3.0;
  expect_error(indefinite, GptqOptions{}, "indefinite");
  at::Tensor nan = at::eye(8);
  nan[2][3] = NAN;
  expect_error(nan, GptqOptions{}, "NaN");
  expect_error(at::eye(7), GptqOptions{}, "wrong shape");
  EXPECT_THROW(gptq_quantize(w, at::eye(8), make_spec(4, true, 3)), Error);
  GptqOptions bad;
  bad.blocksize = 0;
  EXPECT_THROW(gptq_quantize(w, at::eye(8), make_spec(4, true), bad), Error);
  // Damping rescues a singular but positive semi-definite H.
  EXPECT_NO_THROW(gptq_quantize(w, at::ones({8, 8}), make_spec(4, true)));
}

TEST(GptqQuant, SixteenBitsAndDtypes) {
  at::manual_seed(19);
  const at::Tensor w = at::randn({8, 32}).to(at::kBFloat16);
  const at::Tensor h = hessian_of(correlated_inputs(64, 32), at::kFloat);
  EXPECT_TRUE(gptq_quantize(w, h, QuantSpec{}).weight.equal(w));
  const GptqResult r = gptq_quantize(w, h, make_spec(4, true, 16));
  EXPECT_EQ(r.weight.scalar_type(), at::kBFloat16);
  EXPECT_EQ(r.weight.sizes(), w.sizes());
  EXPECT_TRUE(r.weight.equal(
      gptq_quantize(w.to(at::kFloat), h, make_spec(4, true, 16)).weight.to(at::kBFloat16)));
}

}  // namespace
}  // namespace rotq
