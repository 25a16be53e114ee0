// The options of one experiment cell, once: each row of cell_options() is a YAML key, its
// command-line flags, type, default, range or choices, help text and where it lands in the typed
// CellConfig. Experiment files (runner/record/experiment.h), `rotq quantize-eval` / `rotq tasks`,
// the validators of other commands' flags of the same name, `rotq run --schema` and the table in
// experiments/README.md are all generated from it.
//
// A cell's settings travel as CellValues (key -> canonical text; the form cell ids hash) and become
// typed once, in cell_config().
#pragma once

#include <CLI/CLI.hpp>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "runner/cell/run_cell.h"

namespace rotq {

enum class KeyType { kInt, kDouble, kBool, kString, kStringList };

// Schema key -> canonical text: integers in decimal, numbers as std::to_chars writes them, bools
// true/false, lists as a JSON array ("" for an empty list).
using CellValues = std::map<std::string, std::string>;

// Everything a cell's options set, typed.
struct CellConfig {
  QuantCell quant;
  std::string dtype = "float32";  // compute dtype
  std::string device = "cpu";
  std::string placement = "replicated";  // replicated | layers
  bool save_rotations = false;           // store R1 with the cell's results
};

// One value of a row, read by the row's apply().
class OptionValue {
 public:
  explicit OptionValue(const std::string& text) : text_(text) {}
  const std::string& text() const { return text_; }
  int64_t integer() const;
  double number() const;
  bool flag() const { return text_ == "true"; }
  std::vector<std::string> list() const;

 private:
  const std::string& text_;
};

// A command-line form of a row: `--flag VALUE`, or a flag without a value that sets `sets`.
struct CellFlag {
  std::string name;
  std::string sets;  // "" : the flag takes a value
};

struct CellOption {
  std::string key;  // dotted YAML key, e.g. "quantization.percdamp"
  KeyType type = KeyType::kString;
  std::string default_value;  // canonical text
  std::string help;
  std::vector<CellFlag> flags;
  // Range of numeric keys (excluded: values inside it that mean nothing; meaning: how the special
  // values read, for the error) or the closed set of a string key.
  double min = -INFINITY, max = INFINITY;
  std::vector<double> excluded;
  std::string meaning;
  std::vector<std::string> choices;
  // A rule the above cannot say (a list item's form, a name looked up elsewhere): "" or what was
  // expected.
  std::string (*check)(const std::string& value) = nullptr;
  void (*apply)(const OptionValue& v, CellConfig& c) = nullptr;

  // Builders, so that the table reads one row per option.
  CellOption& flag(std::string name, std::string sets = "");
  CellOption& range(double lo, double hi, std::vector<double> except = {}, std::string why = "");
  CellOption& one_of(std::vector<std::string> names);
  CellOption& rule(std::string (*f)(const std::string&));
  CellOption& to(void (*f)(const OptionValue&, CellConfig&));
};

// Every option of a cell, in the order of the documentation.
const std::vector<CellOption>& cell_options();
// The row of `key`, or null.
const CellOption* find_cell_option(const std::string& key);

// Every key at its default.
CellValues default_cell_values();

const char* key_type_name(KeyType t);  // "an integer", ...
// A number's canonical text: the shortest that reads back exactly (std::to_chars).
std::string canonical_number(double v);

// The canonical text of one scalar value of `o` (a list key: of one item), checked by the row's
// type, range, choices and rule; rotq::Error "AT: KEY = VALUE: expected ..." otherwise.
std::string canonical_option_value(const CellOption& o, const std::string& text,
                                   const std::string& at);
// A list key's canonical text from its items, each checked as above.
std::string canonical_option_list(const CellOption& o, const std::vector<std::string>& items,
                                  const std::string& at);

// The typed configuration of a cell, with the rules between options checked (acts pairs, tasks
// under evaluated pairs, calibration text where a stage needs it). Every key of the table must be
// in `values` (default_cell_values() fills them). Throws rotq::Error naming the key and its flag.
CellConfig cell_config(const CellValues& values, uint64_t seed);

// Every row's flags on `cmd`, writing canonical values into `values` (which starts at the
// defaults), with the same checks as experiment files.
void add_cell_flags(CLI::App* cmd, CellValues& values);

// A CLI11 check of a value by `key`'s row (for commands with their own option of the same name).
CLI::Validator schema_validator(const std::string& key);
// Attaches schema_validator to every flag of the table that `cmd` has, so that a flag accepts
// exactly what the experiment key accepts.
void add_schema_checks(CLI::App* cmd);

// "evaluation.tasks_acts (--tasks-acts)": how errors name an option.
std::string option_name(const std::string& key);

// The table as markdown (rotq run --schema; experiments/README.md holds it verbatim).
std::string schema_markdown();

}  // namespace rotq
