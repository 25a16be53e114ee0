// rotq table / plot: experiment results (runner/record/results.h) as the papers' tables (W-A-KV row
// groups, methods as rows, model x metric columns, mean ± std over seeds) and as figures.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <tuple>

#include "models/base/files.h"
#include "runner/cli/cmd_common.h"
#include "runner/core/csv.h"
#include "runner/core/stats.h"
#include "runner/eval/task_registry.h"
#include "runner/record/experiment.h"
#include "runner/record/results.h"
#include "solvers/error.h"

namespace rotq {
namespace {
namespace fs = std::filesystem;

// One evaluation as a flat record: the cell's config keys plus the evaluation's own fields.
using Row = std::map<std::string, std::string>;

std::string wakv(const CellRecord& r, int64_t a_bits, int64_t kv_bits) {
  const std::string w =
      r.config.count("quantization.w_bits") ? r.config.at("quantization.w_bits") : "16";
  return "W" + w + "A" + std::to_string(a_bits) + "KV" + std::to_string(kv_bits);
}

Row base_row(const CellRecord& r, const std::string& acts, int64_t a_bits, int64_t kv_bits) {
  Row row = r.config;
  row["model"] = r.config.count("model.name") ? r.config.at("model.name") : "?";
  row["acts"] = acts;
  row["wakv"] = wakv(r, a_bits, kv_bits);
  row["experiment"] = r.experiment;
  // The run's records (host, versions, BOS policy, ...) as meta.KEY, for --rows/--where.
  for (const auto& [k, v] : r.meta) row["meta." + k] = v;
  return row;
}

// A cell's task evaluations: acc, acc_norm (where defined), score (the papers' metric, acc_norm
// else acc, in percent as the papers print it), task_ppl (LAMBADA), and per activation
// configuration an "avg" task: the mean score over the zero-shot tasks present (two or more).
void flatten_tasks(const CellRecord& r,
                   std::vector<std::pair<Row, std::map<std::string, double>>>& out) {
  std::map<std::string, std::pair<Row, std::vector<double>>> avg;
  for (const TaskRecord& t : r.tasks) {
    Row row = base_row(r, t.acts, t.a_bits, t.kv_bits);
    row["task"] = t.task;
    std::map<std::string, double> m = {
        {"acc", t.acc}, {"score", 100.0 * t.score()}, {"task_seconds", t.seconds}};
    if (t.acc_norm >= 0) m["acc_norm"] = t.acc_norm;
    if (t.ppl >= 0) m["task_ppl"] = t.ppl;
    if (t.acc_subject_mean >= 0) m["acc_subject_mean"] = t.acc_subject_mean;
    if (t.n > 0) m["seconds_per_1000"] = 1000.0 * t.seconds / static_cast<double>(t.n);
    const TaskSpec* spec = lookup_task(t.task);
    if (spec && spec->zero_shot_avg) {
      auto& [arow, scores] = avg[t.acts];
      arow = row;
      arow["task"] = "avg";
      scores.push_back(100.0 * t.score());
    }
    out.push_back({row, m});
  }
  for (const auto& [acts, rs] : avg) {
    if (rs.second.size() < 2) continue;
    double s = 0;
    for (double v : rs.second) s += v;
    out.push_back({rs.first,
                   {{"score", s / static_cast<double>(rs.second.size())},
                    {"tasks", static_cast<double>(rs.second.size())}}});
  }
}

std::vector<std::pair<Row, std::map<std::string, double>>> flatten(
    const std::map<std::string, CellRecord>& cells) {
  std::vector<std::pair<Row, std::map<std::string, double>>> out;
  for (const auto& [id, r] : cells) {
    for (const EvalRecord& e : r.evals) {
      Row row = base_row(r, e.acts, e.a_bits, e.kv_bits);
      row["text"] = fs::path(e.text).filename().string();
      std::map<std::string, double> m = {{"ppl", e.ppl}, {"mean_nll", e.mean_nll}};
      if (e.kl >= 0) m["kl"] = e.kl;
      for (const auto& [k, v] : r.seconds) m["seconds." + k] = v;
      out.push_back({row, m});
    }
    flatten_tasks(r, out);
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
  const MeanSd m = mean_sd(v);
  if (v.size() == 1) return fmt_double(m.mean, digits);
  return fmt_double(m.mean, digits) + " ± " + fmt_double(m.sd, digits);
}

// Every evaluation of RESULTS (an HDF5 file, its .d directory, or the experiment file naming them),
// kept when it matches each key=value of `where`.
std::vector<std::pair<Row, std::map<std::string, double>>> load_records(const std::string& results,
                                                                        const std::string& where) {
  const std::string output = results_path(results);
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

// Tasks in the registry's (the papers') column order, the average after the nine.
int task_rank(const std::string& v) {
  const auto& r = task_registry();
  for (size_t i = 0; i < r.size(); ++i) {
    if (r[i].name == v) return static_cast<int>(i < 9 ? i : i + 1);
  }
  return v == "avg" ? 9 : -1;
}

bool value_before(const std::string& a, const std::string& b) {
  if (task_rank(a) >= 0 && task_rank(b) >= 0) return task_rank(a) < task_rank(b);
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

// A task column as the papers head it ("ARC-c", "Avg."), with the metric when there are several.
std::string task_title(const std::string& task, const std::string& metric, size_t metrics) {
  const TaskSpec* spec = lookup_task(task);
  const std::string title = spec ? spec->title : task == "avg" ? "Avg." : task;
  return metrics > 1 ? title + " " + metric : title;
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
    if (std::none_of(metrics.begin(), metrics.end(), [&](const auto& k) { return m.count(k); })) {
      continue;
    }
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
  require(!col_names.empty(), a.results, ": no '", a.metrics, "' values to show");
  std::vector<std::string> header = {a.group, a.rows};
  for (const std::string& c : col_names) {
    for (const std::string& metric : metrics) {
      header.push_back(col_keys == std::vector<std::string>{"task"}
                           ? task_title(c, metric, metrics.size())
                           : c + " " + metric);
    }
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
    std::cout << csv_row(header) << "\n";
    for (const auto& l : body) std::cout << csv_row(l) << "\n";
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
    const auto mi = m.find(a.metric);
    if (mi == m.end()) continue;  // an evaluation of another kind (a task, a text)
    const auto xi = row.find(a.x);
    require(xi != row.end(), "--x ", a.x, ": not a key of the results (e.g. rotation.method)");
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
  const auto text = [](double v) {
    std::ostringstream os;
    os << v;
    return os.str();
  };
  std::string data = "series,x,mean,std,n\n";
  for (const std::string& s : series) {
    for (const std::string& x : xs) {
      const auto it = vals.find({s, x});
      if (it == vals.end()) continue;
      const std::vector<double>& v = it->second;
      const auto [mean, sd] = mean_sd(v);
      data += csv_row({s, x, text(mean), text(sd), std::to_string(v.size())}) + "\n";
    }
  }
  write_file_atomically(csv, data);
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

void register_table(CLI::App& app, Runtime& rt) {
  auto t = std::make_shared<TableArgs>();
  CLI::App* table =
      app.add_subcommand("table", "render results as the papers' tables (mean ± std over seeds)");
  table->add_option("results", t->results, "results file (or the experiment YAML)")->required();
  table->add_option("--rows", t->rows, "row key(s), comma-separated")->capture_default_str();
  table->add_option("--cols", t->cols, "column key(s) (× metrics)")->capture_default_str();
  table->add_option("--group", t->group, "row-group key(s) (wakv: the W-A-KV setting)")
      ->capture_default_str();
  table
      ->add_option(
          "--metric", t->metrics,
          "ppl, kl, mean_nll, seconds.STAGE; tasks: score (acc_norm else acc, %), acc, acc_norm, "
          "task_ppl, seconds_per_1000 (comma-separated)")
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
