// rotq quantize-eval / tasks: one experiment cell from the command line (load → fuse → rotate →
// quantize → evaluate), printed as a table or, with --json, as the cell's record exactly as an
// experiment stores it in HDF5 (runner/record/cell_record.h); optionally saving the rotated,
// quantized model with its rotations.
#include <ATen/ATen.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <filesystem>
#include <map>

#include "models/base/files.h"
#include "runner/cell/cell_options.h"
#include "runner/cell/run_cell.h"
#include "runner/cli/cmd_common.h"
#include "runner/dist/comm_timed.h"
#include "runner/eval/task_registry.h"
#include "runner/record/cell_record.h"
#include "runner/rotate/rotation_io.h"
#include "solvers/error.h"

namespace rotq {
namespace {
namespace fs = std::filesystem;

// quantize-eval / tasks: the cell's options (runner/cell/cell_options.h) and what is not a cell
// option: the model, the seed, output and presentation.
struct QuantizeEvalArgs {
  ModelOptions m;  // model, tokenizer, --json (dtype and device are cell options)
  CellValues values;
  uint64_t seed = 0;
  std::string label;
  std::string save;
  std::string save_dtype = "float32";
  std::string task_samples;
};

// The cell the flags describe, with the id an experiment file's equivalent cell has.
Cell cell_of(const QuantizeEvalArgs& a) {
  Cell c;
  c.model.path = a.m.model;
  c.model.tokenizer = a.m.tokenizer;
  c.model.name = a.label.empty() ? fs::path(a.m.model).filename().string() : a.label;
  c.seed = a.seed;
  c.values = a.values;
  c.id = cell_id(c);
  return c;
}

void save_outputs(const QuantizeEvalArgs& a, const Model& model, const QuantCellResult& r,
                  const CellRecord& rec, const CheckpointReader& reader) {
  SaveOptions so;
  so.dtype = a.save_dtype;
  save_hf_checkpoint(model, a.save, so);
  save_rotations(r.rotations, (fs::path(a.save) / "rotations.safetensors").string(),
                 {{"rotation", rec.meta.at("rotation")}});
  write_file_atomically((fs::path(a.save) / "rotq_quant.json").string(),
                        cell_record_json(rec).dump(2) + "\n");
  const std::string tok = a.m.tokenizer.empty() ? reader.bundled_tokenizer() : a.m.tokenizer;
  if (!tok.empty()) copy_tokenizer(tok, a.save);
  spdlog::info("saved the rotated, quantized model to {}", a.save);
}

std::string fmt_metric(double v) { return v < 0 ? "-" : fmt_double(v, 4); }

// One row per task and activation configuration, with the papers' zero-shot average of each
// configuration that has two or more of the nine tasks.
void print_tasks(const CellRecord& rec, Comm& comm) {
  if (rec.tasks.empty()) return;
  std::vector<std::vector<std::string>> rows;
  std::map<std::string, std::vector<double>> avg;
  for (const TaskRecord& s : rec.tasks) {
    if (find_task(s.task).zero_shot_avg) avg[s.acts].push_back(s.score());
    rows.push_back({s.task, s.acts, std::to_string(s.n), fmt_metric(s.acc), fmt_metric(s.acc_norm),
                    fmt_metric(s.ppl), s.metric, fmt_metric(s.score()), fmt_double(s.seconds, 2),
                    fmt_double(s.n > 0 ? 1000.0 * s.seconds / s.n : 0, 2)});
  }
  for (const auto& [acts, v] : avg) {
    if (v.size() < 2) continue;
    double m = 0;
    for (double x : v) m += x;
    rows.push_back({"avg (" + std::to_string(v.size()) + " tasks)", acts, "", "", "", "", "score",
                    fmt_metric(m / static_cast<double>(v.size())), "", ""});
  }
  print_table(
      comm, {"task", "acts/kv", "n", "acc", "acc_norm", "ppl", "metric", "score", "s", "s/1000 ex"},
      rows);
}

void print_perplexities(const CellRecord& rec, const CellConfig& cfg, Comm& comm) {
  if (rec.evals.empty()) return;
  const auto sec = [&](const char* k) { return fmt_double(rec.seconds.at(k), 2); };
  const std::string weights = rec.config.at("quantization.w_bits") == "16"
                                  ? "none"
                                  : std::string(weight_method_name(cfg.quant.weights.method)) +
                                        " " + cfg.quant.weights.spec.describe();
  std::vector<std::vector<std::string>> rows;
  for (const EvalRecord& e : rec.evals) {
    rows.push_back({e.text, rec.meta.at("rotation"), weights, e.acts, fmt_double(e.ppl, 4),
                    sec("rotate"), sec("fuse"), sec("quantize"), fmt_double(e.seconds, 2)});
  }
  print_table(comm,
              {"text", "rotation", "weights", "acts/kv", "ppl", "rotate s", "fuse s", "quantize s",
               "eval s"},
              rows);
}

void run_quantize_eval(Runtime& rt, QuantizeEvalArgs a) {
  rt.init();
  const Cell c = cell_of(a);
  const CellConfig cfg = cell_config(c.values, c.seed);  // checked before the model is read
  require(!cfg.quant.ppl_texts.empty() || !cfg.quant.tasks.empty() || !a.save.empty(),
          "give --ppl-text or --tasks to evaluate, or --save to keep the result");
  if (!a.save.empty()) scalar_type_from_name(a.save_dtype);
  a.m.dtype = cfg.dtype;
  a.m.device = cfg.device;
  QuantCell cell = cfg.quant;
  cell.task_samples = a.task_samples;
  CellRun run;
  run.start = iso_time();
  const auto t0 = std::chrono::steady_clock::now();
  // Collectives are timed so that the record says how much of the run was communication.
  TimedComm comm(rt.c());
  Placement placement = Placement::replicated();
  LoadedModel lm;
  if (cfg.placement == "layers") {
    require(a.save.empty(),
            "--save needs --placement replicated (a sharded model is not gathered)");
    lm = load_shard_for_command(a.m, comm, placement);
  } else {
    lm = load_for_command(a.m, /*need_tokenizer=*/true);
  }
  const QuantCellResult r = run_quant_cell(lm.model, *lm.tokenizer, cell, comm, placement);
  at::Tensor comm_stats = at::tensor({comm.seconds(), comm.bytes()}, at::kDouble);
  rt.c().all_reduce(comm_stats, ReduceOp::kMax);
  run.end = iso_time();
  run.total_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  run.tokenizer_kind = lm.tokenizer->kind();
  run.extra_meta = {{"placement", cfg.placement},
                    {"comm_seconds_max_rank", std::to_string(comm_stats[0].item<double>())},
                    {"comm_bytes_max_rank", std::to_string(comm_stats[1].item<double>())}};
  std::map<std::string, std::string> checksums;
  CellRecord rec = make_cell_record(c, "quantize-eval", cfg, r, run, rt.c(), checksums);
  if (!a.save.empty()) {
    if (rt.c().is_root()) save_outputs(a, lm.model, r, rec, *lm.reader);
    rt.c().barrier();
  }
  if (a.m.json) {
    print_json_line(rt.c(), cell_record_json(rec));
    return;
  }
  print_tasks(rec, rt.c());
  print_perplexities(rec, cfg, rt.c());
}

// The cell's options (the table's flags) and quantize-eval's own on `cmd`.
void add_quantize_eval_options(CLI::App* cmd, QuantizeEvalArgs& a) {
  add_model_options(cmd, a.m, /*with_tokenizer=*/true, /*with_runtime=*/false);
  cmd->get_option("--json")->description(
      "print the cell's record, as an experiment stores it in HDF5, as one JSON line");
  add_cell_flags(cmd, a.values);
  cmd->add_option("--seed", a.seed, "seed of the rotations and the calibration windows")
      ->capture_default_str();
  cmd->add_option("--label", a.label,
                  "the model's name in the record (default: its file name), as an experiment's "
                  "models[].name");
  cmd->add_option("--samples", a.task_samples,
                  "write every task example's scores here (JSON lines)");
}

}  // namespace

void register_quantize_eval(CLI::App& app, Runtime& rt) {
  auto a = std::make_shared<QuantizeEvalArgs>();
  CLI::App* cmd = app.add_subcommand(
      "quantize-eval", "rotate, quantize and evaluate one configuration (16 bits: not quantized)");
  add_quantize_eval_options(cmd, *a);
  cmd->add_option("--save", a->save, "write the rotated, quantized model (HF directory)");
  cmd->add_option("--save-dtype", a->save_dtype, "storage dtype of --save")->capture_default_str();
  cmd->callback([a, &rt] { run_quantize_eval(rt, *a); });

  // The prompts alone, as JSON lines (no model): what a check against the harness diffs.
  struct RequestsArgs {
    std::vector<std::string> tasks;
    std::string dir;
    int64_t limit = -1;
  };
  auto q = std::make_shared<RequestsArgs>();
  CLI::App* reqs = app.add_subcommand(
      "task-requests", "each task document's (context, continuation) requests as JSON lines");
  reqs->add_option("--tasks", q->tasks, "tasks (as rotq tasks --tasks)")->required();
  reqs->add_option("--tasks-dir", q->dir, "directory of the task files");
  reqs->add_option("--limit", q->limit, "the first N documents (MMLU: of each subject)")
      ->check(schema_validator("evaluation.tasks_limit"));
  reqs->callback([q, &rt] {
    rt.init();
    for (const auto& [name, path] : parse_task_list(q->tasks)) {
      const TaskSpec& spec = find_task(name);
      const std::vector<TaskDoc> docs =
          load_task_docs(spec, task_path(spec, path, q->dir), q->limit);
      for (size_t d = 0; d < docs.size(); ++d) {
        nlohmann::json j = {{"task", name},
                            {"doc", d},
                            {"gold", docs[d].gold},
                            {"requests", docs[d].requests},
                            {"choices", docs[d].choices}};
        if (!docs[d].subtask.empty()) j["subtask"] = docs[d].subtask;
        print_json_line(rt.c(), j);
      }
    }
  });

  auto t = std::make_shared<QuantizeEvalArgs>();
  CLI::App* tasks = app.add_subcommand(
      "tasks",
      "zero-shot tasks and MMLU scored as lm-evaluation-harness does, on the model as loaded or "
      "rotated and quantized (the quantize-eval options)");
  add_quantize_eval_options(tasks, *t);
  tasks->callback([t, &rt] {
    require(!t->values.at("evaluation.tasks").empty(),
            "rotq tasks: give --tasks (e.g. --tasks arc_easy,piqa or zeroshot)");
    run_quantize_eval(rt, *t);
  });
}

}  // namespace rotq
