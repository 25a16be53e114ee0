// Experiment files: schema validation (malformed files each rejected with one line naming the
// problem), sweep/zip/seed/model expansion, stable cell ids, overrides.
#include "runner/record/experiment.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iterator>
#include <set>
#include <string>

#include "solvers/error.h"
#include "tests/test_util.h"

namespace {

using rotq::Cell;
using rotq::Experiment;
using rotq::parse_experiment;

const std::string kHead = R"(
output: /tmp/x.h5
models: [data/stories260K/stories260K.bin]
evaluation:
  ppl_texts: [data/tinystories_sample.txt]
)";

struct Malformed {
  const char* name;
  std::string yaml;
  const char* expect;  // a substring of the one-line error
};

std::string with(const std::string& extra) { return kHead + extra; }

std::vector<Malformed> malformed() {
  return {
      {"not_yaml", "output: [unclosed\n", "not valid YAML"},
      {"not_a_map", "- a\n- b\n", "expected a map"},
      {"unknown_top_key", with("colour: red\n"), "unknown key 'colour'"},
      {"unknown_nested_key", with("quantization:\n  w_bitz: 4\n"), "quantization.w_bitz"},
      {"unknown_deep_key", with("rotation:\n  dfrot:\n    gama: 3\n"), "rotation.dfrot.gama"},
      {"missing_output", "models: [m]\nevaluation:\n  ppl_texts: [t]\n", "output"},
      {"missing_models", "output: o.h5\nevaluation:\n  ppl_texts: [t]\n", "models: missing"},
      {"empty_models", "output: o.h5\nmodels: []\nevaluation:\n  ppl_texts: [t]\n", "models"},
      {"model_without_path", "output: o.h5\nmodels: [{name: a}]\nevaluation:\n  ppl_texts: [t]\n",
       "needs a path"},
      {"model_unknown_key",
       "output: o.h5\nmodels: [{path: a, size: 7}]\nevaluation:\n  ppl_texts: [t]\n",
       "models[].size"},
      {"duplicate_model_names",
       "output: o.h5\nmodels: [{name: a, path: x}, {name: a, path: y}]\nevaluation:\n"
       "  ppl_texts: [t]\n",
       "used twice"},
      {"no_ppl_texts", "output: o.h5\nmodels: [m]\n", "evaluation.ppl_texts"},
      {"unknown_task", "output: o.h5\nmodels: [m]\nevaluation:\n  tasks: [piqa, sciq]\n",
       "task 'sciq'"},
      {"task_twice", "output: o.h5\nmodels: [m]\nevaluation:\n  tasks: [zeroshot, piqa]\n",
       "listed twice"},
      {"zero_task_batch",
       "output: o.h5\nmodels: [m]\nevaluation:\n  tasks: [piqa]\n  tasks_batch: 0\n",
       "evaluation.tasks_batch = 0"},
      {"bad_task_limit",
       "output: o.h5\nmodels: [m]\nevaluation:\n  tasks: [piqa]\n  tasks_limit: -2\n",
       "evaluation.tasks_limit"},
      {"int_as_string", with("quantization:\n  w_bits: four\n"), "expected an integer"},
      {"float_for_int", with("quantization:\n  w_bits: 4.5\n"), "expected an integer"},
      {"bool_as_word", with("rotation:\n  r2: maybe\n"), "expected true or false"},
      {"number_not_number", with("quantization:\n  a_clip: high\n"), "expected a number"},
      {"list_for_scalar", with("quantization:\n  w_bits: [4]\n"), "got a list"},
      {"impossible_w_bits", with("quantization:\n  w_bits: 1\n"), "quantization.w_bits = 1"},
      {"too_many_bits", with("quantization:\n  a_bits: 17\n"), "quantization.a_bits = 17"},
      {"clip_above_one", with("quantization:\n  kv_clip: 1.5\n"), "quantization.kv_clip"},
      {"bad_method", with("rotation:\n  method: spin\n"), "rotation.method = 'spin'"},
      {"bad_choice", with("quantization:\n  w_method: awq\n"), "expected one of rtn, gptq"},
      {"bad_gamma", with("rotation:\n  dfrot:\n    gamma: -1\n"), "rotation.dfrot.gamma"},
      {"bad_acts_pair", "output: o.h5\nmodels: [m]\nevaluation:\n  ppl_texts: [t]\n  acts: [4x4]\n",
       "evaluation.acts"},
      {"gptq_without_calibration", with("quantization:\n  w_bits: 4\n  w_method: gptq\n"),
       "calibration.text"},
      {"empty_sweep", with("sweep: {}\n"), "sweep: empty"},
      {"empty_sweep_list", with("sweep:\n  rotation.method: []\n"), "the list is empty"},
      {"sweep_not_list", with("sweep:\n  rotation.method: hadamard\n"), "expected a list"},
      {"sweep_unknown_key", with("sweep:\n  rotation.angle: [1, 2]\n"), "unknown key"},
      {"sweep_bad_value", with("sweep:\n  quantization.w_bits: [4, 0]\n"), "quantization.w_bits"},
      {"zip_unequal",
       with("sweep:\n  zip:\n    - quantization.a_bits: [4, 8]\n"
            "      quantization.kv_bits: [4]\n"),
       "has 1 values"},
      {"duplicate_cells", with("sweep:\n  rotation.method: [hadamard, hadamard]\n"),
       "duplicate cells"},
      {"negative_seed", with("seeds: [-1]\n"), "seeds"},
      {"seed_not_int", with("seeds: [a]\n"), "seeds"},
      // Duplicate keys: yaml-cpp keeps both and a lookup silently takes one.
      {"duplicate_scalar_key", with("quantization:\n  w_bits: 4\n  w_bits: 8\n"),
       "duplicate key 'quantization.w_bits' (first set at line 7)"},
      {"duplicate_section", with("quantization:\n  w_bits: 4\nquantization:\n  a_bits: 4\n"),
       "duplicate key 'quantization'"},
      {"duplicate_output", with("output: /tmp/y.h5\n"), "duplicate key 'output'"},
      {"duplicate_models", with("models: [other.bin]\n"), "duplicate key 'models'"},
      {"duplicate_in_model_entry", "output: o.h5\nmodels: [{path: a, path: b}]\n",
       "duplicate key 'models[0].path'"},
      {"duplicate_in_zip_group",
       with("sweep:\n  zip:\n    - quantization.a_bits: [4]\n      quantization.a_bits: [8]\n"),
       "duplicate key 'sweep.zip[0].quantization.a_bits'"},
      {"merge_key", with("base: &b {w_bits: 4}\nquantization:\n  <<: *b\n"),
       "merge keys (<<) are not supported"},
      {"top_level_merge_key", with("<<: {name: x}\n"), "merge keys (<<)"},
      {"complex_key", with("? [a, b]\n: 1\n"), "a key must be a plain name"},
      {"name_is_a_map", with("name: {a: 1}\n"), "name: expected a string"},
      // Values the command line refuses too (one rule for both).
      {"zero_max_windows",
       "output: o.h5\nmodels: [m]\nevaluation:\n  ppl_texts: [t]\n  max_windows: 0\n",
       "evaluation.max_windows = 0: expected a value in [-1, 1e+12] except 0 (-1: all windows)"},
      {"zero_tasks_limit",
       "output: o.h5\nmodels: [m]\nevaluation:\n  tasks: [piqa]\n"
       "  tasks_limit: 0\n",
       "evaluation.tasks_limit = 0"},
      {"group_of_one", with("quantization:\n  w_group: 1\n"), "quantization.w_group = 1"},
      {"negative_seqlen", with("calibration:\n  seqlen: -5\n"), "calibration.seqlen = -5"},
      // A sweep too large to expand is refused with its size, before anything is allocated.
      {"huge_sweep",
       with("seeds: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]\nsweep:\n"
            "  quantization.percdamp: [0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.1]\n"
            "  quantization.gptq_block: [16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192]\n"
            "  rotation.optrot.steps: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n"
            "  rotation.dfrot.iters: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n"
            "  calibration.nsamples: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n"),
       "expands to 1e+06 cells (1 model(s) x 10 seed(s) x 10 x 10 x 10 x 10 x 10)"},
  };
}

void PrintTo(const Malformed& m, std::ostream* os) { *os << m.name; }

class ExperimentMalformed : public ::testing::TestWithParam<Malformed> {};

TEST_P(ExperimentMalformed, RejectedWithOneLineNamingTheProblem) {
  const Malformed& m = GetParam();
  try {
    parse_experiment(m.yaml, "exp.yaml");
    FAIL() << m.name << " was accepted";
  } catch (const rotq::Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(m.expect), std::string::npos) << m.name << ": " << what;
    EXPECT_EQ(what.find('\n'), std::string::npos) << m.name << ": " << what;
    EXPECT_EQ(what.rfind("exp.yaml", 0), 0u) << m.name << ": errors name the file: " << what;
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, ExperimentMalformed, ::testing::ValuesIn(malformed()),
                         [](const auto& info) { return std::string(info.param.name); });

const std::string kSweep = R"(
name: grid
output: out.h5
models:
  - {name: a, path: model_a.bin, tokenizer: tok.bin}
  - {name: b, path: model_b}
seeds: [0, 1]
calibration: {text: calib.txt}
quantization: {w_bits: 4, w_method: gptq}
evaluation: {ppl_texts: [t.txt]}
sweep:
  rotation.method: [none, hadamard, dfrot]
  zip:
    - quantization.a_bits: [16, 4, 4]
      quantization.kv_bits: [16, 16, 4]
)";

TEST(Experiment, SweepZipSeedsAndModelsExpandIntoAGrid) {
  const Experiment e = parse_experiment(kSweep, "grid.yaml");
  ASSERT_EQ(e.cells.size(), 2u * 3 * 3 * 2);  // models × methods × zip × seeds
  EXPECT_EQ(e.name, "grid");
  std::set<std::string> ids, combos;
  for (const Cell& c : e.cells) {
    ids.insert(c.id);
    EXPECT_EQ(c.id.size(), 16u);
    combos.insert(c.at("quantization.a_bits") + "/" + c.at("quantization.kv_bits"));
    EXPECT_EQ(c.at("quantization.w_bits"), "4");     // base value
    EXPECT_EQ(c.at("rotation.dfrot.iters"), "100");  // schema default
  }
  EXPECT_EQ(ids.size(), e.cells.size());
  // Zipped keys vary together: 16/16, 16/4 never appears.
  EXPECT_EQ(combos, (std::set<std::string>{"16/16", "4/16", "4/4"}));
  EXPECT_EQ(e.cells[0].model.tokenizer, "tok.bin");
  EXPECT_EQ(e.cells[0].label(),
            "a rotation.method=none quantization.a_bits=16 quantization.kv_bits=16 seed=0");
}

TEST(Experiment, CellIdsAreStableAndDependOnlyOnTheResolvedConfig) {
  const Experiment a = parse_experiment(kSweep, "grid.yaml");
  // The same experiment written differently: keys reordered, defaults spelt out, 4.0 for 4.
  const std::string reordered = R"(
sweep:
  zip:
    - quantization.kv_bits: [16, 16, 4]
      quantization.a_bits: [16, 4, 4]
  rotation.method: [none, hadamard, dfrot]
evaluation: {ppl_texts: [t.txt]}
quantization: {w_method: gptq, w_bits: 4, a_clip: 1.0}
rotation: {dfrot: {iters: 100}}
calibration: {text: calib.txt}
seeds: [1, 0]
models:
  - {name: b, path: model_b}
  - {name: renamed, path: model_a.bin, tokenizer: tok.bin}
output: elsewhere.h5
)";
  const Experiment b = parse_experiment(reordered, "other.yaml");
  std::set<std::string> ia, ib;
  for (const Cell& c : a.cells) ia.insert(c.id);
  for (const Cell& c : b.cells) ib.insert(c.id);
  EXPECT_EQ(ia, ib);
  // An override changes exactly the cells' ids it touches (here: all of them).
  const Experiment c = parse_experiment(kSweep, "grid.yaml", {"quantization.w_bits=3"});
  for (const Cell& cell : c.cells) {
    EXPECT_EQ(cell.at("quantization.w_bits"), "3");
    EXPECT_EQ(ia.count(cell.id), 0u);
  }
  // Overrides of the seeds and of a nested key that the file does not set.
  const Experiment d =
      parse_experiment(kSweep, "grid.yaml", {"seeds=[5]", "rotation.optrot.lr=0.5"});
  ASSERT_EQ(d.cells.size(), 2u * 3 * 3);
  EXPECT_EQ(d.cells[0].seed, 5u);
  EXPECT_EQ(d.cells[0].at("rotation.optrot.lr"), "0.5");
  // A value set to its default is the same cell as one left unset.
  const Experiment same = parse_experiment(kSweep, "grid.yaml", {"rotation.optrot.lr=0.02"});
  EXPECT_EQ(same.cells[0].id, a.cells[0].id);
  EXPECT_THROW(parse_experiment(kSweep, "grid.yaml", {"quantization.w_bitz=3"}), rotq::Error);
  EXPECT_THROW(parse_experiment(kSweep, "grid.yaml", {"noequals"}), rotq::Error);
}

TEST(Experiment, SelectCellsByIdPrefixOrLabel) {
  const Experiment e = parse_experiment(kSweep, "grid.yaml");
  EXPECT_EQ(rotq::select_cells(e.cells, "").size(), e.cells.size());
  EXPECT_EQ(rotq::select_cells(e.cells, "rotation.method=dfrot").size(), 12u);
  EXPECT_EQ(rotq::select_cells(e.cells, e.cells[3].id.substr(0, 8)).size(), 1u);
  EXPECT_EQ(rotq::select_cells(e.cells, "method=none,method=dfrot").size(), 24u);
  EXPECT_THROW(rotq::select_cells(e.cells, "method=spin"), rotq::Error);
}

// experiments/README.md holds the table exactly as `rotq run --schema` prints it.
TEST(Experiment, SchemaIsDocumentedVerbatim) {
  std::ifstream in(std::string(ROTQ_SOURCE_DIR) + "/experiments/README.md");
  ASSERT_TRUE(in.good());
  const std::string readme((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(readme.find(rotq::schema_markdown()), std::string::npos)
      << "experiments/README.md: replace the key table with `rotq run --schema`";
}

// A learned rotation trains for the lowest-bit evaluated configuration unless told; weights are
// simulated when they will be RTN, or when nothing else would be quantized.
TEST(Experiment, LearnedRotationsTrainForTheLowestEvaluatedPair) {
  rotq::CellValues v = rotq::default_cell_values();
  v["rotation.method"] = "spinquant";
  v["calibration.text"] = "calib.txt";
  v["quantization.w_bits"] = "4";
  v["evaluation.acts"] = R"(["16/16","4/16","4/4"])";
  rotq::CellConfig c = rotq::cell_config(v, 0);
  EXPECT_EQ(c.quant.rotation.learn_acts.act.bits, 4);
  EXPECT_EQ(c.quant.rotation.learn_acts.k_cache.bits, 4);
  EXPECT_FALSE(c.quant.rotation.learn_weights.enabled());  // GPTQ follows
  v["rotation.spinquant.acts"] = "16/16";
  c = rotq::cell_config(v, 0);
  EXPECT_FALSE(c.quant.rotation.learn_acts.any());
  EXPECT_EQ(c.quant.rotation.learn_weights.bits, 4);  // a weight-only target
  v["rotation.spinquant.acts"] = "8/16";
  v["quantization.w_method"] = "rtn";
  c = rotq::cell_config(v, 0);
  EXPECT_EQ(c.quant.rotation.learn_acts.act.bits, 8);
  EXPECT_FALSE(c.quant.rotation.learn_acts.k_cache.enabled());
  EXPECT_EQ(c.quant.rotation.learn_weights.bits, 4);
  v["rotation.spinquant.acts"] = "4";
  EXPECT_THROW(
      rotq::canonical_option_value(*rotq::find_cell_option("rotation.spinquant.acts"), "4", "t"),
      rotq::Error);
}

// One row per option: keys and flags unique, every row documented and landing somewhere, every
// default accepted by its own row.
TEST(Experiment, OptionTableIsWellFormed) {
  std::set<std::string> keys, flags;
  for (const rotq::CellOption& o : rotq::cell_options()) {
    EXPECT_TRUE(keys.insert(o.key).second) << o.key;
    for (const rotq::CellFlag& f : o.flags) EXPECT_TRUE(flags.insert(f.name).second) << f.name;
    EXPECT_FALSE(o.help.empty()) << o.key;
    const bool expanded = o.key == "evaluation.acts" || o.key == "evaluation.tasks_acts" ||
                          o.key == "rotation.spinquant.acts" || o.key == "rotation.ostquant.acts";
    EXPECT_TRUE(o.apply != nullptr || expanded) << o.key << " lands nowhere";
    if (o.type != rotq::KeyType::kStringList) {
      EXPECT_EQ(rotq::canonical_option_value(o, o.default_value, "t"), o.default_value) << o.key;
    }
  }
  // The defaults give a valid configuration.
  const rotq::CellConfig c = rotq::cell_config(rotq::default_cell_values(), 0);
  EXPECT_EQ(c.quant.acts.size(), 1u);
  EXPECT_EQ(c.quant.weights.gptq.percdamp, 0.01);
}

// A YAML cell and the equivalent quantize-eval flags give the same values and typed config.
TEST(Experiment, YamlCellAndFlagsGiveTheSameConfig) {
  const Experiment e = parse_experiment(R"(
output: /tmp/x.h5
models: [data/stories260K/stories260K.bin]
calibration: {text: data/tinystories_sample.txt, nsamples: 16, batch: 2}
rotation: {method: dfrot, r2: false, dfrot: {gamma: inf, iters: 3, sym: true}}
quantization: {w_bits: 4, w_group: 32, w_clip: false, percdamp: 0.05, a_bits: 8, kv_bits: 4}
evaluation: {acts: [16/16, 4/4], tasks_acts: [4/4], tasks: [arc_easy], tasks_dir: data/tasks,
             bos: "false", kl: true, ppl_texts: [data/tinystories_sample.txt]}
runtime: {placement: layers, dtype: float64}
)",
                                        "t.yaml");
  ASSERT_EQ(e.cells.size(), 1u);
  rotq::CellValues flags;
  CLI::App app;
  rotq::add_cell_flags(&app, flags);
  std::vector<std::string> args = {"--calib",
                                   "data/tinystories_sample.txt",
                                   "--nsamples",
                                   "16",
                                   "--calib-batch",
                                   "2",
                                   "--rotation",
                                   "dfrot",
                                   "--no-r2",
                                   "--dfrot-gamma",
                                   "inf",
                                   "--dfrot-iters",
                                   "3",
                                   "--dfrot-sym",
                                   "--w-bits",
                                   "4",
                                   "--w-group",
                                   "32",
                                   "--no-w-clip",
                                   "--percdamp",
                                   "0.050",
                                   "--a-bits",
                                   "8",
                                   "--kv-bits",
                                   "4",
                                   "--acts",
                                   "16/16",
                                   "--acts",
                                   "4/4",
                                   "--tasks-acts",
                                   "4/4",
                                   "--tasks",
                                   "arc_easy",
                                   "--tasks-dir",
                                   "data/tasks",
                                   "--no-bos",
                                   "--kl",
                                   "--placement",
                                   "layers",
                                   "--dtype",
                                   "float64",
                                   "--ppl-text",
                                   "data/tinystories_sample.txt"};
  std::reverse(args.begin(), args.end());  // CLI11 takes them last-first
  app.parse(args);
  EXPECT_EQ(flags, e.cells[0].values);
  const rotq::CellConfig a = rotq::cell_config(e.cells[0].values, 0),
                         b = rotq::cell_config(flags, 0);
  EXPECT_EQ(a.quant.rotation.describe(), b.quant.rotation.describe());
  EXPECT_EQ(b.quant.rotation.method, "dfrot");
  EXPECT_EQ(b.quant.calib.batch, 2);
  EXPECT_FALSE(b.quant.rotation.r2);
  EXPECT_TRUE(std::isinf(b.quant.rotation.dfrot.gamma));
  EXPECT_EQ(b.quant.weights.gptq.percdamp, 0.05);
  EXPECT_EQ(b.quant.weights.method, rotq::WeightMethod::kGptq);
  EXPECT_FALSE(b.quant.weights.spec.mse_clip);
  ASSERT_EQ(b.quant.acts.size(), 2u);
  EXPECT_EQ(b.quant.acts[1].act.bits, 4);
  EXPECT_EQ(b.quant.task_acts, (std::vector<bool>{false, true}));
  EXPECT_EQ(b.quant.bos, std::optional<bool>(false));
  EXPECT_EQ(b.placement, "layers");
  EXPECT_EQ(b.dtype, "float64");
  // A value the row refuses is refused by the flag too, with the same words.
  rotq::CellValues v2;
  CLI::App app2;
  rotq::add_cell_flags(&app2, v2);
  try {
    app2.parse(std::vector<std::string>{"-1", "--percdamp"});
    ADD_FAILURE() << "accepted --percdamp -1";
  } catch (const CLI::ParseError& err) {
    EXPECT_NE(std::string(err.what()).find("quantization.percdamp = -1: expected a value in [0, "),
              std::string::npos)
        << err.what();
  }
}

}  // namespace
