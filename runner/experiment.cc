#include "runner/experiment.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "models/files.h"
#include "runner/task_registry.h"
#include "solvers/error.h"
#include "solvers/hash.h"
#include "solvers/parse.h"

namespace rotq {
namespace {

// Keys with a closed set of values, and numeric ranges: checked for every cell.
struct Rule {
  std::vector<std::string> choices;  // empty: any
  double min = -INFINITY, max = INFINITY;
  std::vector<double> excluded = {};  // values inside [min, max] that mean nothing
  const char* meaning = "";           // how the special values read, for the error
};

const std::map<std::string, Rule>& rules() {
  static const std::map<std::string, Rule> r = {
      {"calibration.nsamples", {{}, 1, 1e6}},
      {"calibration.seqlen", {{}, 0, 1e7}},
      {"rotation.dfrot.iters", {{}, 0, 1e6}},
      {"rotation.dfrot.init", {{"hadamard", "random", "none"}}},
      {"evaluation.bos", {{"auto", "true", "false"}}},
      {"rotation.dfrot.rule", {{"quant-error", "random"}}},
      {"rotation.dfrot.threshold", {{}, 1e-12, 1e6}},
      {"rotation.dfrot.layers", {{}, 0, 1e6}},
      {"rotation.dfrot.nsamples", {{}, 1, 1e6}},
      {"rotation.dfrot.seqlen", {{}, 0, 1e7}},
      {"rotation.fp_massive", {{}, 0, 1e6}},
      {"rotation.optrot.steps", {{}, 0, 1e7}},
      {"rotation.optrot.lr", {{}, 1e-12, 1e6}},
      {"rotation.optrot.norm", {{"none", "fro4", "numel"}}},
      {"rotation.optrot.optimizer", {{"cayley", "adam"}}},
      {"quantization.w_bits", {{}, 2, 16}},
      {"quantization.w_method", {{"rtn", "gptq"}}},
      {"quantization.w_group",
       {{}, 0, 1e9, {1}, " (0: per channel; a group has 2 columns or more)"}},
      {"quantization.percdamp", {{}, 0, 1e6}},
      {"quantization.gptq_block", {{}, 1, 1e9}},
      {"quantization.hessian_dtype", {{"float64", "float32"}}},
      {"quantization.a_bits", {{}, 2, 16}},
      {"quantization.a_clip", {{}, 1e-9, 1}},
      {"quantization.kv_bits", {{}, 1, 16}},
      {"quantization.kv_clip", {{}, 1e-9, 1}},
      {"quantization.kv_group", {{}, 0, 1e9}},
      {"evaluation.seqlen", {{}, 0, 1e7}},
      {"evaluation.max_windows", {{}, -1, 1e12, {0}, " (-1: all windows)"}},
      {"evaluation.batch", {{}, 0, 1e6}},
      {"evaluation.tasks_limit", {{}, -1, 1e12, {0}, " (-1: every example)"}},
      {"evaluation.tasks_batch", {{}, 1, 1e6}},
      {"evaluation.tasks_max_length", {{}, 0, 1e7}},
      {"runtime.dtype", {{"float32", "float64", "bfloat16"}}},
      {"runtime.placement", {{"replicated", "layers"}}},
  };
  return r;
}

const std::set<std::string>& sections() {
  static const std::set<std::string> s = {"calibration",     "rotation",     "rotation.dfrot",
                                          "rotation.optrot", "quantization", "evaluation",
                                          "runtime"};
  return s;
}

const std::set<std::string>& top_level() {
  static const std::set<std::string> s = {"name", "output", "models", "seeds", "sweep"};
  return s;
}

const SchemaKey* find_key(const std::string& key) {
  for (const SchemaKey& k : experiment_schema()) {
    if (k.key == key) return &k;
  }
  return nullptr;
}

const char* type_name(KeyType t) {
  switch (t) {
    case KeyType::kInt:
      return "an integer";
    case KeyType::kDouble:
      return "a number";
    case KeyType::kBool:
      return "true or false";
    case KeyType::kString:
      return "a string";
    case KeyType::kStringList:
      return "a list of strings";
  }
  return "?";
}

std::string where(const std::string& origin, const YAML::Node& n) {
  const YAML::Mark m = n.Mark();
  return m.line >= 0 ? origin + ":" + std::to_string(m.line + 1) : origin;
}

std::string canonical_double(double v) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

std::optional<int64_t> parse_int(const std::string& s) { return parse_integer(s); }

// A scalar value of `key` as canonical text, or an error naming both.
std::string canonical_scalar(const SchemaKey& k, const std::string& text, const std::string& at) {
  const auto bad = [&]() {
    fail(at, ": ", k.key, " = '", text, "': expected ", type_name(k.type));
  };
  switch (k.type) {
    case KeyType::kInt: {
      const auto v = parse_int(text);
      if (!v) bad();
      return std::to_string(*v);
    }
    case KeyType::kDouble: {
      const auto v = parse_number(text);
      if (!v || std::isnan(*v)) bad();
      return canonical_double(*v);
    }
    case KeyType::kBool:
      if (text != "true" && text != "false") bad();
      return text;
    case KeyType::kString:
      return text;
    case KeyType::kStringList:
      return nlohmann::json::array({text}).dump();
  }
  return text;
}

// The canonical text of a YAML value for `key` (sequences only for list keys).
std::string canonical_value(const SchemaKey& k, const YAML::Node& n, const std::string& at) {
  if (k.type == KeyType::kStringList) {
    nlohmann::json list = nlohmann::json::array();
    if (n.IsSequence()) {
      for (const YAML::Node& item : n) {
        require(item.IsScalar(), at, ": ", k.key, ": expected a list of strings");
        list.push_back(item.as<std::string>());
      }
    } else {
      require(n.IsScalar(), at, ": ", k.key, ": expected a list of strings");
      list.push_back(n.as<std::string>());
    }
    require(!list.empty(), at, ": ", k.key, ": the list is empty");
    return list.dump();
  }
  require(n.IsScalar(), at, ": ", k.key, ": expected ", type_name(k.type), ", got a ",
          n.IsSequence() ? "list"
          : n.IsMap()    ? "map"
                         : "null");
  return canonical_scalar(k, n.as<std::string>(), at);
}

void check_rules(const std::string& key, const std::string& value, const std::string& at) {
  const auto it = rules().find(key);
  if (it == rules().end()) return;
  const Rule& r = it->second;
  if (!r.choices.empty()) {
    if (std::find(r.choices.begin(), r.choices.end(), value) == r.choices.end()) {
      std::string all;
      for (const std::string& c : r.choices) all += (all.empty() ? "" : ", ") + c;
      fail(at, ": ", key, " = '", value, "': expected one of ", all);
    }
    return;
  }
  const double v = *parse_number(value);
  const bool excluded = std::find(r.excluded.begin(), r.excluded.end(), v) != r.excluded.end();
  if (v >= r.min && v <= r.max && !excluded) return;
  std::string but;
  for (double e : r.excluded) but += (but.empty() ? " except " : ", ") + canonical_double(e);
  fail(at, ": ", key, " = ", value, ": expected a value in [", canonical_double(r.min), ", ",
       canonical_double(r.max), "]", but, r.meaning);
}

void check_rotation_method(const std::string& v, const std::string& at) {
  static const std::set<std::string> methods = {"none",  "random", "hadamard",
                                                "dfrot", "optrot", "optrot+"};
  require(methods.count(v) || (v.rfind("file:", 0) == 0 && v.size() > 5), at,
          ": rotation.method = '", v,
          "': expected none, random, hadamard, dfrot, optrot, optrot+ or file:PATH");
}

void check_gamma(const std::string& v, const std::string& at) {
  const auto g = parse_number(v);
  require(v == "inf" || (g && std::isfinite(*g) && *g >= 0), at, ": rotation.dfrot.gamma = '", v,
          "': expected a number >= 0 or inf");
}

void check_acts_pair(const std::string& key, const std::string& pair, const std::string& at) {
  const size_t slash = pair.find('/');
  const auto a = parse_int(pair.substr(0, slash)),
             kv = slash == std::string::npos ? std::nullopt : parse_int(pair.substr(slash + 1));
  require(a && kv && *a >= 2 && *a <= 16 && *kv >= 1 && *kv <= 16, at, ": ", key, ": '", pair,
          "': expected A/KV bit widths such as 4/16 (A in [2, 16], KV in [1, 16])");
}

// Whole-cell checks (keys that constrain each other).
void check_cell(const Cell& c, const std::string& at) {
  for (const auto& [key, value] : c.values) check_rules(key, value, at);
  check_rotation_method(c.at("rotation.method"), at);
  check_gamma(c.at("rotation.dfrot.gamma"), at);
  const std::vector<std::string> tasks = c.list("evaluation.tasks");
  require(!c.list("evaluation.ppl_texts").empty() || !tasks.empty(), at,
          ": evaluation.ppl_texts / evaluation.tasks: expected a text or a task to score");
  if (!tasks.empty()) {
    try {
      parse_task_list(tasks);
    } catch (const Error& e) {
      fail(at, ": evaluation.tasks: ", e.what());
    }
  }
  for (const char* key : {"evaluation.acts", "evaluation.tasks_acts"}) {
    for (const std::string& pair : c.list(key)) check_acts_pair(key, pair, at);
  }
  const int w = static_cast<int>(c.integer("quantization.w_bits"));
  const bool needs_calib = c.at("quantization.w_method") == "gptq" && w < 16;
  const std::string m = c.at("rotation.method");
  require(!(needs_calib || m == "dfrot" || m == "optrot+") || !c.at("calibration.text").empty(), at,
          ": calibration.text: required for ", needs_calib ? "GPTQ" : m,
          " (a text file of calibration windows)");
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
    const SchemaKey* k = find_key(key);
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
  const SchemaKey* k = find_key(key);
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

std::string cell_id(const Cell& c) {
  // The identity: what changes the result (a model's label does not). Only values that differ
  // from the schema's defaults enter, so a key added to rotq later (its default being the old
  // behaviour) leaves every existing cell's id, and its stored result, valid.
  nlohmann::json changed = nlohmann::json::object();
  for (const auto& [key, value] : c.values) {
    const SchemaKey* k = find_key(key);
    if (!k || value != k->default_value) changed[key] = value;
  }
  nlohmann::json j = {{"model", {{"path", c.model.path}, {"tokenizer", c.model.tokenizer}}},
                      {"seed", c.seed},
                      {"values", changed}};
  return hex16(fnv1a(j.dump()));
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
  require(n <= kMaxCells, origin, ": the sweep expands to ", canonical_double(n), " cells (", how,
          "), more than ", canonical_double(kMaxCells), "; split it into several experiments");
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
  require(find_key(key), "override '", ov, "': unknown key '", key,
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

void check_schema_value(const std::string& key, const std::string& text, const std::string& at) {
  const SchemaKey* k = find_key(key);
  require(k, at, ": unknown key '", key, "'");
  if (k->type == KeyType::kStringList) {
    if (key == "evaluation.acts" || key == "evaluation.tasks_acts") check_acts_pair(key, text, at);
    return;
  }
  const std::string value = canonical_scalar(*k, text, at);
  check_rules(key, value, at);
  if (key == "rotation.method") check_rotation_method(value, at);
  if (key == "rotation.dfrot.gamma") check_gamma(value, at);
}

const std::vector<SchemaKey>& experiment_schema() {
  using K = KeyType;
  static const std::vector<SchemaKey> s = {
      {"calibration.text", K::kString, "", "calibration text file (GPTQ, DFRot, OptRot+)"},
      {"calibration.nsamples", K::kInt, "128", "calibration windows"},
      {"calibration.seqlen", K::kInt, "0", "window length (0: min(2048, context))"},
      {"rotation.method", K::kString, "none",
       "none | random | hadamard | dfrot | optrot | optrot+ | file:PATH"},
      {"rotation.r2", K::kBool, "true", "per-head R2 on v/o"},
      {"rotation.online", K::kBool, "true", "online R3 (q/k) and R4 (down_proj) Hadamards"},
      {"rotation.fp_massive", K::kDouble, "0", "keep massive tokens in FP (QuaRot.FP16; 0: off)"},
      {"rotation.dfrot.gamma", K::kString, "100", "weight of the massive tokens (number or inf)"},
      {"rotation.dfrot.iters", K::kInt, "100", "alternating iterations"},
      {"rotation.dfrot.init", K::kString, "hadamard", "start: hadamard | random | none"},
      {"rotation.dfrot.rule", K::kString, "quant-error",
       "massive-token rule: quant-error | random"},
      {"rotation.dfrot.threshold", K::kDouble, "0.1328125", "quant-error rule threshold (x |x|)"},
      {"rotation.dfrot.sym", K::kBool, "false", "symmetric quantizer in the objective"},
      {"rotation.dfrot.sum", K::kBool, "false", "per-set sums instead of means"},
      {"rotation.dfrot.layers", K::kInt, "0", "tokens from the first N layers (0: all)"},
      {"rotation.dfrot.nsamples", K::kInt, "1", "DFRot calibration windows"},
      {"rotation.dfrot.seqlen", K::kInt, "0", "DFRot window (0: min(2048, context))"},
      {"rotation.optrot.steps", K::kInt, "1000", "Cayley SGD / Adam steps"},
      {"rotation.optrot.lr", K::kDouble, "0.02", "learning rate"},
      {"rotation.optrot.norm", K::kString, "numel", "per-matrix normalisation none | fro4 | numel"},
      {"rotation.optrot.optimizer", K::kString, "cayley", "cayley | adam"},
      {"rotation.optrot.constant_lr", K::kBool, "false", "no cosine decay"},
      {"rotation.optrot.matrices", K::kString, "q,k,v,o,gate,up,down", "matrices in the objective"},
      {"quantization.w_bits", K::kInt, "16", "weight bits (16: not quantized)"},
      {"quantization.w_method", K::kString, "gptq", "rtn | gptq"},
      {"quantization.w_group", K::kInt, "0", "weight group (0: per output channel)"},
      {"quantization.w_asym", K::kBool, "false", "asymmetric weights"},
      {"quantization.w_clip", K::kBool, "true", "MSE clip search"},
      {"quantization.act_order", K::kBool, "false", "GPTQ act-order"},
      {"quantization.static_groups", K::kBool, "false", "GPTQ static groups"},
      {"quantization.percdamp", K::kDouble, "0.01", "GPTQ damping"},
      {"quantization.gptq_block", K::kInt, "128", "GPTQ lazy-update block"},
      {"quantization.hessian_dtype", K::kString, "float64", "float64 | float32"},
      {"quantization.a_bits", K::kInt, "16", "activation bits (per token)"},
      {"quantization.a_clip", K::kDouble, "1", "activation clip ratio"},
      {"quantization.a_asym", K::kBool, "false", "asymmetric activations"},
      {"quantization.o_proj_per_head", K::kBool, "false", "o_proj input: one scale per head"},
      {"quantization.kv_bits", K::kInt, "16", "KV-cache bits"},
      {"quantization.kv_clip", K::kDouble, "1", "KV-cache clip ratio"},
      {"quantization.kv_group", K::kInt, "128", "KV-cache group"},
      {"evaluation.ppl_texts", K::kStringList, "", "texts to score (perplexity)"},
      {"evaluation.acts", K::kStringList, "",
       "A/KV bit pairs evaluated on the same weights, e.g. [16/16, 4/4] (empty: a_bits/kv_bits)"},
      {"evaluation.seqlen", K::kInt, "0", "perplexity window (0: min(2048, context))"},
      {"evaluation.max_windows", K::kInt, "-1", "score only the first K windows (-1: all)"},
      {"evaluation.batch", K::kInt, "0", "windows per forward (0: auto)"},
      {"evaluation.kl", K::kBool, "false", "KL divergence from the floating-point model"},
      {"evaluation.tasks", K::kStringList, "",
       "zero-shot tasks (arc_easy, ..., mmlu, mmlu_5shot; zeroshot = the papers' nine; NAME=PATH)"},
      {"evaluation.tasks_acts", K::kStringList, "",
       "A/KV pairs of evaluation.acts to score the tasks under (empty: all)"},
      {"evaluation.tasks_dir", K::kString, "", "directory of the task files"},
      {"evaluation.tasks_limit", K::kInt, "-1", "first N examples per task (MMLU: per subject)"},
      {"evaluation.tasks_batch", K::kInt, "32", "task sequences per forward"},
      {"evaluation.bos", K::kString, "auto",
       "BOS before texts, calibration and task contexts: auto (the tokenizer's own policy), true, "
       "false"},
      {"evaluation.tasks_max_length", K::kInt, "0", "task left-truncation (0: model context)"},
      {"runtime.dtype", K::kString, "float32", "compute dtype float32 | float64 | bfloat16"},
      {"runtime.device", K::kString, "cpu", "cpu | cuda | cuda:N"},
      {"runtime.placement", K::kString, "replicated", "replicated | layers"},
      {"runtime.save_rotations", K::kBool, "false", "store R1 (C x C float64) with the cell"},
  };
  return s;
}

const std::string& Cell::at(const std::string& key) const {
  const auto it = values.find(key);
  require(it != values.end(), "cell ", id, ": no value for '", key, "'");
  return it->second;
}
int64_t Cell::integer(const std::string& key) const { return *parse_int(at(key)); }
double Cell::number(const std::string& key) const { return *parse_number(at(key)); }
bool Cell::flag(const std::string& key) const { return at(key) == "true"; }
std::vector<std::string> Cell::list(const std::string& key) const {
  const std::string& v = at(key);
  if (v.empty()) return {};
  return nlohmann::json::parse(v).get<std::vector<std::string>>();
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
  std::map<std::string, std::string> base;
  for (const SchemaKey& k : experiment_schema()) base[k.key] = k.default_value;
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

std::string schema_markdown() {
  std::ostringstream s;
  s << "| key | type | default | meaning |\n|---|---|---|---|\n";
  for (const SchemaKey& k : experiment_schema()) {
    std::string help;  // a '|' inside a cell is escaped in markdown tables
    for (char c : k.help) help += c == '|' ? std::string("\\|") : std::string(1, c);
    s << "| `" << k.key << "` | " << type_name(k.type) << " | `" << k.default_value << "` | "
      << help << " |\n";
  }
  return s.str();
}

}  // namespace rotq
