#include "runner/cell/cell_options.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

#include "runner/eval/task_registry.h"
#include "runner/rotate/optrot_model.h"
#include "runner/rotate/rotation_methods.h"
#include "solvers/error.h"
#include "solvers/optrot.h"
#include "solvers/parse.h"

namespace rotq {

CellOption& CellOption::flag(std::string name, std::string sets) {
  flags.push_back({std::move(name), std::move(sets)});
  return *this;
}
CellOption& CellOption::range(double lo, double hi, std::vector<double> except, std::string why) {
  min = lo;
  max = hi;
  excluded = std::move(except);
  meaning = std::move(why);
  return *this;
}
CellOption& CellOption::one_of(std::vector<std::string> names) {
  choices = std::move(names);
  return *this;
}
CellOption& CellOption::rule(std::string (*f)(const std::string&)) {
  check = f;
  return *this;
}
CellOption& CellOption::to(void (*f)(const OptionValue&, CellConfig&)) {
  apply = f;
  return *this;
}

int64_t OptionValue::integer() const { return *parse_integer(text_); }
double OptionValue::number() const { return *parse_number(text_); }
std::vector<std::string> OptionValue::list() const {
  if (text_.empty()) return {};
  return nlohmann::json::parse(text_).get<std::vector<std::string>>();
}

namespace {

using K = KeyType;
using V = const OptionValue&;
using C = CellConfig&;

CellOption row(std::string key, KeyType type, std::string default_value, std::string help) {
  CellOption o;
  o.key = std::move(key);
  o.type = type;
  o.default_value = std::move(default_value);
  o.help = std::move(help);
  return o;
}

// "4/16" -> (4, 16): activation bits / KV-cache bits, or nullopt.
std::optional<std::pair<int, int>> acts_pair(const std::string& text) {
  const size_t slash = text.find('/');
  if (slash == std::string::npos) return std::nullopt;
  const auto a = parse_integer(text.substr(0, slash)), kv = parse_integer(text.substr(slash + 1));
  if (!a || !kv || *a < 2 || *a > 16 || *kv < 1 || *kv > 16) return std::nullopt;
  return std::pair<int, int>(static_cast<int>(*a), static_cast<int>(*kv));
}

std::string check_acts_pair(const std::string& v) {
  return acts_pair(v) ? "" : "A/KV bit widths such as 4/16 (A in [2, 16], KV in [1, 16])";
}
std::string check_optional_acts_pair(const std::string& v) {
  return v.empty() ? "" : check_acts_pair(v);
}
std::string check_rotation(const std::string& v) {
  return find_rotation_method(v) ? "" : rotation_method_names();
}
std::string check_gamma(const std::string& v) {
  const auto g = parse_number(v);
  return v == "inf" || (g && std::isfinite(*g) && *g >= 0) ? "" : "a number >= 0 or inf";
}
std::string check_task_item(const std::string& v) {
  try {
    parse_task_list({v});
  } catch (const Error& e) {
    return std::string("a task name, zeroshot, all or NAME=PATH (") + e.what() + ")";
  }
  return "";
}
std::string check_matrices(const std::string& v) {
  try {
    parse_optrot_matrices(v);
  } catch (const Error&) {
    return "a comma-separated subset of q,k,v,o,gate,up,down";
  }
  return "";
}
std::string check_device(const std::string& v) {
  const bool cuda_n = v.rfind("cuda:", 0) == 0 && v.size() > 5 &&
                      v.find_first_not_of("0123456789", 5) == std::string::npos;
  return v == "cpu" || v == "cuda" || cuda_n ? "" : "cpu, cuda or cuda:N";
}

double gamma_of(const std::string& text) {
  return text == "inf" ? std::numeric_limits<double>::infinity() : *parse_number(text);
}

// Settings several rows build together, expanded by cell_config(): every activation configuration
// shares the template but its bits.
ActivationQuant& acts_template(C c) { return c.quant.acts.front(); }

// Rows: calibration windows.
void calibration_rows(std::vector<CellOption>& t) {
  // --- calibration -----------------------------------------------------------------------------
  t.push_back(
      row("calibration.text", K::kString, "", "calibration text file (GPTQ, DFRot, OptRot+)")
          .flag("--calib")
          .to([](V v, C c) { c.quant.calib_text = v.text(); }));
  t.push_back(row("calibration.nsamples", K::kInt, "128", "calibration windows")
                  .flag("--nsamples")
                  .range(1, 1e6)
                  .to([](V v, C c) { c.quant.calib.nsamples = v.integer(); }));
  t.push_back(row("calibration.seqlen", K::kInt, "0", "window length (0: min(2048, context))")
                  .flag("--calib-seqlen")
                  .range(0, 1e7)
                  .to([](V v, C c) { c.quant.calib.seqlen = v.integer(); }));
  t.push_back(row("calibration.batch", K::kInt, "8",
                  "windows per calibration forward (GPTQ's capture, OptRot+'s covariances): "
                  "memory against speed")
                  .flag("--calib-batch")
                  .range(1, 1e6)
                  .to([](V v, C c) { c.quant.calib.batch = v.integer(); }));
}

// Rows: the method and what every method shares.
void rotation_rows(std::vector<CellOption>& t) {
  // --- rotation (the method first: it sets the spec to the method's defaults, which r2 and
  // online can only turn off: the unrotated baseline has neither) -----------------------------
  t.push_back(row("rotation.method", K::kString, "none", rotation_method_names())
                  .flag("--rotation")
                  .rule(check_rotation)
                  .to([](V v, C c) { c.quant.rotation = rotation_spec(v.text()); }));
  t.push_back(row("rotation.r2", K::kBool, "true", "per-head R2 on v/o")
                  .flag("--no-r2", "false")
                  .to([](V v, C c) { c.quant.rotation.r2 = c.quant.rotation.r2 && v.flag(); }));
  t.push_back(
      row("rotation.online", K::kBool, "true", "online R3 (q/k) and R4 (down_proj) Hadamards")
          .flag("--no-online-hadamard", "false")
          .to([](V v, C c) { c.quant.rotation.online = c.quant.rotation.online && v.flag(); }));
  t.push_back(row("rotation.fp_massive", K::kDouble, "0",
                  "keep massive tokens (unrotated error < THRESH*|x|) of q/k/v and gate/up inputs "
                  "in FP (DFRot's QuaRot.FP16 ablation; 0: off)")
                  .flag("--fp-massive")
                  .range(0, 1e6)
                  .to([](V v, C c) { acts_template(c).fp_massive = v.number(); }));
}

// Rows: DFRot.
void dfrot_rows(std::vector<CellOption>& t) {
  t.push_back(
      row("rotation.dfrot.gamma", K::kString, "100", "weight of the massive tokens (number or inf)")
          .flag("--dfrot-gamma")
          .rule(check_gamma)
          .to([](V v, C c) { c.quant.rotation.dfrot.gamma = gamma_of(v.text()); }));
  t.push_back(row("rotation.dfrot.iters", K::kInt, "100", "alternating iterations")
                  .flag("--dfrot-iters")
                  .range(0, 1e6)
                  .to([](V v, C c) { c.quant.rotation.dfrot.iters = v.integer(); }));
  t.push_back(
      row("rotation.dfrot.init", K::kString, "hadamard", "start: hadamard | random | none")
          .flag("--dfrot-init")
          .one_of({"hadamard", "random", "none"})
          .to([](V v, C c) { c.quant.rotation.dfrot_init = parse_fixed_rotation(v.text()); }));
  t.push_back(row("rotation.dfrot.rule", K::kString, "quant-error",
                  "massive-token rule: quant-error | random")
                  .flag("--dfrot-rule")
                  .one_of({"quant-error", "random"})
                  .to([](V v, C c) {
                    c.quant.rotation.dfrot.massive.rule = parse_massive_rule(v.text());
                  }));
  t.push_back(row("rotation.dfrot.threshold", K::kDouble, "0.1328125",
                  "quant-error rule: massive if the unrotated 4-bit error < THRESH*|x|")
                  .flag("--dfrot-threshold")
                  .range(1e-12, 1e6)
                  .to([](V v, C c) { c.quant.rotation.dfrot.massive.threshold = v.number(); }));
  t.push_back(row("rotation.dfrot.sym", K::kBool, "false",
                  "symmetric per-token quantizer in the objective (the reference code's)")
                  .flag("--dfrot-sym", "true")
                  .to([](V v, C c) { c.quant.rotation.dfrot.symmetric = v.flag(); }));
  t.push_back(row("rotation.dfrot.sum", K::kBool, "false",
                  "sum each token set (the reference code's weighting) instead of averaging")
                  .flag("--dfrot-sum", "true")
                  .to([](V v, C c) {
                    c.quant.rotation.dfrot.weighting =
                        v.flag() ? DfrotWeighting::kSum : DfrotWeighting::kMean;
                  }));
  t.push_back(row("rotation.dfrot.precision", K::kString, "float64",
                  "float64, or float32 token GEMMs with float64 sums and a Newton polar whose "
                  "middle steps run in float32 (result orthogonal in float64)")
                  .flag("--dfrot-precision")
                  .one_of({"float64", "float32"})
                  .to([](V v, C c) {
                    c.quant.rotation.dfrot.pass_dtype =
                        v.text() == "float32" ? at::kFloat : at::kDouble;
                  }));
  t.push_back(row("rotation.dfrot.layers", K::kInt, "0", "tokens from the first N layers (0: all)")
                  .flag("--dfrot-layers")
                  .range(0, 1e6)
                  .to([](V v, C c) { c.quant.rotation.dfrot_layers = v.integer(); }));
  t.push_back(row("rotation.dfrot.nsamples", K::kInt, "1", "DFRot calibration windows")
                  .flag("--dfrot-nsamples")
                  .range(1, 1e6)
                  .to([](V v, C c) { c.quant.rotation.dfrot_nsamples = v.integer(); }));
  t.push_back(row("rotation.dfrot.seqlen", K::kInt, "0", "DFRot window (0: min(2048, context))")
                  .flag("--dfrot-seqlen")
                  .range(0, 1e7)
                  .to([](V v, C c) { c.quant.rotation.dfrot_seqlen = v.integer(); }));
}

// Rows: OptRot / OptRot+.
void optrot_rows(std::vector<CellOption>& t) {
  t.push_back(row("rotation.optrot.steps", K::kInt, "1000", "Cayley SGD / Adam steps")
                  .flag("--optrot-steps")
                  .range(0, 1e7)
                  .to([](V v, C c) { c.quant.rotation.optrot_steps = v.integer(); }));
  t.push_back(row("rotation.optrot.lr", K::kDouble, "0.02", "learning rate")
                  .flag("--optrot-lr")
                  .range(1e-12, 1e6)
                  .to([](V v, C c) { c.quant.rotation.optrot_lr = v.number(); }));
  t.push_back(row("rotation.optrot.norm", K::kString, "numel",
                  "per-matrix normalisation none | fro4 | numel")
                  .flag("--optrot-norm")
                  .one_of({"none", "fro4", "numel"})
                  .to([](V v, C c) { c.quant.rotation.optrot_norm = v.text(); }));
  t.push_back(row("rotation.optrot.optimizer", K::kString, "cayley",
                  "cayley (Cayley SGD) | adam (Riemannian Adam)")
                  .flag("--optrot-optimizer")
                  .one_of({"cayley", "adam"})
                  .to([](V v, C c) { c.quant.rotation.optrot_optimizer = v.text(); }));
  t.push_back(row("rotation.optrot.constant_lr", K::kBool, "false", "no cosine decay")
                  .flag("--optrot-constant-lr", "true")
                  .to([](V v, C c) { c.quant.rotation.optrot_cosine = !v.flag(); }));
  t.push_back(row("rotation.optrot.precision", K::kString, "float64",
                  "gradient products: float64 | float32 | tf32 (float32 on GPU tensor cores; "
                  "float32 on CPUs) | bf16 (bfloat16 inputs, float32 sums: GPU tensor cores; "
                  "emulated in float32 on CPUs); the rotation is float64")
                  .flag("--optrot-precision")
                  .one_of({"float64", "float32", "tf32", "bf16"})
                  .to([](V v, C c) { c.quant.rotation.optrot_precision = v.text(); }));
  t.push_back(row("rotation.optrot.matrices", K::kString, "q,k,v,o,gate,up,down",
                  "matrices in the objective (subset of q,k,v,o,gate,up,down)")
                  .flag("--optrot-matrices")
                  .rule(check_matrices)
                  .to([](V v, C c) { c.quant.rotation.optrot_matrices = v.text(); }));
}

// Rows: a method learned end to end, rotation.<method>.* (SpinQuant, OSTQuant), with the
// method's defaults. `acts` is resolved by cell_config() against the evaluated configurations.
template <LearnOptions RotationSpec::*M>
void learn_rows(std::vector<CellOption>& t, const std::string& method, const std::string& update,
                const std::string& decay) {
  const LearnOptions d = RotationSpec{}.*M;
  const std::string k = "rotation." + method + ".", f = "--" + method + "-";
  const auto num = [](double v) { return canonical_number(v); };
  t.push_back(row(k + "steps", K::kInt, num(d.steps), update + " steps")
                  .flag(f + "steps")
                  .range(0, 1e7)
                  .to([](V v, C c) { (c.quant.rotation.*M).steps = v.integer(); }));
  t.push_back(row(k + "lr", K::kDouble, num(d.lr), "learning rate of the rotations")
                  .flag(f + "lr")
                  .range(1e-12, 1e6)
                  .to([](V v, C c) { (c.quant.rotation.*M).lr = v.number(); }));
  t.push_back(row(k + "constant_lr", K::kBool, "false", "no " + decay + " decay")
                  .flag(f + "constant-lr", "true")
                  .to([](V v, C c) {
                    (c.quant.rotation.*M).schedule =
                        v.flag() ? LrSchedule::kConstant : (RotationSpec{}.*M).schedule;
                  }));
  t.push_back(row(k + "nsamples", K::kInt, num(d.nsamples),
                  "training windows, taken in order batch by batch (wrapping around)")
                  .flag(f + "nsamples")
                  .range(1, 1e7)
                  .to([](V v, C c) { (c.quant.rotation.*M).nsamples = v.integer(); }));
  t.push_back(row(k + "seqlen", K::kInt, num(d.seqlen), "window (0: min(2048, context))")
                  .flag(f + "seqlen")
                  .range(0, 1e7)
                  .to([](V v, C c) { (c.quant.rotation.*M).seqlen = v.integer(); }));
  t.push_back(row(k + "batch", K::kInt, num(d.batch),
                  "windows per step, all ranks together (a multiple of the rank count)")
                  .flag(f + "batch")
                  .range(1, 1e6)
                  .to([](V v, C c) { (c.quant.rotation.*M).batch = v.integer(); }));
  t.push_back(row(k + "micro_batch", K::kInt, num(d.micro_batch),
                  "windows per forward/backward on a rank: memory against speed")
                  .flag(f + "micro-batch")
                  .range(1, 1e6)
                  .to([](V v, C c) { (c.quant.rotation.*M).micro_batch = v.integer(); }));
  t.push_back(row(k + "grad_clip", K::kDouble, num(d.grad_clip), "gradient-norm clip (0: none)")
                  .flag(f + "grad-clip")
                  .range(0, 1e12)
                  .to([](V v, C c) { (c.quant.rotation.*M).grad_clip = v.number(); }));
  t.push_back(row(k + "offload", K::kBool, "false",
                  "keep the model in host memory while learning, one layer on the device at a time")
                  .flag(f + "offload", "true")
                  .to([](V v, C c) { (c.quant.rotation.*M).offload = v.flag(); }));
  t.push_back(row(k + "acts", K::kString, "",
                  "A/KV bits trained for, e.g. 4/4 (empty: the lowest-bit evaluated pair)")
                  .flag(f + "acts")
                  .rule(check_optional_acts_pair));
}

// Rows: SpinQuant (rotations learned end to end on the cross-entropy).
void spinquant_rows(std::vector<CellOption>& t) {
  learn_rows<&RotationSpec::spinquant>(t, "spinquant", "Cayley SGD", "cosine");
}

// Rows: OSTQuant (rotations and scalings learned against the floating-point model).
void ostquant_rows(std::vector<CellOption>& t) {
  learn_rows<&RotationSpec::ostquant>(t, "ostquant", "Riemannian Adam", "linear");
  const LearnOptions d = ostquant_learn_options();
  t.push_back(row("rotation.ostquant.smooth_lr", K::kDouble, canonical_number(d.smooth_lr),
                  "Adam's learning rate of the channel scalings (0: no scalings)")
                  .flag("--ostquant-smooth-lr")
                  .range(0, 1e6)
                  .to([](V v, C c) { c.quant.rotation.ostquant.smooth_lr = v.number(); }));
  t.push_back(row("rotation.ostquant.kl_top", K::kInt, canonical_number(d.kl_top),
                  "KL-Top's k: the floating-point model's top-k tokens (0: cross-entropy instead)")
                  .flag("--ostquant-kl-top")
                  .range(0, 1e9)
                  .to([](V v, C c) { c.quant.rotation.ostquant.kl_top = v.integer(); }));
}

// Rows: weight quantization (RTN, GPTQ).
void weight_rows(std::vector<CellOption>& t) {
  // --- quantization ----------------------------------------------------------------------------
  t.push_back(row("quantization.w_bits", K::kInt, "16", "weight bits (16: not quantized)")
                  .flag("--w-bits")
                  .range(2, 16)
                  .to([](V v, C c) { c.quant.weights.spec.bits = static_cast<int>(v.integer()); }));
  t.push_back(row("quantization.w_method", K::kString, "gptq", "rtn | gptq")
                  .flag("--w-quant")
                  .one_of({"rtn", "gptq"})
                  .to([](V v, C c) { c.quant.weights.method = parse_weight_method(v.text()); }));
  t.push_back(row("quantization.w_group", K::kInt, "0", "weight group (0: per output channel)")
                  .flag("--w-group")
                  .range(0, 1e9, {1}, " (0: per channel; a group has 2 columns or more)")
                  .to([](V v, C c) { c.quant.weights.spec.group = v.integer(); }));
  t.push_back(row("quantization.w_asym", K::kBool, "false", "asymmetric weights")
                  .flag("--w-asym", "true")
                  .to([](V v, C c) { c.quant.weights.spec.symmetric = !v.flag(); }));
  t.push_back(
      row("quantization.w_clip", K::kBool, "true", "MSE clip search (false: plain min/max range)")
          .flag("--no-w-clip", "false")
          .to([](V v, C c) { c.quant.weights.spec.mse_clip = v.flag(); }));
  t.push_back(row("quantization.act_order", K::kBool, "false",
                  "GPTQ: columns in decreasing Hessian diagonal order")
                  .flag("--act-order", "true")
                  .to([](V v, C c) { c.quant.weights.gptq.act_order = v.flag(); }));
  t.push_back(row("quantization.static_groups", K::kBool, "false",
                  "GPTQ: group parameters from the full weight")
                  .flag("--static-groups", "true")
                  .to([](V v, C c) { c.quant.weights.gptq.static_groups = v.flag(); }));
  t.push_back(
      row("quantization.percdamp", K::kDouble, "0.01", "GPTQ damping, fraction of mean diag(H)")
          .flag("--percdamp")
          .range(0, 1e6)
          .to([](V v, C c) { c.quant.weights.gptq.percdamp = v.number(); }));
  t.push_back(row("quantization.gptq_block", K::kInt, "128", "GPTQ lazy-update block")
                  .flag("--gptq-block")
                  .range(1, 1e9)
                  .to([](V v, C c) { c.quant.weights.gptq.blocksize = v.integer(); }));
  t.push_back(row("quantization.hessian_dtype", K::kString, "float64",
                  "GPTQ Hessian and arithmetic: float64, or float32 as the reference code "
                  "(bf16/fp16 activations summed exactly on TF32 tensor cores)")
                  .flag("--hessian-dtype")
                  .one_of({"float64", "float32"})
                  .to([](V v, C c) {
                    c.quant.weights.hessian_dtype =
                        v.text() == "float64" ? at::kDouble : at::kFloat;
                  }));
}

// Rows: activation and KV-cache quantization (the template of every evaluation.acts pair).
void activation_rows(std::vector<CellOption>& t) {
  t.push_back(row("quantization.a_bits", K::kInt, "16", "activation bits (per token)")
                  .flag("--a-bits")
                  .range(2, 16)
                  .to([](V v, C c) { acts_template(c).act.bits = static_cast<int>(v.integer()); }));
  t.push_back(row("quantization.a_clip", K::kDouble, "1", "activation clip ratio")
                  .flag("--a-clip")
                  .range(1e-9, 1)
                  .to([](V v, C c) { acts_template(c).act.clip_ratio = v.number(); }));
  t.push_back(row("quantization.a_asym", K::kBool, "false", "asymmetric activations")
                  .flag("--a-asym", "true")
                  .to([](V v, C c) { acts_template(c).act.symmetric = !v.flag(); }));
  t.push_back(
      row("quantization.o_proj_per_head", K::kBool, "false", "o_proj input: one scale per head")
          .flag("--o-proj-per-head", "true")
          .to([](V v, C c) { acts_template(c).o_proj_per_head = v.flag(); }));
  t.push_back(row("quantization.kv_bits", K::kInt, "16", "KV-cache bits")
                  .flag("--kv-bits")
                  .range(1, 16)
                  .to([](V v, C c) {
                    acts_template(c).k_cache.bits = acts_template(c).v_cache.bits =
                        static_cast<int>(v.integer());
                  }));
  t.push_back(row("quantization.kv_clip", K::kDouble, "1", "KV-cache clip ratio")
                  .flag("--kv-clip")
                  .range(1e-9, 1)
                  .to([](V v, C c) {
                    acts_template(c).k_cache.clip_ratio = acts_template(c).v_cache.clip_ratio =
                        v.number();
                  }));
  t.push_back(
      row("quantization.kv_group", K::kInt, "128", "KV-cache group (capped at KV heads x head_dim)")
          .flag("--kv-group")
          .range(0, 1e9)
          .to([](V v, C c) {
            acts_template(c).k_cache.group = acts_template(c).v_cache.group = v.integer();
          }));
}

// Rows: perplexity.
void evaluation_rows(std::vector<CellOption>& t) {
  // --- evaluation ------------------------------------------------------------------------------
  t.push_back(row("evaluation.ppl_texts", K::kStringList, "", "texts to score (perplexity)")
                  .flag("--ppl-text")
                  .to([](V v, C c) { c.quant.ppl_texts = v.list(); }));
  // Expanded by cell_config() (the pairs replace the template's bits).
  t.push_back(row("evaluation.acts", K::kStringList, "",
                  "A/KV bit pairs evaluated on the same weights, e.g. [16/16, 4/4] (empty: "
                  "a_bits/kv_bits)")
                  .flag("--acts")
                  .rule(check_acts_pair));
  t.push_back(row("evaluation.seqlen", K::kInt, "0", "perplexity window (0: min(2048, context))")
                  .flag("--seqlen")
                  .range(0, 1e7)
                  .to([](V v, C c) { c.quant.ppl.seqlen = v.integer(); }));
  t.push_back(
      row("evaluation.max_windows", K::kInt, "-1", "score only the first K windows (-1: all)")
          .flag("--max-windows")
          .range(-1, 1e12, {0}, " (-1: all windows)")
          .to([](V v, C c) { c.quant.ppl.max_windows = v.integer(); }));
  t.push_back(row("evaluation.batch", K::kInt, "0", "windows per forward (0: auto)")
                  .flag("--batch")
                  .range(0, 1e6)
                  .to([](V v, C c) { c.quant.ppl.batch = v.integer(); }));
  t.push_back(row("evaluation.kl", K::kBool, "false",
                  "also the mean KL divergence from the floating-point model's predictions")
                  .flag("--kl", "true")
                  .to([](V v, C c) { c.quant.kl = v.flag(); }));
}

// Rows: zero-shot tasks and BOS.
void task_rows(std::vector<CellOption>& t) {
  t.push_back(row("evaluation.tasks", K::kStringList, "",
                  "zero-shot tasks (arc_easy, ..., mmlu, mmlu_5shot; zeroshot = the papers' nine; "
                  "all; NAME=PATH), comma-separated")
                  .flag("--tasks")
                  .rule(check_task_item)
                  .to([](V v, C c) {
                    if (!v.list().empty()) c.quant.tasks = parse_task_list(v.list());
                  }));
  // Checked against evaluation.acts by cell_config().
  t.push_back(row("evaluation.tasks_acts", K::kStringList, "",
                  "A/KV pairs of evaluation.acts to score the tasks under (empty: all)")
                  .flag("--tasks-acts")
                  .rule(check_acts_pair));
  t.push_back(row("evaluation.tasks_dir", K::kString, "",
                  "directory of the task files (e.g. data/tasks, the vendored first 100 of each)")
                  .flag("--tasks-dir")
                  .to([](V v, C c) { c.quant.task_opts.dir = v.text(); }));
  t.push_back(
      row("evaluation.tasks_limit", K::kInt, "-1", "first N examples per task (MMLU: per subject)")
          .flag("--limit")
          .range(-1, 1e12, {0}, " (-1: every example)")
          .to([](V v, C c) { c.quant.task_opts.limit = v.integer(); }));
  t.push_back(row("evaluation.tasks_batch", K::kInt, "32", "task sequences per forward")
                  .flag("--batch-size")
                  .range(1, 1e6)
                  .to([](V v, C c) { c.quant.task_opts.batch = v.integer(); }));
  t.push_back(row("evaluation.bos", K::kString, "auto",
                  "BOS before texts, calibration and task contexts: auto (the tokenizer's own "
                  "policy), true, false")
                  .flag("--bos", "true")
                  .flag("--no-bos", "false")
                  .one_of({"auto", "true", "false"})
                  .to([](V v, C c) {
                    c.quant.bos =
                        v.text() == "auto" ? std::nullopt : std::optional<bool>(v.text() == "true");
                  }));
  t.push_back(
      row("evaluation.tasks_max_length", K::kInt, "0", "task left-truncation (0: model context)")
          .flag("--max-length")
          .range(0, 1e7)
          .to([](V v, C c) { c.quant.task_opts.max_length = v.integer(); }));
}

// Rows: where and how the cell runs.
void runtime_rows(std::vector<CellOption>& t) {
  // --- runtime ---------------------------------------------------------------------------------
  t.push_back(
      row("runtime.dtype", K::kString, "float32", "compute dtype float32 | float64 | bfloat16")
          .flag("--dtype")
          .one_of({"float32", "float64", "bfloat16"})
          .to([](V v, C c) { c.dtype = v.text(); }));
  t.push_back(row("runtime.device", K::kString, "cpu",
                  "cpu | cuda (this rank's GPU) | cuda:N; weights are moved there")
                  .flag("--device")
                  .rule(check_device)
                  .to([](V v, C c) { c.device = v.text(); }));
  t.push_back(row("runtime.placement", K::kString, "replicated",
                  "replicated (every rank holds the model; data parallel) | layers (sharded by "
                  "layers over the ranks; pipeline parallel)")
                  .flag("--placement")
                  .one_of({"replicated", "layers"})
                  .to([](V v, C c) { c.placement = v.text(); }));
  t.push_back(row("runtime.save_rotations", K::kBool, "false",
                  "store R1 and the R2s (float64) with the cell")
                  .to([](V v, C c) { c.save_rotations = v.flag(); }));
}

std::vector<CellOption> make_table() {
  std::vector<CellOption> t;
  for (auto rows :
       {calibration_rows, rotation_rows, dfrot_rows, optrot_rows, spinquant_rows, ostquant_rows,
        weight_rows, activation_rows, evaluation_rows, task_rows, runtime_rows}) {
    rows(t);
  }
  return t;
}

std::string expected_range(const CellOption& o) {
  std::string but;
  for (double e : o.excluded) but += (but.empty() ? " except " : ", ") + canonical_number(e);
  return "a value in [" + canonical_number(o.min) + ", " + canonical_number(o.max) + "]" + but +
         o.meaning;
}

// The activation configurations: the template under each evaluation.acts pair (none: its own).
std::vector<ActivationQuant> expand_acts(const ActivationQuant& tmpl,
                                         const std::vector<std::string>& pairs) {
  std::vector<ActivationQuant> out;
  for (const std::string& p : pairs) {
    ActivationQuant q = tmpl;
    std::tie(q.act.bits, q.k_cache.bits) = *acts_pair(p);
    q.v_cache.bits = q.k_cache.bits;
    out.push_back(q);
  }
  if (out.empty()) out.push_back(tmpl);
  for (const ActivationQuant& q : out) {
    validate(q.act, "activation quantizer (" + option_name("quantization.a_bits") + ")");
    validate(q.k_cache, "KV-cache quantizer (" + option_name("quantization.kv_bits") + ")");
  }
  return out;
}

// The configuration a learned rotation trains for: the pair asked for, else the evaluated
// configuration with the fewest activation bits (then KV bits).
// The method whose rotation.<method>.acts row says what a learned rotation trains for.
std::string learned_method(const std::string& method) {
  return method == "ostquant" ? "ostquant" : "spinquant";
}

ActivationQuant learned_for(const ActivationQuant& tmpl, const std::vector<ActivationQuant>& acts,
                            const std::string& pair) {
  if (!pair.empty()) return expand_acts(tmpl, {pair}).front();
  const auto bits = [](const ActivationQuant& q) {
    return std::make_pair(q.act.bits, q.k_cache.bits);
  };
  return *std::min_element(acts.begin(), acts.end(),
                           [&](const auto& a, const auto& b) { return bits(a) < bits(b); });
}

// Per activation configuration: score the tasks under it (empty: all).
std::vector<bool> task_acts_mask(const std::vector<ActivationQuant>& acts,
                                 const std::vector<std::string>& pairs) {
  if (pairs.empty()) return {};
  std::vector<bool> mask(acts.size(), false);
  for (const std::string& p : pairs) {
    const auto [ab, kb] = *acts_pair(p);
    bool found = false;
    for (size_t i = 0; i < acts.size(); ++i) {
      if (acts[i].act.bits == ab && acts[i].k_cache.bits == kb) mask[i] = found = true;
    }
    require(found, option_name("evaluation.tasks_acts"), " ", p,
            ": not one of the evaluated pairs (", option_name("evaluation.acts"), ")");
  }
  return mask;
}

}  // namespace

const std::vector<CellOption>& cell_options() {
  static const std::vector<CellOption> table = make_table();
  return table;
}

const CellOption* find_cell_option(const std::string& key) {
  for (const CellOption& o : cell_options()) {
    if (o.key == key) return &o;
  }
  return nullptr;
}

CellValues default_cell_values() {
  CellValues v;
  for (const CellOption& o : cell_options()) v[o.key] = o.default_value;
  return v;
}

std::string canonical_number(double v) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

const char* key_type_name(KeyType t) {
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

std::string option_name(const std::string& key) {
  const CellOption* o = find_cell_option(key);
  if (!o || o->flags.empty()) return key;
  std::string flags;
  for (const CellFlag& f : o->flags) flags += (flags.empty() ? "" : " / ") + f.name;
  return key + " (" + flags + ")";
}

std::string canonical_option_value(const CellOption& o, const std::string& text,
                                   const std::string& at) {
  const auto expected = [&](const std::string& what) {
    fail(at, ": ", o.key, " = '", text, "': expected ", what);
  };
  std::string value = text;
  switch (o.type) {
    case KeyType::kInt: {
      const auto v = parse_integer(text);
      if (!v) expected(key_type_name(o.type));
      value = std::to_string(*v);
      break;
    }
    case KeyType::kDouble: {
      const auto v = parse_number(text);
      if (!v || std::isnan(*v)) expected(key_type_name(o.type));
      value = canonical_number(*v);
      break;
    }
    case KeyType::kBool:
      if (text != "true" && text != "false") expected(key_type_name(o.type));
      break;
    case KeyType::kString:
    case KeyType::kStringList:
      break;
  }
  if (!o.choices.empty() &&
      std::find(o.choices.begin(), o.choices.end(), value) == o.choices.end()) {
    std::string all;
    for (const std::string& c : o.choices) all += (all.empty() ? "" : ", ") + c;
    expected("one of " + all);
  }
  if (o.type == KeyType::kInt || o.type == KeyType::kDouble) {
    const double v = *parse_number(value);
    const bool excluded = std::find(o.excluded.begin(), o.excluded.end(), v) != o.excluded.end();
    if (!(v >= o.min && v <= o.max) || excluded) {
      fail(at, ": ", o.key, " = ", value, ": expected ", expected_range(o));
    }
  }
  if (o.check) {
    const std::string what = o.check(value);
    if (!what.empty()) expected(what);
  }
  return value;
}

std::string canonical_option_list(const CellOption& o, const std::vector<std::string>& items,
                                  const std::string& at) {
  nlohmann::json list = nlohmann::json::array();
  for (const std::string& item : items) list.push_back(canonical_option_value(o, item, at));
  return list.empty() ? "" : list.dump();
}

CellConfig cell_config(const CellValues& values, uint64_t seed) {
  CellConfig c;
  c.quant.acts = {default_activation_quant(16, 16)};  // the template the rows fill
  for (const CellOption& o : cell_options()) {
    const auto it = values.find(o.key);
    require(it != values.end(), "cell configuration: no value for '", o.key, "'");
    if (o.apply) o.apply(OptionValue(it->second), c);
  }
  RotationSpec& r = c.quant.rotation;
  r.seed = r.dfrot.massive.seed = c.quant.calib.seed = seed;
  const ActivationQuant tmpl = c.quant.acts.front();
  c.quant.acts = expand_acts(tmpl, OptionValue(values.at("evaluation.acts")).list());
  c.quant.task_acts =
      task_acts_mask(c.quant.acts, OptionValue(values.at("evaluation.tasks_acts")).list());
  validate(c.quant.weights.spec, "weight quantizer (" + option_name("quantization.w_bits") + " / " +
                                     option_name("quantization.w_group") + ")");
  r.learn_acts =
      learned_for(tmpl, c.quant.acts,
                  OptionValue(values.at("rotation." + learned_method(r.method) + ".acts")).text());
  // As SpinQuant: weights are simulated in training only when they will be RTN (GPTQ follows on
  // floating-point weights otherwise), or when nothing else would be quantized (a weight-only
  // target: the floating-point loss does not depend on the rotation at all).
  if (c.quant.weights.method == WeightMethod::kRtn || !r.learn_acts.any()) {
    r.learn_weights = c.quant.weights.spec;
  }
  const RotationMethod& method = *find_rotation_method(r.text());
  const bool gptq = c.quant.weights.method == WeightMethod::kGptq && c.quant.weights.spec.enabled();
  require(!(gptq || method.needs_calibration) || !c.quant.calib_text.empty(),
          option_name("calibration.text"), ": required for ", gptq ? "GPTQ" : method.name,
          " (a text file of calibration windows)");
  return c;
}

CLI::Validator schema_validator(const std::string& key) {
  const CellOption* o = find_cell_option(key);
  require(o, "schema_validator: unknown key '", key, "'");
  return CLI::Validator(
      [o](std::string& value) -> std::string {
        try {
          canonical_option_value(*o, value, "");
        } catch (const Error& e) {
          std::string what = e.what();  // ": KEY = VALUE: expected ..." (no file to name)
          return what.rfind(": ", 0) == 0 ? what.substr(2) : what;
        }
        return "";
      },
      "", key);
}

void add_schema_checks(CLI::App* cmd) {
  for (const CellOption& o : cell_options()) {
    for (const CellFlag& f : o.flags) {
      if (!f.sets.empty()) continue;
      if (CLI::Option* opt = cmd->get_option_no_throw(f.name)) opt->check(schema_validator(o.key));
    }
  }
}

namespace {

// How --help shows a row's value.
const char* flag_type_name(KeyType t) {
  switch (t) {
    case KeyType::kInt:
      return "INT";
    case KeyType::kDouble:
      return "NUMBER";
    case KeyType::kBool:
      return "BOOL";
    case KeyType::kString:
      return "TEXT";
    case KeyType::kStringList:
      return "TEXT";  // CLI11 adds the " ..." of a list
  }
  return "TEXT";
}

}  // namespace

void add_cell_flags(CLI::App* cmd, CellValues& values) {
  for (const CellOption& o : cell_options()) {
    values.emplace(o.key, o.default_value);
    for (const CellFlag& f : o.flags) {
      if (!f.sets.empty()) {
        cmd->add_flag_callback(
            f.name, [&values, &o, sets = f.sets] { values[o.key] = sets; },
            "sets " + o.key + " = " + f.sets + " (" + o.help + ")");
      } else if (o.type == KeyType::kStringList) {
        cmd->add_option_function<std::vector<std::string>>(
               f.name,
               [&values, &o](const std::vector<std::string>& items) {
                 values[o.key] = canonical_option_list(o, items, "");
               },
               o.help)
            ->type_name(flag_type_name(o.type))
            ->check(schema_validator(o.key));
      } else {
        cmd->add_option_function<std::string>(
               f.name,
               [&values, &o](const std::string& text) {
                 values[o.key] = canonical_option_value(o, text, "");
               },
               o.help)
            ->type_name(flag_type_name(o.type))
            ->default_str(o.default_value)
            ->check(schema_validator(o.key));
      }
    }
  }
}

std::string schema_markdown() {
  std::ostringstream s;
  s << "| key | flag | type | default | meaning |\n|---|---|---|---|---|\n";
  const auto cell = [](const std::string& text) {  // a '|' inside a cell is escaped in markdown
    std::string out;
    for (char c : text) out += c == '|' ? std::string("\\|") : std::string(1, c);
    return out;
  };
  for (const CellOption& o : cell_options()) {
    std::string flags;
    for (const CellFlag& f : o.flags) flags += (flags.empty() ? "`" : ", `") + f.name + "`";
    s << "| `" << o.key << "` | " << flags << " | " << key_type_name(o.type) << " | `"
      << o.default_value << "` | " << cell(o.help) << " |\n";
  }
  return s.str();
}

}  // namespace rotq
