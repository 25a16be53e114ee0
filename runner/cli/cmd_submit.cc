// rotq submit: an experiment's unfinished cells as a Slurm job array (one task per cell, its MPI
// ranks launched by srun), from the sbatch template in slurm/; `--dry-run` prints the script.
// Submitting again sends only the cells still not done (failed, cancelled, interrupted).
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "runner/cli/cmd_common.h"
#include "runner/core/subprocess.h"
#include "runner/record/experiment.h"
#include "runner/record/results.h"
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

std::string read_template(const std::string& path) {
  std::ifstream in(path);
  require(in.good() && fs::is_regular_file(path), path, ": cannot read the sbatch template");
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

// A value bound for the script: no control characters (a newline would end a comment or a
// directive and start a command), whatever else it holds is quoted where it lands.
void require_printable(const std::string& what, const std::string& v) {
  for (unsigned char c : v) {
    // The value is shown JSON-escaped: the error stays one line.
    require(c >= 0x20 && c != 0x7f, "rotq submit: ", what, " ", nlohmann::json(v).dump(),
            " contains a control character (newline, tab, ...); refused");
  }
}

// A value for an #SBATCH directive: sbatch reads those lines itself, split at spaces and with its
// own quoting rules, so only characters that need no quoting are accepted.
const char* kDirectiveChars =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-/+:,=@%";

void require_directive_value(const std::string& what, const std::string& v) {
  require_printable(what, v);
  require(!v.empty() && v.find_first_not_of(kDirectiveChars) == std::string::npos,
          "rotq submit: ", what, " '", v, "': expected letters, digits and ._-/+:,=@% only (it ",
          "goes into an #SBATCH line)");
}

// The job name from the experiment's: characters a directive cannot carry become '_'.
std::string job_name(const std::string& experiment) {
  std::string n = "rotq-" + experiment.substr(0, 120);
  for (char& c : n) {
    if (std::strchr(kDirectiveChars, c) == nullptr || c == '\0') c = '_';
  }
  return n;
}

// The unfinished cells (pending, failed, or whose runner is gone); live ones are left alone.
std::vector<Cell> cells_to_submit(const Experiment& exp, const SubmitArgs& a) {
  const std::map<std::string, CellRecord> done = read_results(exp.output);
  std::vector<Cell> todo;
  for (const Cell& c : select_cells(exp.cells, a.cells)) {
    const CellStatus s = cell_status(exp.output, c.id, done.count(c.id) > 0);
    if (s.state == CellState::kStale) {
      spdlog::info("cell {} ({}): {}; submitted again", c.id, c.label(), s.detail);
    }
    if (a.force || s.state == CellState::kPending || s.state == CellState::kFailed ||
        s.state == CellState::kStale) {
      todo.push_back(c);
    }
  }
  return todo;
}

void check_values(const SubmitArgs& a, const Experiment& exp) {
  for (const auto& [what, v] :
       std::vector<std::pair<const char*, std::string>>{{"--partition", a.partition},
                                                        {"--time", a.time},
                                                        {"--account", a.account},
                                                        {"--qos", a.qos}}) {
    if (!v.empty()) require_directive_value(what, v);
  }
  for (const std::string& s : a.sbatch_args) require_printable("--sbatch-arg", s);
  for (const std::string& o : a.overrides) require_printable("override", o);
  require_printable("the experiment file", fs::absolute(a.file).string());
  require_printable("the experiment name", exp.name);
  require_printable("the output", exp.output);
  require_printable("the working directory", fs::current_path().string());
  require_directive_value("the log directory (beside the experiment's output)",
                          (fs::absolute(cell_dir(exp.output)) / "logs").string());
}

std::string render_script(const SubmitArgs& a, const Experiment& exp, size_t count,
                          const fs::path& cells_file) {
  std::string tmpl = read_template(
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
  std::string array = "0-" + std::to_string(count - 1);
  if (a.array_max > 0) array += "%" + std::to_string(a.array_max);
  replace_all(tmpl, "@JOB_NAME@", job_name(exp.name));
  replace_all(tmpl, "@COUNT@", std::to_string(count));
  replace_all(tmpl, "@ARRAY@", array);
  replace_all(tmpl, "@RANKS@", std::to_string(a.ranks));
  replace_all(tmpl, "@NODES@", std::to_string(a.nodes));
  replace_all(tmpl, "@LOG_DIR@", (fs::absolute(cell_dir(exp.output)) / "logs").string());
  replace_all(tmpl, "@SBATCH_LINES@", lines);
  replace_all(tmpl, "@PROLOGUE@", a.prologue);
  replace_all(tmpl, "@WORKDIR@", shell_quote(fs::current_path().string()));
  replace_all(tmpl, "@CELLS_FILE@", shell_quote(cells_file.string()));
  replace_all(tmpl, "@ROTQ@", shell_quote(self_path()));
  replace_all(tmpl, "@EXPERIMENT@", shell_quote(fs::absolute(a.file).string()));
  replace_all(tmpl, "@OVERRIDES@", overrides);
  return tmpl;
}

void submit(Runtime& rt, const SubmitArgs& a) {
  rt.init();
  require(a.ranks >= 1 && a.nodes >= 1 && a.gpus_per_node >= 0 && a.array_max >= 0,
          "rotq submit: --ranks and --nodes must be >= 1, --gpus-per-node and --array-max >= 0");
  const Experiment exp = load_experiment(a.file, a.overrides);
  check_values(a, exp);
  const std::vector<Cell> todo = cells_to_submit(exp, a);
  if (todo.empty()) {
    std::printf("nothing to submit: the %zu selected cells of %s are done or running\n",
                exp.cells.size(), a.file.c_str());
    return;
  }
  const fs::path dir = fs::absolute(cell_dir(exp.output));
  const fs::path logs = dir / "logs";
  const std::string stamp = std::to_string(std::time(nullptr)) + "-" + std::to_string(::getpid());
  const fs::path cells_file = dir / ("submit-" + stamp + ".cells");
  const std::string script_text = render_script(a, exp, todo.size(), cells_file);
  if (a.dry_run) {
    std::cout << script_text;
    std::cout << "# " << todo.size() << " cells:";
    for (const Cell& c : todo) std::cout << " " << c.id;
    std::cout << "\n";
    return;
  }
  if (!rt.c().is_root()) return;
  fs::create_directories(logs);
  std::string ids;
  for (const Cell& c : todo) ids += c.id + "\n";
  write_file_atomically(cells_file.string(), ids);
  const fs::path script = dir / ("submit-" + stamp + ".sbatch");
  write_file_atomically(script.string(), script_text);
  const std::vector<std::string> argv = {"sbatch", "--parsable", script.string()};
  const ProcessResult r = run_process(argv, /*capture=*/true);
  const std::string first = r.output.substr(0, r.output.find('\n'));
  require(r.exit_code == 0 && !first.empty() && std::isdigit(static_cast<unsigned char>(first[0])),
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
  cmd->add_option("--prologue", a->prologue,
                  "shell lines before srun (module load ...): your own code, inserted as is");
  cmd->add_option("--template", a->template_path, "sbatch template (default slurm/rotq.sbatch.in)");
  cmd->add_flag("--dry-run", a->dry_run, "print the script instead of submitting it");
  cmd->add_flag("--force", a->force, "also submit cells that are done");
  cmd->callback([a, &rt] { submit(rt, *a); });
}

}  // namespace rotq
