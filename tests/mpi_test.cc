// Multi-rank tests, run by CTest under `mpirun -np {1,2,4}`: the MPI Comm backend's collectives
// (chunked: ROTQ_MPI_CHUNK_BYTES is set small so every call is split) and data-parallel
// perplexity equal to the single-process result.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdlib>

#include "models/checkpoint.h"
#include "models/tokenizer.h"
#include "runner/calibration.h"
#include "runner/comm.h"
#include "runner/perplexity.h"
#include "runner/text.h"
#include "runner/weight_quant.h"
#include "solvers/dfrot.h"
#include "solvers/error.h"
#include "solvers/hadamard.h"
#include "solvers/optrot.h"
#include "solvers/rotation.h"
#include "tests/test_util.h"

namespace {

rotq::Comm* g_comm = nullptr;

TEST(Mpi, AllReduceSumMaxMinAcrossDtypes) {
  rotq::Comm& c = *g_comm;
  const int r = c.rank(), n = c.size();
  for (at::ScalarType dt : {at::kFloat, at::kDouble, at::kInt, at::kLong}) {
    at::Tensor t = at::full({1000}, r + 1, at::TensorOptions().dtype(dt));
    c.all_reduce(t, rotq::ReduceOp::kSum);
    EXPECT_TRUE(at::all(t == n * (n + 1) / 2).item<bool>()) << c10::toString(dt);
    at::Tensor m = at::full({3}, r, at::TensorOptions().dtype(dt));
    c.all_reduce(m, rotq::ReduceOp::kMax);
    EXPECT_TRUE(at::all(m == n - 1).item<bool>());
    c.all_reduce(m.fill_(r), rotq::ReduceOp::kMin);
    EXPECT_TRUE(at::all(m == 0).item<bool>());
  }
}

TEST(Mpi, BroadcastFromEveryRoot) {
  rotq::Comm& c = *g_comm;
  for (int root = 0; root < c.size(); ++root) {
    at::Tensor t = c.rank() == root ? at::arange(777, at::kDouble) * (root + 1)
                                    : at::zeros({777}, at::kDouble);
    c.broadcast(t, root);
    EXPECT_TRUE(at::equal(t, at::arange(777, at::kDouble) * (root + 1)));
  }
}

TEST(Mpi, AllGatherInRankOrder) {
  rotq::Comm& c = *g_comm;
  at::Tensor mine = at::full({5, 70}, c.rank(), at::kFloat);
  at::Tensor all = c.all_gather(mine);
  ASSERT_EQ(all.size(0), 5 * c.size());
  for (int r = 0; r < c.size(); ++r) {
    EXPECT_TRUE(at::all(all.narrow(0, 5 * r, 5) == r).item<bool>());
  }
  at::Tensor bf = c.all_gather(at::full({4}, c.rank(), at::kBFloat16));
  EXPECT_EQ(bf[4 * (c.size() - 1)].item<float>(), c.size() - 1);
}

TEST(Mpi, SendRecvRing) {
  rotq::Comm& c = *g_comm;
  if (c.size() < 2) GTEST_SKIP() << "needs 2 ranks";
  const int next = (c.rank() + 1) % c.size(), prev = (c.rank() + c.size() - 1) % c.size();
  at::Tensor out = at::full({1234}, c.rank(), at::kLong);
  at::Tensor in = at::empty({1234}, at::kLong);
  if (c.rank() % 2 == 0) {
    c.send(out, next, 7);
    c.recv(in, prev, 7);
  } else {
    c.recv(in, prev, 7);
    c.send(out, next, 7);
  }
  EXPECT_TRUE(at::all(in == prev).item<bool>());
}

TEST(Mpi, ReducingBf16IsAClearError) {
  at::Tensor t = at::ones({4}, at::kBFloat16);
  try {
    g_comm->all_reduce(t);
    FAIL();
  } catch (const rotq::Error& e) {
    EXPECT_NE(std::string(e.what()).find("all_reduce on rank"), std::string::npos) << e.what();
  }
}

// DFRot with the tokens split across ranks (Σ xᵀη and the loss all-reduced, R broadcast) and OptRot
// with the matrices split: the same rotation as one process, within float64 summation order.
TEST(Mpi, RotationOptimizersOverRanksEqualOneProcess) {
  rotq::Comm& c = *g_comm;
  auto local = rotq::make_local_comm();
  const int64_t C = 32, N = 401;  // N not divisible by the rank count
  at::Tensor x = rotq::seeded_gaussian(N, C, 3);
  x.narrow(0, 0, 5).mul_(0.05).select(1, 7).fill_(40);
  const at::Tensor massive = rotq::flag_massive_tokens(x, {});
  const at::Tensor r0 = rotq::random_hadamard_matrix(C, 1);
  rotq::DfrotOptions o;
  o.iters = 10;
  o.log_every = 0;
  const at::Tensor one = rotq::dfrot_optimize(x, massive, r0, o, local.get());
  const int64_t b = N * c.rank() / c.size(), e = N * (c.rank() + 1) / c.size();
  const at::Tensor many =
      rotq::dfrot_optimize(x.narrow(0, b, e - b), massive.narrow(0, b, e - b), r0, o, &c);
  EXPECT_LT((one - many).abs().max().item<double>(), 1e-9);

  rotq::FourthPowerObjective all(C, rotq::OptRotNorm::kNumel), mine(C, rotq::OptRotNorm::kNumel);
  for (int k = 0; k < 6; ++k) {
    const at::Tensor w = rotq::seeded_gaussian(20 + k, C, 50 + k);
    all.add(w);
    if (k % c.size() == c.rank()) mine.add(w);
  }
  rotq::CayleySgdOptions so;
  so.steps = 20;
  so.log_every = 0;
  const at::Tensor r1 = rotq::minimize_fourth_power(all, r0, so, local.get());
  const at::Tensor r2 = rotq::minimize_fourth_power(mine, r0, so, &c);
  EXPECT_LT((r1 - r2).abs().max().item<double>(), 1e-9);
}

TEST(Mpi, PerplexityOverRanksEqualsOneProcess) {
  rotq::Model m = rotq::load_model(rotq_test::project_data("stories260K/stories260K.bin"));
  rotq::Transformer tf(m);
  auto tok = rotq::load_tokenizer(rotq_test::project_data("stories260K/tok512.bin"), 512);
  const std::string text =
      rotq::read_text(rotq_test::project_data("tinystories_sample.txt"), rotq::TextFormat::kRaw);
  const auto tokens = rotq::encode_with_bos(*tok, text, true);
  rotq::PplOptions o;
  o.seqlen = 128;
  o.max_windows = 7;  // not a multiple of 2 or 4: uneven shares
  o.batch = 1;
  const rotq::PplResult dist = rotq::perplexity(tf, tokens, o, *g_comm);
  auto local = rotq::make_local_comm();
  const rotq::PplResult one = rotq::perplexity(tf, tokens, o, *local);
  EXPECT_EQ(dist.windows, 7);
  // Each window is computed by one rank exactly as the single process computes it.
  EXPECT_EQ(dist.window_nll, one.window_nll);
  EXPECT_EQ(dist.ppl, one.ppl);
}

TEST(Mpi, DataParallelGptqMatchesOneProcess) {
  const auto load = [] {
    return rotq::load_model(rotq_test::project_data("stories260K/stories260K.bin"));
  };
  auto tok = rotq::load_tokenizer(rotq_test::project_data("stories260K/tok512.bin"), 512);
  const auto tokens = rotq::encode_with_bos(
      *tok,
      rotq::read_text(rotq_test::project_data("tinystories_sample.txt"), rotq::TextFormat::kRaw),
      true);
  const at::Tensor calib = rotq::calibration_windows(tokens, 7, 128, 5);  // uneven shares
  rotq::WeightQuantOptions o;
  o.method = rotq::WeightMethod::kGptq;
  o.spec.bits = 4;
  o.spec.mse_clip = true;
  o.calib_batch = 2;
  rotq::Model dist = load();
  const auto rep = rotq::quantize_weights_gptq(dist, calib, o, *g_comm);
  EXPECT_EQ(rep.layers.size(), 5u);
  rotq::Model one = load();
  auto local = rotq::make_local_comm();
  rotq::quantize_weights_gptq(one, calib, o, *local);
  // Hessians are float64 sums in another order: equal up to rounding, so the quantized weights
  // agree except for rare ties on the grid.
  int64_t same = 0, total = 0;
  for (size_t l = 0; l < one.weights.layers.size(); ++l) {
    for (rotq::LayerTensor t : rotq::quantized_linears()) {
      const at::Tensor a = dist.weights.layers[l][t], b = one.weights.layers[l][t];
      same += (a == b).sum().item<int64_t>();
      total += a.numel();
    }
  }
  EXPECT_GE(static_cast<double>(same) / total, 0.999) << same << " of " << total;
  // And every rank holds the same weights.
  at::Tensor w = dist.weights.layers[4][rotq::LayerTensor::kWDown].clone();
  at::Tensor w0 = w.clone();
  g_comm->broadcast(w0, 0);
  EXPECT_TRUE(at::equal(w, w0));
}

}  // namespace

int main(int argc, char** argv) {
  setenv("ROTQ_MPI_CHUNK_BYTES", "1000", 1);
  auto comm = rotq::make_mpi_comm();
  g_comm = comm.get();
  ::testing::InitGoogleTest(&argc, argv);
  if (comm->rank() != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  const int rc = RUN_ALL_TESTS();
  // Every rank must agree on success: a failure on any rank fails the job.
  at::Tensor failed = at::full({1}, rc != 0 ? 1 : 0, at::kInt);
  comm->all_reduce(failed, rotq::ReduceOp::kMax);
  return failed.item<int>();
}
