// rotq run / status / merge / table: experiment files (runner/experiment.h) run cell by cell into
// HDF5 results (runner/results.h), resumable, and rendered in the papers' table layout.
#include <ATen/ATen.h>
#include <mpi.h>
#include <spdlog/spdlog.h>
#include <torch/version.h>

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

#include "runner/cell_args.h"
#include "runner/cmd_common.h"
#include "runner/comm.h"
#include "runner/experiment.h"
#include "runner/h5.h"
#include "runner/results.h"
#include "solvers/error.h"

namespace rotq {
namespace {
namespace fs = std::filesystem;

CellArgs args_of(const Cell& c) {
  CellArgs a;
  a.m.model = c.model.path;
  a.m.tokenizer = c.model.tokenizer;
  a.m.dtype = c.at("runtime.dtype");
  a.m.device = c.at("runtime.device");
  a.placement = c.at("runtime.placement");
  a.rotation = c.at("rotation.method");
  a.seed = c.seed;
  a.no_r2 = !c.flag("rotation.r2");
  a.no_online = !c.flag("rotation.online");
  a.fp_massive = c.number("rotation.fp_massive");
  a.dfrot_gamma = c.at("rotation.dfrot.gamma");
  a.dfrot_iters = c.integer("rotation.dfrot.iters");
  a.dfrot_init = c.at("rotation.dfrot.init");
  a.dfrot_rule = c.at("rotation.dfrot.rule");
  a.dfrot_threshold = c.number("rotation.dfrot.threshold");
  a.dfrot_sym = c.flag("rotation.dfrot.sym");
  a.dfrot_sum = c.flag("rotation.dfrot.sum");
  a.dfrot_layers = c.integer("rotation.dfrot.layers");
  a.dfrot_nsamples = c.integer("rotation.dfrot.nsamples");
  a.dfrot_seqlen = c.integer("rotation.dfrot.seqlen");
  a.optrot_steps = c.integer("rotation.optrot.steps");
  a.optrot_lr = c.number("rotation.optrot.lr");
  a.optrot_norm = c.at("rotation.optrot.norm");
  a.optrot_optimizer = c.at("rotation.optrot.optimizer");
  a.optrot_constant_lr = c.flag("rotation.optrot.constant_lr");
  a.optrot_matrices = c.at("rotation.optrot.matrices");
  a.w_bits = static_cast<int>(c.integer("quantization.w_bits"));
  a.w_quant = c.at("quantization.w_method");
  a.w_group = c.integer("quantization.w_group");
  a.w_asym = c.flag("quantization.w_asym");
  a.no_w_clip = !c.flag("quantization.w_clip");
  a.act_order = c.flag("quantization.act_order");
  a.static_groups = c.flag("quantization.static_groups");
  a.percdamp = c.number("quantization.percdamp");
  a.gptq_block = c.integer("quantization.gptq_block");
  a.hessian_dtype = c.at("quantization.hessian_dtype");
  a.a_bits = static_cast<int>(c.integer("quantization.a_bits"));
  a.a_clip = c.number("quantization.a_clip");
  a.a_asym = c.flag("quantization.a_asym");
  a.o_proj_per_head = c.flag("quantization.o_proj_per_head");
  a.kv_bits = static_cast<int>(c.integer("quantization.kv_bits"));
  a.kv_clip = c.number("quantization.kv_clip");
  a.kv_group = c.integer("quantization.kv_group");
  a.calib = c.at("calibration.text");
  a.nsamples = c.integer("calibration.nsamples");
  a.calib_seqlen = c.integer("calibration.seqlen");
  a.ppl_texts = c.list("evaluation.ppl_texts");
  a.acts_list = c.list("evaluation.acts");
  a.seqlen = c.integer("evaluation.seqlen");
  a.max_windows = c.integer("evaluation.max_windows");
  a.batch = c.integer("evaluation.batch");
  a.kl = c.flag("evaluation.kl");
  a.label = c.label();
  return a;
}

std::string iso_time() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

std::string mpi_version() {
  char v[MPI_MAX_LIBRARY_VERSION_STRING];
  int n = 0;
  MPI_Get_library_version(v, &n);
  std::string s(v, static_cast<size_t>(n));
  return s.substr(0, s.find_first_of(",\n"));
}

// Checksums of the data a cell read: texts whole; a model file whole when small, else by size.
void record_checksums(const Cell& c, std::map<std::string, std::string>& meta) {
  std::vector<std::pair<std::string, std::string>> files;
  if (!c.at("calibration.text").empty()) files.push_back({"calibration", c.at("calibration.text")});
  for (const std::string& t : c.list("evaluation.ppl_texts")) files.push_back({"text " + t, t});
  const fs::path model = c.model.path;
  files.push_back(
      {"model", fs::is_directory(model) ? (model / "config.json").string() : model.string()});
  for (const auto& [what, path] : files) {
    const auto size = fs::file_size(path);
    meta["checksum " + what] = size < (uint64_t{256} << 20) ? "fnv1a64:" + file_checksum(path)
                                                            : "size:" + std::to_string(size);
  }
}

CellRecord run_cell(Runtime& rt, const Experiment& exp, const Cell& c) {
  const CellArgs a = args_of(c);
  const QuantCell qc = make_cell(a);
  Comm& comm = rt.c();
  CellRecord rec;
  rec.id = c.id;
  rec.label = c.label();
  rec.experiment = exp.name;
  rec.config_yaml = c.resolved_yaml();
  rec.config = c.values;
  rec.config["model.name"] = c.model.name;
  rec.config["model.path"] = c.model.path;
  rec.config["model.tokenizer"] = c.model.tokenizer;
  rec.config["seed"] = std::to_string(c.seed);
  rec.meta["start"] = iso_time();
  const auto t0 = std::chrono::steady_clock::now();
  Placement placement;
  LoadedModel lm = a.placement == "layers" ? load_shard_for_command(a.m, comm, placement)
                                           : load_for_command(a.m, /*need_tokenizer=*/true);
  const QuantCellResult r = run_quant_cell(lm.model, *lm.tokenizer, qc, comm,
                                           a.placement == "layers" ? &placement : nullptr);
  rec.meta["end"] = iso_time();
  rec.meta["rotq_version"] = rotq_version();
  rec.meta["libtorch_version"] = TORCH_VERSION;
  rec.meta["mpi_version"] = mpi_version();
  rec.meta["nccl_version"] = nccl_available() ? nccl_version_string() : "none";
  rec.meta["hdf5_version"] = h5::library_version();
  rec.meta["ranks"] = std::to_string(comm.size());
  rec.meta["comm"] = comm.backend();
  rec.meta["device"] = a.m.device;
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  rec.meta["host"] = host;
  record_checksums(c, rec.meta);
  rec.seconds = {
      {"rotate", r.seconds.rotate},
      {"fuse", r.seconds.fuse},
      {"calib", r.seconds.calib},
      {"quantize", r.seconds.quantize},
      {"eval", r.seconds.eval},
      {"total", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()}};
  for (size_t e = 0; e < r.ppl.size(); ++e) {
    const ActivationQuant& acts = qc.acts.at(e % qc.acts.size());
    EvalRecord ev;
    ev.text = qc.ppl_texts.at(e / qc.acts.size());
    ev.acts = acts.describe();
    ev.a_bits = acts.act.bits;
    ev.kv_bits = acts.k_cache.bits;
    ev.ppl = r.ppl[e].ppl;
    ev.kl = r.ppl[e].kl;
    ev.mean_nll = r.ppl[e].mean_nll;
    ev.windows = r.ppl[e].windows;
    ev.scored_tokens = r.ppl[e].scored_tokens;
    ev.seconds = r.ppl[e].seconds;
    rec.evals.push_back(ev);
  }
  rec.rotation_loss = r.learning.loss;
  for (const LayerQuantStats& s : r.weights.layers) {
    rec.series["layer_seconds"].push_back(s.seconds);
    rec.series["layer_quant_seconds"].push_back(s.quant_seconds);
  }
  if (c.flag("runtime.save_rotations") && r.rotations.r1.defined()) {
    const at::Tensor r1 = r.rotations.r1.to(at::kCPU, at::kDouble).contiguous();
    rec.r1_dim = r1.size(0);
    rec.r1.assign(r1.data_ptr<double>(), r1.data_ptr<double>() + r1.numel());
  }
  return rec;
}

const char* state_name(CellState s) {
  switch (s) {
    case CellState::kPending:
      return "pending";
    case CellState::kRunning:
      return "running";
    case CellState::kDone:
      return "done";
    case CellState::kFailed:
      return "failed";
  }
  return "?";
}

struct RunArgs {
  std::string file;
  std::vector<std::string> overrides;
  std::string cells;
  bool dry_run = false, force = false, schema = false;
};

void run_experiment(Runtime& rt, const RunArgs& a) {
  if (a.schema) {
    std::cout << schema_markdown();
    return;
  }
  require(!a.file.empty(), "rotq run: give an experiment file (EXP.yaml)");
  rt.init();
  const Experiment exp = load_experiment(a.file, a.overrides);
  const std::vector<Cell> cells = select_cells(exp.cells, a.cells);
  const std::map<std::string, CellRecord> done = read_results(exp.output);
  std::vector<std::vector<std::string>> rows;
  size_t todo = 0;
  for (const Cell& c : cells) {
    const CellStatus s = cell_status(exp.output, c.id, done.count(c.id) > 0);
    const bool run = a.force || s.state != CellState::kDone;
    todo += run;
    rows.push_back({c.id, c.label(), state_name(s.state), run ? "run" : "skip"});
  }
  spdlog::info("{}: {} cells, {} to run ({} selected, results in {})", exp.path, exp.cells.size(),
               todo, cells.size(), exp.output);
  if (a.dry_run) {
    print_table(rt.c(), {"cell", "label", "state", "action"}, rows);
    return;
  }
  // Inputs are checked before anything runs, so a typo fails now rather than at cell 17.
  for (const Cell& c : cells) {
    require(fs::exists(c.model.path), exp.path, ": model '", c.model.name, "': ", c.model.path,
            " does not exist");
    require(c.model.tokenizer.empty() || fs::exists(c.model.tokenizer), exp.path, ": model '",
            c.model.name, "': tokenizer ", c.model.tokenizer, " does not exist");
    std::vector<std::string> texts = c.list("evaluation.ppl_texts");
    if (!c.at("calibration.text").empty()) texts.push_back(c.at("calibration.text"));
    for (const std::string& t : texts) {
      require(fs::exists(t), exp.path, ": text ", t, " does not exist");
    }
  }
  if (rt.c().is_root()) remove_stale_temporaries(exp.output);
  size_t k = 0, failed = 0;
  for (const Cell& c : cells) {
    if (!a.force && done.count(c.id)) continue;
    ++k;
    spdlog::info("cell {}/{} {} ({})", k, todo, c.id, c.label());
    if (rt.c().is_root()) mark_running(exp.output, c.id);
    try {
      const CellRecord rec = run_cell(rt, exp, c);
      if (rt.c().is_root()) {
        write_cell_file(exp.output, rec);
        clear_markers(exp.output, c.id);
      }
      std::string summary;
      for (const EvalRecord& e : rec.evals) summary += " ppl " + fmt_double(e.ppl, 4);
      spdlog::info("cell {} done in {:.1f}s:{}", c.id, rec.seconds.at("total"), summary);
    } catch (const Error& e) {
      ++failed;
      if (rt.c().is_root()) mark_failed(exp.output, c.id, e.what());
      spdlog::error("cell {} ({}) failed: {}", c.id, c.label(), e.what());
    }
  }
  if (rt.c().is_root() && k > 0) merge_results(exp.output);
  rt.c().barrier();
  require(failed == 0, failed, " of ", k, " cells failed (rotq status ", a.file,
          " lists them; rerun to retry)");
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
    std::printf("%d done, %d running, %d failed, %d pending\n", counts["done"], counts["running"],
                counts["failed"], counts["pending"]);
  }
}

// ---- tables ------------------------------------------------------------------------------------

// One evaluation as a flat record: the cell's config keys plus the evaluation's own fields.
using Row = std::map<std::string, std::string>;

std::string wakv(const CellRecord& r, const EvalRecord& e) {
  const std::string w =
      r.config.count("quantization.w_bits") ? r.config.at("quantization.w_bits") : "16";
  return "W" + w + "A" + std::to_string(e.a_bits) + "KV" + std::to_string(e.kv_bits);
}

std::vector<std::pair<Row, std::map<std::string, double>>> flatten(
    const std::map<std::string, CellRecord>& cells) {
  std::vector<std::pair<Row, std::map<std::string, double>>> out;
  for (const auto& [id, r] : cells) {
    for (const EvalRecord& e : r.evals) {
      Row row = r.config;
      row["model"] = r.config.count("model.name") ? r.config.at("model.name") : "?";
      row["text"] = fs::path(e.text).filename().string();
      row["acts"] = e.acts;
      row["wakv"] = wakv(r, e);
      row["experiment"] = r.experiment;
      std::map<std::string, double> m = {{"ppl", e.ppl}, {"mean_nll", e.mean_nll}};
      if (e.kl >= 0) m["kl"] = e.kl;
      for (const auto& [k, v] : r.seconds) m["seconds." + k] = v;
      out.push_back({row, m});
    }
  }
  return out;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string t; std::getline(ss, t, sep);) {
    if (!t.empty()) out.push_back(t);
  }
  return out;
}

std::string join_values(const Row& row, const std::vector<std::string>& keys) {
  std::string s;
  for (const std::string& k : keys) {
    const auto it = row.find(k);
    s += (s.empty() ? "" : " ") + (it == row.end() ? std::string("-") : it->second);
  }
  return s;
}

std::string mean_spread(const std::vector<double>& v, int digits) {
  if (v.empty()) return "-";
  double mean = 0;
  for (double x : v) mean += x;
  mean /= static_cast<double>(v.size());
  if (v.size() == 1) return fmt_double(mean, digits);
  double var = 0;
  for (double x : v) var += (x - mean) * (x - mean);
  const double sd = std::sqrt(var / static_cast<double>(v.size() - 1));
  return fmt_double(mean, digits) + " ± " + fmt_double(sd, digits);
}

// Every evaluation of RESULTS (an HDF5 file, its .d directory, or the experiment file naming them),
// kept when it matches each key=value of `where`.
std::vector<std::pair<Row, std::map<std::string, double>>> load_records(const std::string& results,
                                                                        const std::string& where) {
  std::string output = results;
  if (fs::path(output).extension() == ".yaml" || fs::path(output).extension() == ".yml") {
    output = load_experiment(output).output;
  }
  require(fs::exists(output) || fs::is_directory(cell_dir(output)), results,
          ": no results (expected an HDF5 file or its .d directory of cells)");
  auto records = flatten(read_results(output));
  for (const std::string& cond : split(where, ',')) {
    const size_t eq = cond.find('=');
    require(eq != std::string::npos, "--where '", cond, "': expected key=value");
    const std::string k = cond.substr(0, eq), v = cond.substr(eq + 1);
    records.erase(std::remove_if(records.begin(), records.end(),
                                 [&](const auto& r) {
                                   const auto it = r.first.find(k);
                                   return it == r.first.end() || it->second != v;
                                 }),
                  records.end());
  }
  require(!records.empty(), results, ": no evaluations to show (check --where)");
  return records;
}

// The papers' order: methods from none to the learned ones, numbers by value, other text as is.
int method_rank(const std::string& v) {
  static const std::vector<std::string> order = {"none",  "random", "hadamard",
                                                 "dfrot", "optrot", "optrot+"};
  const auto it = std::find(order.begin(), order.end(), v);
  return it == order.end() ? static_cast<int>(order.size()) : static_cast<int>(it - order.begin());
}

bool value_before(const std::string& a, const std::string& b) {
  if (method_rank(a) != method_rank(b)) return method_rank(a) < method_rank(b);
  char* ea = nullptr;
  char* eb = nullptr;
  const double x = std::strtod(a.c_str(), &ea), y = std::strtod(b.c_str(), &eb);
  if (ea != a.c_str() && eb != b.c_str() && *ea == 0 && *eb == 0 && x != y) return x < y;
  return a < b;
}

// W-A-KV settings from the least to the most quantized: W16A16KV16, W4A16KV16, W4A8KV16,
// W4A4KV16, W4A4KV4 (more bits first, weights before activations before the cache).
bool setting_before(const std::string& a, const std::string& b) {
  int wa = 0, aa = 0, ka = 0, wb = 0, ab = 0, kb = 0;
  if (std::sscanf(a.c_str(), "W%dA%dKV%d", &wa, &aa, &ka) == 3 &&
      std::sscanf(b.c_str(), "W%dA%dKV%d", &wb, &ab, &kb) == 3) {
    return std::make_tuple(-wa, -aa, -ka) < std::make_tuple(-wb, -ab, -kb);
  }
  return value_before(a, b);
}

struct TableArgs {
  std::string results;
  std::string rows = "rotation.method";
  std::string cols = "model";
  std::string group = "wakv";
  std::string metrics = "ppl";
  std::string where;
  std::string format = "md";
  int digits = 2;
};

// Rows = methods (or --rows), row groups = the W-A-KV setting (--group), columns = models ×
// metrics (--cols, --metric), each cell the mean ± sample standard deviation over seeds.
void render_table(Runtime& rt, const TableArgs& a) {
  rt.init();
  require(a.format == "md" || a.format == "csv" || a.format == "latex", "--format ", a.format,
          ": expected md, csv or latex");
  auto records = load_records(a.results, a.where);
  const std::vector<std::string> row_keys = split(a.rows, ','), col_keys = split(a.cols, ','),
                                 group_keys = split(a.group, ','), metrics = split(a.metrics, ',');
  std::vector<std::string> groups, row_names, col_names;
  const auto add = [](std::vector<std::string>& v, const std::string& x) {
    if (std::find(v.begin(), v.end(), x) == v.end()) v.push_back(x);
  };
  std::map<std::tuple<std::string, std::string, std::string, std::string>, std::vector<double>>
      vals;
  for (const auto& [row, m] : records) {
    const std::string g = join_values(row, group_keys), r = join_values(row, row_keys),
                      c = join_values(row, col_keys);
    add(groups, g);
    add(row_names, r);
    add(col_names, c);
    for (const std::string& metric : metrics) {
      const auto it = m.find(metric);
      if (it != m.end()) vals[{g, r, c, metric}].push_back(it->second);
    }
  }
  std::sort(groups.begin(), groups.end(), setting_before);
  std::sort(row_names.begin(), row_names.end(), value_before);
  std::sort(col_names.begin(), col_names.end(), value_before);
  std::vector<std::string> header = {a.group, a.rows};
  for (const std::string& c : col_names) {
    for (const std::string& metric : metrics) header.push_back(c + " " + metric);
  }
  std::vector<std::vector<std::string>> body;
  for (const std::string& g : groups) {
    bool first = true;
    for (const std::string& r : row_names) {
      // Markdown and LaTeX print a group once; CSV repeats it on every row (for machines).
      std::vector<std::string> line = {first || a.format == "csv" ? g : "", r};
      bool any = false;
      for (const std::string& c : col_names) {
        for (const std::string& metric : metrics) {
          const auto it = vals.find({g, r, c, metric});
          any = any || it != vals.end();
          line.push_back(it == vals.end() ? "-" : mean_spread(it->second, a.digits));
        }
      }
      if (!any) continue;
      body.push_back(line);
      first = false;
    }
  }
  if (!rt.c().is_root()) return;
  if (a.format == "md") {
    print_table(rt.c(), header, body);
  } else if (a.format == "csv") {
    const auto csv = [](const std::vector<std::string>& cells) {
      std::string s;
      for (size_t i = 0; i < cells.size(); ++i) {
        std::string v = cells[i];
        if (v.find_first_of(",\"") != std::string::npos) {
          std::string q = "\"";
          for (char ch : v) q += ch == '"' ? std::string("\"\"") : std::string(1, ch);
          v = q + "\"";
        }
        s += (i ? "," : "") + v;
      }
      return s;
    };
    std::cout << csv(header) << "\n";
    for (const auto& l : body) std::cout << csv(l) << "\n";
  } else {
    std::cout << "\\begin{tabular}{ll" << std::string(header.size() - 2, 'r') << "}\n\\toprule\n";
    const auto tex = [](const std::vector<std::string>& cells) {
      std::string s;
      for (size_t i = 0; i < cells.size(); ++i) {
        std::string v;
        for (char ch : cells[i])
          v += (ch == '_' || ch == '%' || ch == '&') ? std::string("\\") + ch : std::string(1, ch);
        size_t p;
        while ((p = v.find("±")) != std::string::npos) v.replace(p, 2, "$\\pm$");
        s += (i ? " & " : "") + v;
      }
      return s + " \\\\\n";
    };
    std::cout << tex(header) << "\\midrule\n";
    for (const auto& l : body) std::cout << tex(l);
    std::cout << "\\bottomrule\n\\end{tabular}\n";
  }
}

struct PlotArgs {
  std::string results, x, series = "wakv", metric = "ppl", where, out, title;
  bool logx = false;
};

// A metric against one key (e.g. DFRot's gamma), one line per series, mean ± std over seeds: the
// data as OUT.csv, drawn by scripts/plot_results.py into OUT.
void render_plot(Runtime& rt, const PlotArgs& a) {
  rt.init();
  require(!a.out.empty() && fs::path(a.out).extension() == ".png", "--out '", a.out,
          "': expected a .png path");
  const auto records = load_records(a.results, a.where);
  const std::vector<std::string> series_keys = split(a.series, ',');
  std::vector<std::string> series, xs;
  std::map<std::pair<std::string, std::string>, std::vector<double>> vals;
  for (const auto& [row, m] : records) {
    const auto xi = row.find(a.x);
    require(xi != row.end(), "--x ", a.x, ": not a key of the results (e.g. rotation.method)");
    const auto mi = m.find(a.metric);
    if (mi == m.end()) continue;
    const std::string s = join_values(row, series_keys);
    if (std::find(series.begin(), series.end(), s) == series.end()) series.push_back(s);
    if (std::find(xs.begin(), xs.end(), xi->second) == xs.end()) xs.push_back(xi->second);
    vals[{s, xi->second}].push_back(mi->second);
  }
  require(!vals.empty(), a.results, ": no '", a.metric, "' values to plot");
  std::sort(series.begin(), series.end(), setting_before);
  std::sort(xs.begin(), xs.end(), value_before);
  if (!rt.c().is_root()) return;
  const std::string csv = fs::path(a.out).replace_extension(".csv").string();
  if (!fs::path(csv).parent_path().empty()) fs::create_directories(fs::path(csv).parent_path());
  {
    std::ofstream out(csv);
    require(out.good(), csv, ": cannot write the plot's data");
    out << "series,x,mean,std,n\n";
    for (const std::string& s : series) {
      for (const std::string& x : xs) {
        const auto it = vals.find({s, x});
        if (it == vals.end()) continue;
        const std::vector<double>& v = it->second;
        double mean = 0, var = 0;
        for (double d : v) mean += d;
        mean /= static_cast<double>(v.size());
        for (double d : v) var += (d - mean) * (d - mean);
        const double sd = v.size() > 1 ? std::sqrt(var / static_cast<double>(v.size() - 1)) : 0;
        out << '"' << s << "\"," << x << "," << mean << "," << sd << "," << v.size() << "\n";
      }
    }
  }
  std::vector<std::string> args = {csv, a.out, a.x, a.metric};
  if (a.logx) args.push_back("--logx");
  if (!a.title.empty()) {
    args.push_back("--title");
    args.push_back(a.title);
  }
  run_plot_script(std::string(ROTQ_SCRIPTS_DIR) + "/plot_results.py", args,
                  "the data are in " + csv);
  std::printf("%s (data: %s)\n", a.out.c_str(), csv.c_str());
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
  run->add_flag("--force", a->force, "recompute cells that are done");
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
    std::string out = *m;
    if (fs::path(out).extension() == ".yaml" || fs::path(out).extension() == ".yml") {
      out = load_experiment(out).output;
    }
    if (rt.c().is_root()) std::printf("%zu cells in %s\n", merge_results(out), out.c_str());
  });

  auto t = std::make_shared<TableArgs>();
  CLI::App* table =
      app.add_subcommand("table", "render results as the papers' tables (mean ± std over seeds)");
  table->add_option("results", t->results, "results file (or the experiment YAML)")->required();
  table->add_option("--rows", t->rows, "row key(s), comma-separated")->capture_default_str();
  table->add_option("--cols", t->cols, "column key(s) (× metrics)")->capture_default_str();
  table->add_option("--group", t->group, "row-group key(s) (wakv: the W-A-KV setting)")
      ->capture_default_str();
  table->add_option("--metric", t->metrics, "ppl, kl, mean_nll, seconds.STAGE (comma-separated)")
      ->capture_default_str();
  table->add_option("--where", t->where, "key=value[,key=value] filters (e.g. text=wiki.test.raw)");
  table->add_option("--format", t->format, "md | csv | latex")->capture_default_str();
  table->add_option("--digits", t->digits, "decimals")->capture_default_str();
  table->callback([t, &rt] { render_table(rt, *t); });

  auto p = std::make_shared<PlotArgs>();
  CLI::App* plot = app.add_subcommand(
      "plot", "a metric against one key, a line per series, mean ± std over seeds (PNG + CSV)");
  plot->add_option("results", p->results, "results file (or the experiment YAML)")->required();
  plot->add_option("--x", p->x, "x key, e.g. rotation.dfrot.gamma")->required();
  plot->add_option("--series", p->series, "series key(s)")->capture_default_str();
  plot->add_option("--metric", p->metric, "ppl, kl, mean_nll, seconds.STAGE")
      ->capture_default_str();
  plot->add_option("--where", p->where, "key=value[,key=value] filters");
  plot->add_option("--out", p->out, "output .png (the data go beside it as .csv)")->required();
  plot->add_flag("--logx", p->logx, "log-scaled x (numeric x only)");
  plot->add_option("--title", p->title, "figure title");
  plot->callback([p, &rt] { render_plot(rt, *p); });
}

}  // namespace rotq
