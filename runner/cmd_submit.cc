// rotq submit: an experiment's unfinished cells as a Slurm job array (one task per cell, its MPI
// ranks launched by srun), from the sbatch template in slurm/; `--dry-run` prints the script.
// Submitting again sends only the cells still not done (failed, cancelled, interrupted).
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "runner/cmd_common.h"
#include "runner/experiment.h"
#include "runner/results.h"
#include "solvers/error.h"

namespace rotq {
namespace {
namespace fs = std::filesystem;

struct SubmitArgs {
  std::string file;
  std::vector<std::string> overrides;
  std::string cells;
  std::string partition, time, account, qos, template_path;
  std::vector<std::string> sbatch_args;
  std::string prologue;
  int nodes = 1, ranks = 1, gpus_per_node = 0, array_max = 0;
  bool dry_run = false, force = false;
};

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  require(in.good(), path, ": cannot read the sbatch template");
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void replace_all(std::string& s, const std::string& key, const std::string& value) {
  for (size_t p = 0; (p = s.find(key, p)) != std::string::npos; p += value.size()) {
    s.replace(p, key.size(), value);
  }
}

std::string self_path() {
  std::error_code ec;
  const fs::path p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string("rotq") : p.string();
}

std::string run_capture(const std::string& cmd, int* status) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  require(p, "cannot run: ", cmd);
  char buf[4096];
  while (fgets(buf, sizeof buf, p)) out += buf;
  *status = pclose(p);
  return out;
}

void submit(Runtime& rt, const SubmitArgs& a) {
  rt.init();
  require(a.ranks >= 1 && a.nodes >= 1 && a.gpus_per_node >= 0 && a.array_max >= 0,
          "rotq submit: --ranks and --nodes must be >= 1, --gpus-per-node and --array-max >= 0");
  const Experiment exp = load_experiment(a.file, a.overrides);
  const std::map<std::string, CellRecord> done = read_results(exp.output);
  std::vector<Cell> todo;
  for (const Cell& c : select_cells(exp.cells, a.cells)) {
    const CellStatus s = cell_status(exp.output, c.id, done.count(c.id) > 0);
    if (a.force || s.state == CellState::kPending || s.state == CellState::kFailed)
      todo.push_back(c);
  }
  if (todo.empty()) {
    std::printf("nothing to submit: the %zu selected cells of %s are done or running\n",
                exp.cells.size(), a.file.c_str());
    return;
  }
  const fs::path dir = fs::absolute(cell_dir(exp.output));
  const fs::path logs = dir / "logs";
  const std::string stamp = std::to_string(std::time(nullptr)) + "-" + std::to_string(::getpid());
  const fs::path cells_file = dir / ("submit-" + stamp + ".cells");
  std::string tmpl = read_file(
      a.template_path.empty() ? std::string(ROTQ_SLURM_DIR) + "/rotq.sbatch.in" : a.template_path);
  std::string lines;
  if (!a.partition.empty()) lines += "#SBATCH --partition=" + a.partition + "\n";
  if (!a.time.empty()) lines += "#SBATCH --time=" + a.time + "\n";
  if (!a.account.empty()) lines += "#SBATCH --account=" + a.account + "\n";
  if (!a.qos.empty()) lines += "#SBATCH --qos=" + a.qos + "\n";
  if (a.gpus_per_node > 0)
    lines += "#SBATCH --gpus-per-node=" + std::to_string(a.gpus_per_node) + "\n";
  for (const std::string& s : a.sbatch_args) lines += "#SBATCH " + s + "\n";
  std::string overrides;
  for (const std::string& o : a.overrides) overrides += " " + shell_quote(o);
  std::string array = "0-" + std::to_string(todo.size() - 1);
  if (a.array_max > 0) array += "%" + std::to_string(a.array_max);
  replace_all(tmpl, "@EXPERIMENT@", shell_quote(fs::absolute(a.file).string()));
  replace_all(tmpl, "@COUNT@", std::to_string(todo.size()));
  replace_all(tmpl, "@JOB_NAME@", "rotq-" + exp.name);
  replace_all(tmpl, "@ARRAY@", array);
  replace_all(tmpl, "@RANKS@", std::to_string(a.ranks));
  replace_all(tmpl, "@NODES@", std::to_string(a.nodes));
  replace_all(tmpl, "@LOG_DIR@", logs.string());
  replace_all(tmpl, "@SBATCH_LINES@", lines);
  replace_all(tmpl, "@PROLOGUE@", a.prologue);
  replace_all(tmpl, "@WORKDIR@", shell_quote(fs::current_path().string()));
  replace_all(tmpl, "@CELLS_FILE@", shell_quote(cells_file.string()));
  replace_all(tmpl, "@ROTQ@", shell_quote(self_path()));
  replace_all(tmpl, "@OVERRIDES@", overrides);
  if (a.dry_run) {
    std::cout << tmpl;
    std::cout << "# " << todo.size() << " cells:";
    for (const Cell& c : todo) std::cout << " " << c.id;
    std::cout << "\n";
    return;
  }
  if (!rt.c().is_root()) return;
  fs::create_directories(logs);
  {
    std::ofstream out(cells_file);
    for (const Cell& c : todo) out << c.id << "\n";
  }
  const fs::path script = dir / ("submit-" + stamp + ".sbatch");
  std::ofstream(script) << tmpl;
  int status = 0;
  const std::string out =
      run_capture("sbatch --parsable " + shell_quote(script.string()) + " 2>&1", &status);
  std::string first = out.substr(0, out.find('\n'));
  require(status == 0 && !first.empty() && std::isdigit(static_cast<unsigned char>(first[0])),
          "sbatch refused ", script.string(), ": ", first.empty() ? "(no output)" : first);
  const std::string job = first.substr(0, first.find(';'));
  std::printf("%s\n", job.c_str());
  spdlog::info("submitted {} cells of {} as job array {} ({} rank(s) each; logs in {})",
               todo.size(), a.file, job, a.ranks, logs.string());
}

}  // namespace

void register_submit(CLI::App& app, Runtime& rt) {
  auto a = std::make_shared<SubmitArgs>();
  CLI::App* cmd = app.add_subcommand(
      "submit",
      "submit an experiment's unfinished cells to Slurm as a job array; prints the job id");
  cmd->add_option("file", a->file, "experiment YAML")->required();
  cmd->add_option("overrides", a->overrides, "key.sub=value overrides (passed to every task)");
  cmd->add_option("--cells", a->cells, "cells whose id starts with / label contains any term");
  cmd->add_option("--partition", a->partition, "Slurm partition");
  cmd->add_option("--nodes", a->nodes, "nodes per cell")->capture_default_str();
  cmd->add_option("--ranks", a->ranks, "MPI ranks (srun tasks) per cell")->capture_default_str();
  cmd->add_option("--gpus-per-node", a->gpus_per_node, "GPUs per node (0: none requested)")
      ->capture_default_str();
  cmd->add_option("--time", a->time, "time limit per cell (Slurm format, e.g. 02:00:00)");
  cmd->add_option("--account", a->account, "Slurm account");
  cmd->add_option("--qos", a->qos, "Slurm QOS");
  cmd->add_option("--array-max", a->array_max, "cells running at once (0: no limit)")
      ->capture_default_str();
  cmd->add_option("--sbatch-arg", a->sbatch_args,
                  "extra #SBATCH line, e.g. --sbatch-arg=--exclusive");
  cmd->add_option("--prologue", a->prologue, "shell lines before srun (module load ...)");
  cmd->add_option("--template", a->template_path, "sbatch template (default slurm/rotq.sbatch.in)");
  cmd->add_flag("--dry-run", a->dry_run, "print the script instead of submitting it");
  cmd->add_flag("--force", a->force, "also submit cells that are done");
  cmd->callback([a, &rt] { submit(rt, *a); });
}

}  // namespace rotq
