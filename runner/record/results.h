// Experiment results in HDF5. Every finished cell is one file OUTPUT.d/<id>.h5, written to a
// temporary name and renamed into place, so a cell is whole or absent however writers are killed
// or race (Slurm array tasks, resumed runs); `rotq merge` gathers them into OUTPUT, one group per
// cell. Readers take both, a cell file winning over the merged copy. Markers OUTPUT.d/<id>.running
// and <id>.failed say what is in flight or went wrong (runner/record/cell_markers.h). Files are
// built in memory and stored through rotq's own temporaries in OUTPUT.d (models/base/files.h).
//
// Layout of a cell group (/cells/<id>): attributes id, label, experiment, config_yaml; groups
// config (every resolved key, as strings), meta (versions, host, ranks, device, times, data
// checksums), seconds (stage timings); evals/<k> (text, acts, a_bits, kv_bits, ppl, kl, mean_nll,
// windows, scored_tokens, seconds); tasks/<k> (task, acts, a_bits, kv_bits, n, requests, tokens,
// limit, acc, acc_stderr, acc_norm, acc_norm_stderr, acc_bytes, ppl, acc_subject_mean, metric,
// seconds; subtasks/<subject> with n and acc); datasets rotation_loss (a learned rotation's curve),
// series/* (per-layer GPTQ seconds, ...), r1 (C × C) and r2 (layers × d × d, its d in the
// attribute r2_dim), both with runtime.save_rotations.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "models/base/files.h"  // host_name
#include "runner/eval/task_score.h"
#include "runner/record/cell_markers.h"

namespace rotq {

struct EvalRecord {
  std::string text, acts;
  int64_t a_bits = 16, kv_bits = 16, windows = 0, scored_tokens = 0;
  double ppl = 0, kl = -1, mean_nll = 0, seconds = 0;  // kl < 0: not measured
};

// One zero-shot task's scores under one activation configuration, as recorded with a cell.
struct TaskRecord : TaskScore {
  std::string acts;
  int64_t a_bits = 16, kv_bits = 16, limit = -1;
};

// The scalar fields of the per-evaluation and per-task records, by their stored names: the HDF5
// writer and reader (results.cc) and the JSON form (cell_record.cc) all walk these tables, so the
// two forms of a record cannot drift apart.
template <typename Record, typename T>
struct RecordField {
  const char* name;
  T Record::*member;
};
const std::vector<RecordField<EvalRecord, std::string>>& eval_string_fields();
const std::vector<RecordField<EvalRecord, int64_t>>& eval_int_fields();
const std::vector<RecordField<EvalRecord, double>>& eval_double_fields();
const std::vector<RecordField<TaskRecord, std::string>>& task_string_fields();
const std::vector<RecordField<TaskRecord, int64_t>>& task_int_fields();
const std::vector<RecordField<TaskRecord, double>>& task_double_fields();

struct CellRecord {
  std::string id, label, experiment, config_yaml;
  std::map<std::string, std::string> config;  // schema keys, model.name/path/tokenizer, seed
  std::map<std::string, std::string> meta;
  std::map<std::string, double> seconds;
  std::vector<EvalRecord> evals;
  std::vector<TaskRecord> tasks;
  std::vector<double> rotation_loss;
  // Optional tensors: named float64 series (layer_seconds / layer_quant_seconds per GPTQ layer,
  // rotation_step_seconds per learned-rotation step after the first, scale_* of OSTQuant), R1
  // [C, C] and the per-layer R2 [layers, d, d] (runtime.save_rotations).
  std::map<std::string, std::vector<double>> series;
  std::vector<double> r1;
  int64_t r1_dim = 0;
  std::vector<double> r2;
  int64_t r2_dim = 0;
};

std::string cell_dir(const std::string& output);  // OUTPUT.d

// The results file a command argument names: RESULTS.h5 itself, or an experiment file's output.
std::string results_path(const std::string& results_or_experiment);

// Writes OUTPUT.d/<id>.h5 atomically (temporary file, flush, fsync, rename).
void write_cell_file(const std::string& output, const CellRecord& r);

// Every finished cell of OUTPUT (merged file and cell files), by id. Unreadable cell files (not
// produced by rotq: renames are atomic) are reported and skipped.
std::map<std::string, CellRecord> read_results(const std::string& output);

// Writes OUTPUT (atomically) with every cell read_results finds; returns the count.
size_t merge_results(const std::string& output);

// Removes, in OUTPUT.d only, the temporaries of writers on this host that are gone (never a file
// rotq did not create); returns how many.
int remove_stale_temporaries(const std::string& output);

// FNV-1a 64 of a file's bytes as 16 hex digits (data checksums recorded with each cell).
std::string file_checksum(const std::string& path);

}  // namespace rotq
