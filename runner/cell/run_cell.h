// One experiment cell: rotate → fuse → quantize weights → evaluate perplexity with quantized
// activations and KV cache, with the time of each stage. The model is modified in place.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "models/quant_hooks.h"
#include "models/tokenizers/tokenizer.h"
#include "models/weights.h"
#include "runner/data/calibration.h"
#include "runner/dist/placement.h"
#include "runner/eval/perplexity.h"
#include "runner/eval/task_eval.h"
#include "runner/quantize/weight_quant.h"
#include "runner/rotate/rotation_methods.h"
#include "solvers/comm.h"

namespace rotq {

struct QuantCell {
  RotationSpec rotation;
  WeightQuantOptions weights;
  // Activation/KV configurations evaluated on the same quantized weights (GPTQ calibrates on
  // floating-point activations, so its weights do not depend on them); at least one.
  std::vector<ActivationQuant> acts;
  std::string calib_text;  // GPTQ, DFRot and OptRot+
  CalibOptions calib;
  std::vector<std::string> ppl_texts;  // each scored under every activation configuration
  PplOptions ppl;                      // seqlen 0: min(2048, context)
  bool kl = false;  // also the KL divergence from the floating-point model's predictions
  // Zero-shot/MMLU tasks (name, path or "" for tasks.dir), each under every activation
  // configuration; `task_samples` (optional) receives every document's scores as JSON lines.
  std::vector<std::pair<std::string, std::string>> tasks;
  TaskOptions task_opts;  // its bos is resolved from `bos` below
  // BOS before perplexity texts, calibration windows' text and task contexts: nullopt follows the
  // tokenizer's own policy (tokenizer_config.json / post-processor; SentencePiece: yes).
  std::optional<bool> bos;
  std::vector<bool> task_acts;  // per acts entry: score the tasks under it (empty: all)
  std::string task_samples;
};

struct StageSeconds {
  double rotate = 0;    // building (or loading) R1/R2
  double fuse = 0;      // norm and rotation fusion
  double calib = 0;     // reading and tokenizing the calibration text
  double quantize = 0;  // weight quantization, calibration forwards included
  double eval = 0;      // perplexity, all activation configurations
  double tasks = 0;     // zero-shot tasks, all activation configurations
};

struct QuantCellResult {
  BosPolicy bos;  // the policy the cell ran with, recorded with its results
  Rotations rotations;
  RotationLearning learning;
  WeightQuantReport weights;
  // ppl[t * acts.size() + a]: text t under activation configuration a.
  std::vector<PplResult> ppl;
  // Each task under each activation configuration selected by QuantCell::task_acts (in task
  // order, then configuration order); TaskScore::acts_index names the configuration.
  std::vector<TaskScore> tasks;
  StageSeconds seconds;
};

// Fuses norms and rotations when the spec rotates anything (as QuaRot: an unrotated baseline
// keeps its norms).
void rotate_model(Model& model, const Rotations& rot, bool rotate);

// `shard`: `model` is this rank's part of a model sharded by layers as placed there (every stage
// then runs distributed: pipeline forwards, streamed layers for GPTQ, rotation objectives summed
// over the shards); null for a model every rank holds whole.
QuantCellResult run_quant_cell(Model& model, const Tokenizer& tok, const QuantCell& cell,
                               Comm& comm, const Placement& placement = Placement::replicated());

}  // namespace rotq
