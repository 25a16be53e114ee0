// rotq bench spinquant: SpinQuant steps (forward, per-layer recompute and backward, gradient
// all-reduce, Cayley step) on a synthetic model, as tokens/s and the ratio of the useful FLOP rate
// to this machine's GEMM rate; on the CPU also the peak memory the steps add to the process (RSS),
// against what `rotq plan --train` predicts for the same model and settings. `--method ostquant`
// times OSTQuant's steps instead (KL-Top against the FP teacher, Riemannian Adam, scalings).
//
// Useful FLOPs per step: 4 forwards' worth for the tokens (the no-grad forward, the recompute, and
// the backward at twice a forward) plus the rotation products W·R1 (2·C per weight of each linear)
// three times (no-grad forward, recompute, and the gradient with respect to R); OSTQuant's teacher
// is one forward more.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <spdlog/spdlog.h>

#include <fstream>
#include <string>

#include "models/synth.h"
#include "runner/cli/cmd_common.h"
#include "runner/dist/device.h"
#include "runner/fuse/fusion.h"
#include "runner/rotate/ostquant.h"
#include "runner/rotate/spinquant.h"
#include "solvers/error.h"
#include "solvers/gemm_rate.h"
#include "solvers/rotation.h"

namespace rotq {
namespace {

struct SpinQuantBenchArgs {
  std::string preset = "tiny";
  std::string dims;  // overrides, as `rotq synth --dims`
  std::string dtype = "float32";
  std::string device = "cpu";
  std::string method = "spinquant";  // or ostquant
  int64_t seqlen = 512;
  int64_t batch = 4;
  int64_t micro_batch = 1;
  int64_t steps = 3;
  int a_bits = 4, kv_bits = 4;
  int64_t gemm_n = 2048;
  bool json = false;
};

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

// A line of /proc/self/status in bytes ("VmRSS", "VmHWM"), or -1 where there is none.
double proc_status_bytes(const std::string& key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + ":", 0) == 0) return std::stod(line.substr(key.size() + 1)) * 1024.0;
  }
  return -1;
}

// Resets the process's peak RSS to its current RSS (Linux: "5" into clear_refs), so that VmHWM
// then measures one phase. False where the kernel does not allow it.
bool reset_peak_rss() {
  std::ofstream out("/proc/self/clear_refs");
  out << "5";
  out.flush();
  return static_cast<bool>(out);
}

double rotation_product_flops(const ModelConfig& c) {
  const double linear =
      static_cast<double>(c.dim) * (2.0 * c.q_dim() + 2.0 * c.kv_dim() + 3.0 * c.hidden_dim);
  return 2.0 * c.dim * linear * c.n_layers;
}

void run_spinquant_bench(Runtime& rt, const SpinQuantBenchArgs& a) {
  rt.init();
  const at::Device device = resolve_device(a.device);
  const GemmRate gemm = measure_gemm_rate(a.gemm_n, at::kFloat, 3, device);
  ModelConfig cfg = synth_preset(a.preset);
  if (!a.dims.empty()) apply_dims(cfg, a.dims);
  const int64_t T = std::min(a.seqlen, cfg.max_seq_len);
  const at::ScalarType dtype = scalar_type_from_name(a.dtype);
  const double rss0 = proc_status_bytes("VmRSS");
  Model model = make_synthetic_model(cfg, 1, dtype);
  move_weights(model.weights, device);
  fuse_norms(model);
  const at::Tensor windows =
      (seeded_gaussian(a.batch, T, 2).abs() * 1e6).to(at::kLong).remainder(cfg.vocab_size);
  const bool ost = a.method == "ostquant";
  RotationSpec spec = rotation_spec(a.method);
  LearnOptions& lo = ost ? spec.ostquant : spec.spinquant;
  lo.batch = a.batch;
  lo.micro_batch = a.micro_batch;
  spec.learn_acts = default_activation_quant(a.a_bits, a.kv_bits);
  const auto learn = [&](RotationLearning& learned) {
    if (ost)
      return ostquant_rotations(model, windows, spec, rt.c(), Placement::replicated(), learned);
    return spinquant_rotations(model, windows, spec, rt.c(), Placement::replicated(), learned);
  };
  RotationLearning warm, timed;
  lo.steps = 1;
  learn(warm);
  const bool peak_ok = device.is_cpu() && reset_peak_rss();
  lo.steps = a.steps;
  learn(timed);
  const double measured = peak_ok ? proc_status_bytes("VmHWM") - rss0 : -1;

  TrainingOptions to;
  to.ranks = rt.c().size();
  to.weight_bytes = at::elementSize(dtype);
  to.seqlen = T;
  to.batch = a.batch;
  to.micro_batch = a.micro_batch;
  to.ostquant = ost;
  const std::vector<TrainingMemory> plan =
      predict_training_memory(cfg, place_layers(cfg, 1, to.weight_bytes), to);
  const double predicted = plan.at(0).peak;
  const double step_s = timed.seconds / a.steps;
  const double tokens = static_cast<double>(a.batch) * T / rt.c().size();
  // Forward, recompute, backward (2x); OSTQuant's teacher adds one forward.
  const double flops = (ost ? 5.0 : 4.0) * tokens * forward_flops_per_token(cfg, T) +
                       3.0 * rotation_product_flops(cfg);
  const double gflops = flops / step_s / 1e9;
  if (a.json) {
    print_json_line(rt.c(), {{"command", "bench-spinquant"},
                             {"method", a.method},
                             {"model", cfg.summary()},
                             {"params", cfg.param_count()},
                             {"dtype", a.dtype},
                             {"device", device.str()},
                             {"seqlen", T},
                             {"batch", a.batch},
                             {"micro_batch", a.micro_batch},
                             {"ranks", rt.c().size()},
                             {"step_s", step_s},
                             {"tokens_per_s", tokens / step_s},
                             {"gflops", gflops},
                             {"gemm_gflops", gemm.gflops},
                             {"ratio_to_gemm", gflops / gemm.gflops},
                             {"predicted_peak_bytes", predicted},
                             {"measured_peak_bytes", measured},
                             {"threads", at::get_num_threads()}});
    return;
  }
  print_table(
      rt.c(),
      {"model", "params", "tokens/step", "s/step", "tok/s", "GFLOP/s", "GEMM GFLOP/s", "ratio",
       "plan peak GiB", "measured GiB", "measured/plan"},
      {{a.preset + (a.dims.empty() ? "" : " " + a.dims),
        fmt_double(cfg.param_count() / 1e6, 1) + "M", fmt_double(tokens, 0), fmt_double(step_s, 3),
        fmt_double(tokens / step_s, 0), fmt_double(gflops, 1), fmt_double(gemm.gflops, 1),
        fmt_double(gflops / gemm.gflops, 3), fmt_double(predicted / kGiB, 3),
        measured >= 0 ? fmt_double(measured / kGiB, 3) : "-",
        measured >= 0 ? fmt_double(measured / predicted, 3) : "-"}});
}

}  // namespace

void register_bench_spinquant(CLI::App* bench, Runtime& rt) {
  auto a = std::make_shared<SpinQuantBenchArgs>();
  CLI::App* cmd = bench->add_subcommand(
      "spinquant",
      "SpinQuant steps on a synthetic model: tokens/s, GEMM ratio, peak memory vs plan");
  cmd->add_option("--preset", a->preset, "shape preset (rotq synth --list)")->capture_default_str();
  cmd->add_option("--dims", a->dims, "overrides, e.g. layers=4,dim=1024");
  cmd->add_option("--dtype", a->dtype, "weights and activations")
      ->capture_default_str()
      ->check(CLI::IsMember({"float32", "bfloat16", "float64"}));
  cmd->add_option("--device", a->device, "cpu, cuda or cuda:N")->capture_default_str();
  cmd->add_option("--method", a->method, "spinquant | ostquant")
      ->capture_default_str()
      ->check(CLI::IsMember({"spinquant", "ostquant"}));
  cmd->add_option("--seqlen", a->seqlen, "window")->capture_default_str();
  cmd->add_option("--batch", a->batch, "windows per step (all ranks)")->capture_default_str();
  cmd->add_option("--micro-batch", a->micro_batch, "windows per forward/backward")
      ->capture_default_str();
  cmd->add_option("--steps", a->steps, "timed steps (after one warm-up step)")
      ->capture_default_str();
  cmd->add_option("--a-bits", a->a_bits, "activation bits trained for")->capture_default_str();
  cmd->add_option("--kv-bits", a->kv_bits, "KV-cache bits trained for")->capture_default_str();
  cmd->add_option("--gemm-n", a->gemm_n, "size of the reference GEMM")->capture_default_str();
  for (const char* f : {"--seqlen", "--batch", "--micro-batch", "--steps", "--gemm-n"}) {
    cmd->get_option(f)->check(CLI::Range(int64_t{1}, int64_t{1} << 30));
  }
  cmd->get_option("--a-bits")->check(CLI::Range(2, 16));
  cmd->get_option("--kv-bits")->check(CLI::Range(1, 16));
  cmd->add_flag("--json", a->json, "print one JSON line");
  cmd->callback([a, &rt] { run_spinquant_bench(rt, *a); });
}

}  // namespace rotq
