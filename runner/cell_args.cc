#include "runner/cell_args.h"

#include <cmath>
#include <limits>

#include "runner/experiment.h"
#include "solvers/error.h"
#include "solvers/optrot.h"
#include "solvers/optrot_model.h"
#include "solvers/parse.h"

namespace rotq {

// "100" -> 100, "inf" -> +inf (only the massive tokens count).
double parse_gamma(const std::string& text) {
  if (text == "inf") return std::numeric_limits<double>::infinity();
  const std::optional<double> g = parse_number(text);
  require(g && std::isfinite(*g) && *g >= 0, "--dfrot-gamma '", text,
          "': expected a number >= 0 or inf");
  return *g;
}

// "4/16" -> (4, 16): activation bits / KV-cache bits.
std::pair<int, int> parse_acts_pair(const std::string& text) {
  const size_t slash = text.find('/');
  const auto number = [&](const std::string& s) {
    const std::optional<int64_t> v = parse_integer(s);
    require(v && s.find_first_not_of("0123456789") == std::string::npos && *v <= 64, "--acts '",
            text, "': expected A/KV bit widths such as 4/16");
    return static_cast<int>(*v);
  };
  require(slash != std::string::npos, "--acts '", text, "': expected A/KV bit widths such as 4/16");
  return {number(text.substr(0, slash)), number(text.substr(slash + 1))};
}

QuantCell make_cell(const CellArgs& a) {
  QuantCell cell;
  cell.rotation = RotationSpec::parse(a.rotation);
  cell.rotation.seed = a.seed;
  if (a.no_r2) cell.rotation.r2 = false;
  if (a.no_online) cell.rotation.online = false;
  cell.rotation.optrot_steps = a.optrot_steps;
  cell.rotation.optrot_lr = a.optrot_lr;
  cell.rotation.optrot_norm = a.optrot_norm;
  parse_optrot_norm(a.optrot_norm);
  require(a.optrot_steps >= 0 && a.optrot_lr > 0,
          "--optrot-steps must be >= 0 and --optrot-lr > 0");
  cell.rotation.optrot_optimizer = a.optrot_optimizer;
  parse_manifold_optimizer(a.optrot_optimizer);
  cell.rotation.optrot_cosine = !a.optrot_constant_lr;
  parse_optrot_matrices(a.optrot_matrices);
  cell.rotation.optrot_matrices = a.optrot_matrices;
  DfrotOptions& d = cell.rotation.dfrot;
  d.gamma = parse_gamma(a.dfrot_gamma);
  d.iters = a.dfrot_iters;
  require(d.iters >= 0, "--dfrot-iters must be >= 0, got ", d.iters);
  d.symmetric = a.dfrot_sym;
  d.weighting = a.dfrot_sum ? DfrotWeighting::kSum : DfrotWeighting::kMean;
  d.massive.rule = parse_massive_rule(a.dfrot_rule);
  d.massive.threshold = a.dfrot_threshold;
  d.massive.seed = a.seed;
  require(a.dfrot_threshold > 0, "--dfrot-threshold must be positive, got ", a.dfrot_threshold);
  const RotationSpec init = RotationSpec::parse(a.dfrot_init);
  require(init.kind == RotationKind::kHadamard || init.kind == RotationKind::kRandom ||
              init.kind == RotationKind::kNone,
          "--dfrot-init '", a.dfrot_init, "': expected hadamard, random or none");
  cell.rotation.dfrot_init = init.kind;
  require(a.dfrot_layers >= 0 && a.dfrot_nsamples > 0 && a.dfrot_seqlen >= 0,
          "--dfrot-layers/--dfrot-seqlen must be >= 0 and --dfrot-nsamples > 0");
  cell.rotation.dfrot_layers = a.dfrot_layers;
  cell.rotation.dfrot_nsamples = a.dfrot_nsamples;
  cell.rotation.dfrot_seqlen = a.dfrot_seqlen;
  require(a.fp_massive >= 0, "--fp-massive must be >= 0, got ", a.fp_massive);

  WeightQuantOptions& w = cell.weights;
  w.method = parse_weight_method(a.w_quant);
  w.spec.bits = a.w_bits;
  w.spec.group = a.w_group;
  w.spec.symmetric = !a.w_asym;
  w.spec.mse_clip = !a.no_w_clip;
  validate(w.spec, "weight quantizer (--w-bits/--w-group)");
  w.gptq.act_order = a.act_order;
  w.gptq.static_groups = a.static_groups;
  w.gptq.percdamp = a.percdamp;
  w.gptq.blocksize = a.gptq_block;
  require(a.hessian_dtype == "float64" || a.hessian_dtype == "float32", "--hessian-dtype '",
          a.hessian_dtype, "': expected float64 or float32");
  w.hessian_dtype = a.hessian_dtype == "float64" ? at::kDouble : at::kFloat;

  std::vector<std::pair<int, int>> bits;
  for (const std::string& pair : a.acts_list) bits.push_back(parse_acts_pair(pair));
  if (bits.empty()) bits.emplace_back(a.a_bits, a.kv_bits);
  for (auto [a_bits, kv_bits] : bits) {
    ActivationQuant q = default_activation_quant(a_bits, kv_bits, a.a_clip, a.kv_clip);
    q.act.symmetric = !a.a_asym;
    q.o_proj_per_head = a.o_proj_per_head;
    q.fp_massive = a.fp_massive;
    q.k_cache.group = q.v_cache.group = a.kv_group;
    validate(q.act, "activation quantizer (--a-bits/--a-clip)");
    validate(q.k_cache, "KV-cache quantizer (--kv-bits/--kv-clip/--kv-group)");
    cell.acts.push_back(q);
  }

  const bool needs_calib = (w.method == WeightMethod::kGptq && a.w_bits < 16) ||
                           a.rotation == "dfrot" || a.rotation == "optrot+";
  require(!needs_calib || !a.calib.empty(),
          "calibration text (--calib / calibration.text): ", "required for ",
          a.rotation == "dfrot" || a.rotation == "optrot+" ? a.rotation : "GPTQ",
          " (a text file of calibration windows)");
  cell.calib_text = a.calib;
  cell.calib.nsamples = a.nsamples;
  cell.calib.seqlen = a.calib_seqlen;
  cell.calib.seed = a.seed;
  cell.ppl_texts = a.ppl_texts;
  cell.ppl.seqlen = a.seqlen;
  cell.ppl.max_windows = a.max_windows;
  cell.ppl.batch = a.batch;
  cell.kl = a.kl;
  if (!a.tasks.empty()) cell.tasks = parse_task_list(a.tasks);
  cell.task_opts.dir = a.tasks_dir;
  cell.task_opts.limit = a.tasks_limit;
  cell.task_opts.batch = a.tasks_batch;
  cell.bos = a.bos;
  cell.task_opts.max_length = a.tasks_max_length;
  require(a.tasks_batch > 0, "--batch-size (evaluation.tasks_batch) must be positive, got ",
          a.tasks_batch);
  require(a.tasks_max_length >= 0, "--max-length must be >= 0, got ", a.tasks_max_length);
  cell.task_samples = a.task_samples;
  if (!a.tasks_acts.empty()) {
    cell.task_acts.assign(cell.acts.size(), false);
    for (const std::string& pair : a.tasks_acts) {
      const auto [ab, kb] = parse_acts_pair(pair);
      bool found = false;
      for (size_t i = 0; i < cell.acts.size(); ++i) {
        if (cell.acts[i].act.bits == ab && cell.acts[i].k_cache.bits == kb) {
          cell.task_acts[i] = found = true;
        }
      }
      require(found, "--tasks-acts ", pair, ": not one of the evaluated --acts pairs");
    }
  }
  return cell;
}

const std::vector<std::pair<const char*, const char*>>& cell_option_keys() {
  static const std::vector<std::pair<const char*, const char*>> keys = {
      {"--rotation", "rotation.method"},
      {"--optrot-steps", "rotation.optrot.steps"},
      {"--optrot-lr", "rotation.optrot.lr"},
      {"--optrot-norm", "rotation.optrot.norm"},
      {"--optrot-optimizer", "rotation.optrot.optimizer"},
      {"--optrot-matrices", "rotation.optrot.matrices"},
      {"--dfrot-gamma", "rotation.dfrot.gamma"},
      {"--dfrot-iters", "rotation.dfrot.iters"},
      {"--dfrot-init", "rotation.dfrot.init"},
      {"--dfrot-rule", "rotation.dfrot.rule"},
      {"--dfrot-threshold", "rotation.dfrot.threshold"},
      {"--dfrot-layers", "rotation.dfrot.layers"},
      {"--dfrot-nsamples", "rotation.dfrot.nsamples"},
      {"--dfrot-seqlen", "rotation.dfrot.seqlen"},
      {"--fp-massive", "rotation.fp_massive"},
      {"--w-bits", "quantization.w_bits"},
      {"--w-quant", "quantization.w_method"},
      {"--w-group", "quantization.w_group"},
      {"--percdamp", "quantization.percdamp"},
      {"--gptq-block", "quantization.gptq_block"},
      {"--hessian-dtype", "quantization.hessian_dtype"},
      {"--a-bits", "quantization.a_bits"},
      {"--a-clip", "quantization.a_clip"},
      {"--kv-bits", "quantization.kv_bits"},
      {"--kv-clip", "quantization.kv_clip"},
      {"--kv-group", "quantization.kv_group"},
      {"--acts", "evaluation.acts"},
      {"--calib", "calibration.text"},
      {"--nsamples", "calibration.nsamples"},
      {"--calib-seqlen", "calibration.seqlen"},
      {"--ppl-text", "evaluation.ppl_texts"},
      {"--seqlen", "evaluation.seqlen"},
      {"--max-windows", "evaluation.max_windows"},
      {"--batch", "evaluation.batch"},
      {"--tasks", "evaluation.tasks"},
      {"--tasks-dir", "evaluation.tasks_dir"},
      {"--limit", "evaluation.tasks_limit"},
      {"--batch-size", "evaluation.tasks_batch"},
      {"--max-length", "evaluation.tasks_max_length"},
      {"--tasks-acts", "evaluation.tasks_acts"},
      {"--placement", "runtime.placement"},
      {"--dtype", "runtime.dtype"},
      {"--device", "runtime.device"},
  };
  return keys;
}

CLI::Validator schema_validator(const std::string& key) {
  return CLI::Validator(
      [key](std::string& value) -> std::string {
        try {
          check_schema_value(key, value, "");
        } catch (const Error& e) {
          std::string what = e.what();  // ": KEY = VALUE: expected ..." (no file to name)
          return what.rfind(": ", 0) == 0 ? what.substr(2) : what;
        }
        return "";
      },
      "", key);
}

void add_schema_checks(CLI::App* cmd) {
  for (const auto& [flag, key] : cell_option_keys()) {
    CLI::Option* o = cmd->get_option_no_throw(flag);
    if (o) o->check(schema_validator(key));
  }
}

void add_cell_options(CLI::App* cmd, CellArgs& a) {
  add_model_options(cmd, a.m);
  cmd->add_option("--rotation", a.rotation,
                  "none | random | hadamard | optrot | optrot+ | dfrot | file:PATH")
      ->capture_default_str();
  cmd->add_option("--seed", a.seed, "seed of the rotations and the calibration windows")
      ->capture_default_str();
  cmd->add_flag("--no-r2", a.no_r2, "no per-head R2 on v/o");
  cmd->add_option("--optrot-steps", a.optrot_steps, "OptRot: Cayley SGD steps")
      ->capture_default_str();
  cmd->add_option("--optrot-lr", a.optrot_lr, "OptRot: learning rate")->capture_default_str();
  cmd->add_option("--optrot-norm", a.optrot_norm,
                  "OptRot: per-matrix normalisation none | fro4 | numel")
      ->capture_default_str();
  cmd->add_option("--optrot-optimizer", a.optrot_optimizer,
                  "OptRot: cayley (Cayley SGD) | adam (Riemannian Adam)")
      ->capture_default_str();
  cmd->add_option("--optrot-matrices", a.optrot_matrices,
                  "OptRot: the matrices in the objective (subset of q,k,v,o,gate,up,down)")
      ->capture_default_str();
  cmd->add_flag("--optrot-constant-lr", a.optrot_constant_lr,
                "OptRot: no cosine decay of the learning rate");
  cmd->add_option("--dfrot-gamma", a.dfrot_gamma,
                  "DFRot: weight of the massive-activation tokens (a number or inf)")
      ->capture_default_str();
  cmd->add_option("--dfrot-iters", a.dfrot_iters, "DFRot: alternating iterations")
      ->capture_default_str();
  cmd->add_option("--dfrot-init", a.dfrot_init, "DFRot: start rotation hadamard | random | none")
      ->capture_default_str();
  cmd->add_option("--dfrot-rule", a.dfrot_rule, "DFRot: massive-token rule quant-error | random")
      ->capture_default_str();
  cmd->add_option("--dfrot-threshold", a.dfrot_threshold,
                  "DFRot quant-error rule: massive if the unrotated 4-bit error < THRESH*|x|")
      ->capture_default_str();
  cmd->add_flag("--dfrot-sym", a.dfrot_sym,
                "DFRot: symmetric per-token quantizer in the objective (the reference code's)");
  cmd->add_flag("--dfrot-sum", a.dfrot_sum,
                "DFRot: sum each token set (the reference code's weighting) instead of averaging");
  cmd->add_option("--dfrot-layers", a.dfrot_layers,
                  "DFRot: calibration tokens from the first N layers (0: all)")
      ->capture_default_str();
  cmd->add_option("--dfrot-nsamples", a.dfrot_nsamples, "DFRot: calibration windows")
      ->capture_default_str();
  cmd->add_option("--dfrot-seqlen", a.dfrot_seqlen,
                  "DFRot: calibration window (0: min(2048, context))")
      ->capture_default_str();
  cmd->add_option("--fp-massive", a.fp_massive,
                  "keep massive-activation tokens (unrotated error < THRESH*|x|) of q/k/v and "
                  "gate/up inputs in floating point (DFRot's QuaRot.FP16 ablation; 0: off)")
      ->capture_default_str();
  cmd->add_flag("--no-online-hadamard", a.no_online, "no online R3 (q/k) and R4 (down_proj)");
  cmd->add_option("--w-bits", a.w_bits, "weight bits")->capture_default_str();
  cmd->add_option("--w-quant", a.w_quant, "rtn | gptq")->capture_default_str();
  cmd->add_option("--w-group", a.w_group, "weight group size (0: per output channel)")
      ->capture_default_str();
  cmd->add_flag("--w-asym", a.w_asym, "asymmetric weights");
  cmd->add_flag("--no-w-clip", a.no_w_clip, "plain min/max weight range (no MSE clip search)");
  cmd->add_flag("--act-order", a.act_order, "GPTQ: columns in decreasing Hessian diagonal order");
  cmd->add_flag("--static-groups", a.static_groups, "GPTQ: group parameters from the full weight");
  cmd->add_option("--percdamp", a.percdamp, "GPTQ damping, fraction of mean diag(H)")
      ->capture_default_str();
  cmd->add_option("--gptq-block", a.gptq_block, "GPTQ lazy-update block")->capture_default_str();
  cmd->add_option("--hessian-dtype", a.hessian_dtype,
                  "GPTQ Hessian and arithmetic: float64, or float32 as the reference code")
      ->capture_default_str();
  cmd->add_option("--a-bits", a.a_bits, "activation bits (per token)")->capture_default_str();
  cmd->add_option("--a-clip", a.a_clip, "activation clip ratio")->capture_default_str();
  cmd->add_flag("--a-asym", a.a_asym, "asymmetric activations");
  cmd->add_flag("--o-proj-per-head", a.o_proj_per_head, "o_proj input: one scale per head");
  cmd->add_option("--kv-bits", a.kv_bits, "KV-cache bits")->capture_default_str();
  cmd->add_option("--acts", a.acts_list,
                  "A/KV bit pairs evaluated on the same quantized weights, e.g. --acts 16/16 "
                  "--acts 4/4 (overrides --a-bits/--kv-bits)");
  cmd->add_option("--kv-clip", a.kv_clip, "KV-cache clip ratio")->capture_default_str();
  cmd->add_option("--kv-group", a.kv_group, "KV-cache group (capped at KV heads x head_dim)")
      ->capture_default_str();
  cmd->add_option("--calib", a.calib, "calibration text (GPTQ, DFRot, OptRot+)");
  cmd->add_option("--nsamples", a.nsamples, "calibration windows")->capture_default_str();
  cmd->add_option("--calib-seqlen", a.calib_seqlen, "calibration window (0: min(2048, context))")
      ->capture_default_str();
  cmd->add_option("--ppl-text", a.ppl_texts, "text(s) to score");
  cmd->add_option("--seqlen", a.seqlen, "perplexity window (0: min(2048, context))")
      ->capture_default_str();
  cmd->add_option("--max-windows", a.max_windows, "score only the first K windows");
  cmd->add_option("--placement", a.placement,
                  "replicated (every rank holds the model; data parallel) | layers (sharded by "
                  "layers over the ranks; pipeline parallel)")
      ->capture_default_str();
  cmd->add_option("--label", a.label, "a name for this configuration, recorded in --json output");
  cmd->add_flag("--kl", a.kl,
                "also report the mean KL divergence from the floating-point model's predictions");
  cmd->add_option("--batch", a.batch, "windows per forward (0: auto)");
  cmd->add_option("--tasks", a.tasks,
                  "zero-shot tasks: names (arc_easy,piqa,...), zeroshot (the papers' nine), all, "
                  "or NAME=PATH to read a task from PATH (comma-separated)");
  cmd->add_option("--tasks-dir", a.tasks_dir,
                  "directory of the task files (e.g. data/tasks, the vendored first 100 of each)");
  cmd->add_option("--limit", a.tasks_limit,
                  "score only the first N examples of each task (MMLU: of each subject)");
  cmd->add_option("--batch-size", a.tasks_batch, "task sequences per forward")
      ->capture_default_str();
  add_bos_flags(cmd, a.bos);
  cmd->add_option("--max-length", a.tasks_max_length,
                  "task inputs left-truncated to N tokens (0: the model's context)")
      ->capture_default_str();
  cmd->add_option("--tasks-acts", a.tasks_acts,
                  "score the tasks only under these A/KV pairs of --acts (default: all)");
  cmd->add_option("--samples", a.task_samples,
                  "write every task example's scores here (JSON lines)");
  // The values experiment files accept, no more and no less (runner/experiment.cc's schema).
  add_schema_checks(cmd);
}

}  // namespace rotq
