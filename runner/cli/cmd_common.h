// What every subcommand shares: the process runtime (comm, logging, threads), model/tokenizer
// options, and result printing (tables for people, --json lines for scripts).
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "models/checkpoint.h"
#include "models/tokenizers/tokenizer.h"
#include "runner/dist/placement.h"
#include "solvers/comm.h"

namespace rotq {

struct Runtime {
  std::string comm_backend = "auto";
  std::string log_level = "info";
  bool log_all_ranks = false;
  int threads = 0;  // 0: the cores available to this rank
  std::unique_ptr<Comm> comm;

  // Creates the communicator, logging and the thread pool; called first by every subcommand.
  void init();
  Comm& c() { return *comm; }
};

struct ModelOptions {
  std::string model;
  std::string tokenizer;
  std::string dtype = "float32";  // compute dtype
  std::string device = "cpu";     // compute device (runner/dist/device.h)
  bool json = false;
};

// --model, --tokenizer, --json, and (with_runtime) --dtype/--device; commands that take a cell's
// options get dtype and device from those (runner/cell/cell_options.h).
void add_model_options(CLI::App* cmd, ModelOptions& o, bool with_tokenizer = true,
                       bool with_runtime = true);

// --tokenizer if given, else the tokenizer bundled in the HF directory, else an error.
std::unique_ptr<Tokenizer> open_tokenizer(const ModelOptions& o, const CheckpointReader& reader);

// A model opened for a command: its reader (for lazy access), weights in the compute dtype, and
// its tokenizer (when asked for).
struct LoadedModel {
  std::unique_ptr<CheckpointReader> reader;
  Model model;
  std::unique_ptr<Tokenizer> tokenizer;
};
LoadedModel load_for_command(const ModelOptions& o, bool need_tokenizer);
// This rank's shard of a model sharded by layers over `comm`'s ranks (balanced by bytes); the
// placement is returned in `placement` and logged.
LoadedModel load_shard_for_command(const ModelOptions& o, Comm& comm, Placement& placement);

// Copies a tokenizer file into an HF directory under its conventional name (tokenizer.model or
// tokenizer.bin), after checking that it loads.
void copy_tokenizer(const std::string& path, const std::string& out_dir);

// Rank 0 prints; others stay silent.
void print_json_line(Comm& comm, const nlohmann::json& j);
void print_table(Comm& comm, const std::vector<std::string>& header,
                 const std::vector<std::vector<std::string>>& rows);
std::string fmt_double(double v, int precision = 3);
// v with `digits` significant digits (%g).
std::string fmt_significant(double v, int digits = 3);

using CommandRegistrar = void (*)(CLI::App& app, Runtime& rt);
void register_ppl(CLI::App& app, Runtime& rt);
void register_generate(CLI::App& app, Runtime& rt);
void register_convert(CLI::App& app, Runtime& rt);
void register_info(CLI::App& app, Runtime& rt);
void register_synth(CLI::App& app, Runtime& rt);
void register_tokenize(CLI::App& app, Runtime& rt);
void register_bench(CLI::App& app, Runtime& rt);
void register_hadamard(CLI::App& app, Runtime& rt);
void register_quantize_eval(CLI::App& app, Runtime& rt);
void register_inspect(CLI::App& app, Runtime& rt);
void register_plan(CLI::App& app, Runtime& rt);
void register_run(CLI::App& app, Runtime& rt);                // run, status, merge
void register_table(CLI::App& app, Runtime& rt);              // table, plot
void register_submit(CLI::App& app, Runtime& rt);             // Slurm job arrays
void register_parity(CLI::App& app, Runtime& rt);             // parity gptq, parity dfrot
void register_bench_rotation(CLI::App* bench, Runtime& rt);   // `bench rotation`
void register_bench_spinquant(CLI::App* bench, Runtime& rt);  // `bench spinquant`
void register_bench_gptq(CLI::App* bench, Runtime& rt);       // `bench gptq`

// Useful FLOPs of one forward token at context T (the benchmarks' yardstick): the matmuls (2 per
// weight) and causal attention (q·k and p·v over T/2 keys on average, per head).
double forward_flops_per_token(const ModelConfig& c, int64_t T);
// --bos / --no-bos: override the tokenizer's own BOS policy (`bos` stays nullopt: follow it).
void add_bos_flags(CLI::App* cmd, std::optional<bool>& bos);

void register_bench_tasks(CLI::App* bench, Runtime& rt);     // `bench tasks`
void register_bench_tokenize(CLI::App* bench, Runtime& rt);  // `bench tokenize`

// Runs a plotting script (Debian's /usr/bin/python3 with python3-matplotlib; ROTQ_PYTHON
// overrides) with `args`; rotq::Error naming the command and `where_data` when it fails.
void run_plot_script(const std::string& script, const std::vector<std::string>& args,
                     const std::string& where_data);  // "0.1.0 (git abc123)"

}  // namespace rotq
