// rotq bench rotation: the cost of one DFRot iteration and one OptRot step at real model widths
// (C = 4096 for 7B-class, 8192 for 70B-class), on synthetic data, so that the price of the
// rotation optimizers at scale is known before a GPU is used. Both are GEMM-bound and linear in
// their data (tokens for DFRot, matrix rows for OptRot): a measured share is timed and the full
// model's cost extrapolated from it; the C×C parts (SVD, Cayley solve) are timed whole.
#include <ATen/ATen.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <vector>

#include "models/layer_groups.h"
#include "models/synth.h"
#include "models/weights.h"
#include "runner/cli/cmd_common.h"
#include "runner/core/stats.h"
#include "runner/dist/device.h"
#include "solvers/dfrot.h"
#include "solvers/error.h"
#include "solvers/gemm_rate.h"
#include "solvers/hadamard.h"
#include "solvers/optrot.h"
#include "solvers/orthogonal.h"
#include "solvers/rotation.h"
#include "solvers/tf32_scope.h"

namespace rotq {
namespace {

struct RotationBenchArgs {
  std::vector<std::string> models = {"llama-2-7b", "llama-2-70b"};
  int64_t tokens = 4096;  // DFRot tokens timed
  int64_t rows = 4096;    // OptRot matrix rows timed
  int64_t window = 2048;  // DFRot's calibration window
  int64_t gemm_n = 2048;
  std::string device = "cpu";
  bool json = false;
};

// Calls f(shape, reader) for each linear of a layer that R1 touches, as OptRot's objective takes
// them (runner/rotate/optrot_model.cc): a reader W [out, C] as itself, a writer W [C, in] (o, down)
// as the view Wᵀ.
template <typename F>
void for_each_r1_linear(const ModelConfig& c, F&& f) {
  for (const LayerGroup& g : layer_groups()) {
    for (const LayerTensor t : g.linears) f(expected_shape(c, t), g.residual_reader);
  }
}

// Rows of a 7B/70B layer that R1 touches: readers' outputs, writers' inputs.
int64_t r1_rows_per_layer(const ModelConfig& c) {
  int64_t rows = 0;
  for_each_r1_linear(c, [&](const std::vector<int64_t>& shape, bool reader) {
    rows += reader ? shape[0] : shape[1];
  });
  return rows;
}

// One layer's R1 matrices at the model's shapes, held in bfloat16 as a bfloat16 model holds them
// (writers as transposed views). As seven terms they show the per-term work (each term's product
// pair, cube and sum) that the one-matrix rows extrapolate away: a step at 7B has 224 of them.
FourthPowerObjective layer_objective(const ModelConfig& c, at::Device dev) {
  FourthPowerObjective obj(c.dim, OptRotNorm::kNumel);
  uint64_t seed = 20;
  for_each_r1_linear(c, [&](const std::vector<int64_t>& shape, bool reader) {
    const at::Tensor w = seeded_gaussian(shape[0], shape[1], seed++).to(dev, at::kBFloat16);
    obj.add(reader ? w : w.t());
  });
  return obj;
}

// One layer's R2 objective at the model's shapes (runner/rotate/optrot_model.cc): the KV heads'
// blocks of Wv·R1 and the heads' blocks of R1ᵀ·Wo, [C, head_dim] each, in float64 as R1's
// float64 product leaves them; as separate terms (`stacked` false) or one stack kept in
// `store_as` (the pipeline keeps it in its products' dtype).
FourthPowerObjective r2_layer_objective(const ModelConfig& c, at::Device dev, bool stacked,
                                        at::ScalarType store_as = at::kDouble) {
  const int64_t d = c.head_dim, heads = c.n_kv_heads + c.n_heads;
  const at::Tensor blocks = seeded_gaussian(heads * c.dim, d, 30).view({heads, c.dim, d}).to(dev);
  FourthPowerObjective obj(d, OptRotNorm::kNumel);
  if (stacked) {
    obj.add_stack(blocks, 1.0, {}, store_as);
  } else {
    for (int64_t h = 0; h < heads; ++h) obj.add(blocks[h]);
  }
  return obj;
}

// One table row: what was timed, its time and FLOPs, the rate and its ratio to the GEMM rate of
// the row's precision, and (for the data-linear parts) the full model's count and extrapolated
// time.
std::vector<std::string> cost_row(const std::string& model, int64_t c, const std::string& op,
                                  const std::string& timed_what, double seconds, double flops,
                                  double gemm_gflops, const std::string& full = "-",
                                  double full_seconds = -1) {
  const double gflops = flops / seconds / 1e9;
  return {model, std::to_string(c), op, timed_what,
          // Sub-second rows (R2's, small widths) in significant digits, not as 0.00.
          seconds >= 1 ? fmt_double(seconds, 2) : fmt_significant(seconds, 3),
          fmt_double(flops / 1e9, 1), fmt_double(gflops, 1), fmt_double(gflops / gemm_gflops, 3),
          full, full_seconds < 0 ? "-" : fmt_double(full_seconds, 1)};
}

void run_rotation_bench(Runtime& rt, const RotationBenchArgs& a) {
  rt.init();
  require(a.tokens > 0 && a.rows > 0 && a.window > 0, "bench rotation: sizes must be positive");
  const at::Device dev = resolve_device(a.device);
  const GemmRate g64 = measure_gemm_rate(a.gemm_n, at::kDouble, 3, dev);
  const GemmRate g32 = measure_gemm_rate(a.gemm_n, at::kFloat, 3, dev);
  // TF32 tensor cores exist on GPUs only: the tf32 rows are CUDA's (on a CPU they are float32's).
  const bool tf32 = dev.is_cuda();
  GemmRate gtf32, gbf16;
  if (tf32) {
    const Tf32Scope on(true);
    gtf32 = measure_gemm_rate(a.gemm_n, at::kFloat, 3, dev);
    gbf16 = measure_gemm_rate(a.gemm_n, at::kBFloat16, 3, dev);
  }
  spdlog::info("GEMM {}³: float64 {:.1f} GFLOP/s, float32 {:.1f} GFLOP/s", a.gemm_n, g64.gflops,
               g32.gflops);
  // A GPU's first call of an operation pays its libraries' setup (cuBLASLt's heuristics for a new
  // GEMM type, cuSOLVER's handles and workspaces): one untimed call first there.
  const auto timed = [&](auto&& f) {
    if (dev.is_cuda()) f();
    return timed_on(dev, f);
  };
  // Calls of a millisecond or less: the median of several, each waited for as an optimizer's
  // step waits for its loss.
  const auto timed_median = [&](auto&& f) {
    std::vector<double> t;
    for (int i = 0; i < 9; ++i) t.push_back(timed(f));
    std::nth_element(t.begin(), t.begin() + 4, t.end());
    return t[4];
  };
  std::vector<std::vector<std::string>> rows;
  for (const std::string& name : a.models) {
    const ModelConfig c = synth_preset(name);
    const int64_t C = c.dim;
    // DFRot: unit-RMS Gaussian tokens with a few massive ones, as the calibration tokens look.
    at::Tensor x = seeded_gaussian(a.tokens, C, 7).to(at::kFloat);
    x.narrow(0, 0, 8).select(1, 5).fill_(std::sqrt(static_cast<double>(C)));
    x = x.to(dev);
    const at::Tensor massive = flag_massive_tokens(x, {});
    const at::Tensor r0 = random_hadamard_matrix(C, 0).to(dev);
    DfrotOptions o;
    o.log_every = 0;
    // One pass over the tokens with xᵀη (the loss pass and M's products), per precision; the
    // Procrustes step is timed apart on a full-rank M like the one of a real calibration set.
    const double n = static_cast<double>(a.tokens), cd = static_cast<double>(C);
    const double iter_flops = 4.0 * n * cd * cd;
    const int64_t full_tokens = 2 * c.n_layers * a.window;
    const at::Tensor m = at::matmul(x.t().to(at::kDouble), x.to(at::kDouble) + 0.1) +
                         seeded_gaussian(C, C, 9).to(dev);
    PolarReport newton, mixed;
    const double t_newton = timed([&] { polar_factor(m, PolarMethod::kNewton, &newton); });
    const double t_mixed = timed([&] { polar_factor(m, PolarMethod::kNewtonMixed, &mixed); });
    const double t_svd = timed([&] { polar_factor(m, PolarMethod::kSvd); });
    // Each pass precision is paired with the Procrustes step DFRot takes at that precision
    // (rotation.dfrot.precision): float64 with the faster of Newton and the SVD, float32 with the
    // mixed-precision Newton.
    const double t_polar64 = newton.svd ? t_svd : std::min(t_newton, t_svd);
    const double t_polar32 = mixed.svd ? t_svd : t_mixed;
    double t_tokens = 0;
    // The full route's pass (4·N·C² FLOPs), the one a whole model's tokens take: fewer timed
    // tokens than channels would otherwise take the span route, whose pass costs less.
    o.span_route = false;
    for (const at::ScalarType pass : {at::kDouble, at::kFloat}) {
      o.pass_dtype = pass;
      o.polar = PolarMethod::kSvd;
      o.iters = 1;
      DfrotTrace tr;
      dfrot_optimize(x, massive, r0, o, nullptr, &tr);
      // The iteration's pass over the tokens: xR, Q(xR), the loss and Σ w xᵀη (the first pass).
      t_tokens = tr.first_pass_seconds;
      const bool f32 = pass == at::kFloat;
      rows.push_back(cost_row(
          name, C, f32 ? "DFRot pass (float32)" : "DFRot pass (float64)",
          std::to_string(a.tokens) + " tokens", t_tokens, iter_flops, f32 ? g32.gflops : g64.gflops,
          std::to_string(full_tokens) + " tokens",
          t_tokens * static_cast<double>(full_tokens) / n + (f32 ? t_polar32 : t_polar64)));
    }
    rows.push_back(
        cost_row(name, C, "polar by SVD", "C×C", t_svd, 22.0 * cd * cd * cd, g64.gflops));
    rows.push_back(cost_row(
        name, C,
        "polar by Newton (" + std::to_string(newton.iterations) + " it" +
            (newton.svd ? ", fell back" : "") + ")",
        "C×C", t_newton, newton.iterations * 2.0 * cd * cd * cd + 2.0 * cd * cd * cd, g64.gflops));
    // Rated against float32's GEMM: most of its inverses run there.
    rows.push_back(cost_row(
        name, C,
        "polar by mixed Newton (" + std::to_string(mixed.iterations) + " it, " +
            std::to_string(mixed.float32_iterations) + " in float32, " +
            std::to_string(mixed.schulz_rounds) + " NS" + (mixed.svd ? ", fell back" : "") + ")",
        "C×C", t_mixed,
        mixed.iterations * 2.0 * cd * cd * cd + mixed.schulz_rounds * 5.0 * cd * cd * cd,
        g32.gflops));

    // OptRot: the gradient over a share of one layer's rows, and the Cayley step.
    FourthPowerObjective obj(C, OptRotNorm::kNumel);
    obj.add(seeded_gaussian(a.rows, C, 11).to(dev, at::kFloat));
    const double t_grad = timed([&] { obj.local_gradient(r0); });
    const double t_grad32 = timed([&] { obj.local_gradient(r0, nullptr, true, at::kFloat); });
    const at::Tensor skew = skew_gradient(r0, seeded_gaussian(C, C, 12).to(dev));
    const double t_cayley = timed([&] { cayley_retract(r0, skew, 1e-3); });
    const double grad_flops = obj.gradient_flops();
    const int64_t full_rows = r1_rows_per_layer(c) * c.n_layers;
    // A whole-model step: the gradient over the timed rows scaled to every R1 row, plus Cayley.
    const auto full_step_of = [&](double t_gradient) {
      return t_gradient * static_cast<double>(full_rows) / static_cast<double>(a.rows) + t_cayley;
    };
    const double full_step = full_step_of(t_grad);
    rows.push_back(cost_row(name, C, "OptRot gradient (float64)", std::to_string(a.rows) + " rows",
                            t_grad, grad_flops, g64.gflops, std::to_string(full_rows) + " rows",
                            full_step));
    const double full_step32 = full_step_of(t_grad32);
    rows.push_back(cost_row(name, C, "OptRot gradient (float32)", std::to_string(a.rows) + " rows",
                            t_grad32, grad_flops, g32.gflops, std::to_string(full_rows) + " rows",
                            full_step32));
    double t_grad_tf32 = -1, t_grad_bf16 = -1;
    if (tf32) {
      {
        const Tf32Scope on(true);
        t_grad_tf32 = timed([&] { obj.local_gradient(r0, nullptr, true, at::kFloat); });
      }
      rows.push_back(cost_row(name, C, "OptRot gradient (tf32)", std::to_string(a.rows) + " rows",
                              t_grad_tf32, grad_flops, gtf32.gflops,
                              std::to_string(full_rows) + " rows", full_step_of(t_grad_tf32)));
      // bfloat16 inputs, float32 sums; the rows held in bfloat16, as a bfloat16 model's weights
      // are (no conversion per step); its ratio is to the bfloat16 GEMM rate.
      FourthPowerObjective obj16(C, OptRotNorm::kNumel);
      obj16.add(seeded_gaussian(a.rows, C, 11).to(dev, at::kBFloat16));
      t_grad_bf16 = timed([&] { obj16.local_gradient(r0, nullptr, true, at::kBFloat16); });
      rows.push_back(cost_row(name, C, "OptRot gradient (bf16)", std::to_string(a.rows) + " rows",
                              t_grad_bf16, grad_flops, gbf16.gflops,
                              std::to_string(full_rows) + " rows", full_step_of(t_grad_bf16)));
    }
    // A CPU has no bfloat16 GEMMs: there the products are float32 ones of the bfloat16 values
    // (the emulation the tests check the GPU against), rated against float32's rate.
    const FourthPowerObjective layer = layer_objective(c, dev);
    const double t_layer_bf16 =
        timed([&] { layer.local_gradient(r0, nullptr, true, at::kBFloat16); });
    rows.push_back(cost_row(name, C, "OptRot gradient (bf16, one layer's 7 matrices)",
                            std::to_string(r1_rows_per_layer(c)) + " rows", t_layer_bf16,
                            layer.gradient_flops(), dev.is_cuda() ? gbf16.gflops : g32.gflops,
                            std::to_string(c.n_layers) + " layers",
                            t_layer_bf16 * static_cast<double>(c.n_layers) + t_cayley));
    rows.push_back(
        cost_row(name, C, "Cayley step", "C×C", t_cayley, 2.7 * cd * cd * cd, g64.gflops));
    // R2: a layer's head_dim × head_dim problem, its heads' blocks as separate terms and as one
    // stack (the pipeline's); small GEMMs, so launches and per-term passes are what costs. A whole
    // model's R2 step is one per layer (solved layer by layer).
    const int64_t d = c.head_dim;
    const double dd = static_cast<double>(d);
    const at::Tensor r2 = random_hadamard_matrix(d, 0).to(dev);
    const at::Tensor skew2 = skew_gradient(r2, seeded_gaussian(d, d, 13).to(dev));
    const double t_cayley2 = timed_median([&] { cayley_retract(r2, skew2, 1e-3); });
    const std::string heads = std::to_string(c.n_kv_heads + c.n_heads) + " heads";
    double t_r2_terms = 0, t_r2_stacked = 0;
    const FourthPowerObjective r2_terms = r2_layer_objective(c, dev, false),
                               r2_stacked = r2_layer_objective(c, dev, true),
                               r2_stacked16 = r2_layer_objective(c, dev, true, at::kBFloat16);
    // bf16 products from a float64-kept stack convert it at every step; the pipeline keeps it in
    // bfloat16 (add_stack's store_as).
    struct R2Variant {
      const char* label;
      const FourthPowerObjective& objective;
      at::ScalarType dtype;
      double* record;
    };
    const R2Variant r2_variants[] = {
        {"float64, heads as terms", r2_terms, at::kDouble, nullptr},
        {"float64, stacked", r2_stacked, at::kDouble, nullptr},
        {"bf16, heads as terms", r2_terms, at::kBFloat16, &t_r2_terms},
        {"bf16, stacked kept in float64", r2_stacked, at::kBFloat16, nullptr},
        {"bf16, stacked kept in bf16", r2_stacked16, at::kBFloat16, &t_r2_stacked}};
    for (const R2Variant& v : r2_variants) {
      const bool bf16 = v.dtype == at::kBFloat16;
      const double rate = bf16 ? (dev.is_cuda() ? gbf16.gflops : g32.gflops) : g64.gflops;
      const double t =
          timed_median([&] { v.objective.local_gradient(r2, nullptr, true, v.dtype); });
      if (v.record) *v.record = t;
      rows.push_back(cost_row(name, C, std::string("OptRot R2 gradient (") + v.label + ")", heads,
                              t, v.objective.gradient_flops(), rate,
                              std::to_string(c.n_layers) + " layers",
                              (t + t_cayley2) * static_cast<double>(c.n_layers)));
    }
    rows.push_back(cost_row(name, C, "Cayley step (head_dim)",
                            std::to_string(d) + "×" + std::to_string(d), t_cayley2,
                            2.7 * dd * dd * dd, g64.gflops));
    // R2 as the pipeline steps it (gradient, loss read, Cayley step), per layer-step: kR2Layers
    // layers solved one after another, and side by side (minimize_fourth_power_batch: one loss
    // read and one batched Cayley solve per step for all of them). The layers are one objective
    // repeated: the cost does not depend on the values.
    constexpr int64_t kR2Layers = 8, kR2Steps = 6;
    CayleySgdOptions r2_sgd;
    r2_sgd.steps = kR2Steps;
    r2_sgd.log_every = 0;
    r2_sgd.gradient_dtype = at::kBFloat16;
    std::vector<double> alone_steps;
    for (int64_t l = 0; l < kR2Layers; ++l) {
      RotationTrace t;
      minimize_fourth_power(r2_stacked16, r2, r2_sgd, nullptr, &t);
      alone_steps.insert(alone_steps.end(), t.step_seconds.begin(), t.step_seconds.end());
    }
    const double t_r2_alone = median(alone_steps);
    std::vector<RotationTrace> batch_traces;
    minimize_fourth_power_batch(std::vector<const FourthPowerObjective*>(kR2Layers, &r2_stacked16),
                                r2.unsqueeze(0).expand({kR2Layers, d, d}).contiguous(), r2_sgd,
                                &batch_traces);
    const double t_r2_batched =
        median(batch_traces.front().step_seconds) / static_cast<double>(kR2Layers);
    const std::string r2_timed =
        std::to_string(kR2Layers) + " layers × " + std::to_string(kR2Steps) + " steps";
    for (const bool batched : {false, true}) {
      const double t = batched ? t_r2_batched : t_r2_alone;
      rows.push_back(cost_row(name, C,
                              std::string("OptRot R2 layer-step (bf16, ") +
                                  (batched ? "layers side by side)" : "layers one by one)"),
                              r2_timed, t, r2_stacked16.gradient_flops() + 4.7 * dd * dd * dd,
                              dev.is_cuda() ? gbf16.gflops : g32.gflops,
                              std::to_string(c.n_layers) + " layers",
                              t * static_cast<double>(c.n_layers)));
    }
    if (a.json) {
      print_json_line(rt.c(), {{"command", "bench rotation"},
                               {"model", name},
                               {"device", dev.str()},
                               {"dim", C},
                               {"dfrot_tokens_timed", a.tokens},
                               {"dfrot_token_seconds", t_tokens},  // float32 pass
                               {"svd_seconds", t_svd},
                               {"newton_polar_seconds", t_newton},
                               {"newton_polar_iterations", newton.iterations},
                               {"mixed_polar_seconds", t_mixed},
                               {"mixed_polar_iterations", mixed.iterations},
                               {"dfrot_full_tokens", full_tokens},
                               {"dfrot_full_iteration_seconds",  // float32 pass
                                t_tokens * static_cast<double>(full_tokens) / n + t_polar32},
                               {"optrot_rows_timed", a.rows},
                               {"optrot_gradient_seconds", t_grad},
                               {"optrot_gradient_f32_seconds", t_grad32},
                               {"optrot_gradient_tf32_seconds", t_grad_tf32},  // -1: no GPU
                               {"optrot_gradient_bf16_seconds", t_grad_bf16},  // -1: no GPU
                               {"optrot_layer_bf16_seconds", t_layer_bf16},
                               {"cayley_seconds", t_cayley},
                               {"optrot_r2_terms_bf16_seconds", t_r2_terms},
                               {"optrot_r2_stacked_bf16_seconds", t_r2_stacked},
                               {"cayley_head_dim_seconds", t_cayley2},
                               {"optrot_r2_layer_step_alone_bf16_seconds", t_r2_alone},
                               {"optrot_r2_layer_step_batched_bf16_seconds", t_r2_batched},
                               {"optrot_full_rows", full_rows},
                               {"optrot_full_step_seconds", full_step},
                               {"gemm64_gflops", g64.gflops},
                               {"gemm32_gflops", g32.gflops}});
    }
  }
  if (!a.json) {
    print_table(rt.c(),
                {"model", "C", "operation", "timed", "seconds", "GFLOP", "GFLOP/s", "ratio to GEMM",
                 "full model", "full model s"},
                rows);
    if (rt.c().is_root()) {
      std::printf(
          "%s: float64 GEMM %lld³: %.1f GFLOP/s; float32: %.1f GFLOP/s%s (each row's ratio is to "
          "the GEMM of its own precision)\n",
          dev.str().c_str(), static_cast<long long>(a.gemm_n), g64.gflops, g32.gflops,
          tf32 ? ("; tf32: " + fmt_double(gtf32.gflops, 1) +
                  " GFLOP/s; bf16: " + fmt_double(gbf16.gflops, 1) + " GFLOP/s")
                     .c_str()
               : "");
    }
  }
}

}  // namespace

void register_bench_rotation(CLI::App* bench, Runtime& rt) {
  auto a = std::make_shared<RotationBenchArgs>();
  CLI::App* cmd = bench->add_subcommand(
      "rotation", "one DFRot iteration and one OptRot step at 7B/70B widths (synthetic data)");
  cmd->add_option("--models", a->models, "shape presets (their dim is C)")->capture_default_str();
  cmd->add_option("--tokens", a->tokens, "DFRot tokens timed (the full count is extrapolated)")
      ->capture_default_str();
  cmd->add_option("--rows", a->rows, "OptRot matrix rows timed (the full count is extrapolated)")
      ->capture_default_str();
  cmd->add_option("--window", a->window, "DFRot calibration window (tokens per block input)")
      ->capture_default_str();
  cmd->add_option("--gemm-n", a->gemm_n, "size of the reference GEMMs")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 16));
  for (const char* flag : {"--tokens", "--rows", "--window"}) {
    cmd->get_option(flag)->check(CLI::Range(int64_t{1}, int64_t{1} << 30));
  }
  cmd->add_option("--device", a->device, "cpu, cuda or cuda:N")->capture_default_str();
  cmd->add_flag("--json", a->json, "print JSON lines");
  cmd->callback([a, &rt] { run_rotation_bench(rt, *a); });
}

}  // namespace rotq
