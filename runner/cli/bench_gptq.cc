// rotq bench gptq: where GPTQ's time goes on real layer shapes (synthetic weights and a
// calibration-like Hessian), stage by stage, against the device's float32 GEMM rate; and what
// one solve for the linears that share a Hessian (q/k/v, gate/up) saves over one per linear.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <chrono>
#include <cmath>

#include "runner/cli/cmd_common.h"
#include "runner/dist/device.h"
#include "solvers/error.h"
#include "solvers/gemm_rate.h"
#include "solvers/gptq.h"
#include "solvers/rotation.h"

namespace rotq {
namespace {

struct GptqBenchArgs {
  std::vector<std::string> shapes = {"4096x4096", "11008x4096", "4096x11008"};
  int bits = 4;
  bool mse = true, act_order = false;
  int64_t group = 0;
  int repeats = 3;
  int64_t shared = 3;  // linears sharing one Hessian in the concatenation row (q/k/v)
  std::string device = "cpu";
  int64_t gemm_n = 2048;
  bool json = false;
};

std::pair<int64_t, int64_t> parse_shape(const std::string& s) {
  const auto x = s.find('x');
  require(x != std::string::npos, "bench gptq: shape '", s, "' is not ROWSxCOLS");
  try {
    const int64_t r = std::stoll(s.substr(0, x)), c = std::stoll(s.substr(x + 1));
    require(r > 0 && c > 0, "bench gptq: shape '", s, "' must be positive");
    return {r, c};
  } catch (const std::logic_error&) {
    fail("bench gptq: shape '", s, "' is not ROWSxCOLS");
  }
}

// A Hessian like a layer input's: 2·cols tokens with channel scales over two decades and a few
// heavy channels (the massive activations rotation is for).
at::Tensor calibration_hessian(int64_t cols, at::Device dev) {
  at::Tensor scale = seeded_gaussian(1, cols, 3).abs().add_(0.1).to(at::kFloat);
  scale.narrow(1, 0, std::min<int64_t>(8, cols)).mul_(20);
  const at::Tensor x = (seeded_gaussian(2 * cols, cols, 4).to(at::kFloat) * scale).to(dev);
  return at::matmul(x.t(), x).mul_(2.0 / static_cast<double>(x.size(0)));
}

GptqResult best_of(int repeats, const at::Tensor& w, const at::Tensor& h, const QuantSpec& spec,
                   const GptqOptions& o) {
  GptqResult best;
  for (int i = 0; i < repeats + 1; ++i) {  // the first run warms the allocator, untimed
    GptqResult r = gptq_quantize(w, h, spec, o, "bench");
    if (i > 0 && (best.seconds == 0 || r.seconds < best.seconds)) best = r;
  }
  return best;
}

std::vector<std::string> stage_row(const std::string& shape, const std::string& stage, double s,
                                   double flops, double gemm) {
  const bool counted = flops > 0;
  return {shape,
          stage,
          fmt_double(s, 3),
          counted ? fmt_double(flops / 1e9, 1) : "-",
          counted ? fmt_double(flops / s / 1e9, 1) : "-",
          counted ? fmt_double(flops / s / 1e9 / gemm, 2) : "-"};
}

void run_gptq_bench(Runtime& rt, const GptqBenchArgs& a) {
  rt.init();
  const at::Device dev = resolve_device(a.device);
  const GemmRate g = measure_gemm_rate(a.gemm_n, at::kFloat, 3, dev);
  QuantSpec spec;
  spec.bits = a.bits;
  spec.group = a.group;
  spec.mse_clip = a.mse;
  GptqOptions o;
  o.act_order = a.act_order;
  std::vector<std::vector<std::string>> rows;
  for (const std::string& shape : a.shapes) {
    const auto [m, n] = parse_shape(shape);
    const at::Tensor w = seeded_gaussian(m, n, 1).to(dev, at::kFloat);
    const at::Tensor h = calibration_hessian(n, dev);
    const GptqResult r = best_of(a.repeats, w, h, spec, o);
    const GptqStages& s = r.stages;
    rows.push_back(
        stage_row(shape, "params (" + spec.describe() + ")", s.params_seconds, 0, g.gflops));
    rows.push_back(stage_row(shape, "factor H⁻¹", s.factor_seconds, s.factor_flops, g.gflops));
    rows.push_back(stage_row(shape, "column loop", s.column_seconds, s.column_flops, g.gflops));
    rows.push_back(stage_row(shape, "block updates", s.update_seconds, s.update_flops, g.gflops));
    rows.push_back(stage_row(shape, "total", r.seconds, r.flops, g.gflops));
    if (a.json) {
      print_json_line(rt.c(), {{"command", "bench gptq"},
                               {"shape", shape},
                               {"spec", spec.describe()},
                               {"device", dev.str()},
                               {"seconds", r.seconds},
                               {"params_seconds", s.params_seconds},
                               {"factor_seconds", s.factor_seconds},
                               {"column_seconds", s.column_seconds},
                               {"update_seconds", s.update_seconds},
                               {"flops", r.flops},
                               {"gemm_gflops", g.gflops}});
    }
  }
  // The shared-Hessian solve: `shared` linears of the first shape, one by one and concatenated.
  if (a.shared > 1 && !a.shapes.empty()) {
    const auto [m, n] = parse_shape(a.shapes.front());
    const at::Tensor w = seeded_gaussian(a.shared * m, n, 5).to(dev, at::kFloat);
    const at::Tensor h = calibration_hessian(n, dev);
    double separate = 0;
    for (int64_t i = 0; i < a.shared; ++i) {
      separate += best_of(a.repeats, w.narrow(0, i * m, m), h, spec, o).seconds;
    }
    const double joint = best_of(a.repeats, w, h, spec, o).seconds;
    const std::string label = std::to_string(a.shared) + "×" + a.shapes.front();
    rows.push_back({label, "one solve per linear", fmt_double(separate, 3), "-", "-", "-"});
    rows.push_back({label, "one solve, rows concatenated", fmt_double(joint, 3), "-", "-",
                    fmt_double(separate / joint, 2) + "× faster"});
  }
  if (!a.json) {
    print_table(rt.c(), {"shape", "stage", "seconds", "GFLOP", "GFLOP/s", "ratio to f32 GEMM"},
                rows);
    if (rt.c().is_root()) {
      std::printf("%s: float32 GEMM %lld³ %.1f GFLOP/s; best of %d after a warm-up; %d threads\n",
                  dev.str().c_str(), static_cast<long long>(a.gemm_n), g.gflops, a.repeats,
                  at::get_num_threads());
    }
  }
}

}  // namespace

void register_bench_gptq(CLI::App* bench, Runtime& rt) {
  auto a = std::make_shared<GptqBenchArgs>();
  CLI::App* cmd =
      bench->add_subcommand("gptq", "GPTQ stage by stage on real layer shapes (synthetic data)");
  cmd->add_option("--shapes", a->shapes, "ROWSxCOLS of the weights")->capture_default_str();
  cmd->add_option("--bits", a->bits, "weight bits")->capture_default_str()->check(CLI::Range(2, 8));
  cmd->add_option("--group", a->group, "group size (0: per channel)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag("--mse,!--no-mse", a->mse, "MSE clip search")->capture_default_str();
  cmd->add_flag("--act-order", a->act_order, "columns in decreasing diag(H) order");
  cmd->add_option("--repeats", a->repeats, "timed runs (best kept)")
      ->capture_default_str()
      ->check(CLI::Range(1, 100));
  cmd->add_option("--shared", a->shared, "linears sharing one Hessian (0: skip that comparison)")
      ->capture_default_str()
      ->check(CLI::Range(0, 16));
  cmd->add_option("--device", a->device, "cpu, cuda or cuda:N")->capture_default_str();
  cmd->add_option("--gemm-n", a->gemm_n, "size of the reference GEMM")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 16));
  cmd->add_flag("--json", a->json, "print JSON lines");
  cmd->callback([a, &rt] { run_gptq_bench(rt, *a); });
}

}  // namespace rotq
