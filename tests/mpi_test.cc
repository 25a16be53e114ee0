// Multi-rank tests, run by CTest under `mpirun -np {1,2,4}`: the MPI Comm backend's collectives
// (chunked: ROTQ_MPI_CHUNK_BYTES is set small so every call is split) and data-parallel
// perplexity equal to the single-process result.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "models/checkpoint.h"
#include "models/quant_hooks.h"
#include "models/synth.h"
#include "models/tokenizers/tokenizer.h"
#include "runner/data/calibration.h"
#include "runner/data/text.h"
#include "runner/dist/comm.h"
#include "runner/dist/layer_pipeline.h"
#include "runner/dist/placement.h"
#include "runner/eval/perplexity.h"
#include "runner/eval/task_eval.h"
#include "runner/fuse/fusion.h"
#include "runner/fuse/scalings.h"
#include "runner/quantize/weight_quant.h"
#include "runner/rotate/covariances.h"
#include "runner/rotate/dfrot_model.h"
#include "runner/rotate/optrot_model.h"
#include "runner/rotate/ostquant.h"
#include "runner/rotate/spinquant.h"
#include "solvers/dfrot.h"
#include "solvers/error.h"
#include "solvers/hadamard.h"
#include "solvers/optrot.h"
#include "solvers/rotation.h"
#include "tests/test_util.h"

namespace {

rotq::Comm* g_comm = nullptr;

// Where the collectives' tensors live: host memory always; GPU memory too under the NCCL backend
// (ROTQ_TEST_COMM=nccl on a GPU machine), which reduces device tensors in place.
std::vector<at::TensorOptions> comm_placements() {
  std::vector<at::TensorOptions> v = {at::TensorOptions()};
  if (g_comm->backend() == "nccl" && at::hasCUDA())
    v.push_back(at::TensorOptions().device(at::kCUDA));
  return v;
}

TEST(Mpi, AllReduceSumMaxMinAcrossDtypes) {
  rotq::Comm& c = *g_comm;
  const int r = c.rank(), n = c.size();
  for (const at::TensorOptions& where : comm_placements())
    for (at::ScalarType dt : {at::kFloat, at::kDouble, at::kInt, at::kLong}) {
      at::Tensor t = at::full({1000}, r + 1, where.dtype(dt));
      c.all_reduce(t, rotq::ReduceOp::kSum);
      EXPECT_TRUE(at::all(t == n * (n + 1) / 2).item<bool>()) << c10::toString(dt);
      at::Tensor m = at::full({3}, r, where.dtype(dt));
      c.all_reduce(m, rotq::ReduceOp::kMax);
      EXPECT_TRUE(at::all(m == n - 1).item<bool>());
      c.all_reduce(m.fill_(r), rotq::ReduceOp::kMin);
      EXPECT_TRUE(at::all(m == 0).item<bool>());
    }
}

TEST(Mpi, BroadcastFromEveryRoot) {
  rotq::Comm& c = *g_comm;
  for (const at::TensorOptions& where : comm_placements()) {
    for (int root = 0; root < c.size(); ++root) {
      const at::Tensor want = at::arange(777, where.dtype(at::kDouble)) * (root + 1);
      at::Tensor t = c.rank() == root ? want.clone() : at::zeros({777}, where.dtype(at::kDouble));
      c.broadcast(t, root);
      EXPECT_TRUE(at::equal(t, want));
    }
  }
}

TEST(Mpi, AllGatherInRankOrder) {
  rotq::Comm& c = *g_comm;
  for (const at::TensorOptions& where : comm_placements()) {
    at::Tensor mine = at::full({5, 70}, c.rank(), where.dtype(at::kFloat));
    at::Tensor all = c.all_gather(mine);
    ASSERT_EQ(all.size(0), 5 * c.size());
    EXPECT_EQ(all.device(), mine.device());
    for (int r = 0; r < c.size(); ++r) {
      EXPECT_TRUE(at::all(all.narrow(0, 5 * r, 5) == r).item<bool>());
    }
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

TEST(Mpi, ReducingBf16IsAClearErrorOverMpi) {
  at::Tensor t = at::ones({4}, at::kBFloat16);
  if (g_comm->backend() == "nccl") {  // NCCL reduces bf16 natively
    g_comm->all_reduce(t);
    EXPECT_EQ(t[0].item<float>(), g_comm->size());
    return;
  }
  try {
    g_comm->all_reduce(t);
    FAIL();
  } catch (const rotq::Error& e) {
    EXPECT_NE(std::string(e.what()).find("all_reduce on rank"), std::string::npos) << e.what();
  }
}

// DFRot with the tokens split across ranks (Σ xᵀη and the loss all-reduced, R broadcast; with
// fewer tokens than channels the span route's L instead) and OptRot
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
  // Fewer tokens than channels (the span route): the tokens are gathered, the pass is split.
  const int64_t few = 21;
  const int64_t fb = few * c.rank() / c.size(), fe = few * (c.rank() + 1) / c.size();
  // Two iterations: by the third, R fits these 21 tokens almost onto the grid and rounding ties
  // (summation order) pick the trajectory.
  rotq::DfrotOptions os = o;
  os.iters = 2;
  const at::Tensor one_span =
      rotq::dfrot_optimize(x.narrow(0, 0, few), massive.narrow(0, 0, few), r0, os, local.get());
  const at::Tensor many_span =
      rotq::dfrot_optimize(x.narrow(0, fb, fe - fb), massive.narrow(0, fb, fe - fb), r0, os, &c);
  EXPECT_LT((one_span - many_span).abs().max().item<double>(), 1e-9);

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

// --- A model sharded by layers over the ranks equals the whole model in one process -------------
// Each case runs on stories260K (5 layers) and on a synthetic model with more layers than ranks
// (8 layers, GQA). The single-process reference is computed in every rank's own process with the
// local communicator, so both sides use the same BLAS threading.

std::string g_temp_dir;  // removed by rank 0 at the end

// A directory every rank sees: rank 0 creates it and broadcasts the path.
std::string shared_temp_dir(rotq::Comm& c) {
  at::Tensor buf = at::zeros({256}, at::kByte);
  if (c.is_root()) {
    std::string tmpl = (std::filesystem::temp_directory_path() / "rotq-mpi-XXXXXX").string();
    if (!mkdtemp(tmpl.data())) std::abort();
    std::memcpy(buf.data_ptr<uint8_t>(), tmpl.data(), tmpl.size());
  }
  c.broadcast(buf, 0);
  g_temp_dir = std::string(reinterpret_cast<const char*>(buf.data_ptr<uint8_t>()));
  return g_temp_dir;
}

struct ShardCase {
  std::string name, path;
};

const std::vector<ShardCase>& shard_cases() {
  static std::vector<ShardCase> cases = [] {
    std::vector<ShardCase> v = {
        {"stories260K", rotq_test::project_data("stories260K/stories260K.bin")}};
    const std::string dir = shared_temp_dir(*g_comm) + "/synth8";
    if (g_comm->is_root()) {
      rotq::ModelConfig cfg = rotq::synth_preset("tiny");
      rotq::apply_dims(cfg, "dim=64,hidden=160,layers=8,heads=8,kv_heads=2,vocab=512,ctx=256");
      rotq::write_synthetic_checkpoint(cfg, 7, dir, {});
    }
    g_comm->barrier();
    v.push_back({"synthetic 8 layers", dir});
    return v;
  }();
  return cases;
}

struct Sharded {
  rotq::Model full, shard;
  rotq::Placement placement;
};

Sharded load_both(const std::string& path) {
  Sharded s;
  auto reader = rotq::open_checkpoint(path);
  s.full = rotq::load_model(*reader);
  s.placement = rotq::place_layers(reader->config(), g_comm->size(), 4);
  s.shard = rotq::load_shard(*reader, s.placement, g_comm->rank(), at::kFloat);
  return s;
}

// Both forms with their norms folded: what the learned rotations start from.
Sharded load_both_fused(const std::string& path) {
  Sharded s = load_both(path);
  rotq::fuse_norms(s.full);
  rotq::fuse_norms(s.shard);
  return s;
}

std::vector<int32_t> sample_tokens() {
  auto tok = rotq::load_tokenizer(rotq_test::project_data("stories260K/tok512.bin"), 512);
  return rotq::encode_with_bos(
      *tok,
      rotq::read_text(rotq_test::project_data("tinystories_sample.txt"), rotq::TextFormat::kRaw),
      true);
}

void rotate_hadamard(rotq::Model& m, uint64_t seed) {
  rotq::FixedRotationSpec spec;
  spec.kind = rotq::FixedRotation::kHadamard;
  spec.seed = seed;
  rotq::Rotations rot =
      rotq::make_rotations(spec, m.config.dim, m.config.head_dim, m.config.n_layers);
  rot.r3 = rot.r4 = true;
  rotq::fuse_norms(m);
  rotq::fuse_rotations(m, rot);
}

// Every layer of `shard` equals the same layer of `full` (bitwise, or within `tol`).
void expect_shard_matches(const rotq::Model& shard, const rotq::Model& full, double tol,
                          const std::string& what) {
  for (size_t i = 0; i < shard.weights.layers.size(); ++i) {
    for (size_t t = 0; t < shard.weights.layers[i].tensors.size(); ++t) {
      const at::Tensor& a = shard.weights.layers[i].tensors[t];
      const at::Tensor& b = full.weights.layers[i + shard.layer_offset].tensors[t];
      ASSERT_EQ(a.defined(), b.defined());
      if (!a.defined()) continue;
      if (tol == 0) {
        EXPECT_TRUE(at::equal(a, b))
            << what << " layer " << i + shard.layer_offset << " tensor " << t;
      } else {
        EXPECT_LT((a - b).abs().max().item<double>(), tol) << what;
      }
    }
  }
}

TEST(Sharded, PlacementCoversEveryLayerOnce) {
  for (const ShardCase& k : shard_cases()) {
    const rotq::ModelConfig c = rotq::read_model_config(k.path);
    const rotq::Placement p = rotq::place_layers(c, g_comm->size(), 4);
    EXPECT_EQ(p.begin.front(), 0);
    EXPECT_EQ(p.begin.back(), c.n_layers);
    for (int r = 0; r < p.ranks; ++r) {
      EXPECT_LT(p.layer_begin(r), p.layer_end(r)) << k.name << " rank " << r;
      EXPECT_EQ(p.owner(p.layer_begin(r)), r);
    }
  }
}

// Pipeline-parallel perplexity (floating point, and with W-free A4/KV4 hooks and the KL from a
// reference shard) gives exactly the one-process window NLLs.
// Zero-shot scoring split over ranks (whole batches per rank) and through a layer-sharded
// pipeline gives every request the score the single process gives it, bit for bit.
TEST(Mpi, TaskScoresOverRanksEqualOneProcess) {
  rotq::Model m = rotq::load_model(rotq_test::project_data("stories260K/stories260K.bin"));
  rotq::Transformer tf(m);
  auto tok = rotq::load_tokenizer(rotq_test::project_data("stories260K/tok512.bin"), 512);
  rotq::TaskOptions o;
  o.dir = rotq_test::project_data("tasks");
  o.limit = 9;
  o.batch = 3;
  auto local = rotq::make_local_comm();
  rotq::ActQuantHooks hooks(m.config, rotq::default_activation_quant(4, 4));
  for (const char* name : {"hellaswag", "lambada_openai", "winogrande"}) {
    const rotq::PreparedTask t = rotq::prepare_task(name, "", o, *tok);
    const rotq::TaskEvaluation one = rotq::evaluate_task(t, tf, o, *local, &hooks);
    const rotq::TaskEvaluation dist = rotq::evaluate_task(t, tf, o, *g_comm, &hooks);
    ASSERT_EQ(one.requests.size(), dist.requests.size());
    for (size_t r = 0; r < one.requests.size(); ++r) {
      EXPECT_EQ(one.requests[r].logprob, dist.requests[r].logprob) << name;
      EXPECT_EQ(one.requests[r].greedy, dist.requests[r].greedy) << name;
    }
    EXPECT_EQ(one.score.acc, dist.score.acc) << name;
  }
}

TEST(Sharded, PipelineTaskScoresEqualOneProcess) {
  auto local = rotq::make_local_comm();
  auto tok = rotq::load_tokenizer(rotq_test::project_data("stories260K/tok512.bin"), 512);
  rotq::TaskOptions o;
  o.dir = rotq_test::project_data("tasks");
  o.limit = 6;
  o.batch = 2;
  const rotq::PreparedTask t = rotq::prepare_task("arc_easy", "", o, *tok);
  for (const ShardCase& k : shard_cases()) {
    Sharded s = load_both(k.path);
    const rotq::ActivationQuant aq = rotq::default_activation_quant(4, 4, 1.0, 0.95);
    rotq::ActQuantHooks h_full(s.full.config, aq), h_shard(s.shard.config, aq);
    rotq::Transformer tf_full(s.full), tf_shard(s.shard);
    const rotq::TaskEvaluation one = rotq::evaluate_task(t, tf_full, o, *local, &h_full);
    const rotq::TaskEvaluation many =
        rotq::evaluate_task(t, tf_shard, o, *g_comm, &h_shard, s.placement);
    ASSERT_EQ(one.requests.size(), many.requests.size());
    for (size_t r = 0; r < one.requests.size(); ++r) {
      EXPECT_EQ(one.requests[r].logprob, many.requests[r].logprob) << r;
    }
    EXPECT_EQ(one.score.acc_norm, many.score.acc_norm);
  }
}

TEST(Sharded, PipelinePerplexityEqualsOneProcess) {
  const auto tokens = sample_tokens();
  auto local = rotq::make_local_comm();
  for (const ShardCase& k : shard_cases()) {
    Sharded s = load_both(k.path);
    rotate_hadamard(s.full, 3);
    rotate_hadamard(s.shard, 3);
    expect_shard_matches(s.shard, s.full, 0, k.name + " fused");
    rotq::PplOptions o;
    o.seqlen = 64;
    o.max_windows = 7;
    o.batch = 2;  // 4 micro-batches, the last one short
    const rotq::ActivationQuant aq = rotq::default_activation_quant(4, 4, 1.0, 0.95);
    rotq::ActQuantHooks h_full(s.full.config, aq), h_shard(s.shard.config, aq);
    const rotq::Model ref_full = rotq::clone_model(s.full), ref_shard = rotq::clone_model(s.shard);
    rotq::Transformer tf_full(s.full), tf_shard(s.shard), rf(ref_full), rs(ref_shard);
    const rotq::PplResult one = rotq::perplexity(tf_full, tokens, o, *local, &h_full, &rf);
    const rotq::PplResult many =
        rotq::perplexity_pipeline(tf_shard, s.placement, tokens, o, *g_comm, &h_shard, &rs);
    EXPECT_EQ(one.window_nll, many.window_nll) << k.name;
    EXPECT_EQ(one.kl, many.kl) << k.name;
    EXPECT_GT(one.kl, 0) << k.name;
    const rotq::PplResult fp_one = rotq::perplexity(tf_full, tokens, o, *local);
    const rotq::PplResult fp_many =
        rotq::perplexity_pipeline(tf_shard, s.placement, tokens, o, *g_comm);
    EXPECT_EQ(fp_one.window_nll, fp_many.window_nll) << k.name;
  }
}

// GPTQ with streamed layers (data-parallel calibration, row-parallel quantization): the Hessians
// are float64 sums in another order, so weights agree except for rare ties on the grid, and the
// quantized model's perplexity agrees to 1e-3.
TEST(Sharded, StreamedGptqMatchesOneProcess) {
  const auto tokens = sample_tokens();
  auto local = rotq::make_local_comm();
  for (const ShardCase& k : shard_cases()) {
    Sharded s = load_both(k.path);
    rotate_hadamard(s.full, 5);
    rotate_hadamard(s.shard, 5);
    const at::Tensor calib = rotq::calibration_windows(tokens, 7, 64, 5);  // uneven shares
    rotq::WeightQuantOptions o;
    o.method = rotq::WeightMethod::kGptq;
    o.spec.bits = 4;
    o.spec.mse_clip = true;
    o.calib_batch = 2;
    rotq::quantize_weights_gptq(s.full, calib, o, *local);
    const auto rep = rotq::quantize_weights_gptq(s.shard, calib, o, *g_comm, s.placement);
    EXPECT_EQ(static_cast<int64_t>(rep.layers.size()), s.full.config.n_layers);
    int64_t same = 0, total = 0;
    for (size_t i = 0; i < s.shard.weights.layers.size(); ++i) {
      for (rotq::LayerTensor t : rotq::quantized_linears()) {
        const at::Tensor a = s.shard.weights.layers[i][t];
        const at::Tensor b = s.full.weights.layers[i + s.shard.layer_offset][t];
        same += (a == b).sum().item<int64_t>();
        total += a.numel();
      }
    }
    EXPECT_GE(static_cast<double>(same) / total, 0.999)
        << k.name << ": " << same << " of " << total;
    rotq::PplOptions po;
    po.seqlen = 64;
    po.max_windows = 6;
    rotq::Transformer tf_full(s.full), tf_shard(s.shard);
    const double one = rotq::perplexity(tf_full, tokens, po, *local).ppl;
    const double many = rotq::perplexity_pipeline(tf_shard, s.placement, tokens, po, *g_comm).ppl;
    EXPECT_NEAR(many / one, 1.0, 1e-3) << k.name;
  }
}

// DFRot (tokens sharded by layer) and OptRot / OptRot+ (matrices and covariances sharded with
// their layers, or split by layer index on a replicated model; R2 solved by each layer's owner):
// the same rotations as one process, within float64 summation order.
TEST(Sharded, LearnedRotationsEqualOneProcess) {
  const auto tokens = sample_tokens();
  auto local = rotq::make_local_comm();
  for (const ShardCase& k : shard_cases()) {
    Sharded s = load_both_fused(k.path);
    const at::Tensor windows = rotq::calibration_windows(tokens, 2, 64, 9);
    rotq::RotationSpec spec = rotq::rotation_spec("dfrot");
    spec.seed = 4;
    spec.dfrot.iters = 8;
    spec.dfrot.log_every = 0;
    const rotq::DfrotModelResult d1 = rotq::dfrot_rotations(s.full, windows, spec, *local, nullptr);
    const rotq::DfrotModelResult dn =
        rotq::dfrot_rotations(s.shard, windows, spec, *g_comm, nullptr, s.placement);
    EXPECT_LT((d1.rotations.r1 - dn.rotations.r1).abs().max().item<double>(), 1e-9) << k.name;
    EXPECT_EQ(d1.massive_fraction, dn.massive_fraction) << k.name;

    rotq::OptRotOptions oo;
    oo.sgd.steps = 15;
    oo.sgd.log_every = 0;
    const auto covs_full = rotq::collect_layer_covariances(s.full, windows, *local, 1);
    const auto covs_shard =
        rotq::collect_layer_covariances(s.shard, windows, *g_comm, 1, s.placement);
    // Each layer's own sum: x/rms(x) has squared norm ≈ dim, so trace = tokens · dim (up to eps).
    const double tokens_dim = static_cast<double>(windows.numel() * s.full.config.dim);
    for (const rotq::LayerCovariances& cv : covs_full) {
      EXPECT_NEAR(cv.attn.trace().item<double>() / tokens_dim, 1.0, 1e-3) << k.name;
      EXPECT_NEAR(cv.mlp.trace().item<double>() / tokens_dim, 1.0, 1e-3) << k.name;
    }
    ASSERT_EQ(covs_shard.size(), s.shard.weights.layers.size());
    for (size_t i = 0; i < covs_shard.size(); ++i) {
      EXPECT_TRUE(at::equal(covs_shard[i].attn, covs_full[i + s.shard.layer_offset].attn));
    }
    // Each layer's R2 is solved on exactly one rank, replicated (split by index, at most
    // ⌈L/ranks⌉ each) or sharded (the owner).
    const int64_t n_layers = s.full.config.n_layers;
    for (const rotq::Model* model : {&s.full, &s.shard}) {
      const std::vector<int64_t> mine = rotq::r2_layers_of_rank(*model, *g_comm);
      at::Tensor count = at::zeros({n_layers}, at::kDouble);
      for (int64_t l : mine) count[l + model->layer_offset] += 1;
      g_comm->all_reduce(count, rotq::ReduceOp::kSum);
      EXPECT_TRUE(at::equal(count, at::ones({n_layers}, at::kDouble)))
          << k.name << (model == &s.full ? " replicated" : " sharded");
      if (model == &s.full) {
        EXPECT_LE(static_cast<int64_t>(mine.size()),
                  (n_layers + g_comm->size() - 1) / g_comm->size());
      }
    }
    for (bool plus : {false, true}) {
      const rotq::Rotations o1 =
          rotq::optrot_rotations(s.full, oo, 2, *local, nullptr, plus ? &covs_full : nullptr);
      const rotq::Rotations on =
          rotq::optrot_rotations(s.shard, oo, 2, *g_comm, nullptr, plus ? &covs_shard : nullptr);
      EXPECT_LT((o1.r1 - on.r1).abs().max().item<double>(), 1e-9) << k.name << " plus " << plus;
      ASSERT_EQ(o1.r2.size(), on.r2.size());
      for (size_t l = 0; l < o1.r2.size(); ++l) {
        EXPECT_LT((o1.r2[l] - on.r2[l]).abs().max().item<double>(), 1e-9) << k.name << " R2 " << l;
      }
      // The whole model on every rank: R1's terms and the R2 problems split by layer index.
      const rotq::Rotations orep =
          rotq::optrot_rotations(s.full, oo, 2, *g_comm, nullptr, plus ? &covs_full : nullptr);
      EXPECT_LT((o1.r1 - orep.r1).abs().max().item<double>(), 1e-9) << k.name << " replicated";
      for (size_t l = 0; l < o1.r2.size(); ++l) {
        EXPECT_LT((o1.r2[l] - orep.r2[l]).abs().max().item<double>(), 1e-9)
            << k.name << " replicated R2 " << l;
      }
    }
  }
}
// A learned method data-parallel over the ranks (replicated model) and with the layers sharded
// (each layer streamed from its owner in the forward and again in the recompute): the same loss
// curve, rotations and scalings as one process. float32 model; the ranks sum their windows' losses
// and gradients in a different order than one process, hence 1e-6 rather than equality.
using LearnFn = rotq::Rotations (*)(const rotq::Model&, const at::Tensor&,
                                    const rotq::RotationSpec&, rotq::Comm&, const rotq::Placement&,
                                    rotq::RotationLearning&, std::optional<at::Device>);

void expect_learned_equals_one_process(const std::string& method, LearnFn learn) {
  const auto tokens = sample_tokens();
  auto local = rotq::make_local_comm();
  for (const ShardCase& k : shard_cases()) {
    SCOPED_TRACE(method + " " + k.name);
    Sharded s = load_both_fused(k.path);
    const at::Tensor windows = rotq::calibration_windows(tokens, 8, 48, 5);
    rotq::RotationSpec spec = rotq::rotation_spec(method);
    spec.seed = 6;
    for (rotq::LearnOptions* o : {&spec.spinquant, &spec.ostquant}) {
      o->steps = 5;
      o->batch = 4;  // 4, 2 or 1 windows per rank
    }
    spec.ostquant.lr = spec.ostquant.smooth_lr = 0.02;
    spec.learn_acts = rotq::default_activation_quant(4, 4);
    rotq::RotationLearning one, replicated, sharded;
    const rotq::Rotations r1 =
        learn(s.full, windows, spec, *local, rotq::Placement::replicated(), one, std::nullopt);
    const rotq::Rotations rr = learn(s.full, windows, spec, *g_comm, rotq::Placement::replicated(),
                                     replicated, std::nullopt);
    const rotq::Rotations rs =
        learn(s.shard, windows, spec, *g_comm, s.placement, sharded, std::nullopt);
    ASSERT_EQ(one.loss.size(), 5u);
    for (const auto* curve : {&replicated.loss, &sharded.loss}) {
      ASSERT_EQ(curve->size(), one.loss.size());
      for (size_t i = 0; i < one.loss.size(); ++i) {
        EXPECT_NEAR((*curve)[i], one.loss[i], 1e-6 * one.loss[i]) << "step " << i;
      }
    }
    EXPECT_GT(std::abs(one.loss.back() - one.loss.front()), 1e-5);  // it moved
    for (const rotq::Rotations* r : {&rr, &rs}) {
      EXPECT_LT((r->r1 - r1.r1).abs().max().item<double>(), 1e-5);
      ASSERT_EQ(r->r2.size(), r1.r2.size());
      for (size_t l = 0; l < r1.r2.size(); ++l) {
        EXPECT_LT((r->r2[l] - r1.r2[l]).abs().max().item<double>(), 1e-5) << "R2 " << l;
      }
      ASSERT_EQ(r->scales.size(), r1.scales.size());
      for (size_t l = 0; l < r1.scales.size(); ++l) {
        for (const auto& [kind, field] : rotq::scaling_kinds()) {
          EXPECT_LT((r->scales[l].*field - r1.scales[l].*field).abs().max().item<double>(), 1e-5)
              << "layer " << l << " " << kind;
        }
      }
    }
    if (method == "ostquant") {
      EXPECT_EQ(r1.scales.size(), static_cast<size_t>(s.full.config.n_layers));
    }
  }
}

TEST(Sharded, SpinQuantEqualsOneProcess) {
  expect_learned_equals_one_process("spinquant", rotq::spinquant_rotations);
}

TEST(Sharded, OstQuantEqualsOneProcess) {
  expect_learned_equals_one_process("ostquant", rotq::ostquant_rotations);
}
}  // namespace

int main(int argc, char** argv) {
  setenv("ROTQ_MPI_CHUNK_BYTES", "1000", 1);
  const char* backend = std::getenv("ROTQ_TEST_COMM");  // "nccl" on a GPU machine
  auto comm = rotq::make_comm(backend ? backend : "mpi");
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
  if (comm->is_root() && !g_temp_dir.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(g_temp_dir, ec);
  }
  return failed.item<int>();
}
