// rotq quantize-eval: one experiment cell from the command line (load → rotate → fuse → quantize
// → perplexity), optionally saving the rotated, quantized model with its rotations.
#include <ATen/ATen.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <map>

#include "models/files.h"
#include "runner/cell_options.h"
#include "runner/cmd_common.h"
#include "runner/comm_timed.h"
#include "runner/quant_pipeline.h"
#include "runner/rotation_io.h"
#include "solvers/error.h"
#include "solvers/optrot.h"
#include "solvers/optrot_model.h"
#include "solvers/parse.h"

namespace rotq {
namespace {

// quantize-eval / tasks: the cell's options (runner/cell_options.h) and what is not a cell option:
// the model, the seed, output and presentation.
struct QuantizeEvalArgs {
  ModelOptions m;  // model, tokenizer, --json (dtype and device are cell options)
  CellValues values;
  uint64_t seed = 0;
  std::string label;
  std::string save;
  std::string save_dtype = "float32";
  std::string task_samples;
};

nlohmann::json learning_json(const RotationLearning& l) {
  if (l.loss.empty()) return nullptr;
  nlohmann::json j = {{"start_loss", l.loss.front()},
                      {"final_loss", l.loss.back()},
                      {"best_loss", *std::min_element(l.loss.begin(), l.loss.end())},
                      {"steps", l.loss.size() - 1},
                      {"seconds", l.seconds},
                      {"gflops", l.flops / 1e9},
                      {"loss_curve", l.loss}};
  if (l.calib_tokens > 0) {
    j["calib_tokens"] = l.calib_tokens;
    j["massive_tokens"] = l.massive_tokens;
  }
  return j;
}

nlohmann::json cell_json(const QuantizeEvalArgs& a, const CellConfig& cfg, const QuantCellResult& r,
                         size_t eval, const Runtime& rt) {
  const QuantCell& cell = cfg.quant;
  const ActivationQuant& acts = cell.acts.at(eval % cell.acts.size());
  const std::string text = cell.ppl_texts.empty() ? "" : cell.ppl_texts.at(eval / cell.acts.size());
  const PplResult ppl = eval < r.ppl.size() ? r.ppl[eval] : PplResult{};
  nlohmann::json j = {
      {"command", "quantize-eval"},
      {"label", a.label},
      {"model", a.m.model},
      {"rotation", cell.rotation.describe()},
      {"rotation_kind", cell.rotation.method},
      {"seed", a.seed},
      {"rotation_learning", learning_json(r.learning)},
      {"r2", cell.rotation.r2},
      {"online_hadamard", cell.rotation.online},
      {"w_bits", cell.weights.spec.bits},
      {"w_quant", weight_method_name(cell.weights.method)},
      {"w_spec", cell.weights.spec.describe()},
      {"act_order", cell.weights.gptq.act_order},
      {"a_bits", acts.act.bits},
      {"kv_bits", acts.k_cache.bits},
      {"acts", acts.describe()},
      {"calib", cell.calib_text},
      {"bos", r.bos.add},
      {"bos_source", r.bos.source},
      {"nsamples", cell.calib.nsamples},
      {"ppl_text", text},
      {"seqlen", ppl.seqlen},
      {"windows", ppl.windows},
      {"scored_tokens", ppl.scored_tokens},
      {"ppl", ppl.ppl},
      {"kl", ppl.kl >= 0 ? nlohmann::json(ppl.kl) : nlohmann::json(nullptr)},
      {"mean_nll", ppl.mean_nll},
      {"seconds",
       {{"rotate", r.seconds.rotate},
        {"fuse", r.seconds.fuse},
        {"calib", r.seconds.calib},
        {"quantize", r.seconds.quantize},
        {"eval", ppl.seconds}}},
      {"quant_seconds", r.weights.quant_seconds},
      {"quant_gflops",
       r.weights.quant_seconds > 0 ? r.weights.quant_flops / r.weights.quant_seconds / 1e9 : 0.0},
      {"ranks", rt.comm->size()},
      {"device", cfg.device},
      {"dtype", cfg.dtype},
      {"version", rotq_version()}};
  return j;
}

void save_outputs(const QuantizeEvalArgs& a, const Model& model, const QuantCellResult& r,
                  const nlohmann::json& record, const ModelOptions& mo,
                  const CheckpointReader& reader) {
  namespace fs = std::filesystem;
  SaveOptions so;
  so.dtype = a.save_dtype;
  save_hf_checkpoint(model, a.save, so);
  save_rotations(r.rotations, (fs::path(a.save) / "rotations.safetensors").string(),
                 {{"rotation", record["rotation"].get<std::string>()}});
  write_file_atomically((fs::path(a.save) / "rotq_quant.json").string(), record.dump(2) + "\n");
  const std::string tok = mo.tokenizer.empty() ? reader.bundled_tokenizer() : mo.tokenizer;
  if (!tok.empty()) copy_tokenizer(tok, a.save);
  spdlog::info("saved the rotated, quantized model to {}", a.save);
}

std::string fmt_metric(double v) { return v < 0 ? "-" : fmt_double(v, 4); }

nlohmann::json task_json(const QuantizeEvalArgs& a, const QuantCell& cell, const QuantCellResult& r,
                         const TaskScore& s, const ActivationQuant& acts, const Runtime& rt) {
  const auto opt = [](double v) { return v < 0 ? nlohmann::json(nullptr) : nlohmann::json(v); };
  nlohmann::json j = {{"task", s.task},
                      {"n", s.n},
                      {"acc", s.acc},
                      {"acc_stderr", s.acc_stderr},
                      {"metric", s.metric},
                      {"score", s.score()},
                      {"requests", s.requests},
                      {"tokens", s.tokens},
                      {"cut", s.cut},
                      {"seconds", s.seconds},
                      {"seconds_per_1000", s.n > 0 ? 1000.0 * s.seconds / s.n : 0.0},
                      {"label", a.label},
                      {"model", a.m.model},
                      {"rotation", cell.rotation.describe()},
                      {"seed", a.seed},
                      {"w_bits", cell.weights.spec.bits},
                      {"w_quant", weight_method_name(cell.weights.method)},
                      {"a_bits", acts.act.bits},
                      {"kv_bits", acts.k_cache.bits},
                      {"acts", acts.describe()},
                      {"limit", cell.task_opts.limit},
                      {"bos", r.bos.add},
                      {"bos_source", r.bos.source},
                      {"ranks", rt.comm->size()},
                      {"version", rotq_version()}};
  if (s.acc_norm >= 0) {
    j["acc_norm"] = s.acc_norm;
    j["acc_norm_stderr"] = s.acc_norm_stderr;
    j["acc_bytes"] = s.acc_bytes;
  }
  if (s.ppl >= 0) j["ppl"] = s.ppl;
  if (!s.subtasks.empty()) {
    j["acc_subject_mean"] = opt(s.acc_subject_mean);
    nlohmann::json sub = nlohmann::json::object();
    for (const SubtaskScore& t : s.subtasks) sub[t.name] = {{"n", t.n}, {"acc", t.acc}};
    j["subtasks"] = sub;
  }
  return j;
}

// One line per task and activation configuration (JSON, or a table with the papers' zero-shot
// average of each configuration when it has two or more of the nine tasks).
void print_task_results(const QuantizeEvalArgs& a, const QuantCell& cell, const QuantCellResult& r,
                        Runtime& rt) {
  if (r.tasks.empty()) return;
  std::vector<std::vector<std::string>> rows;
  std::map<std::string, std::vector<double>> avg;
  for (size_t e = 0; e < r.tasks.size(); ++e) {
    const TaskScore& s = r.tasks[e];
    const ActivationQuant& acts = cell.acts.at(s.acts_index);
    if (a.m.json) {
      print_json_line(rt.c(), task_json(a, cell, r, s, acts, rt));
      continue;
    }
    if (find_task(s.task).zero_shot_avg) avg[acts.describe()].push_back(s.score());
    rows.push_back({s.task, acts.describe(), std::to_string(s.n), fmt_metric(s.acc),
                    fmt_metric(s.acc_norm), fmt_metric(s.ppl), s.metric, fmt_metric(s.score()),
                    fmt_double(s.seconds, 2),
                    fmt_double(s.n > 0 ? 1000.0 * s.seconds / s.n : 0, 2)});
  }
  if (a.m.json) return;
  for (const auto& [acts, v] : avg) {
    if (v.size() < 2) continue;
    double m = 0;
    for (double x : v) m += x;
    rows.push_back({"avg (" + std::to_string(v.size()) + " tasks)", acts, "", "", "", "", "score",
                    fmt_metric(m / static_cast<double>(v.size())), "", ""});
  }
  print_table(
      rt.c(),
      {"task", "acts/kv", "n", "acc", "acc_norm", "ppl", "metric", "score", "s", "s/1000 ex"},
      rows);
}

void run_quantize_eval(Runtime& rt, QuantizeEvalArgs a) {
  rt.init();
  const CellConfig cfg = cell_config(a.values, a.seed);  // checked before the model is read
  const QuantCell& cell = cfg.quant;
  require(!cell.ppl_texts.empty() || !cell.tasks.empty() || !a.save.empty(),
          "give --ppl-text or --tasks to evaluate, or --save to keep the result");
  if (!a.save.empty()) scalar_type_from_name(a.save_dtype);
  a.m.dtype = cfg.dtype;
  a.m.device = cfg.device;
  QuantCell run = cell;
  run.task_samples = a.task_samples;
  // Collectives are timed so that the record says how much of the run was communication.
  TimedComm comm(rt.c());
  Placement placement;
  const Placement* shard = nullptr;
  LoadedModel lm;
  if (cfg.placement == "layers") {
    require(a.save.empty(),
            "--save needs --placement replicated (a sharded model is not gathered)");
    lm = load_shard_for_command(a.m, comm, placement);
    shard = &placement;
  } else {
    lm = load_for_command(a.m, /*need_tokenizer=*/true);
  }
  const QuantCellResult r = run_quant_cell(lm.model, *lm.tokenizer, run, comm, shard);
  at::Tensor comm_stats = at::tensor({comm.seconds(), comm.bytes()}, at::kDouble);
  rt.c().all_reduce(comm_stats, ReduceOp::kMax);
  if (!a.save.empty()) {
    if (rt.c().is_root())
      save_outputs(a, lm.model, r, cell_json(a, cfg, r, 0, rt), a.m, *lm.reader);
    rt.c().barrier();
  }
  print_task_results(a, cell, r, rt);
  if (cell.ppl_texts.empty()) return;
  std::vector<std::vector<std::string>> rows;
  for (size_t e = 0; e < r.ppl.size(); ++e) {
    nlohmann::json j = cell_json(a, cfg, r, e, rt);
    j["placement"] = cfg.placement;
    j["comm"] = {{"backend", rt.c().backend()},
                 {"seconds_max_rank", comm_stats[0].item<double>()},
                 {"bytes_max_rank", comm_stats[1].item<double>()}};
    if (a.m.json) {
      print_json_line(rt.c(), j);
      continue;
    }
    rows.push_back({j["ppl_text"].get<std::string>(), j["rotation"].get<std::string>(),
                    std::string(weight_method_name(cell.weights.method)) + " " +
                        j["w_spec"].get<std::string>(),
                    j["acts"].get<std::string>(), fmt_double(r.ppl[e].ppl, 4),
                    fmt_double(r.seconds.rotate, 2), fmt_double(r.seconds.fuse, 2),
                    fmt_double(r.seconds.quantize, 2), fmt_double(r.ppl[e].seconds, 2)});
  }
  if (!a.m.json) {
    print_table(rt.c(),
                {"text", "rotation", "weights", "acts/kv", "ppl", "rotate s", "fuse s",
                 "quantize s", "eval s"},
                rows);
  }
}

// The cell's options (the table's flags) and quantize-eval's own on `cmd`.
void add_quantize_eval_options(CLI::App* cmd, QuantizeEvalArgs& a) {
  add_model_options(cmd, a.m, /*with_tokenizer=*/true, /*with_runtime=*/false);
  add_cell_flags(cmd, a.values);
  cmd->add_option("--seed", a.seed, "seed of the rotations and the calibration windows")
      ->capture_default_str();
  cmd->add_option("--label", a.label, "a name for this configuration, recorded in --json output");
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
