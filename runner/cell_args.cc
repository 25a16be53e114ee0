#include "runner/cell_args.h"

#include <cmath>
#include <limits>

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
    require(!s.empty() && s.find_first_not_of("0123456789") == std::string::npos, "--acts '", text,
            "': expected A/KV bit widths such as 4/16");
    return std::stoi(s);
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

  cell.calib_text = a.calib;
  cell.calib.nsamples = a.nsamples;
  cell.calib.seqlen = a.calib_seqlen;
  cell.calib.seed = a.seed;
  cell.ppl_texts = a.ppl_texts;
  cell.ppl.seqlen = a.seqlen;
  cell.ppl.max_windows = a.max_windows;
  cell.ppl.batch = a.batch;
  cell.kl = a.kl;
  return cell;
}

}  // namespace rotq
