// rotq parity: GPTQ of one weight and one DFRot iteration on tensors from files (.npy or
// .safetensors), so that rotq can be set against the reference code on the same inputs
// (scripts/peer_parity.py runs QuaRot's and DFRot's code next to these). The solve is timed
// in-process, file reading excluded, after `--warmup` untimed runs (the reference is timed the
// same way, in a warm Python process).
#include <ATen/ATen.h>

#include "models/npy.h"
#include "runner/cli/cmd_common.h"
#include "runner/dist/device.h"
#include "solvers/dfrot.h"
#include "solvers/error.h"
#include "solvers/gemm_rate.h"
#include "solvers/gptq.h"

namespace rotq {
namespace {

struct ParityArgs {
  std::string weight, hessian, tokens, rotation, massive, out;
  int bits = 4;
  bool asym = false, mse = false, act_order = false;
  int64_t group = 0, blocksize = 128;
  double percdamp = 0.01, gamma = 100;
  std::string weighting = "sum";
  std::string precision = "float32";
  std::string dtype = "float32";
  int64_t iters = 1;
  std::string route = "auto";
  int warmup = 1;
  std::string device = "cpu";
  int64_t gemm_n = 2048;
  bool json = false;
};

// "file.safetensors:NAME" names one tensor of a safetensors file.
at::Tensor read_tensor_arg(const std::string& arg, const char* what) {
  require(!arg.empty(), "parity: ", what, " is required");
  const std::string suffix = ".safetensors:";
  const auto at = arg.rfind(suffix);
  if (at != std::string::npos) {
    return read_tensor_file(arg.substr(0, at + suffix.size() - 1), arg.substr(at + suffix.size()));
  }
  return read_tensor_file(arg);
}

// One JSON line (--json, as scripts/peer_parity.py reads it), or the same fields as a table.
void report(Runtime& rt, bool json, const nlohmann::json& j) {
  if (json) {
    print_json_line(rt.c(), j);
    return;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& [key, value] : j.items()) {
    rows.push_back({key, value.is_string() ? value.get<std::string>() : value.dump()});
  }
  print_table(rt.c(), {"field", "value"}, rows);
}

void run_parity_gptq(Runtime& rt, const ParityArgs& a) {
  rt.init();
  const at::Device dev = resolve_device(a.device);
  // GPTQ computes in float64 when either input is float64 (gptq.h).
  const at::ScalarType dt = a.dtype == "float64" ? at::kDouble : at::kFloat;
  const at::Tensor w = read_tensor_arg(a.weight, "--weight").to(dev, dt);
  const at::Tensor h = read_tensor_arg(a.hessian, "--hessian").to(dev, dt);
  QuantSpec spec;
  spec.bits = a.bits;
  spec.symmetric = !a.asym;
  spec.group = a.group;
  spec.mse_clip = a.mse;
  GptqOptions o;
  o.percdamp = a.percdamp;
  o.blocksize = a.blocksize;
  o.act_order = a.act_order;
  GptqResult r;
  for (int i = 0; i < a.warmup; ++i) gptq_quantize(w, h, spec, o, a.weight);
  const double seconds = timed_on(dev, [&] { r = gptq_quantize(w, h, spec, o, a.weight); });
  if (!a.out.empty()) write_npy(a.out, r.weight.to(at::kCPU));
  const GemmRate g = measure_gemm_rate(a.gemm_n, at::kFloat, 3, dev);
  const GptqStages& s = r.stages;
  report(rt, a.json,
         {{"command", "parity gptq"},
          {"rows", w.size(0)},
          {"cols", w.size(1)},
          {"spec", spec.describe()},
          {"dtype", a.dtype},
          {"act_order", a.act_order},
          {"device", dev.str()},
          {"seconds", seconds},
          {"params_seconds", s.params_seconds},
          {"factor_seconds", s.factor_seconds},
          {"column_seconds", s.column_seconds},
          {"update_seconds", s.update_seconds},
          {"flops", r.flops},
          {"gflops", r.flops / seconds / 1e9},
          {"gemm_gflops", g.gflops}});
}

void run_parity_dfrot(Runtime& rt, const ParityArgs& a) {
  rt.init();
  const at::Device dev = resolve_device(a.device);
  const at::Tensor x = read_tensor_arg(a.tokens, "--tokens").to(dev, at::kFloat);
  const at::Tensor r0 = read_tensor_arg(a.rotation, "--rotation").to(dev, at::kDouble);
  require(x.dim() == 2, "parity dfrot: --tokens must be [N, C], got ", x.sizes());
  const at::Tensor massive = a.massive.empty()
                                 ? flag_massive_tokens(x, {})
                                 : read_tensor_arg(a.massive, "--massive").to(dev, at::kBool);
  DfrotOptions o;
  o.iters = a.iters;
  o.span_route = a.route == "auto";
  o.gamma = a.gamma;
  o.bits = a.bits;
  o.symmetric = !a.asym;
  o.weighting = a.weighting == "mean" ? DfrotWeighting::kMean : DfrotWeighting::kSum;
  o.log_every = 0;
  o.pass_dtype = a.precision == "float64" ? at::kDouble : at::kFloat;
  // The output is the last step's rotation, as the reference script keeps it (dfrot_optimize
  // returns the better of the iterates by loss; the reference accepts its last). It is taken from
  // the first run, so that the timed run costs what a user's run does (the span route would
  // otherwise complete both the best and the last rotation); the runs are deterministic.
  DfrotTrace first, trace;
  first.want_last = true;
  trace.want_last = a.warmup == 0;
  for (int i = 0; i < a.warmup; ++i)
    dfrot_optimize(x, massive, r0, o, nullptr, i == 0 ? &first : nullptr);
  const double seconds = timed_on(dev, [&] { dfrot_optimize(x, massive, r0, o, nullptr, &trace); });
  if (!a.out.empty()) write_npy(a.out, (a.warmup > 0 ? first : trace).last.to(at::kCPU));
  const GemmRate g = measure_gemm_rate(a.gemm_n, at::kFloat, 3, dev);
  report(rt, a.json,
         {{"command", "parity dfrot"},
          {"iterations", a.iters},
          {"route", a.route},
          {"tokens", x.size(0)},
          {"dim", x.size(1)},
          {"massive", trace.massive},
          {"device", dev.str()},
          {"seconds", seconds},
          {"loss", trace.loss},
          {"iteration_seconds", trace.iteration_seconds},
          {"flops", trace.flops},
          {"gflops", trace.flops / seconds / 1e9},
          {"gemm_gflops", g.gflops}});
}

}  // namespace

void register_parity(CLI::App& app, Runtime& rt) {
  CLI::App* parity = app.add_subcommand(
      "parity", "GPTQ / one DFRot iteration on tensors from files, to compare with other code");
  parity->require_subcommand(1);
  auto a = std::make_shared<ParityArgs>();
  CLI::App* g = parity->add_subcommand("gptq", "GPTQ of one weight [rows, cols] with a Hessian");
  g->add_option("--weight", a->weight, "W [rows, cols] (.npy, or .safetensors[:NAME])")->required();
  g->add_option("--hessian", a->hessian, "H [cols, cols] (.npy, or .safetensors[:NAME])")
      ->required();
  g->add_option("--bits", a->bits, "weight bits")->capture_default_str()->check(CLI::Range(2, 8));
  g->add_flag("--asym", a->asym, "asymmetric grid");
  g->add_option("--group", a->group, "group size (0: per channel)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  g->add_flag("--mse", a->mse, "MSE clip search");
  g->add_option("--dtype", a->dtype, "arithmetic: float32 (as QuaRot's code) | float64")
      ->capture_default_str()
      ->check(CLI::IsMember({"float32", "float64"}));
  g->add_flag("--act-order", a->act_order, "columns in decreasing diag(H) order");
  g->add_option("--percdamp", a->percdamp, "damping")->capture_default_str();
  g->add_option("--blocksize", a->blocksize, "lazy-batch block")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  auto d =
      parity->add_subcommand("dfrot", "DFRot iterations (default one) on tokens [N, C] from R0");
  d->add_option("--tokens", a->tokens, "X [N, C] (.npy, or .safetensors[:NAME])")->required();
  d->add_option("--rotation", a->rotation, "R0 [C, C]")->required();
  d->add_option("--massive", a->massive, "boolean mask [N] of massive tokens (default: flagged)");
  d->add_option("--gamma", a->gamma, "massive tokens' weight")->capture_default_str();
  d->add_option("--bits", a->bits, "per-token bits")
      ->capture_default_str()
      ->check(CLI::Range(2, 8));
  d->add_option("--iters", a->iters,
                "iterations (timings of two counts give the per-iteration cost)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  d->add_option("--route", a->route,
                "auto (the tokens' span when fewer tokens than channels) | full (C×C always)")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "full"}));
  d->add_flag("--asym", a->asym, "asymmetric per-token quantizer (DFRot's script: symmetric)");
  d->add_option("--precision", a->precision, "token pass: float32 (as DFRot's code) | float64")
      ->capture_default_str()
      ->check(CLI::IsMember({"float32", "float64"}));
  d->add_option("--weighting", a->weighting, "sum (the reference script's) | mean (the paper's)")
      ->capture_default_str()
      ->check(CLI::IsMember({"sum", "mean"}));
  for (CLI::App* c : {g, d}) {
    c->add_option("--out", a->out, "write the result here (.npy)");
    c->add_option("--warmup", a->warmup, "untimed runs first")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);
    c->add_option("--device", a->device, "cpu, cuda or cuda:N")->capture_default_str();
    c->add_option("--gemm-n", a->gemm_n, "size of the reference GEMM")
        ->capture_default_str()
        ->check(CLI::Range(int64_t{1}, int64_t{1} << 16));
    c->add_flag("--json", a->json, "print one JSON line (default: a table)");
  }
  g->callback([a, &rt] { run_parity_gptq(rt, *a); });
  d->callback([a, &rt] { run_parity_dfrot(rt, *a); });
}

}  // namespace rotq
