// rotq bench tasks: time of zero-shot scoring per 1,000 examples, and the forward's rate as a
// fraction of this machine's measured float32 GEMM rate.
#include <ATen/Parallel.h>
#include <spdlog/spdlog.h>

#include "models/quant_hooks.h"
#include "runner/cell/cell_options.h"
#include "runner/cli/cmd_common.h"
#include "runner/eval/task_eval.h"
#include "solvers/error.h"
#include "solvers/gemm_rate.h"

namespace rotq {
namespace {

struct TaskBenchArgs {
  std::vector<std::string> models, tokenizers, tasks;
  std::string tasks_dir;
  int64_t limit = 50;
  int64_t batch = 32;
  int a_bits = 16, kv_bits = 16;
  int64_t gemm_n = 2048;
  bool json = false;
};

// FLOPs the scorer spent: every input token through the layers' linears (2 per weight) and causal
// attention (q·k and p·v over (len + 1)/2 keys on average), and the continuation rows through
// lm_head.
double scoring_flops(const ModelConfig& c, const LlStats& s) {
  const double linear = static_cast<double>(c.param_count()) -
                        static_cast<double>(c.vocab_size * c.dim) * (c.tie_embeddings ? 1 : 2) -
                        static_cast<double>(c.n_layers * 2 * c.dim + c.dim);
  const double attention = 2.0 * c.n_layers * c.q_dim() * (s.tokens_sq + s.tokens);
  return 2.0 * linear * s.tokens + attention +
         2.0 * static_cast<double>(c.vocab_size * c.dim) * s.scored_rows;
}

void run_task_bench(Runtime& rt, const TaskBenchArgs& a) {
  rt.init();
  require(!a.models.empty() && !a.tasks.empty(), "bench tasks: give --model and --tasks");
  require(a.tokenizers.empty() || a.tokenizers.size() == a.models.size(),
          "bench tasks: give one --tokenizer per --model, or none");
  const GemmRate gemm = measure_gemm_rate(a.gemm_n, at::kFloat);
  spdlog::info("float32 GEMM {}³: {:.1f} GFLOP/s on {} threads", gemm.n, gemm.gflops,
               at::get_num_threads());
  TaskOptions o;
  o.dir = a.tasks_dir;
  o.limit = a.limit;
  o.batch = a.batch;
  std::vector<std::vector<std::string>> rows;
  for (size_t i = 0; i < a.models.size(); ++i) {
    ModelOptions mo;
    mo.model = a.models[i];
    if (!a.tokenizers.empty()) mo.tokenizer = a.tokenizers[i];
    LoadedModel lm = load_for_command(mo, true);
    const Transformer tf(lm.model);
    ActQuantHooks hooks(lm.model.config, default_activation_quant(a.a_bits, a.kv_bits));
    ForwardHooks* h = a.a_bits < 16 || a.kv_bits < 16 ? &hooks : nullptr;
    for (const auto& [name, path] : parse_task_list(a.tasks)) {
      const PreparedTask t = prepare_task(name, path, o, *lm.tokenizer);
      const TaskEvaluation e = evaluate_task(t, tf, o, rt.c(), h);
      const double secs = e.score.seconds;
      const double per_1000 = 1000.0 * secs / static_cast<double>(e.score.n);
      const double gflops = scoring_flops(lm.model.config, e.stats) / secs / 1e9;
      if (a.json) {
        print_json_line(rt.c(), {{"command", "bench-tasks"},
                                 {"model", mo.model},
                                 {"params", lm.model.config.param_count()},
                                 {"task", name},
                                 {"examples", e.score.n},
                                 {"requests", e.score.requests},
                                 {"inputs", e.stats.inputs},
                                 {"tokens", e.stats.tokens},
                                 {"seconds", secs},
                                 {"seconds_per_1000", per_1000},
                                 {"tokens_per_s", e.stats.tokens / secs},
                                 {"gflops", gflops},
                                 {"gemm_gflops", gemm.gflops},
                                 {"ratio_to_gemm", gflops / gemm.gflops},
                                 {"a_bits", a.a_bits},
                                 {"kv_bits", a.kv_bits},
                                 {"ranks", rt.c().size()},
                                 {"threads", at::get_num_threads()}});
      }
      rows.push_back({mo.model, fmt_double(lm.model.config.param_count() / 1e6, 1) + "M", name,
                      std::to_string(e.score.n), std::to_string(e.score.requests),
                      std::to_string(e.stats.inputs), std::to_string(e.stats.tokens),
                      fmt_double(secs, 2), fmt_double(per_1000, 1),
                      fmt_double(e.stats.tokens / secs, 0), fmt_double(gflops, 2),
                      fmt_double(gflops / gemm.gflops, 3)});
    }
  }
  if (!a.json) {
    print_table(rt.c(),
                {"model", "params", "task", "examples", "requests", "forwards", "tokens", "s",
                 "s/1000 ex", "tok/s", "GFLOP/s", "ratio to GEMM"},
                rows);
  }
}

}  // namespace

void register_bench_tasks(CLI::App* bench, Runtime& rt) {
  auto a = std::make_shared<TaskBenchArgs>();
  CLI::App* cmd = bench->add_subcommand("tasks", "zero-shot scoring: seconds per 1,000 examples");
  cmd->add_option("--model", a->models, "model(s) to time")->required();
  cmd->add_option("--tokenizer", a->tokenizers, "one per --model (default: bundled)");
  cmd->add_option("--tasks", a->tasks, "tasks (as rotq tasks --tasks)")->required();
  cmd->add_option("--tasks-dir", a->tasks_dir, "directory of the task files");
  cmd->add_option("--limit", a->limit, "examples per task")->capture_default_str();
  cmd->add_option("--batch-size", a->batch, "sequences per forward")->capture_default_str();
  cmd->add_option("--a-bits", a->a_bits, "activation bits (16: none)")->capture_default_str();
  cmd->add_option("--kv-bits", a->kv_bits, "KV-cache bits (16: none)")->capture_default_str();
  cmd->add_option("--gemm-n", a->gemm_n, "size of the reference GEMM")->capture_default_str();
  cmd->add_flag("--json", a->json, "print JSON lines");
  add_schema_checks(cmd);
  cmd->get_option("--gemm-n")->check(CLI::Range(1, 1 << 16));
  cmd->callback([a, &rt] { run_task_bench(rt, *a); });
}

}  // namespace rotq
