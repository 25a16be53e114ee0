// Experiment files (YAML): the keys of runner/cell/cell_options.h in nested sections;
// `sweep:` lists expanded into a grid of cells (and `zip:` groups that vary together); `seeds:` and
// `models:` multiply the grid. Each cell is its fully resolved configuration (every schema key with
// a value) and a stable id derived from it, so a cell is recognised across runs, machines and
// orderings of the file. Errors name the key, the value and what was expected; unknown keys are
// errors. experiments/README.md documents the keys (`rotq run --schema` prints them).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "runner/cell/cell_options.h"

namespace rotq {

struct ModelEntry {
  std::string name;       // the row/column label in tables
  std::string path;       // llama2.c .bin or HF directory
  std::string tokenizer;  // "" : the one in the HF directory
};

// One cell: the resolved value (canonical text) of every schema key, plus its model and seed.
struct Cell {
  std::string id;  // 16 hex digits of a hash of the resolved configuration
  ModelEntry model;
  uint64_t seed = 0;
  CellValues values;                // every key of cell_options() -> canonical value
  std::vector<std::string> varied;  // the sweep keys (for labels), in file order

  const std::string& at(const std::string& key) const;
  int64_t integer(const std::string& key) const;
  double number(const std::string& key) const;
  bool flag(const std::string& key) const;
  std::vector<std::string> list(const std::string& key) const;
  std::string label() const;          // "rotation.method=hadamard quantization.a_bits=4 seed=0"
  std::string resolved_yaml() const;  // the whole configuration as YAML text
};

// The id of a cell: 16 hex digits of a hash of its model (path, tokenizer), seed and the values
// that differ from their defaults (so keys added later keep stored ids).
std::string cell_id(const Cell& c);

struct Experiment {
  std::string path;  // the file it came from
  std::string name;
  std::string output;  // results: OUTPUT (merged HDF5) and OUTPUT.d/ (one file per cell)
  std::vector<Cell> cells;
};

// Reads, validates and expands an experiment file. `overrides` are "key.sub=value" strings that
// replace (or add) values before expansion, e.g. "quantization.w_bits=3", "seeds=[0,1]".
// Throws rotq::Error with one line naming the file, the key, the value and what was expected.
Experiment load_experiment(const std::string& path, const std::vector<std::string>& overrides = {});

// The same from YAML text (tests); `origin` names it in errors.
Experiment parse_experiment(const std::string& yaml_text, const std::string& origin,
                            const std::vector<std::string>& overrides = {});

// Cells whose id starts with, or whose label contains, each comma-separated term of `selector`
// ("" selects all); a selector matching nothing is an error.
std::vector<Cell> select_cells(const std::vector<Cell>& cells, const std::string& selector);

}  // namespace rotq
