// The one result type: a cell's CellRecord (runner/record/results.h) is what the HDF5 results store
// and what `rotq quantize-eval --json` prints (cell_record_json), built in one place from the
// cell's identity, its typed configuration and what run_quant_cell computed.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runner/cell/cell_options.h"
#include "runner/cell/run_cell.h"
#include "runner/record/experiment.h"
#include "runner/record/results.h"
#include "solvers/comm.h"

namespace rotq {

// How a cell ran, beside what it computed.
struct CellRun {
  std::string start, end;  // ISO 8601 UTC
  double total_seconds = 0;
  std::string tokenizer_kind;
  std::map<std::string, std::string> extra_meta;  // e.g. placement, communication totals
};

// The record of `c` run as `cfg` gave `r`. `checksums` (path -> checksum) carries the data files'
// checksums across the cells of a run (a sweep reads the same files).
CellRecord make_cell_record(const Cell& c, const std::string& experiment, const CellConfig& cfg,
                            const QuantCellResult& r, const CellRun& run, Comm& comm,
                            std::map<std::string, std::string>& checksums);

// Every field of the record, as stored (the rotations' values are left out;
// r1_dim / r2_dim say they were stored).
nlohmann::json cell_record_json(const CellRecord& r);

// The data files of a cell's tasks (rotq::Error naming a missing one).
std::vector<std::string> task_files(const Cell& c);

std::string iso_time();      // now, "2026-12-03T06:30:00Z"
std::string rotq_version();  // "0.1.0 (git abc123)"

}  // namespace rotq
