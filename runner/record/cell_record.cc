#include "runner/record/cell_record.h"

#include <ATen/ATen.h>
#include <mpi.h>
#include <torch/version.h>

#include <algorithm>
#include <ctime>
#include <filesystem>

#include "runner/dist/comm.h"
#include "runner/eval/task_registry.h"
#include "runner/fuse/scalings.h"
#include "runner/record/git_rev.h"
#include "runner/record/h5.h"
#include "solvers/error.h"

namespace rotq {
namespace fs = std::filesystem;
namespace {

std::string mpi_version() {
  char v[MPI_MAX_LIBRARY_VERSION_STRING];
  int n = 0;
  MPI_Get_library_version(v, &n);
  std::string s(v, static_cast<size_t>(n));
  return s.substr(0, s.find_first_of(",\n"));
}

// Checksums of the data a cell read: texts whole; a model file whole when small, else by size.
void record_checksums(const Cell& c, std::map<std::string, std::string>& known,
                      std::map<std::string, std::string>& meta) {
  std::vector<std::pair<std::string, std::string>> files;
  if (!c.at("calibration.text").empty()) files.push_back({"calibration", c.at("calibration.text")});
  for (const std::string& t : c.list("evaluation.ppl_texts")) files.push_back({"text " + t, t});
  for (const std::string& f : task_files(c)) files.push_back({"task " + f, f});
  const fs::path model = c.model.path;
  files.push_back(
      {"model", fs::is_directory(model) ? (model / "config.json").string() : model.string()});
  for (const auto& [what, path] : files) {
    auto it = known.find(path);
    if (it == known.end()) {
      const auto size = fs::file_size(path);
      it = known
               .emplace(path, size < (uint64_t{256} << 20) ? "fnv1a64:" + file_checksum(path)
                                                           : "size:" + std::to_string(size))
               .first;
    }
    meta["checksum " + what] = it->second;
  }
}

std::vector<EvalRecord> eval_records(const QuantCell& qc, const QuantCellResult& r) {
  std::vector<EvalRecord> out;
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
    out.push_back(ev);
  }
  return out;
}

std::vector<TaskRecord> task_records(const QuantCell& qc, const QuantCellResult& r) {
  std::vector<TaskRecord> out;
  for (const TaskScore& s : r.tasks) {
    const ActivationQuant& acts = qc.acts.at(s.acts_index);
    TaskRecord t;
    static_cast<TaskScore&>(t) = s;
    t.acts = acts.describe();
    t.a_bits = acts.act.bits;
    t.kv_bits = acts.k_cache.bits;
    t.limit = qc.task_opts.limit;
    out.push_back(std::move(t));
  }
  return out;
}

// Every field of `r` in the tables, as JSON members.
template <typename R>
nlohmann::json fields_json(const R& r, const std::vector<RecordField<R, std::string>>& strings,
                           const std::vector<RecordField<R, int64_t>>& ints,
                           const std::vector<RecordField<R, double>>& doubles) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& f : strings) j[f.name] = r.*f.member;
  for (const auto& f : ints) j[f.name] = r.*f.member;
  for (const auto& f : doubles) j[f.name] = r.*f.member;
  return j;
}

nlohmann::json task_json(const TaskRecord& t) {
  nlohmann::json j = fields_json(t, task_string_fields(), task_int_fields(), task_double_fields());
  if (!t.subtasks.empty()) {
    nlohmann::json sub = nlohmann::json::object();
    for (const SubtaskScore& s : t.subtasks) sub[s.name] = {{"n", s.n}, {"acc", s.acc}};
    j["subtasks"] = sub;
  }
  return j;
}

}  // namespace

std::string iso_time() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

std::string rotq_version() { return std::string(ROTQ_VERSION) + " (git " + ROTQ_GIT_REV + ")"; }

std::vector<std::string> task_files(const Cell& c) {
  const std::vector<std::string> items = c.list("evaluation.tasks");
  if (items.empty()) return {};
  std::vector<std::string> files;
  for (const auto& [name, path] : parse_task_list(items)) {
    const TaskSpec& spec = find_task(name);
    const std::string where = task_path(spec, path, c.at("evaluation.tasks_dir"));
    require(fs::exists(where), "task ", name, ": ", where, " does not exist");
    for (const std::string& f : task_data_files(spec, where)) files.push_back(f);
  }
  return files;
}

CellRecord make_cell_record(const Cell& c, const std::string& experiment, const CellConfig& cfg,
                            const QuantCellResult& r, const CellRun& run, Comm& comm,
                            std::map<std::string, std::string>& checksums) {
  CellRecord rec;
  rec.id = c.id;
  rec.label = c.label();
  rec.experiment = experiment;
  rec.config_yaml = c.resolved_yaml();
  rec.config = c.values;
  rec.config["model.name"] = c.model.name;
  rec.config["model.path"] = c.model.path;
  rec.config["model.tokenizer"] = c.model.tokenizer;
  rec.config["seed"] = std::to_string(c.seed);
  rec.meta = run.extra_meta;
  rec.meta["start"] = run.start;
  rec.meta["end"] = run.end;
  rec.meta["rotq_version"] = rotq_version();
  rec.meta["libtorch_version"] = TORCH_VERSION;
  rec.meta["mpi_version"] = mpi_version();
  rec.meta["nccl_version"] = nccl_available() ? nccl_version_string() : "none";
  rec.meta["hdf5_version"] = h5::library_version();
  rec.meta["ranks"] = std::to_string(comm.size());
  rec.meta["comm"] = comm.backend();
  rec.meta["device"] = cfg.device;
  rec.meta["host"] = host_name();
  rec.meta["bos"] = r.bos.add ? "true" : "false";
  rec.meta["bos_source"] = r.bos.source;
  rec.meta["tokenizer_kind"] = run.tokenizer_kind;
  rec.meta["rotation"] = cfg.quant.rotation.describe();
  record_checksums(c, checksums, rec.meta);
  rec.seconds = {{"rotate", r.seconds.rotate},
                 {"fuse", r.seconds.fuse},
                 {"calib", r.seconds.calib},
                 {"quantize", r.seconds.quantize},
                 {"eval", r.seconds.eval},
                 {"tasks", r.seconds.tasks},
                 {"total", run.total_seconds},
                 {"rotation_learning", r.learning.seconds},
                 {"gptq_kernel", r.weights.quant_seconds}};
  rec.evals = eval_records(cfg.quant, r);
  rec.tasks = task_records(cfg.quant, r);
  rec.rotation_loss = r.learning.loss;
  if (!r.learning.step_seconds.empty())
    rec.series["rotation_step_seconds"] = r.learning.step_seconds;
  for (const LayerQuantStats& s : r.weights.layers) {
    rec.series["layer_seconds"].push_back(s.seconds);
    rec.series["layer_quant_seconds"].push_back(s.quant_seconds);
  }
  if (cfg.save_rotations && r.rotations.r1.defined()) {
    const at::Tensor r1 = r.rotations.r1.to(at::kCPU, at::kDouble).contiguous();
    rec.r1_dim = r1.size(0);
    rec.r1.assign(r1.data_ptr<double>(), r1.data_ptr<double>() + r1.numel());
  }
  const std::vector<at::Tensor>& r2 = r.rotations.r2;
  const bool all_r2 = !r2.empty() && std::all_of(r2.begin(), r2.end(),
                                                 [](const at::Tensor& t) { return t.defined(); });
  if (cfg.save_rotations && all_r2) {
    const at::Tensor stacked = at::stack(r2).to(at::kCPU, at::kDouble).contiguous();
    rec.r2_dim = stacked.size(1);
    rec.r2.assign(stacked.data_ptr<double>(), stacked.data_ptr<double>() + stacked.numel());
  }
  // Learned channel scalings (OSTQuant), one flat series per kind: [layers × its width].
  for (const auto& [kind, field] : scaling_kinds()) {
    if (!cfg.save_rotations) break;
    std::vector<double> flat;
    for (const ChannelScalings& layer : r.rotations.scales) {
      if (!(layer.*field).defined()) continue;
      const at::Tensor c = (layer.*field).to(at::kCPU, at::kDouble).contiguous();
      flat.insert(flat.end(), c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
    }
    if (!flat.empty()) rec.series["scale_" + kind] = std::move(flat);
  }
  return rec;
}

nlohmann::json cell_record_json(const CellRecord& r) {
  nlohmann::json evals = nlohmann::json::array(), tasks = nlohmann::json::array();
  for (const EvalRecord& e : r.evals) {
    evals.push_back(fields_json(e, eval_string_fields(), eval_int_fields(), eval_double_fields()));
  }
  for (const TaskRecord& t : r.tasks) tasks.push_back(task_json(t));
  return {{"id", r.id},         {"label", r.label},   {"experiment", r.experiment},
          {"config", r.config}, {"meta", r.meta},     {"seconds", r.seconds},
          {"evals", evals},     {"tasks", tasks},     {"rotation_loss", r.rotation_loss},
          {"series", r.series}, {"r1_dim", r.r1_dim}, {"r2_dim", r.r2_dim}};
}

}  // namespace rotq
