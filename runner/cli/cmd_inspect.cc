// rotq inspect: the diagnostics behind the rotation methods, as CSV tables and PNG plots (see
// runner/rotate/inspect.h): largest activations per layer and the channels that carry them, massive
// tokens, per-token 4-bit error under NR / RO / RH / a learned rotation, weight kurtosis and
// incoherence before and after rotation, and each objective's value.
#include <ATen/ATen.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <filesystem>

#include "runner/cell/cell_options.h"
#include "runner/cli/cmd_common.h"
#include "runner/data/calibration.h"
#include "runner/data/text.h"
#include "runner/eval/perplexity.h"
#include "runner/fuse/fusion.h"
#include "runner/rotate/block_inputs.h"
#include "runner/rotate/dfrot_model.h"
#include "runner/rotate/inspect.h"
#include "runner/rotate/optrot_model.h"
#include "runner/rotate/rotation_io.h"
#include "solvers/dfrot.h"
#include "solvers/error.h"

#ifndef ROTQ_SCRIPTS_DIR
#define ROTQ_SCRIPTS_DIR "scripts"
#endif

namespace rotq {
namespace {

struct InspectArgs {
  ModelOptions m;
  std::string calib;
  int64_t seqlen = 0;
  uint64_t seed = 0;
  std::string learn = "dfrot";
  std::string rotations;
  double threshold = 8.5 / 64.0;
  std::string out;
  bool no_plots = false;
};

struct NamedRotation {
  std::string name;
  at::Tensor r1;  // undefined: none
};

std::string num(double v) { return fmt_double(v, 6); }

// Mean of the entries of `v` where `mask` is set (0 when none is).
double masked_mean(const at::Tensor& v, const at::Tensor& mask) {
  const at::Tensor picked = v.masked_select(mask);
  return picked.numel() > 0 ? picked.mean().item<double>() : 0.0;
}

const char* site_label(BlockSite s) { return s == BlockSite::kAttn ? "attn" : "mlp"; }

// R1 exactly as quantize-eval draws it for `kind` and `seed`.
at::Tensor fixed_r1(FixedRotation kind, uint64_t seed, const ModelConfig& c) {
  FixedRotationSpec s;
  s.kind = kind;
  s.seed = seed;
  s.r2 = false;
  return make_rotations(s, c.dim, c.head_dim, c.n_layers).r1;
}

// The learned R1: from a file, or DFRot / OptRot on this model (norms fused).
at::Tensor learned_r1(const InspectArgs& a, const Model& model, const at::Tensor& windows,
                      Comm& comm, const Tokenizer& tok) {
  if (!a.rotations.empty()) return load_rotations(a.rotations, model.config).r1;
  if (a.learn == "dfrot") {
    RotationSpec spec = rotation_spec("dfrot");
    spec.seed = a.seed;
    spec.dfrot.massive.threshold = a.threshold;
    spec.dfrot.log_every = 0;
    return dfrot_rotations(model, windows, spec, comm, &tok).rotations.r1;
  }
  OptRotOptions o;
  o.r2 = false;
  o.sgd.log_every = 0;
  return optrot_rotations(model, o, a.seed, comm).r1;
}

void write_activations(const std::string& dir, const BlockInputs& in, const Tokenizer& tok) {
  std::vector<std::vector<std::string>> rows;
  const at::Tensor absx = in.x.abs();
  const auto [tok_max, tok_arg] = absx.max(1);  // per token: max |x| and its channel
  int64_t begin = 0;
  while (begin < in.size()) {
    int64_t end = begin;
    while (end < in.size() && in.layer[end] == in.layer[begin] && in.site[end] == in.site[begin])
      ++end;
    const at::Tensor m = tok_max.narrow(0, begin, end - begin);
    const int64_t i = begin + m.argmax().item<int64_t>();
    const double top = tok_max[i].item<double>(), median = m.median().item<double>();
    // The three channels with the largest |x| over this block's tokens.
    const at::Tensor ch = std::get<1>(absx.narrow(0, begin, end - begin).amax(0).topk(3));
    std::string chans;
    for (int k = 0; k < 3; ++k) chans += (k ? " " : "") + std::to_string(ch[k].item<int64_t>());
    rows.push_back({std::to_string(in.layer[begin]), site_label(in.site[begin]),
                    std::to_string(end - begin), num(top),
                    std::to_string(tok_arg[i].item<int64_t>()), chans,
                    std::to_string(in.position[i]), std::to_string(in.token[i]),
                    tok.piece(in.token[i]), num(median), num(top / median)});
    begin = end;
  }
  write_csv(dir + "/activations.csv",
            {"layer", "site", "tokens", "max_abs", "max_channel", "top_channels", "max_position",
             "max_token", "max_piece", "median_token_max", "max_over_median"},
            rows);
}

void run_inspect(Runtime& rt, const InspectArgs& a) {
  rt.init();
  namespace fs = std::filesystem;
  require(!a.calib.empty(), "inspect needs calibration text (--calib FILE)");
  require(a.learn == "dfrot" || a.learn == "optrot", "--learn '", a.learn,
          "': expected dfrot or optrot");
  LoadedModel lm = load_for_command(a.m, /*need_tokenizer=*/true);
  Model& model = lm.model;
  fuse_norms(model);
  const Tokenizer& tok = *lm.tokenizer;
  const int64_t T = a.seqlen > 0 ? a.seqlen : default_window(model.config);
  const TextFormat fmt = resolve_text_format(TextFormat::kAuto, a.calib);
  const at::Tensor window = calibration_windows(
      encode_with_bos(tok, read_text(a.calib, fmt), resolve_bos(tok, std::nullopt)), 1, T, a.seed);
  const BlockInputs in = collect_block_inputs(model, window);
  MassiveOptions mo;
  mo.threshold = a.threshold;
  const at::Tensor massive = flag_massive_tokens(in.x, mo);
  for (const std::string& line : describe_massive_tokens(in, massive, &tok))
    spdlog::info("{}", line);

  const int64_t C = model.config.dim;
  const std::vector<NamedRotation> rots = {
      {"NR", at::Tensor()},
      {"RO", fixed_r1(FixedRotation::kRandom, a.seed, model.config)},
      {"RH", fixed_r1(FixedRotation::kHadamard, a.seed, model.config)},
      {"learned", learned_r1(a, model, window, rt.c(), tok)}};
  if (!rt.c().is_root()) return;
  fs::create_directories(a.out);
  write_activations(a.out, in, tok);

  // Per-token errors under each rotation.
  std::vector<at::Tensor> errs;
  for (const auto& r : rots) errs.push_back(relative_token_error(in.x, r.r1));
  const at::Tensor norms = in.x.to(at::kDouble).pow(2).sum(1).sqrt();
  const at::Tensor tok_max = in.x.abs().amax(1);
  std::vector<std::vector<std::string>> err_rows, massive_rows;
  const bool* flag = massive.data_ptr<bool>();
  for (int64_t i = 0; i < in.size(); ++i) {
    std::vector<std::string> row = {std::to_string(in.layer[i]), site_label(in.site[i]),
                                    std::to_string(in.position[i]), std::to_string(in.token[i]),
                                    flag[i] ? "1" : "0"};
    for (const auto& e : errs) row.push_back(num(e[i].item<double>()));
    err_rows.push_back(std::move(row));
    if (flag[i]) {
      massive_rows.push_back({std::to_string(in.layer[i]), site_label(in.site[i]),
                              std::to_string(in.position[i]), std::to_string(in.token[i]),
                              tok.piece(in.token[i]), num(norms[i].item<double>()),
                              num(tok_max[i].item<double>()), num(errs[0][i].item<double>())});
    }
  }
  write_csv(a.out + "/token_error.csv",
            {"layer", "site", "position", "token", "massive", "err_nr", "err_ro", "err_rh",
             "err_learned"},
            err_rows);
  write_csv(a.out + "/massive.csv",
            {"layer", "site", "position", "token", "piece", "norm", "max_abs", "err_nr"},
            massive_rows);

  // Weights before and after each rotation.
  std::vector<std::vector<std::string>> w_rows;
  for (size_t l = 0; l < model.weights.layers.size(); ++l) {
    for (LayerTensor t : {LayerTensor::kWq, LayerTensor::kWk, LayerTensor::kWv, LayerTensor::kWo,
                          LayerTensor::kWGate, LayerTensor::kWUp, LayerTensor::kWDown}) {
      std::vector<std::string> row = {std::to_string(l + model.layer_offset), layer_tensor_key(t)};
      for (const auto& r : rots) {
        const MatrixStats s = matrix_stats(rotated_by_r1(model.weights.layers[l][t], t, r.r1));
        row.push_back(num(s.kurtosis));
        row.push_back(num(s.incoherence));
      }
      w_rows.push_back(std::move(row));
    }
  }
  write_csv(a.out + "/weights.csv",
            {"layer", "matrix", "kurtosis_nr", "incoherence_nr", "kurtosis_ro", "incoherence_ro",
             "kurtosis_rh", "incoherence_rh", "kurtosis_learned", "incoherence_learned"},
            w_rows);

  // Each objective at each rotation.
  const FourthPowerObjective optrot = r1_objective(model, OptRotNorm::kNumel);
  DfrotOptions dopt;
  std::vector<std::vector<std::string>> o_rows;
  const at::Tensor normal = massive.logical_not();
  for (size_t k = 0; k < rots.size(); ++k) {
    const at::Tensor r = rots[k].r1.defined() ? rots[k].r1 : at::eye(C, at::kDouble);
    o_rows.push_back({rots[k].name, num(fourth_power_loss(optrot, r, nullptr)),
                      num(dfrot_loss(in.x, massive, r, dopt, nullptr)),
                      num(masked_mean(errs[k], normal)), num(masked_mean(errs[k], massive))});
  }
  const std::vector<std::string> o_header = {"rotation", "optrot_r1_loss", "dfrot_loss_gamma100",
                                             "mean_err_normal", "mean_err_massive"};
  write_csv(a.out + "/objectives.csv", o_header, o_rows);
  print_table(rt.c(), o_header, o_rows);
  std::printf("massive tokens: %lld of %lld; CSVs in %s\n",
              static_cast<long long>(massive.sum().item<int64_t>()),
              static_cast<long long>(in.size()), a.out.c_str());

  if (a.no_plots) return;
  const char* env = std::getenv("ROTQ_PLOT_SCRIPT");
  run_plot_script(env ? env : std::string(ROTQ_SCRIPTS_DIR) + "/plot_inspect.py", {a.out},
                  "the CSVs are in " + a.out);
  std::printf("plots: %s/{token_error,activations,weights}.png\n", a.out.c_str());
}

}  // namespace

void register_inspect(CLI::App& app, Runtime& rt) {
  auto a = std::make_shared<InspectArgs>();
  CLI::App* cmd = app.add_subcommand(
      "inspect", "activation, massive-token, per-token error and weight diagnostics (CSV + PNG)");
  add_model_options(cmd, a->m);
  cmd->add_option("--calib", a->calib, "text to draw the calibration window from")->required();
  cmd->add_option("--seqlen", a->seqlen, "window length (0: min(2048, context))")
      ->capture_default_str();
  cmd->add_option("--seed", a->seed, "seed of the window and of RO/RH")->capture_default_str();
  cmd->add_option("--learn", a->learn, "the learned rotation to compare: dfrot | optrot")
      ->capture_default_str();
  cmd->add_option("--rotations", a->rotations,
                  "use this rotations file (quantize-eval --save) as the learned rotation");
  cmd->add_option("--threshold", a->threshold, "massive if the unrotated 4-bit error < THRESH*|x|")
      ->capture_default_str();
  cmd->add_option("--out", a->out, "output directory")->required();
  cmd->add_flag("--no-plots", a->no_plots, "write the CSVs only");
  cmd->get_option("--threshold")->check(CLI::Range(1e-12, 1e6));
  add_schema_checks(cmd);
  cmd->callback([a, &rt] { run_inspect(rt, *a); });
}

}  // namespace rotq
