#include "runner/quant_pipeline.h"

#include <ATen/ATen.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <optional>

#include "models/transformer.h"
#include "runner/covariances.h"
#include "runner/device.h"
#include "runner/dfrot_model.h"
#include "runner/pipeline.h"
#include "runner/rotation_io.h"
#include "runner/text.h"
#include "solvers/error.h"
#include "solvers/fusion.h"
#include "solvers/optrot_model.h"

namespace rotq {
namespace {

using Clock = std::chrono::steady_clock;

// A stage's wall time, after the work it queued on the model's device (a GPU runs asynchronously).
double seconds_since(Clock::time_point t0, const Model& model) {
  sync_device(model_device(model));
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::vector<int32_t> tokenize_file(const Tokenizer& tok, const std::string& path, bool add_bos) {
  const TextFormat fmt = resolve_text_format(TextFormat::kAuto, path);
  return encode_with_bos(tok, read_text(path, fmt), add_bos);
}

// The cell's calibration text, read and tokenized at most once however many stages (DFRot,
// OptRot+, GPTQ) draw windows from it.
class CalibrationText {
 public:
  CalibrationText(const Model& model, const Tokenizer& tok, const std::string& path, bool add_bos)
      : model_(model), tok_(tok), path_(path), add_bos_(add_bos) {}

  // [nsamples, seqlen] windows (seqlen 0: min(2048, context)); `who` and `flag` name the stage
  // and its window option in errors.
  at::Tensor windows(int64_t nsamples, int64_t seqlen, uint64_t seed, const char* who,
                     const char* flag) {
    require(!path_.empty(), who, " needs calibration text (--calib FILE)");
    if (seqlen <= 0) seqlen = default_window(model_.config);
    require(seqlen <= model_.config.max_seq_len, flag, " ", seqlen,
            " exceeds the model's context of ", model_.config.max_seq_len, " tokens");
    if (!tokens_) tokens_ = tokenize_file(tok_, path_, add_bos_);
    return calibration_windows(*tokens_, nsamples, seqlen, seed);
  }
  const std::string& path() const { return path_; }

 private:
  const Model& model_;
  const Tokenizer& tok_;
  std::string path_;
  bool add_bos_;
  std::optional<std::vector<int32_t>> tokens_;
};

OptRotOptions optrot_options(const RotationSpec& spec) {
  OptRotOptions o;
  o.sgd.steps = spec.optrot_steps;
  o.sgd.lr = spec.optrot_lr;
  o.sgd.method = parse_manifold_optimizer(spec.optrot_optimizer);
  o.sgd.cosine = spec.optrot_cosine;
  o.norm = parse_optrot_norm(spec.optrot_norm);
  o.matrices = parse_optrot_matrices(spec.optrot_matrices);
  o.r2 = spec.r2;
  return o;
}

// The learned rotations: OptRot from the weights, OptRot+ with calibration covariances, DFRot
// from calibration activations. The model's norms are fused.
Rotations learn_rotations(const Model& model, const Tokenizer& tok, const QuantCell& cell,
                          CalibrationText& calib, Comm& comm, const Placement* shard,
                          RotationLearning& learned) {
  const RotationSpec& spec = cell.rotation;
  Rotations rot;
  if (spec.kind == RotationKind::kDfrot) {
    const at::Tensor windows = calib.windows(spec.dfrot_nsamples, spec.dfrot_seqlen,
                                             cell.calib.seed, "DFRot", "--dfrot-seqlen");
    DfrotModelResult d = dfrot_rotations(model, windows, spec, comm, &tok, shard);
    rot = d.rotations;
    learned.loss = d.trace.loss;
    learned.seconds = d.trace.seconds;
    learned.flops = d.trace.flops;
    learned.calib_tokens = d.trace.tokens;
    learned.massive_tokens = d.trace.massive;
    learned.massive_report = d.massive_report;
  } else {
    std::vector<LayerCovariances> covs;
    if (spec.kind == RotationKind::kOptRotPlus) {
      const at::Tensor windows = calib.windows(cell.calib.nsamples, cell.calib.seqlen,
                                               cell.calib.seed, "OptRot+", "--calib-seqlen");
      covs = collect_layer_covariances(model, windows, comm, /*batch=*/8, shard);
    }
    RotationTrace trace;
    rot = optrot_rotations(model, optrot_options(spec), spec.seed, comm, &trace,
                           covs.empty() ? nullptr : &covs);
    learned.loss = trace.loss;
    learned.seconds = trace.seconds;
    learned.flops = trace.flops;
  }
  rot.r3 = rot.r4 = spec.online;
  if (!spec.r2) rot.r2.assign(model.config.n_layers, at::Tensor());
  return rot;
}

}  // namespace

Rotations resolve_rotations(const RotationSpec& spec, const ModelConfig& config) {
  Rotations rot = spec.kind == RotationKind::kFile
                      ? load_rotations(spec.path, config)
                      : make_rotations(spec, config.dim, config.head_dim, config.n_layers);
  if (spec.kind != RotationKind::kFile) {
    rot.r3 = rot.r4 = spec.online;
  }
  if (!spec.r2) rot.r2.assign(config.n_layers, at::Tensor());
  return rot;
}

void rotate_model(Model& model, const Rotations& rot, bool rotate) {
  if (!rotate) return;
  fuse_norms(model);
  fuse_rotations(model, rot);
}

QuantCellResult run_quant_cell(Model& model, const Tokenizer& tok, const QuantCell& cell,
                               Comm& comm, const Placement* shard) {
  if (holds_all_layers(model)) shard = nullptr;
  require(shard || holds_all_layers(model), model.source,
          ": a model shard needs its placement over the ranks");
  QuantCellResult res;
  res.bos = effective_bos(tok, cell.bos);
  require(!res.bos.add || tok.bos_id() >= 0, "--bos: the ", tok.kind(),
          " tokenizer has no BOS token to prepend");
  spdlog::info("BOS {}: {}", res.bos.add ? "prepended" : "not prepended", res.bos.source);
  TaskOptions task_opts = cell.task_opts;
  task_opts.bos = res.bos.add;
  // Task files are read and tokenized first: a bad one fails before any work is spent.
  std::vector<PreparedTask> tasks;
  for (const auto& [name, path] : cell.tasks) {
    tasks.push_back(prepare_task(name, path, task_opts, tok));
    check_task_tokens(tasks.back(), model.config);
  }
  require(cell.task_opts.max_length <= model.config.max_seq_len, "--max-length ",
          cell.task_opts.max_length, " exceeds the model's context of ", model.config.max_seq_len);
  TaskSamplesWriter samples(tasks.empty() ? "" : cell.task_samples, comm);
  CalibrationText calib(model, tok, cell.calib_text, res.bos.add);
  const bool rotate = cell.rotation.kind != RotationKind::kNone || cell.rotation.online;

  // Norms are folded first: the learned rotations see the norm-fused weights and x/rms(x).
  auto t = Clock::now();
  if (rotate) fuse_norms(model);
  res.seconds.fuse = seconds_since(t, model);

  t = Clock::now();
  if (cell.rotation.learned()) {
    res.rotations = learn_rotations(model, tok, cell, calib, comm, shard, res.learning);
  } else {
    res.rotations = resolve_rotations(cell.rotation, model.config);
  }
  res.seconds.rotate = seconds_since(t, model);

  t = Clock::now();
  if (rotate) fuse_rotations(model, res.rotations);
  res.seconds.fuse += seconds_since(t, model);
  spdlog::info("rotation {} ({:.2f}s), fused ({:.2f}s)", cell.rotation.describe(),
               res.seconds.rotate, res.seconds.fuse);

  // The rotated floating-point model predicts exactly as the original: the KL reference.
  std::unique_ptr<Model> reference;
  if (cell.kl && !cell.ppl_texts.empty()) reference = std::make_unique<Model>(clone_model(model));

  if (cell.weights.spec.enabled()) {
    if (cell.weights.method == WeightMethod::kGptq) {
      t = Clock::now();
      const at::Tensor windows = calib.windows(cell.calib.nsamples, cell.calib.seqlen,
                                               cell.calib.seed, "GPTQ", "--calib-seqlen");
      res.seconds.calib = seconds_since(t, model);
      spdlog::info("calibration: {} windows of {} tokens from {}", windows.size(0), windows.size(1),
                   calib.path());
      t = Clock::now();
      res.weights = quantize_weights_gptq(model, windows, cell.weights, comm, shard);
    } else {
      t = Clock::now();
      res.weights = quantize_weights_rtn(model, cell.weights);
    }
    res.seconds.quantize = seconds_since(t, model);
    spdlog::info("weights {} {} in {:.2f}s", weight_method_name(cell.weights.method),
                 cell.weights.spec.describe(), res.seconds.quantize);
  }

  if (!cell.ppl_texts.empty()) {
    require(!cell.acts.empty(), "quantize-eval: no activation configuration to evaluate");
    t = Clock::now();
    PplOptions po = cell.ppl;
    if (po.seqlen <= 0) po.seqlen = default_window(model.config);
    Transformer tf(model);
    std::unique_ptr<Transformer> ref_tf;
    if (reference) ref_tf = std::make_unique<Transformer>(*reference);
    for (const std::string& text : cell.ppl_texts) {
      const std::vector<int32_t> tokens = tokenize_file(tok, text, res.bos.add);
      for (const ActivationQuant& acts : cell.acts) {
        ActQuantHooks hooks(model.config, acts);
        hooks.set_residual_rotation(res.rotations.r1);
        ForwardHooks* h = acts.any() ? &hooks : nullptr;
        res.ppl.push_back(shard ? perplexity_pipeline(tf, *shard, tokens, po, comm, h, ref_tf.get())
                                : perplexity(tf, tokens, po, comm, h, ref_tf.get()));
        spdlog::info("{} | {}: ppl {:.4f}{}", text, acts.describe(), res.ppl.back().ppl,
                     reference ? ", KL " + std::to_string(res.ppl.back().kl) : "");
      }
    }
    res.seconds.eval = seconds_since(t, model);
  }

  if (!tasks.empty()) {
    require(!cell.acts.empty(), "tasks: no activation configuration to evaluate");
    t = Clock::now();
    Transformer tf(model);
    for (const PreparedTask& task : tasks) {
      for (size_t ai = 0; ai < cell.acts.size(); ++ai) {
        if (!cell.task_acts.empty() && !cell.task_acts.at(ai)) continue;
        const ActivationQuant& acts = cell.acts[ai];
        ActQuantHooks hooks(model.config, acts);
        hooks.set_residual_rotation(res.rotations.r1);
        TaskEvaluation e =
            evaluate_task(task, tf, task_opts, comm, acts.any() ? &hooks : nullptr, shard);
        samples.write(task, acts.describe(), e.requests);
        spdlog::info("task {} | {}: {} {:.4f} ({} examples, {:.1f}s)", task.spec->name,
                     acts.describe(), e.score.metric, e.score.score(), e.score.n, e.score.seconds);
        e.score.acts_index = ai;
        res.tasks.push_back(std::move(e.score));
      }
    }
    samples.close();
    res.seconds.tasks = seconds_since(t, model);
  }
  return res;
}

}  // namespace rotq
