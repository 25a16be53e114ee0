// rotq run / status / merge: experiment files (runner/record/experiment.h) run cell by cell into
// HDF5 results (runner/record/results.h), resumable; rotq table / plot render them (cmd_table.cc).
#include <ATen/ATen.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>
#include <tuple>

#include "runner/cell/cell_options.h"
#include "runner/cli/cmd_common.h"
#include "runner/dist/comm.h"
#include "runner/eval/task_registry.h"
#include "runner/record/cell_record.h"
#include "runner/record/experiment.h"
#include "runner/record/h5.h"
#include "runner/record/results.h"
#include "solvers/error.h"

namespace rotq {
namespace {
namespace fs = std::filesystem;

// The model a cell names, with its compute dtype and device.
ModelOptions model_options(const Cell& c, const CellConfig& cfg) {
  ModelOptions m;
  m.model = c.model.path;
  m.tokenizer = c.model.tokenizer;
  m.dtype = cfg.dtype;
  m.device = cfg.device;
  return m;
}

CellRecord run_cell(Runtime& rt, const Experiment& exp, const Cell& c,
                    std::map<std::string, std::string>& checksums) {
  const CellConfig cfg = cell_config(c.values, c.seed);
  const ModelOptions mo = model_options(c, cfg);
  Comm& comm = rt.c();
  CellRun run;
  run.start = iso_time();
  const auto t0 = std::chrono::steady_clock::now();
  Placement placement = Placement::replicated();
  LoadedModel lm = cfg.placement == "layers" ? load_shard_for_command(mo, comm, placement)
                                             : load_for_command(mo, /*need_tokenizer=*/true);
  const QuantCellResult r = run_quant_cell(lm.model, *lm.tokenizer, cfg.quant, comm, placement);
  run.end = iso_time();
  run.total_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  run.tokenizer_kind = lm.tokenizer->kind();
  return make_cell_record(c, exp.name, cfg, r, run, comm, checksums);
}

struct RunArgs {
  std::string file;
  std::vector<std::string> overrides;
  std::string cells;
  bool dry_run = false, force = false, force_stale = false, schema = false;
};

// Whether `run` computes a cell in state `s`: what is not done; a live runner's cell only with
// --force; a stale one whose runner may still exist (another host) only with --force-stale.
bool should_run(const CellStatus& s, const RunArgs& a) {
  switch (s.state) {
    case CellState::kDone:
    case CellState::kRunning:
      return a.force;
    case CellState::kStale:
      return a.force || a.force_stale || s.certainly_dead;
    default:
      return true;
  }
}

// Rank 0's verdict, on every rank.
bool broadcast_flag(Comm& comm, bool root_value) {
  at::Tensor t = at::full({1}, root_value ? 1.0 : 0.0, at::kDouble);
  comm.broadcast(t, 0);
  return t.item<double>() != 0;
}

// A failed cell's marker and log line. A marker that cannot be written (a full disk) is logged,
// not fatal: the cell already failed, and the next cells may still fit.
void record_failure(const std::string& output, const Cell& c, const std::string& why) {
  spdlog::error("cell {} ({}) failed: {}", c.id, c.label(), why);
  try {
    mark_failed(output, c.id, why);
  } catch (const Error& e) {
    spdlog::error("cell {}: cannot record the failure: {}", c.id, e.what());
  }
}

// The ids of the cells to run. Rank 0 decides and every rank follows: the markers it reads change
// while the ranks start (rank 0 creates them), so ranks that looked for themselves could disagree.
std::set<std::string> decide_runnable(Comm& comm, const RunArgs& a, const Experiment& exp,
                                      const std::vector<Cell>& cells,
                                      std::vector<std::vector<std::string>>& rows) {
  const std::map<std::string, CellRecord> done = read_results(exp.output);
  at::Tensor run_flags = at::zeros({static_cast<int64_t>(cells.size())}, at::kDouble);
  for (size_t i = 0; i < cells.size(); ++i) {
    const Cell& c = cells[i];
    const CellStatus s = cell_status(exp.output, c.id, done.count(c.id) > 0);
    const bool run = should_run(s, a);
    run_flags[static_cast<int64_t>(i)] = run ? 1.0 : 0.0;
    rows.push_back({c.id, c.label(), state_name(s.state), run ? "run" : "skip"});
    if (!comm.is_root()) continue;
    if (!run && s.state == CellState::kStale) {
      spdlog::warn("cell {} ({}) skipped: {}; rotq run --force-stale takes it over", c.id,
                   c.label(), s.detail);
    } else if (!run && s.state == CellState::kRunning) {
      spdlog::warn("cell {} ({}) skipped: {}", c.id, c.label(), s.detail);
    }
  }
  comm.broadcast(run_flags, 0);
  std::set<std::string> runnable;
  for (size_t i = 0; i < cells.size(); ++i) {
    if (run_flags[static_cast<int64_t>(i)].item<double>() != 0) runnable.insert(cells[i].id);
  }
  return runnable;
}

enum class CellOutcome { kDone, kFailed, kSkipped };

// Rank 0 claims the cell (an exclusive marker with a heartbeat) and every rank learns the verdict;
// the claimed cell runs and its record is stored, or its failure recorded.
CellOutcome claim_and_run(Runtime& rt, const RunArgs& a, const Experiment& exp, const Cell& c,
                          std::map<std::string, std::string>& checksums) {
  std::unique_ptr<RunningMarker> claim;
  std::string why_not;
  if (rt.c().is_root()) {
    claim = RunningMarker::claim(exp.output, c.id, a.force_stale || a.force, &why_not);
  }
  if (!broadcast_flag(rt.c(), rt.c().is_root() ? claim != nullptr : false)) {
    if (rt.c().is_root()) spdlog::warn("cell {} ({}) skipped: {}", c.id, c.label(), why_not);
    return CellOutcome::kSkipped;
  }
  try {
    const CellRecord rec = run_cell(rt, exp, c, checksums);
    if (rt.c().is_root()) {
      write_cell_file(exp.output, rec);
      clear_failed(exp.output, c.id);
    }
    std::string summary;
    for (const EvalRecord& e : rec.evals) summary += " ppl " + fmt_double(e.ppl, 4);
    spdlog::info("cell {} done in {:.1f}s:{}", c.id, rec.seconds.at("total"), summary);
    return CellOutcome::kDone;
  } catch (const Error& e) {
    if (rt.c().is_root()) record_failure(exp.output, c, e.what());
    return CellOutcome::kFailed;
  }
}

// Inputs are checked before anything runs, so a typo fails now rather than at cell 17.
void check_inputs(const Experiment& exp, const std::vector<Cell>& cells) {
  for (const Cell& c : cells) {
    require(fs::exists(c.model.path), exp.path, ": model '", c.model.name, "': ", c.model.path,
            " does not exist");
    require(c.model.tokenizer.empty() || fs::exists(c.model.tokenizer), exp.path, ": model '",
            c.model.name, "': tokenizer ", c.model.tokenizer, " does not exist");
    std::vector<std::string> texts = c.list("evaluation.ppl_texts");
    if (!c.at("calibration.text").empty()) texts.push_back(c.at("calibration.text"));
    try {
      task_files(c);
    } catch (const Error& e) {
      fail(exp.path, ": cell ", c.id, " (", c.label(), "): ", e.what());
    }
    for (const std::string& t : texts) {
      require(fs::exists(t), exp.path, ": text ", t, " does not exist");
    }
  }
}

void run_experiment(Runtime& rt, const RunArgs& a) {
  if (a.schema) {
    std::cout << schema_markdown();
    return;
  }
  require(!a.file.empty(), "rotq run: give an experiment file (EXP.yaml)");
  rt.init();
  const Experiment exp = load_experiment(a.file, a.overrides);
  const std::vector<Cell> cells = select_cells(exp.cells, a.cells);
  std::vector<std::vector<std::string>> rows;  // the dry run's table
  const std::set<std::string> runnable = decide_runnable(rt.c(), a, exp, cells, rows);
  const size_t todo = runnable.size();
  spdlog::info("{}: {} cells, {} to run ({} selected, results in {})", exp.path, exp.cells.size(),
               todo, cells.size(), exp.output);
  if (a.dry_run) {
    print_table(rt.c(), {"cell", "label", "state", "action"}, rows);
    return;
  }
  check_inputs(exp, cells);
  if (rt.c().is_root()) remove_stale_temporaries(exp.output);
  size_t k = 0, failed = 0, skipped = 0;
  std::map<std::string, std::string> checksums;  // data files read by several cells
  for (const Cell& c : cells) {
    if (!runnable.count(c.id)) continue;
    ++k;
    spdlog::info("cell {}/{} {} ({})", k, todo, c.id, c.label());
    const CellOutcome o = claim_and_run(rt, a, exp, c, checksums);
    failed += o == CellOutcome::kFailed;
    skipped += o == CellOutcome::kSkipped;
  }
  if (rt.c().is_root() && k > 0) merge_results(exp.output);
  rt.c().barrier();
  require(failed == 0, failed, " of ", k, " cells failed (rotq status ", a.file,
          " lists them; rerun to retry)");
  if (skipped > 0) {
    spdlog::warn("{} of {} cells skipped: another runner holds them (rotq status {})", skipped, k,
                 a.file);
  }
}

void show_status(Runtime& rt, const RunArgs& a) {
  rt.init();
  const Experiment exp = load_experiment(a.file, a.overrides);
  const std::map<std::string, CellRecord> done = read_results(exp.output);
  std::vector<std::vector<std::string>> rows;
  std::map<std::string, int> counts;
  for (const Cell& c : select_cells(exp.cells, a.cells)) {
    const auto it = done.find(c.id);
    const CellStatus s = cell_status(exp.output, c.id, it != done.end());
    ++counts[state_name(s.state)];
    std::string secs = "-";
    if (it != done.end() && it->second.seconds.count("total")) {
      secs = fmt_double(it->second.seconds.at("total"), 1);
    }
    std::string detail = s.detail.substr(0, s.detail.find('\n'));
    rows.push_back({c.id, c.label(), state_name(s.state), secs, detail});
  }
  print_table(rt.c(), {"cell", "label", "state", "seconds", "detail"}, rows);
  if (rt.c().is_root()) {
    std::printf("%d done, %d running, %d failed, %d pending, %d stale\n", counts["done"],
                counts["running"], counts["failed"], counts["pending"], counts["stale"]);
  }
}

}  // namespace

void register_run(CLI::App& app, Runtime& rt) {
  auto a = std::make_shared<RunArgs>();
  CLI::App* run = app.add_subcommand(
      "run", "run an experiment file's cells not yet done (resumable; key.sub=value overrides)");
  run->add_option("file", a->file, "experiment YAML");
  run->add_option("overrides", a->overrides, "key.sub=value overrides");
  run->add_option("--cells", a->cells, "cells whose id starts with / label contains any term");
  run->add_flag("--dry-run", a->dry_run, "list the cells and what would run");
  run->add_flag("--force", a->force, "recompute cells that are done (or running elsewhere)");
  run->add_flag("--force-stale", a->force_stale,
                "take over cells whose runner on another host stopped its heartbeat");
  run->add_flag("--schema", a->schema, "print the experiment keys (markdown) and exit");
  run->callback([a, &rt] { run_experiment(rt, *a); });

  auto s = std::make_shared<RunArgs>();
  CLI::App* status =
      app.add_subcommand("status", "done / running / failed / pending per cell of an experiment");
  status->add_option("file", s->file, "experiment YAML")->required();
  status->add_option("overrides", s->overrides, "key.sub=value overrides");
  status->add_option("--cells", s->cells, "cells whose id starts with / label contains any term");
  status->callback([s, &rt] { show_status(rt, *s); });

  auto m = std::make_shared<std::string>();
  CLI::App* merge = app.add_subcommand(
      "merge", "gather the cell files of RESULTS.h5.d/ into RESULTS.h5 (one group per cell)");
  merge->add_option("results", *m, "results file (or the experiment YAML)")->required();
  merge->callback([m, &rt] {
    rt.init();
    const std::string out = results_path(*m);
    if (rt.c().is_root()) std::printf("%zu cells in %s\n", merge_results(out), out.c_str());
  });
}

}  // namespace rotq
