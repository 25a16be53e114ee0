#include "runner/record/experiment.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "models/base/files.h"
#include "solvers/error.h"
#include "solvers/hash.h"
#include "solvers/parse.h"

namespace rotq {
namespace {

// The maps an experiment file may nest keys in: every prefix of a key of the option table
// ("rotation", "rotation.dfrot", ...), so a method's options are a section as soon as they exist.
const std::set<std::string>& sections() {
  static const std::set<std::string> s = [] {
    std::set<std::string> out;
    for (const CellOption& o : cell_options()) {
      for (size_t dot = o.key.find('.'); dot != std::string::npos; dot = o.key.find('.', dot + 1)) {
        out.insert(o.key.substr(0, dot));
      }
    }
    return out;
  }();
  return s;
}

const std::set<std::string>& top_level() {
  static const std::set<std::string> s = {"name", "output", "models", "seeds", "sweep"};
  return s;
}

std::string where(const std::string& origin, const YAML::Node& n) {
  const YAML::Mark m = n.Mark();
  return m.line >= 0 ? origin + ":" + std::to_string(m.line + 1) : origin;
}

std::optional<int64_t> parse_int(const std::string& s) { return parse_integer(s); }

// The canonical text of a YAML value for `key` (sequences only for list keys), checked by its row.
std::string canonical_value(const CellOption& k, const YAML::Node& n, const std::string& at) {
  if (k.type == KeyType::kStringList) {
    std::vector<std::string> items;
    if (n.IsSequence()) {
      for (const YAML::Node& item : n) {
        require(item.IsScalar(), at, ": ", k.key, ": expected a list of strings");
        items.push_back(item.as<std::string>());
      }
    } else {
      require(n.IsScalar(), at, ": ", k.key, ": expected a list of strings");
      items.push_back(n.as<std::string>());
    }
    require(!items.empty(), at, ": ", k.key, ": the list is empty");
    return canonical_option_list(k, items, at);
  }
  require(n.IsScalar(), at, ": ", k.key, ": expected ", key_type_name(k.type), ", got a ",
          n.IsSequence() ? "list"
          : n.IsMap()    ? "map"
                         : "null");
  return canonical_option_value(k, n.as<std::string>(), at);
}

// Whole-cell checks: the rules between options (cell_config), and that a cell evaluates something.
void check_cell(const Cell& c, const std::string& at) {
  require(!c.list("evaluation.ppl_texts").empty() || !c.list("evaluation.tasks").empty(), at,
          ": evaluation.ppl_texts / evaluation.tasks: expected a text or a task to score");
  try {
    cell_config(c.values, c.seed);
  } catch (const Error& e) {
    fail(at, ": ", e.what());
  }
}

// Walks a section map, setting `values` (schema key -> canonical) and rejecting unknown keys.
void read_section(const YAML::Node& node, const std::string& prefix, const std::string& origin,
                  std::map<std::string, std::string>& values) {
  require(node.IsMap(), where(origin, node), ": ", prefix, ": expected a map of settings");
  for (const auto& kv : node) {
    const std::string name = kv.first.as<std::string>();
    const std::string key = prefix + "." + name;
    if (sections().count(key)) {
      read_section(kv.second, key, origin, values);
      continue;
    }
    const CellOption* k = find_cell_option(key);
    require(k, where(origin, kv.first), ": unknown key '", key,
            "' (rotq run --schema lists the keys)");
    values[key] = canonical_value(*k, kv.second, where(origin, kv.second));
  }
}

std::vector<ModelEntry> read_models(const YAML::Node& n, const std::string& origin) {
  require(n && n.IsSequence() && n.size() > 0, where(origin, n),
          ": models: expected a list of models (a path, or {name, path, tokenizer})");
  std::vector<ModelEntry> out;
  std::set<std::string> names;
  for (const YAML::Node& m : n) {
    ModelEntry e;
    if (m.IsScalar()) {
      e.path = m.as<std::string>();
    } else {
      require(m.IsMap(), where(origin, m), ": models: expected a path or {name, path, tokenizer}");
      for (const auto& kv : m) {
        const std::string k = kv.first.as<std::string>();
        require(k == "name" || k == "path" || k == "tokenizer", where(origin, kv.first),
                ": unknown key 'models[].", k, "' (expected name, path, tokenizer)");
        require(kv.second.IsScalar(), where(origin, kv.second), ": models[].", k,
                ": expected a string");
        (k == "name" ? e.name : k == "path" ? e.path : e.tokenizer) = kv.second.as<std::string>();
      }
    }
    require(!e.path.empty(), where(origin, m), ": models[]: a model needs a path");
    if (e.name.empty()) e.name = e.path.substr(e.path.find_last_of('/') + 1);
    require(names.insert(e.name).second, where(origin, m), ": models: the name '", e.name,
            "' is used twice");
    out.push_back(e);
  }
  return out;
}

std::vector<uint64_t> read_seeds(const YAML::Node& n, const std::string& origin) {
  if (!n) return {0};
  const YAML::Node list =
      n.IsScalar() ? YAML::Node(std::vector<std::string>{n.as<std::string>()}) : n;
  require(list.IsSequence() && list.size() > 0, where(origin, n),
          ": seeds: expected a non-empty list of integers >= 0");
  std::vector<uint64_t> out;
  for (const YAML::Node& s : list) {
    const auto v = s.IsScalar() ? parse_int(s.as<std::string>()) : std::nullopt;
    require(v && *v >= 0, where(origin, s), ": seeds: '", s.IsScalar() ? s.as<std::string>() : "?",
            "': expected an integer >= 0");
    out.push_back(static_cast<uint64_t>(*v));
  }
  return out;
}

// One axis of the grid: a list of assignments (key -> canonical value), one per point.
using Axis = std::vector<std::vector<std::pair<std::string, std::string>>>;

Axis sweep_list(const std::string& key, const YAML::Node& list, const std::string& origin) {
  const CellOption* k = find_cell_option(key);
  require(k, where(origin, list), ": sweep: unknown key '", key, "'");
  require(list.IsSequence(), where(origin, list), ": sweep.", key,
          ": expected a list of values to sweep");
  require(list.size() > 0, where(origin, list), ": sweep.", key, ": the list is empty");
  Axis axis;
  for (const YAML::Node& v : list) {
    axis.push_back({{key, canonical_value(*k, v, where(origin, v))}});
  }
  return axis;
}

std::vector<Axis> read_sweep(const YAML::Node& n, const std::string& origin,
                             std::vector<std::string>& varied) {
  std::vector<Axis> axes;
  if (!n) return axes;
  require(n.IsMap(), where(origin, n), ": sweep: expected a map of key: [values] (and zip:)");
  require(n.size() > 0, where(origin, n), ": sweep: empty (remove it or list values to sweep)");
  for (const auto& kv : n) {
    const std::string key = kv.first.as<std::string>();
    if (key != "zip") {
      axes.push_back(sweep_list(key, kv.second, origin));
      varied.push_back(key);
      continue;
    }
    require(kv.second.IsSequence(), where(origin, kv.second),
            ": sweep.zip: expected a list of groups {key: [values], ...}");
    for (const YAML::Node& group : kv.second) {
      require(group.IsMap() && group.size() > 0, where(origin, group),
              ": sweep.zip: a group must map keys to equally long lists");
      Axis zipped;
      for (const auto& gk : group) {
        const std::string key2 = gk.first.as<std::string>();
        const Axis one = sweep_list(key2, gk.second, origin);
        if (zipped.empty()) {
          zipped = one;
        } else {
          require(one.size() == zipped.size(), where(origin, gk.second), ": sweep.zip: ", key2,
                  " has ", one.size(), " values, the group's first list has ", zipped.size());
          for (size_t i = 0; i < one.size(); ++i) zipped[i].push_back(one[i][0]);
        }
        varied.push_back(key2);
      }
      axes.push_back(zipped);
    }
  }
  return axes;
}

// The document's shape rules that yaml-cpp does not enforce: map keys are plain scalars, each
// given once (yaml-cpp keeps both of two equal keys and a lookup silently takes one), and no merge
// keys ("<<", which yaml-cpp 0.7 does not expand). `path` names the map in errors.
void check_yaml_tree(const YAML::Node& n, const std::string& origin, const std::string& path) {
  if (n.IsSequence()) {
    for (size_t i = 0; i < n.size(); ++i) {
      check_yaml_tree(n[i], origin, path + "[" + std::to_string(i) + "]");
    }
    return;
  }
  if (!n.IsMap()) return;
  std::map<std::string, int> seen;  // key -> its line
  for (const auto& kv : n) {
    require(kv.first.IsScalar(), where(origin, kv.first), ": ", path.empty() ? "a key" : path,
            ": a key must be a plain name, not a list or a map");
    const std::string key = kv.first.as<std::string>();
    const std::string dotted = path.empty() ? key : path + "." + key;
    require(key != "<<", where(origin, kv.first), ": ", dotted,
            ": merge keys (<<) are not supported; write the settings out");
    const auto [it, fresh] = seen.emplace(key, kv.first.Mark().line + 1);
    require(fresh, where(origin, kv.first), ": duplicate key '", dotted, "' (first set at line ",
            it->second, "); give each key once");
    check_yaml_tree(kv.second, origin, dotted);
  }
}

// The number of cells a grid expands to, refused above kMaxCells before anything is allocated.
constexpr double kMaxCells = 100000;
void check_grid_size(size_t models, size_t seeds, const std::vector<Axis>& axes,
                     const std::string& origin) {
  double n = static_cast<double>(models) * static_cast<double>(seeds);
  std::string how = std::to_string(models) + " model(s) x " + std::to_string(seeds) + " seed(s)";
  for (const Axis& a : axes) {
    n *= static_cast<double>(a.size());
    how += " x " + std::to_string(a.size());
  }
  require(n <= kMaxCells, origin, ": the sweep expands to ", canonical_number(n), " cells (", how,
          "), more than ", canonical_number(kMaxCells), "; split it into several experiments");
}

void apply_override(const std::string& ov, YAML::Node& root, const std::string& origin) {
  const size_t eq = ov.find('=');
  require(eq != std::string::npos && eq > 0, "override '", ov,
          "': expected key.sub=value (e.g. quantization.w_bits=3)");
  const std::string key = ov.substr(0, eq), text = ov.substr(eq + 1);
  YAML::Node value;
  try {
    value = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    fail("override '", ov, "': the value is not valid YAML (", e.msg, ")");
  }
  check_yaml_tree(value, "override '" + ov + "'", key);
  if (top_level().count(key)) {
    root[key] = value;
    return;
  }
  require(find_cell_option(key), "override '", ov, "': unknown key '", key,
          "' (rotq run --schema lists the keys)");
  // Walk/create the nested maps of the dotted key.
  std::vector<std::string> parts;
  std::stringstream ss(key);
  for (std::string p; std::getline(ss, p, '.');) parts.push_back(p);
  std::vector<YAML::Node> chain = {root};
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    YAML::Node next = chain.back()[parts[i]];
    if (!next.IsMap()) {
      chain.back()[parts[i]] = YAML::Node(YAML::NodeType::Map);
      next = chain.back()[parts[i]];
    }
    chain.push_back(next);
  }
  chain.back()[parts.back()] = value;
  (void)origin;
}

}  // namespace

std::string cell_id(const Cell& c) {
  // The identity: what changes the result (a model's label does not). Only values that differ
  // from the schema's defaults enter, so a key added to rotq later (its default being the old
  // behaviour) leaves every existing cell's id, and its stored result, valid.
  nlohmann::json changed = nlohmann::json::object();
  for (const auto& [key, value] : c.values) {
    const CellOption* k = find_cell_option(key);
    if (!k || value != k->default_value) changed[key] = value;
  }
  nlohmann::json j = {{"model", {{"path", c.model.path}, {"tokenizer", c.model.tokenizer}}},
                      {"seed", c.seed},
                      {"values", changed}};
  return hex16(fnv1a(j.dump()));
}

const std::string& Cell::at(const std::string& key) const {
  const auto it = values.find(key);
  require(it != values.end(), "cell ", id, ": no value for '", key, "'");
  return it->second;
}
int64_t Cell::integer(const std::string& key) const { return OptionValue(at(key)).integer(); }
double Cell::number(const std::string& key) const { return OptionValue(at(key)).number(); }
bool Cell::flag(const std::string& key) const { return OptionValue(at(key)).flag(); }
std::vector<std::string> Cell::list(const std::string& key) const {
  return OptionValue(at(key)).list();
}

std::string Cell::label() const {
  std::string s = model.name;
  for (const std::string& k : varied) s += " " + k + "=" + at(k);
  return s + " seed=" + std::to_string(seed);
}

std::string Cell::resolved_yaml() const {
  YAML::Emitter out;
  out << YAML::BeginMap;
  out << YAML::Key << "model" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "name" << YAML::Value << model.name;
  out << YAML::Key << "path" << YAML::Value << model.path;
  out << YAML::Key << "tokenizer" << YAML::Value << model.tokenizer << YAML::EndMap;
  out << YAML::Key << "seed" << YAML::Value << seed;
  for (const auto& [k, v] : values) out << YAML::Key << k << YAML::Value << v;
  out << YAML::EndMap;
  return out.c_str();
}

Experiment parse_experiment(const std::string& yaml_text, const std::string& origin,
                            const std::vector<std::string>& overrides) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    fail(origin, ":", e.mark.line + 1, ": not valid YAML: ", e.msg);
  }
  require(root.IsMap(), origin, ": expected a map of settings (name, output, models, ...)");
  check_yaml_tree(root, origin, "");
  for (const std::string& ov : overrides) apply_override(ov, root, origin);

  Experiment exp;
  exp.path = origin;
  CellValues base = default_cell_values();
  for (const auto& kv : root) {
    const std::string key = kv.first.as<std::string>();
    if (top_level().count(key)) continue;
    require(sections().count(key), where(origin, kv.first), ": unknown key '", key,
            "' (expected name, output, models, seeds, sweep, calibration, rotation, quantization,",
            " evaluation, runtime)");
    read_section(kv.second, key, origin, base);
  }
  require(root["output"] && root["output"].IsScalar() && !root["output"].as<std::string>().empty(),
          origin, ": output: expected the results file (e.g. results/quickstart.h5)");
  exp.output = root["output"].as<std::string>();
  if (root["name"] && !root["name"].IsScalar()) {
    fail(where(origin, root["name"]), ": name: expected a string");
  }
  exp.name = root["name"] ? root["name"].as<std::string>() : origin;
  require(root["models"].IsDefined(), origin, ": models: missing (expected a list of model paths)");
  const std::vector<ModelEntry> models = read_models(root["models"], origin);
  const std::vector<uint64_t> seeds = read_seeds(root["seeds"], origin);
  std::vector<std::string> varied;
  const std::vector<Axis> axes = read_sweep(root["sweep"], origin, varied);
  check_grid_size(models.size(), seeds.size(), axes, origin);

  std::set<std::string> ids;
  for (const ModelEntry& m : models) {
    std::vector<size_t> index(axes.size(), 0);
    for (;;) {
      for (uint64_t seed : seeds) {
        Cell c;
        c.model = m;
        c.seed = seed;
        c.values = base;
        c.varied = varied;
        for (size_t a = 0; a < axes.size(); ++a) {
          for (const auto& [k, v] : axes[a][index[a]]) c.values[k] = v;
        }
        c.id = cell_id(c);
        check_cell(c, origin + " cell '" + c.label() + "'");
        require(ids.insert(c.id).second, origin, ": duplicate cells: '", c.label(),
                "' appears twice (a sweep list repeats a value?)");
        exp.cells.push_back(c);
      }
      // Next grid point (the last axis fastest).
      size_t a = axes.size();
      while (a > 0 && ++index[a - 1] == axes[a - 1].size()) index[--a] = 0;
      if (a == 0) break;
    }
  }
  return exp;
}

Experiment load_experiment(const std::string& path, const std::vector<std::string>& overrides) {
  std::string text;
  try {
    text = read_file_bytes(path);
  } catch (const Error& e) {
    fail("experiment file ", e.what());
  }
  return parse_experiment(text, path, overrides);
}

std::vector<Cell> select_cells(const std::vector<Cell>& cells, const std::string& selector) {
  if (selector.empty()) return cells;
  std::vector<std::string> terms;
  std::stringstream ss(selector);
  for (std::string t; std::getline(ss, t, ',');) {
    if (!t.empty()) terms.push_back(t);
  }
  std::vector<Cell> out;
  for (const Cell& c : cells) {
    for (const std::string& t : terms) {
      if (c.id.rfind(t, 0) == 0 || c.label().find(t) != std::string::npos) {
        out.push_back(c);
        break;
      }
    }
  }
  require(!out.empty(), "--cells '", selector, "': matches no cell (ids or labels)");
  return out;
}

}  // namespace rotq
