// rotq quantize-eval: one experiment cell from the command line (load → rotate → fuse → quantize
// → perplexity), optionally saving the rotated, quantized model with its rotations.
#include <ATen/ATen.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>

#include "runner/cell_args.h"
#include "runner/cmd_common.h"
#include "runner/comm_timed.h"
#include "runner/quant_pipeline.h"
#include "runner/rotation_io.h"
#include "solvers/error.h"
#include "solvers/optrot.h"
#include "solvers/optrot_model.h"
#include "solvers/parse.h"

namespace rotq {
namespace {

nlohmann::json learning_json(const RotationLearning& l) {
  if (l.loss.empty()) return nullptr;
  nlohmann::json j = {{"start_loss", l.loss.front()},
                      {"final_loss", l.loss.back()},
                      {"best_loss", *std::min_element(l.loss.begin(), l.loss.end())},
                      {"steps", l.loss.size() - 1},
                      {"seconds", l.seconds},
                      {"gflops", l.flops / 1e9},
                      {"loss_curve", l.loss}};
  if (l.calib_tokens > 0) {
    j["calib_tokens"] = l.calib_tokens;
    j["massive_tokens"] = l.massive_tokens;
  }
  return j;
}

nlohmann::json cell_json(const CellArgs& a, const QuantCell& cell, const QuantCellResult& r,
                         size_t eval, const Runtime& rt) {
  const ActivationQuant& acts = cell.acts.at(eval % cell.acts.size());
  const std::string text = cell.ppl_texts.empty() ? "" : cell.ppl_texts.at(eval / cell.acts.size());
  const PplResult ppl = eval < r.ppl.size() ? r.ppl[eval] : PplResult{};
  nlohmann::json j = {
      {"command", "quantize-eval"},
      {"label", a.label},
      {"model", a.m.model},
      {"rotation", cell.rotation.describe()},
      {"rotation_kind", rotation_kind_name(cell.rotation.kind)},
      {"seed", a.seed},
      {"rotation_learning", learning_json(r.learning)},
      {"r2", cell.rotation.r2},
      {"online_hadamard", cell.rotation.online},
      {"w_bits", cell.weights.spec.bits},
      {"w_quant", weight_method_name(cell.weights.method)},
      {"w_spec", cell.weights.spec.describe()},
      {"act_order", cell.weights.gptq.act_order},
      {"a_bits", acts.act.bits},
      {"kv_bits", acts.k_cache.bits},
      {"acts", acts.describe()},
      {"calib", a.calib},
      {"nsamples", a.nsamples},
      {"ppl_text", text},
      {"seqlen", ppl.seqlen},
      {"windows", ppl.windows},
      {"scored_tokens", ppl.scored_tokens},
      {"ppl", ppl.ppl},
      {"kl", ppl.kl >= 0 ? nlohmann::json(ppl.kl) : nlohmann::json(nullptr)},
      {"mean_nll", ppl.mean_nll},
      {"seconds",
       {{"rotate", r.seconds.rotate},
        {"fuse", r.seconds.fuse},
        {"calib", r.seconds.calib},
        {"quantize", r.seconds.quantize},
        {"eval", ppl.seconds}}},
      {"quant_seconds", r.weights.quant_seconds},
      {"quant_gflops",
       r.weights.quant_seconds > 0 ? r.weights.quant_flops / r.weights.quant_seconds / 1e9 : 0.0},
      {"ranks", rt.comm->size()},
      {"device", a.m.device},
      {"dtype", a.m.dtype},
      {"version", rotq_version()}};
  return j;
}

void save_outputs(const CellArgs& a, const Model& model, const QuantCellResult& r,
                  const nlohmann::json& record, const ModelOptions& mo,
                  const CheckpointReader& reader) {
  namespace fs = std::filesystem;
  SaveOptions so;
  so.dtype = a.save_dtype;
  save_hf_checkpoint(model, a.save, so);
  save_rotations(r.rotations, (fs::path(a.save) / "rotations.safetensors").string(),
                 {{"rotation", record["rotation"].get<std::string>()}});
  std::ofstream((fs::path(a.save) / "rotq_quant.json").string()) << record.dump(2) << "\n";
  const std::string tok = mo.tokenizer.empty() ? reader.bundled_tokenizer() : mo.tokenizer;
  if (!tok.empty()) copy_tokenizer(tok, a.save);
  spdlog::info("saved the rotated, quantized model to {}", a.save);
}

void run_quantize_eval(Runtime& rt, const CellArgs& a) {
  rt.init();
  const QuantCell cell = make_cell(a);  // options are checked before the model is read
  require(!a.ppl_texts.empty() || !a.save.empty(),
          "give --ppl-text to evaluate or --save to keep the result");
  if (!a.save.empty()) scalar_type_from_name(a.save_dtype);
  // Collectives are timed so that the record says how much of the run was communication.
  TimedComm comm(rt.c());
  Placement placement;
  const Placement* shard = nullptr;
  LoadedModel lm;
  if (a.placement == "layers") {
    require(a.save.empty(),
            "--save needs --placement replicated (a sharded model is not gathered)");
    lm = load_shard_for_command(a.m, comm, placement);
    shard = &placement;
  } else {
    require(a.placement == "replicated", "--placement ", a.placement,
            ": expected replicated or layers");
    lm = load_for_command(a.m, /*need_tokenizer=*/true);
  }
  const QuantCellResult r = run_quant_cell(lm.model, *lm.tokenizer, cell, comm, shard);
  at::Tensor comm_stats = at::tensor({comm.seconds(), comm.bytes()}, at::kDouble);
  rt.c().all_reduce(comm_stats, ReduceOp::kMax);
  if (!a.save.empty()) {
    if (rt.c().is_root())
      save_outputs(a, lm.model, r, cell_json(a, cell, r, 0, rt), a.m, *lm.reader);
    rt.c().barrier();
  }
  if (a.ppl_texts.empty()) return;
  std::vector<std::vector<std::string>> rows;
  for (size_t e = 0; e < r.ppl.size(); ++e) {
    nlohmann::json j = cell_json(a, cell, r, e, rt);
    j["placement"] = a.placement;
    j["comm"] = {{"backend", rt.c().backend()},
                 {"seconds_max_rank", comm_stats[0].item<double>()},
                 {"bytes_max_rank", comm_stats[1].item<double>()}};
    if (a.m.json) {
      print_json_line(rt.c(), j);
      continue;
    }
    rows.push_back({j["ppl_text"].get<std::string>(), j["rotation"].get<std::string>(),
                    std::string(weight_method_name(cell.weights.method)) + " " +
                        j["w_spec"].get<std::string>(),
                    j["acts"].get<std::string>(), fmt_double(r.ppl[e].ppl, 4),
                    fmt_double(r.seconds.rotate, 2), fmt_double(r.seconds.fuse, 2),
                    fmt_double(r.seconds.quantize, 2), fmt_double(r.ppl[e].seconds, 2)});
  }
  if (!a.m.json) {
    print_table(rt.c(),
                {"text", "rotation", "weights", "acts/kv", "ppl", "rotate s", "fuse s",
                 "quantize s", "eval s"},
                rows);
  }
}

}  // namespace

void register_quantize_eval(CLI::App& app, Runtime& rt) {
  auto a = std::make_shared<CellArgs>();
  CLI::App* cmd = app.add_subcommand(
      "quantize-eval", "rotate, quantize and evaluate one configuration (16 bits: not quantized)");
  add_model_options(cmd, a->m);
  cmd->add_option("--rotation", a->rotation,
                  "none | random | hadamard | optrot | optrot+ | dfrot | file:PATH")
      ->capture_default_str();
  cmd->add_option("--seed", a->seed, "seed of the rotations and the calibration windows")
      ->capture_default_str();
  cmd->add_flag("--no-r2", a->no_r2, "no per-head R2 on v/o");
  cmd->add_option("--optrot-steps", a->optrot_steps, "OptRot: Cayley SGD steps")
      ->capture_default_str();
  cmd->add_option("--optrot-lr", a->optrot_lr, "OptRot: learning rate")->capture_default_str();
  cmd->add_option("--optrot-norm", a->optrot_norm,
                  "OptRot: per-matrix normalisation none | fro4 | numel")
      ->capture_default_str();
  cmd->add_option("--optrot-optimizer", a->optrot_optimizer,
                  "OptRot: cayley (Cayley SGD) | adam (Riemannian Adam)")
      ->capture_default_str();
  cmd->add_option("--optrot-matrices", a->optrot_matrices,
                  "OptRot: the matrices in the objective (subset of q,k,v,o,gate,up,down)")
      ->capture_default_str();
  cmd->add_flag("--optrot-constant-lr", a->optrot_constant_lr,
                "OptRot: no cosine decay of the learning rate");
  cmd->add_option("--dfrot-gamma", a->dfrot_gamma,
                  "DFRot: weight of the massive-activation tokens (a number or inf)")
      ->capture_default_str();
  cmd->add_option("--dfrot-iters", a->dfrot_iters, "DFRot: alternating iterations")
      ->capture_default_str();
  cmd->add_option("--dfrot-init", a->dfrot_init, "DFRot: start rotation hadamard | random | none")
      ->capture_default_str();
  cmd->add_option("--dfrot-rule", a->dfrot_rule, "DFRot: massive-token rule quant-error | random")
      ->capture_default_str();
  cmd->add_option("--dfrot-threshold", a->dfrot_threshold,
                  "DFRot quant-error rule: massive if the unrotated 4-bit error < THRESH*|x|")
      ->capture_default_str();
  cmd->add_flag("--dfrot-sym", a->dfrot_sym,
                "DFRot: symmetric per-token quantizer in the objective (the reference code's)");
  cmd->add_flag("--dfrot-sum", a->dfrot_sum,
                "DFRot: sum each token set (the reference code's weighting) instead of averaging");
  cmd->add_option("--dfrot-layers", a->dfrot_layers,
                  "DFRot: calibration tokens from the first N layers (0: all)")
      ->capture_default_str();
  cmd->add_option("--dfrot-nsamples", a->dfrot_nsamples, "DFRot: calibration windows")
      ->capture_default_str();
  cmd->add_option("--dfrot-seqlen", a->dfrot_seqlen,
                  "DFRot: calibration window (0: min(2048, context))")
      ->capture_default_str();
  cmd->add_option("--fp-massive", a->fp_massive,
                  "keep massive-activation tokens (unrotated error < THRESH*|x|) of q/k/v and "
                  "gate/up inputs in floating point (DFRot's QuaRot.FP16 ablation; 0: off)")
      ->capture_default_str();
  cmd->add_flag("--no-online-hadamard", a->no_online, "no online R3 (q/k) and R4 (down_proj)");
  cmd->add_option("--w-bits", a->w_bits, "weight bits")->capture_default_str();
  cmd->add_option("--w-quant", a->w_quant, "rtn | gptq")->capture_default_str();
  cmd->add_option("--w-group", a->w_group, "weight group size (0: per output channel)")
      ->capture_default_str();
  cmd->add_flag("--w-asym", a->w_asym, "asymmetric weights");
  cmd->add_flag("--no-w-clip", a->no_w_clip, "plain min/max weight range (no MSE clip search)");
  cmd->add_flag("--act-order", a->act_order, "GPTQ: columns in decreasing Hessian diagonal order");
  cmd->add_flag("--static-groups", a->static_groups, "GPTQ: group parameters from the full weight");
  cmd->add_option("--percdamp", a->percdamp, "GPTQ damping, fraction of mean diag(H)")
      ->capture_default_str();
  cmd->add_option("--gptq-block", a->gptq_block, "GPTQ lazy-update block")->capture_default_str();
  cmd->add_option("--hessian-dtype", a->hessian_dtype,
                  "GPTQ Hessian and arithmetic: float64, or float32 as the reference code")
      ->capture_default_str();
  cmd->add_option("--a-bits", a->a_bits, "activation bits (per token)")->capture_default_str();
  cmd->add_option("--a-clip", a->a_clip, "activation clip ratio")->capture_default_str();
  cmd->add_flag("--a-asym", a->a_asym, "asymmetric activations");
  cmd->add_flag("--o-proj-per-head", a->o_proj_per_head, "o_proj input: one scale per head");
  cmd->add_option("--kv-bits", a->kv_bits, "KV-cache bits")->capture_default_str();
  cmd->add_option("--acts", a->acts_list,
                  "A/KV bit pairs evaluated on the same quantized weights, e.g. --acts 16/16 "
                  "--acts 4/4 (overrides --a-bits/--kv-bits)");
  cmd->add_option("--kv-clip", a->kv_clip, "KV-cache clip ratio")->capture_default_str();
  cmd->add_option("--kv-group", a->kv_group, "KV-cache group (capped at KV heads x head_dim)")
      ->capture_default_str();
  cmd->add_option("--calib", a->calib, "calibration text (GPTQ, DFRot, OptRot+)");
  cmd->add_option("--nsamples", a->nsamples, "calibration windows")->capture_default_str();
  cmd->add_option("--calib-seqlen", a->calib_seqlen, "calibration window (0: min(2048, context))")
      ->capture_default_str();
  cmd->add_option("--ppl-text", a->ppl_texts, "text(s) to score");
  cmd->add_option("--seqlen", a->seqlen, "perplexity window (0: min(2048, context))")
      ->capture_default_str();
  cmd->add_option("--max-windows", a->max_windows, "score only the first K windows");
  cmd->add_option("--placement", a->placement,
                  "replicated (every rank holds the model; data parallel) | layers (sharded by "
                  "layers over the ranks; pipeline parallel)")
      ->capture_default_str();
  cmd->add_option("--label", a->label, "a name for this configuration, recorded in --json output");
  cmd->add_flag("--kl", a->kl,
                "also report the mean KL divergence from the floating-point model's predictions");
  cmd->add_option("--batch", a->batch, "windows per forward (0: auto)");
  cmd->add_option("--save", a->save, "write the rotated, quantized model (HF directory)");
  cmd->add_option("--save-dtype", a->save_dtype, "storage dtype of --save")->capture_default_str();
  cmd->callback([a, &rt] { run_quantize_eval(rt, *a); });
}

}  // namespace rotq
