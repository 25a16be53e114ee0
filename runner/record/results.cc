#include "runner/record/results.h"

#include <fcntl.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "models/base/files.h"
#include "runner/record/experiment.h"
#include "runner/record/h5.h"
#include "solvers/error.h"
#include "solvers/hash.h"
#include "solvers/parse.h"

namespace rotq {
namespace fs = std::filesystem;
namespace {

// Every field of `r` in the tables, written as attributes of `g` / read back from them.
template <typename R>
void write_fields(const h5::Handle& g, const R& r,
                  const std::vector<RecordField<R, std::string>>& strings,
                  const std::vector<RecordField<R, int64_t>>& ints,
                  const std::vector<RecordField<R, double>>& doubles) {
  for (const auto& f : strings) h5::set_string(g, f.name, r.*f.member);
  for (const auto& f : ints) h5::set_int(g, f.name, r.*f.member);
  for (const auto& f : doubles) h5::set_double(g, f.name, r.*f.member);
}
template <typename R>
void read_fields(const h5::Handle& g, R& r, const std::vector<RecordField<R, std::string>>& strings,
                 const std::vector<RecordField<R, int64_t>>& ints,
                 const std::vector<RecordField<R, double>>& doubles) {
  for (const auto& f : strings) r.*f.member = h5::get_string(g, f.name);
  for (const auto& f : ints) r.*f.member = h5::get_int(g, f.name);
  for (const auto& f : doubles) r.*f.member = h5::get_double(g, f.name);
}

void write_task_group(const h5::Handle& parent, const std::string& name, const TaskRecord& t) {
  const h5::Handle g = h5::create_group(parent, name);
  write_fields(g, t, task_string_fields(), task_int_fields(), task_double_fields());
  if (t.subtasks.empty()) return;
  const h5::Handle sub = h5::create_group(g, "subtasks");
  for (const SubtaskScore& s : t.subtasks) {
    const h5::Handle sg = h5::create_group(sub, s.name);
    h5::set_int(sg, "n", s.n);
    h5::set_double(sg, "acc", s.acc);
  }
}

TaskRecord read_task_group(const h5::Handle& parent, const std::string& name) {
  const h5::Handle g = h5::open_group(parent, name);
  TaskRecord t;
  read_fields(g, t, task_string_fields(), task_int_fields(), task_double_fields());
  if (h5::has_child(g, "subtasks")) {
    const h5::Handle sub = h5::open_group(g, "subtasks");
    for (const std::string& s : h5::children(sub)) {
      const h5::Handle sg = h5::open_group(sub, s);
      t.subtasks.push_back({s, h5::get_int(sg, "n"), h5::get_double(sg, "acc")});
    }
  }
  return t;
}

void write_cell_group(const h5::Handle& cells, const CellRecord& r) {
  const h5::Handle g = h5::create_group(cells, r.id);
  h5::set_string(g, "id", r.id);
  h5::set_string(g, "label", r.label);
  h5::set_string(g, "experiment", r.experiment);
  h5::set_string(g, "config_yaml", r.config_yaml);
  const h5::Handle config = h5::create_group(g, "config");
  for (const auto& [k, v] : r.config) h5::set_string(config, k, v);
  const h5::Handle meta = h5::create_group(g, "meta");
  for (const auto& [k, v] : r.meta) h5::set_string(meta, k, v);
  const h5::Handle secs = h5::create_group(g, "seconds");
  for (const auto& [k, v] : r.seconds) h5::set_double(secs, k, v);
  const h5::Handle evals = h5::create_group(g, "evals");
  for (size_t i = 0; i < r.evals.size(); ++i) {
    const h5::Handle eg = h5::create_group(evals, std::to_string(i));
    write_fields(eg, r.evals[i], eval_string_fields(), eval_int_fields(), eval_double_fields());
  }
  if (!r.tasks.empty()) {
    const h5::Handle tasks = h5::create_group(g, "tasks");
    for (size_t i = 0; i < r.tasks.size(); ++i)
      write_task_group(tasks, std::to_string(i), r.tasks[i]);
  }
  if (!r.rotation_loss.empty()) h5::write_doubles(g, "rotation_loss", r.rotation_loss);
  if (!r.series.empty()) {
    const h5::Handle series = h5::create_group(g, "series");
    for (const auto& [k, v] : r.series) h5::write_doubles(series, k, v);
  }
  if (r.r1_dim > 0) {
    h5::write_doubles(g, "r1", r.r1,
                      {static_cast<uint64_t>(r.r1_dim), static_cast<uint64_t>(r.r1_dim)});
  }
  if (r.r2_dim > 0) {
    const auto d = static_cast<uint64_t>(r.r2_dim);
    h5::write_doubles(g, "r2", r.r2, {r.r2.size() / (d * d), d, d});
    h5::set_int(g, "r2_dim", r.r2_dim);
  }
}

CellRecord read_cell_group(const h5::Handle& cells, const std::string& id) {
  const h5::Handle g = h5::open_group(cells, id);
  CellRecord r;
  r.id = h5::get_string(g, "id");
  r.label = h5::get_string(g, "label");
  r.experiment = h5::get_string(g, "experiment");
  r.config_yaml = h5::get_string(g, "config_yaml");
  const h5::Handle config = h5::open_group(g, "config");
  for (const std::string& k : h5::attribute_names(config)) r.config[k] = h5::get_string(config, k);
  const h5::Handle meta = h5::open_group(g, "meta");
  for (const std::string& k : h5::attribute_names(meta)) r.meta[k] = h5::get_string(meta, k);
  const h5::Handle secs = h5::open_group(g, "seconds");
  for (const std::string& k : h5::attribute_names(secs)) r.seconds[k] = h5::get_double(secs, k);
  const h5::Handle evals = h5::open_group(g, "evals");
  const std::vector<std::string> names = h5::children(evals);
  r.evals.resize(names.size());
  for (const std::string& n : names) {
    const std::optional<int64_t> i = parse_integer(n);
    require(i && *i >= 0 && static_cast<size_t>(*i) < r.evals.size(), "cell ", id, ": eval index '",
            n, "' out of range");
    const h5::Handle eg = h5::open_group(evals, n);
    read_fields(eg, r.evals[static_cast<size_t>(*i)], eval_string_fields(), eval_int_fields(),
                eval_double_fields());
  }
  if (h5::has_child(g, "tasks")) {
    const h5::Handle tasks = h5::open_group(g, "tasks");
    const std::vector<std::string> names = h5::children(tasks);
    r.tasks.resize(names.size());
    for (const std::string& n : names) {
      const std::optional<int64_t> i = parse_integer(n);
      require(i && *i >= 0 && static_cast<size_t>(*i) < r.tasks.size(), "cell ", id,
              ": task index '", n, "' out of range");
      r.tasks[static_cast<size_t>(*i)] = read_task_group(tasks, n);
    }
  }
  if (h5::has_child(g, "rotation_loss")) r.rotation_loss = h5::read_doubles(g, "rotation_loss");
  if (h5::has_child(g, "series")) {
    const h5::Handle series = h5::open_group(g, "series");
    for (const std::string& k : h5::children(series)) r.series[k] = h5::read_doubles(series, k);
  }
  if (h5::has_child(g, "r1")) {
    r.r1 = h5::read_doubles(g, "r1");
    r.r1_dim = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(r.r1.size()))));
  }
  if (h5::has_child(g, "r2")) {
    r.r2 = h5::read_doubles(g, "r2");
    r.r2_dim = h5::get_int(g, "r2_dim");
  }
  return r;
}

void read_file_into(const std::string& path, std::map<std::string, CellRecord>& out) {
  const h5::Handle f = h5::open_file(path);
  const h5::Handle cells = h5::open_group(f, "cells");
  for (const std::string& id : h5::children(cells)) out[id] = read_cell_group(cells, id);
}

// Writes `path` whole or not at all: the HDF5 file is built in memory and its bytes stored
// through a temporary in OUTPUT.d (write_file_atomically), so a full disk is one error, the old
// file stays, and no HDF5 state is left half-flushed.
template <typename F>
void write_atomically(const std::string& path, const std::string& output, F write) {
  std::string image;
  {
    const h5::Handle f = h5::create_memory_file();
    write(f);
    image = h5::file_image(f);
  }
  fs::create_directories(cell_dir(output));
  write_file_atomically(path, image, cell_dir(output));
}

}  // namespace

const std::vector<RecordField<EvalRecord, std::string>>& eval_string_fields() {
  static const std::vector<RecordField<EvalRecord, std::string>> f = {{"text", &EvalRecord::text},
                                                                      {"acts", &EvalRecord::acts}};
  return f;
}
const std::vector<RecordField<EvalRecord, int64_t>>& eval_int_fields() {
  static const std::vector<RecordField<EvalRecord, int64_t>> f = {
      {"a_bits", &EvalRecord::a_bits},
      {"kv_bits", &EvalRecord::kv_bits},
      {"windows", &EvalRecord::windows},
      {"scored_tokens", &EvalRecord::scored_tokens}};
  return f;
}
const std::vector<RecordField<EvalRecord, double>>& eval_double_fields() {
  static const std::vector<RecordField<EvalRecord, double>> f = {
      {"ppl", &EvalRecord::ppl},
      {"kl", &EvalRecord::kl},
      {"mean_nll", &EvalRecord::mean_nll},
      {"seconds", &EvalRecord::seconds}};
  return f;
}
const std::vector<RecordField<TaskRecord, std::string>>& task_string_fields() {
  static const std::vector<RecordField<TaskRecord, std::string>> f = {
      {"task", &TaskRecord::task}, {"acts", &TaskRecord::acts}, {"metric", &TaskRecord::metric}};
  return f;
}
const std::vector<RecordField<TaskRecord, int64_t>>& task_int_fields() {
  static const std::vector<RecordField<TaskRecord, int64_t>> f = {
      {"a_bits", &TaskRecord::a_bits}, {"kv_bits", &TaskRecord::kv_bits},
      {"n", &TaskRecord::n},           {"requests", &TaskRecord::requests},
      {"tokens", &TaskRecord::tokens}, {"limit", &TaskRecord::limit},
      {"cut", &TaskRecord::cut}};
  return f;
}
const std::vector<RecordField<TaskRecord, double>>& task_double_fields() {
  static const std::vector<RecordField<TaskRecord, double>> f = {
      {"acc", &TaskRecord::acc},
      {"acc_stderr", &TaskRecord::acc_stderr},
      {"acc_norm", &TaskRecord::acc_norm},
      {"acc_norm_stderr", &TaskRecord::acc_norm_stderr},
      {"acc_bytes", &TaskRecord::acc_bytes},
      {"ppl", &TaskRecord::ppl},
      {"acc_subject_mean", &TaskRecord::acc_subject_mean},
      {"seconds", &TaskRecord::seconds}};
  return f;
}

std::string cell_dir(const std::string& output) { return output + ".d"; }

std::string results_path(const std::string& results_or_experiment) {
  const std::string ext = fs::path(results_or_experiment).extension().string();
  return ext == ".yaml" || ext == ".yml" ? load_experiment(results_or_experiment).output
                                         : results_or_experiment;
}

void write_cell_file(const std::string& output, const CellRecord& r) {
  fs::create_directories(cell_dir(output));
  write_atomically((fs::path(cell_dir(output)) / (r.id + ".h5")).string(), output,
                   [&](const h5::Handle& f) {
                     const h5::Handle cells = h5::create_group(f, "cells");
                     write_cell_group(cells, r);
                   });
}

std::map<std::string, CellRecord> read_results(const std::string& output) {
  std::map<std::string, CellRecord> out;
  if (fs::exists(output)) read_file_into(output, out);
  const fs::path dir = cell_dir(output);
  if (!fs::is_directory(dir)) return out;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (entry.path().extension() != ".h5" || is_rotq_temporary(name)) continue;
    try {
      read_file_into(entry.path().string(), out);
    } catch (const Error& e) {
      spdlog::warn("skipping {}: {}", entry.path().string(), e.what());
    }
  }
  return out;
}

size_t merge_results(const std::string& output) {
  const std::map<std::string, CellRecord> all = read_results(output);
  if (!fs::path(output).parent_path().empty())
    fs::create_directories(fs::path(output).parent_path());
  write_atomically(output, output, [&](const h5::Handle& f) {
    const h5::Handle cells = h5::create_group(f, "cells");
    for (const auto& [id, r] : all) write_cell_group(cells, r);
  });
  return all.size();
}

int remove_stale_temporaries(const std::string& output) {
  return remove_stale_temporaries_in(cell_dir(output));
}

std::string file_checksum(const std::string& path) {
  require_regular_file(path);
  std::ifstream in(path, std::ios::binary);
  require(in.good(), path, ": cannot read (for its checksum)");
  uint64_t h = kFnvOffset;
  char buf[1 << 16];
  while (in) {
    in.read(buf, sizeof buf);
    h = fnv1a(buf, static_cast<size_t>(in.gcount()), h);
  }
  return hex16(h);
}

}  // namespace rotq
