// rotq bench ppl: forward-pass throughput of the perplexity path, reported as tokens/s and as a
// fraction of this machine's measured float32 GEMM rate (the honest measure of efficiency).
#include <ATen/Parallel.h>
#include <spdlog/spdlog.h>

#include "runner/cell/cell_options.h"
#include "runner/cell/run_cell.h"
#include "runner/cli/cmd_common.h"
#include "runner/data/text.h"
#include "runner/eval/perplexity.h"
#include "solvers/error.h"
#include "solvers/gemm_rate.h"

namespace rotq {
namespace {

struct BenchArgs {
  std::vector<std::string> models;
  std::vector<std::string> tokenizers;
  std::string text;
  int64_t seqlen = 512;
  int64_t max_windows = 8;
  int64_t batch = 0;
  int64_t gemm_n = 2048;
  bool json = false;
};

// The i-th benchmarked model with its tokenizer (bundled when none is given).
ModelOptions nth_model(const std::vector<std::string>& models,
                       const std::vector<std::string>& tokenizers, size_t i) {
  require(tokenizers.empty() || tokenizers.size() == models.size(),
          "bench: give one --tokenizer per --model, or none");
  ModelOptions mo;
  mo.model = models[i];
  if (!tokenizers.empty()) mo.tokenizer = tokenizers[i];
  return mo;
}

void run_bench(Runtime& rt, const BenchArgs& a) {
  rt.init();
  require(!a.models.empty(), "bench ppl: give at least one --model");
  const GemmRate gemm = measure_gemm_rate(a.gemm_n, at::kFloat);
  spdlog::info("float32 GEMM {}³: {:.1f} GFLOP/s on {} threads", gemm.n, gemm.gflops,
               at::get_num_threads());
  std::vector<std::vector<std::string>> rows;
  for (size_t i = 0; i < a.models.size(); ++i) {
    const ModelOptions mo = nth_model(a.models, a.tokenizers, i);
    LoadedModel lm = load_for_command(mo, true);
    const std::string text = read_text(a.text, TextFormat::kAuto);
    std::vector<int32_t> tokens =
        encode_with_bos(*lm.tokenizer, text, resolve_bos(*lm.tokenizer, std::nullopt));
    Transformer model(lm.model);
    PplOptions po;
    po.seqlen = a.seqlen;
    po.max_windows = a.max_windows;
    po.batch = a.batch;
    perplexity(model, tokens, PplOptions{a.seqlen, 1, a.batch}, rt.c());  // warm-up
    const PplResult r = perplexity(model, tokens, po, rt.c());
    const double gflops = r.tokens_per_s * forward_flops_per_token(lm.model.config, a.seqlen) / 1e9;
    const double ratio = gflops / gemm.gflops;
    if (a.json) {
      print_json_line(rt.c(), {{"command", "bench-ppl"},
                               {"model", mo.model},
                               {"params", lm.model.config.param_count()},
                               {"seqlen", a.seqlen},
                               {"windows", r.windows},
                               {"tokens_per_s", r.tokens_per_s},
                               {"gflops", gflops},
                               {"gemm_gflops", gemm.gflops},
                               {"ratio_to_gemm", ratio},
                               {"ppl", r.ppl},
                               {"threads", at::get_num_threads()}});
    }
    rows.push_back({mo.model, fmt_double(lm.model.config.param_count() / 1e6, 2) + "M",
                    std::to_string(a.seqlen), std::to_string(r.windows),
                    fmt_double(r.tokens_per_s, 0), fmt_double(gflops, 1),
                    fmt_double(gemm.gflops, 1), fmt_double(ratio, 3)});
  }
  if (!a.json) {
    print_table(
        rt.c(),
        {"model", "params", "seqlen", "windows", "tok/s", "GFLOP/s", "GEMM GFLOP/s", "ratio"},
        rows);
  }
}

struct QuantBenchArgs {
  std::vector<std::string> models;
  std::vector<std::string> tokenizers;
  std::string rotation = "hadamard";
  std::string calib;
  std::string text;
  int64_t nsamples = 32;
  int64_t seqlen = 512;
  int64_t max_windows = 8;
  int w_bits = 4;
  int a_bits = 4;
  int kv_bits = 4;
  int64_t gemm_n = 2048;
  bool json = false;
};

// Time of each stage of one W·A·KV GPTQ cell, per model, and GPTQ's achieved GFLOP/s next to the
// machine's GEMM rate.
void run_quant_bench(Runtime& rt, const QuantBenchArgs& a) {
  rt.init();
  const GemmRate gemm = measure_gemm_rate(a.gemm_n, at::kFloat);
  spdlog::info("float32 GEMM {}³: {:.1f} GFLOP/s on {} threads", gemm.n, gemm.gflops,
               at::get_num_threads());
  std::vector<std::vector<std::string>> rows, layer_rows;
  for (size_t i = 0; i < a.models.size(); ++i) {
    const ModelOptions mo = nth_model(a.models, a.tokenizers, i);
    LoadedModel lm = load_for_command(mo, true);
    QuantCell cell;
    cell.rotation = rotation_spec(a.rotation);
    cell.weights.method = WeightMethod::kGptq;
    cell.weights.spec.bits = a.w_bits;
    cell.weights.spec.mse_clip = true;
    cell.acts = {default_activation_quant(a.a_bits, a.kv_bits)};
    cell.calib_text = a.calib;
    cell.calib.nsamples = a.nsamples;
    cell.calib.seqlen = std::min(a.seqlen, lm.model.config.max_seq_len);
    cell.ppl_texts = {a.text};
    cell.ppl.seqlen = cell.calib.seqlen;
    cell.ppl.max_windows = a.max_windows;
    const QuantCellResult r = run_quant_cell(lm.model, *lm.tokenizer, cell, rt.c());
    const double gptq_gflops =
        r.weights.quant_seconds > 0 ? r.weights.quant_flops / r.weights.quant_seconds / 1e9 : 0;
    const double layer_mean =
        r.weights.layers.empty() ? 0 : r.weights.seconds / r.weights.layers.size();
    if (a.json) {
      nlohmann::json layers = nlohmann::json::array();
      for (const LayerQuantStats& s : r.weights.layers) {
        layers.push_back(
            {{"layer", s.layer},
             {"seconds", s.seconds},
             {"gptq_seconds", s.quant_seconds},
             {"gptq_gflops", s.quant_seconds > 0 ? s.quant_flops / s.quant_seconds / 1e9 : 0}});
      }
      print_json_line(rt.c(), {{"command", "bench-quant"},
                               {"model", mo.model},
                               {"params", lm.model.config.param_count()},
                               {"rotate_s", r.seconds.rotate},
                               {"fuse_s", r.seconds.fuse},
                               {"calib_s", r.seconds.calib},
                               {"quantize_s", r.seconds.quantize},
                               {"eval_s", r.seconds.eval},
                               {"gptq_s", r.weights.quant_seconds},
                               {"gptq_gflops", gptq_gflops},
                               {"gemm_gflops", gemm.gflops},
                               {"ratio_to_gemm", gptq_gflops / gemm.gflops},
                               {"nsamples", a.nsamples},
                               {"seqlen", cell.calib.seqlen},
                               {"ppl", r.ppl.at(0).ppl},
                               {"layers", layers}});
      continue;
    }
    rows.push_back({mo.model, fmt_double(lm.model.config.param_count() / 1e6, 1) + "M",
                    fmt_double(r.seconds.rotate, 2), fmt_double(r.seconds.fuse, 2),
                    fmt_double(r.seconds.quantize, 2), fmt_double(layer_mean, 2),
                    fmt_double(r.weights.quant_seconds, 2), fmt_double(r.seconds.eval, 2),
                    fmt_double(gptq_gflops, 1), fmt_double(gemm.gflops, 1),
                    fmt_double(gptq_gflops / gemm.gflops, 3)});
    for (const LayerQuantStats& s : r.weights.layers) {
      layer_rows.push_back(
          {mo.model, std::to_string(s.layer), fmt_double(s.seconds, 3),
           fmt_double(s.quant_seconds, 3),
           fmt_double(s.quant_seconds > 0 ? s.quant_flops / s.quant_seconds / 1e9 : 0, 1)});
    }
  }
  if (!a.json) {
    print_table(rt.c(),
                {"model", "params", "rotate s", "fuse s", "quantize s", "s/layer", "gptq s",
                 "eval s", "GPTQ GFLOP/s", "GEMM GFLOP/s", "ratio"},
                rows);
    print_table(rt.c(), {"model", "layer", "layer s", "gptq s", "GPTQ GFLOP/s"}, layer_rows);
  }
}

}  // namespace

void register_bench(CLI::App& app, Runtime& rt) {
  CLI::App* bench = app.add_subcommand("bench", "benchmarks (speed vs the machine's GEMM rate)");
  bench->require_subcommand(1);
  auto a = std::make_shared<BenchArgs>();
  CLI::App* ppl = bench->add_subcommand("ppl", "tokens/s of the perplexity forward pass");
  ppl->add_option("--model", a->models, "model(s) to time")->required();
  ppl->add_option("--tokenizer", a->tokenizers, "one per --model (default: bundled)");
  ppl->add_option("--text", a->text, "text to score")->required();
  ppl->add_option("--seqlen", a->seqlen, "window length")->capture_default_str();
  ppl->add_option("--max-windows", a->max_windows, "windows timed")->capture_default_str();
  ppl->add_option("--batch", a->batch, "windows per forward (0: auto)");
  ppl->add_option("--gemm-n", a->gemm_n, "size of the reference GEMM")->capture_default_str();
  ppl->add_flag("--json", a->json, "print JSON lines");
  add_schema_checks(ppl);
  ppl->get_option("--gemm-n")->check(CLI::Range(1, 1 << 16));
  ppl->callback([a, &rt] { run_bench(rt, *a); });

  auto q = std::make_shared<QuantBenchArgs>();
  CLI::App* quant = bench->add_subcommand("quant", "time of each stage of a rotated GPTQ cell");
  quant->add_option("--model", q->models, "model(s) to time")->required();
  quant->add_option("--tokenizer", q->tokenizers, "one per --model (default: bundled)");
  quant->add_option("--rotation", q->rotation, "none | random | hadamard")->capture_default_str();
  quant->add_option("--calib", q->calib, "calibration text")->required();
  quant->add_option("--text", q->text, "text to score")->required();
  quant->add_option("--nsamples", q->nsamples, "calibration windows")->capture_default_str();
  quant->add_option("--seqlen", q->seqlen, "calibration and evaluation window (capped at context)")
      ->capture_default_str();
  quant->add_option("--max-windows", q->max_windows, "evaluation windows")->capture_default_str();
  quant->add_option("--w-bits", q->w_bits, "weight bits")->capture_default_str();
  quant->add_option("--a-bits", q->a_bits, "activation bits")->capture_default_str();
  quant->add_option("--kv-bits", q->kv_bits, "KV-cache bits")->capture_default_str();
  quant->add_option("--gemm-n", q->gemm_n, "size of the reference GEMM")->capture_default_str();
  quant->add_flag("--json", q->json, "print JSON lines");
  add_schema_checks(quant);
  quant->get_option("--gemm-n")->check(CLI::Range(1, 1 << 16));
  quant->callback([q, &rt] { run_quant_bench(rt, *q); });
  register_bench_rotation(bench, rt);
  register_bench_spinquant(bench, rt);
  register_bench_gptq(bench, rt);
  register_bench_tasks(bench, rt);
  register_bench_tokenize(bench, rt);
}

}  // namespace rotq
