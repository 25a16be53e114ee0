#include "runner/cell/run_cell.h"

#include <ATen/ATen.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <optional>

#include "models/transformer.h"
#include "runner/data/text.h"
#include "runner/dist/device.h"
#include "runner/dist/layer_pipeline.h"
#include "runner/fuse/fusion.h"
#include "runner/rotate/rotation_io.h"
#include "solvers/error.h"

namespace rotq {
namespace {

using Clock = std::chrono::steady_clock;

// The model's weights to page-locked host memory (so that copying a layer back to the GPU runs at
// full bus speed), while a learned rotation streams it layer by layer.
void offload_to_host(Model& model) {
  const auto host = [](const at::Tensor& t) {
    at::Tensor h = t.to(at::kCPU);
    return at::hasCUDA() ? h.pin_memory() : h;
  };
  ModelWeights& w = model.weights;
  const bool tied = w.embed.defined() && w.lm_head.defined() && w.embed.is_same(w.lm_head);
  if (w.embed.defined()) w.embed = host(w.embed);
  if (w.final_norm.defined()) w.final_norm = host(w.final_norm);
  if (w.lm_head.defined()) w.lm_head = tied ? w.embed : host(w.lm_head);
  for (LayerWeights& l : w.layers) {
    for (at::Tensor& t : l.tensors) {
      if (t.defined()) t = host(t);
    }
  }
}

// A stage's wall time, after the work it queued on the model's device (a GPU runs asynchronously).
double seconds_since(Clock::time_point t0, const Model& model) {
  sync_device(model_device(model));
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

}  // namespace

void rotate_model(Model& model, const Rotations& rot, bool rotate) {
  if (!rotate) return;
  fuse_norms(model);
  fuse_rotations(model, rot);
}

namespace {

// Task files are read and tokenized before anything else: a bad one fails before work is spent.
std::vector<PreparedTask> prepare_tasks(const QuantCell& cell, const TaskOptions& opts,
                                        const Tokenizer& tok, const ModelConfig& config) {
  std::vector<PreparedTask> tasks;
  for (const auto& [name, path] : cell.tasks) {
    tasks.push_back(prepare_task(name, path, opts, tok));
    check_task_tokens(tasks.back(), config);
  }
  require(cell.task_opts.max_length <= config.max_seq_len, "--max-length ",
          cell.task_opts.max_length, " exceeds the model's context of ", config.max_seq_len);
  return tasks;
}

void quantize_stage(Model& model, const QuantCell& cell, CalibrationText& calib, Comm& comm,
                    const Placement& placement, QuantCellResult& res) {
  auto t = Clock::now();
  if (cell.weights.method == WeightMethod::kGptq) {
    const at::Tensor windows = calib.windows(cell.calib.nsamples, cell.calib.seqlen,
                                             cell.calib.seed, "GPTQ", "--calib-seqlen");
    res.seconds.calib = seconds_since(t, model);
    spdlog::info("calibration: {} windows of {} tokens from {}", windows.size(0), windows.size(1),
                 calib.path());
    t = Clock::now();
    WeightQuantOptions opts = cell.weights;
    opts.calib_batch = cell.calib.batch;
    res.weights = quantize_weights_gptq(model, windows, opts, comm, placement);
  } else {
    res.weights = quantize_weights_rtn(model, cell.weights);
  }
  res.seconds.quantize = seconds_since(t, model);
  spdlog::info("weights {} {} in {:.2f}s", weight_method_name(cell.weights.method),
               cell.weights.spec.describe(), res.seconds.quantize);
}

// Every text under every activation configuration; `reference` (optional) for the KL.
void perplexity_stage(const Model& model, const Model* reference, const Tokenizer& tok,
                      const QuantCell& cell, Comm& comm, const Placement& placement,
                      QuantCellResult& res) {
  require(!cell.acts.empty(), "quantize-eval: no activation configuration to evaluate");
  const auto t = Clock::now();
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
      res.ppl.push_back(placement.sharded()
                            ? perplexity_pipeline(tf, placement, tokens, po, comm, h, ref_tf.get())
                            : perplexity(tf, tokens, po, comm, h, ref_tf.get()));
      spdlog::info("{} | {}: ppl {:.4f}{}", text, acts.describe(), res.ppl.back().ppl,
                   reference ? ", KL " + std::to_string(res.ppl.back().kl) : "");
    }
  }
  res.seconds.eval = seconds_since(t, model);
}

// Every task under the activation configurations QuantCell::task_acts selects.
void task_stage(const Model& model, const std::vector<PreparedTask>& tasks, const QuantCell& cell,
                const TaskOptions& opts, TaskSamplesWriter& samples, Comm& comm,
                const Placement& placement, QuantCellResult& res) {
  require(!cell.acts.empty(), "tasks: no activation configuration to evaluate");
  const auto t = Clock::now();
  Transformer tf(model);
  for (const PreparedTask& task : tasks) {
    for (size_t ai = 0; ai < cell.acts.size(); ++ai) {
      if (!cell.task_acts.empty() && !cell.task_acts.at(ai)) continue;
      const ActivationQuant& acts = cell.acts[ai];
      ActQuantHooks hooks(model.config, acts);
      hooks.set_residual_rotation(res.rotations.r1);
      TaskEvaluation e =
          evaluate_task(task, tf, opts, comm, acts.any() ? &hooks : nullptr, placement);
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

}  // namespace

// The stages in order: tasks read, norms fused, rotations built (or learned) and fused, weights
// quantized, perplexity and tasks evaluated.
QuantCellResult run_quant_cell(Model& model, const Tokenizer& tok, const QuantCell& cell,
                               Comm& comm, const Placement& placement) {
  require(placement.sharded() != holds_all_layers(model), model.source,
          placement.sharded() ? ": a placement by layers over the ranks needs this rank's shard"
                              : ": a model shard needs its placement over the ranks");
  QuantCellResult res;
  res.bos = effective_bos(tok, cell.bos);
  require(!res.bos.add || tok.bos_id() >= 0, "--bos: the ", tok.kind(),
          " tokenizer has no BOS token to prepend");
  spdlog::info("BOS {}: {}", res.bos.add ? "prepended" : "not prepended", res.bos.source);
  TaskOptions task_opts = cell.task_opts;
  task_opts.bos = res.bos.add;
  const std::vector<PreparedTask> tasks = prepare_tasks(cell, task_opts, tok, model.config);
  // Opened now, so that an unwritable path fails before any work is spent.
  TaskSamplesWriter samples(tasks.empty() ? "" : cell.task_samples, comm);
  CalibrationText calib(model, tok, cell.calib_text, res.bos.add);
  const bool rotate = find_rotation_method(cell.rotation.text())->rotates || cell.rotation.online;

  // Norms are folded first: the learned rotations see the norm-fused weights and x/rms(x).
  auto t = Clock::now();
  if (rotate) fuse_norms(model);
  res.seconds.fuse = seconds_since(t, model);
  t = Clock::now();
  const at::Device device = model_device(model);
  const bool offload = cell.rotation.learning().offload && !device.is_cpu();
  require(!offload || !placement.sharded(), "rotation.", cell.rotation.method,
          ".offload: the model goes to host memory whole; use "
          "runtime.placement replicated (each rank streams its own copy's layers)");
  if (offload) offload_to_host(model);
  const RotationContext ctx{model, tok, cell.rotation, calib, cell.calib, comm, placement, device};
  res.rotations = build_rotations(ctx, res.learning);
  if (offload) move_weights(model.weights, device);
  res.seconds.rotate = seconds_since(t, model);
  t = Clock::now();
  if (rotate) fuse_rotations(model, res.rotations);
  res.seconds.fuse += seconds_since(t, model);
  spdlog::info("rotation {} ({:.2f}s), fused ({:.2f}s)", cell.rotation.describe(),
               res.seconds.rotate, res.seconds.fuse);

  // The rotated floating-point model predicts exactly as the original: the KL reference.
  std::unique_ptr<Model> reference;
  if (cell.kl && !cell.ppl_texts.empty()) reference = std::make_unique<Model>(clone_model(model));
  if (cell.weights.spec.enabled()) quantize_stage(model, cell, calib, comm, placement, res);
  if (!cell.ppl_texts.empty()) {
    perplexity_stage(model, reference.get(), tok, cell, comm, placement, res);
  }
  if (!tasks.empty()) task_stage(model, tasks, cell, task_opts, samples, comm, placement, res);
  return res;
}

}  // namespace rotq
