#include "runner/cli/cmd_common.h"

#include <ATen/Parallel.h>
#include <dlfcn.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <sstream>
#include <thread>

#include "models/base/files.h"
#include "runner/cell/cell_options.h"
#include "runner/core/log.h"
#include "runner/core/subprocess.h"
#include "runner/dist/comm.h"
#include "runner/dist/device.h"
#include "runner/dist/layer_pipeline.h"
#include "runner/record/cell_record.h"
#include "solvers/error.h"
#include "solvers/kernel_path.h"

namespace rotq {

void Runtime::init() {
  comm = make_comm(comm_backend);
  init_logging(comm->rank(), comm->size(), log_level, log_all_ranks);
  // LibTorch starts with one intra-op thread here; give each rank its share of the cores.
  int n = threads;
  if (n <= 0) {
    const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    n = std::max(1, cores / std::max(1, local_size_from_env()));
  }
  at::set_num_threads(n);
  // ROTQ_ATEN_KERNELS=1 runs the GPU code paths (ATen-only kernels) on the CPU: a whole pipeline
  // can be checked against the host loops on a machine without a GPU. On a GPU it turns rotq's
  // own CUDA kernels off (GPTQ's fused block), to compare them with the ATen formulation.
  if (const char* v = std::getenv("ROTQ_ATEN_KERNELS"); v && std::string(v) == "1") {
    force_aten_kernels(true);
    spdlog::info("ROTQ_ATEN_KERNELS=1: the ATen-only kernel paths are used (CPU and GPU)");
  }
  // OpenBLAS keeps its own pool, sized from the CPUs this process may use (which depends on how
  // the launcher binds ranks), and its sums depend on the thread count: pin it to ours so that a
  // result depends on --threads only.
  using SetThreads = void (*)(int);
  if (auto f = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) f(n);
  spdlog::debug("rotq {} comm={} rank {}/{} threads={}", rotq_version(), comm->backend(),
                comm->rank(), comm->size(), n);
}

void add_model_options(CLI::App* cmd, ModelOptions& o, bool with_tokenizer, bool with_runtime) {
  cmd->add_option("--model", o.model, "llama2.c .bin file or HF checkpoint directory")->required();
  if (with_tokenizer) {
    cmd->add_option("--tokenizer", o.tokenizer,
                    "tokenizer.model, tokenizer.bin or tokenizer.json (default: the one in the "
                    "model directory)");
  }
  if (with_runtime) {
    cmd->add_option("--dtype", o.dtype, "compute dtype: float32, float64 or bfloat16")
        ->capture_default_str()
        ->check(schema_validator("runtime.dtype"));
    cmd->add_option(
           "--device", o.device,
           "compute device: cpu, cuda (this rank's GPU) or cuda:N; weights are moved there")
        ->capture_default_str()
        ->check(schema_validator("runtime.device"));
  }
  cmd->add_flag("--json", o.json, "print one JSON object per result line");
}

std::unique_ptr<Tokenizer> open_tokenizer(const ModelOptions& o, const CheckpointReader& reader) {
  std::string path = o.tokenizer.empty() ? reader.bundled_tokenizer() : o.tokenizer;
  require(!path.empty(), reader.source(),
          ": no tokenizer in the model directory; pass --tokenizer PATH (tokenizer.model, "
          "tokenizer.bin or tokenizer.json)");
  auto tok = load_tokenizer(path, static_cast<int32_t>(reader.config().vocab_size));
  require(tok->vocab_size() <= reader.config().vocab_size, path, ": tokenizer has ",
          tok->vocab_size(), " tokens, more than the model's vocabulary of ",
          reader.config().vocab_size);
  return tok;
}

namespace {

at::ScalarType compute_dtype(const std::string& name) {
  const at::ScalarType dt = scalar_type_from_name(name);
  require(dt == at::kFloat || dt == at::kDouble || dt == at::kBFloat16, "--dtype ", name,
          ": expected float32, float64 or bfloat16 (float16 matmul is not available on CPU)");
  return dt;
}

void move_to_compute_device(Model& model, const ModelOptions& o) {
  const at::Device device = resolve_device(o.device);
  if (device.is_cpu()) return;
  spdlog::info("moving the weights to {}", device.str());
  move_weights(model.weights, device);
}

}  // namespace

LoadedModel load_for_command(const ModelOptions& o, bool need_tokenizer) {
  LoadedModel lm;
  lm.reader = open_checkpoint(o.model);
  const at::ScalarType dt = compute_dtype(o.dtype);
  LoadOptions lo;
  lo.dtype = dt;
  spdlog::info("loading {} ({}: {})", o.model, lm.reader->format(), lm.reader->config().summary());
  lm.model = load_model(*lm.reader, lo);
  move_to_compute_device(lm.model, o);
  if (need_tokenizer) lm.tokenizer = open_tokenizer(o, *lm.reader);
  return lm;
}

LoadedModel load_shard_for_command(const ModelOptions& o, Comm& comm, Placement& placement) {
  LoadedModel lm;
  lm.reader = open_checkpoint(o.model);
  const ModelConfig& c = lm.reader->config();
  const at::ScalarType dt = compute_dtype(o.dtype);
  placement = place_layers(c, comm.size(), dtype_bytes(c.dtype));
  std::string ranges;
  for (int r = 0; r < placement.ranks; ++r) {
    ranges += (r ? ", " : "") + std::to_string(r) + ":[" +
              std::to_string(placement.layer_begin(r)) + "," +
              std::to_string(placement.layer_end(r)) + ")";
  }
  spdlog::info("loading {} sharded by layers over {} ranks: {}", o.model, placement.ranks, ranges);
  lm.model = load_shard(*lm.reader, placement, comm.rank(), dt);
  move_to_compute_device(lm.model, o);
  lm.tokenizer = open_tokenizer(o, *lm.reader);
  return lm;
}

void print_json_line(Comm& comm, const nlohmann::json& j) {
  if (!comm.is_root()) return;
  std::cout << j.dump() << std::endl;
}

void print_table(Comm& comm, const std::vector<std::string>& header,
                 const std::vector<std::vector<std::string>>& rows) {
  if (!comm.is_root()) return;
  // Widths in characters, not bytes ("±", "×" are two bytes in UTF-8).
  const auto width = [](const std::string& s) {
    size_t n = 0;
    for (unsigned char ch : s) n += (ch & 0xC0) != 0x80;
    return n;
  };
  std::vector<size_t> w(header.size());
  for (size_t i = 0; i < header.size(); ++i) w[i] = width(header[i]);
  for (const auto& r : rows) {
    for (size_t i = 0; i < r.size() && i < w.size(); ++i) w[i] = std::max(w[i], width(r[i]));
  }
  auto line = [&](const std::vector<std::string>& cells) {
    std::ostringstream os;
    os << "|";
    for (size_t i = 0; i < w.size(); ++i) {
      const std::string c = i < cells.size() ? cells[i] : "";
      os << " " << c << std::string(w[i] - width(c), ' ') << " |";
    }
    return os.str();
  };
  std::cout << line(header) << "\n|";
  for (size_t i = 0; i < w.size(); ++i) std::cout << std::string(w[i] + 2, '-') << "|";
  std::cout << "\n";
  for (const auto& r : rows) std::cout << line(r) << "\n";
  std::cout.flush();
}

std::string fmt_double(double v, int precision) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", precision, v);
  return buf;
}

std::string fmt_significant(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*g", digits, v);
  return buf;
}

void run_plot_script(const std::string& script, const std::vector<std::string>& args,
                     const std::string& where_data) {
  namespace fs = std::filesystem;
  require(fs::exists(script), script, ": the plotting script is missing; ", where_data);
  // Debian's interpreter has python3-matplotlib; a python3 earlier on PATH (pyenv, venv) may not.
  const char* py_env = std::getenv("ROTQ_PYTHON");
  const std::string python = py_env                           ? py_env
                             : fs::exists("/usr/bin/python3") ? "/usr/bin/python3"
                                                              : "python3";
  std::vector<std::string> argv = {python, script};
  argv.insert(argv.end(), args.begin(), args.end());
  const ProcessResult r = run_process(argv, /*capture=*/false);
  require(r.exit_code == 0, "plotting failed (", quoted_command(argv), " exited with ", r.exit_code,
          "; needs python3-matplotlib); ", where_data);
}

void add_bos_flags(CLI::App* cmd, std::optional<bool>& bos) {
  CLI::Option* on = cmd->add_flag_callback(
      "--bos", [&bos] { bos = true; },
      "prepend BOS to texts, calibration and task contexts (default: the tokenizer's own policy, "
      "from tokenizer_config.json / tokenizer.json; SentencePiece: yes)");
  CLI::Option* off = cmd->add_flag_callback(
      "--no-bos", [&bos] { bos = false; }, "never prepend BOS (overrides the tokenizer's policy)");
  on->excludes(off);
}

void copy_tokenizer(const std::string& path, const std::string& out_dir) {
  namespace fs = std::filesystem;
  auto tok = load_tokenizer(path);  // validates it before it is copied
  for (const auto& [from, name] : tokenizer_files(*tok, path)) {
    write_file_atomically((fs::path(out_dir) / name).string(), read_file_bytes(from));
  }
}

double forward_flops_per_token(const ModelConfig& c, int64_t T) {
  const double linear = static_cast<double>(c.param_count()) -
                        static_cast<double>(c.vocab_size * c.dim) * (c.tie_embeddings ? 1 : 2) -
                        static_cast<double>(c.n_layers * 2 * c.dim + c.dim);
  const double lm_head = static_cast<double>(c.vocab_size * c.dim);
  const double attention = 2.0 * 2.0 * c.n_layers * c.q_dim() * (T + 1) / 2.0;
  return 2.0 * (linear + lm_head) + attention;
}

}  // namespace rotq
