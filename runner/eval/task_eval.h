// Zero-shot/MMLU evaluation of a model on registry tasks (runner/eval/task_registry.h): documents
// are read and tokenized once (prepare_task), their requests scored in batches over the ranks
// (runner/eval/loglikelihood.h), and the harness's metrics computed from the scores (task_metrics):
//   acc       mean over documents of [argmax_i ll_i == gold] (first maximum, as numpy.argmax)
//   acc_norm  the same on ll_i / len(choice_i) in characters (lm-eval's acc_norm; tasks that
//             define it); acc_bytes uses UTF-8 bytes (identical on ASCII text)
//   LAMBADA   acc = the continuation is the greedy one; perplexity = exp(-mean ll)
//   MMLU      acc over all questions (lm-eval's group mean, weighted by size), per subject, and
//             the plain mean over subjects
// and each task's paper metric (acc_norm where defined, else acc).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "models/base/files.h"
#include "models/tokenizers/tokenizer.h"
#include "models/transformer.h"
#include "runner/dist/placement.h"
#include "runner/eval/loglikelihood.h"
#include "runner/eval/task_registry.h"
#include "runner/eval/task_score.h"
#include "solvers/comm.h"

namespace rotq {

struct TaskOptions {
  std::string dir;         // the tasks directory (file names from the registry)
  int64_t limit = -1;      // the first N documents (MMLU: of each subject); < 0: all
  int64_t batch = 32;      // sequences per forward
  bool bos = true;         // BOS before every context (the harness's default for LLaMA)
  int64_t max_length = 0;  // left-truncation length; 0: the model's context
};

struct PreparedTask {
  const TaskSpec* spec = nullptr;
  std::string path;
  std::vector<TaskDoc> docs;
  std::vector<LlRequest> requests;  // every document's requests, in document order
  std::vector<size_t> first;        // docs[i]'s requests start at requests[first[i]]
  int64_t tokens = 0;               // context + continuation tokens over all requests
};

// Reads and tokenizes task `name` from `path` ("" : opts.dir / the registry's file name).
PreparedTask prepare_task(const std::string& name, const std::string& path, const TaskOptions& opts,
                          const Tokenizer& tok);

// rotq::Error naming the task and example if a token id is outside the model's vocabulary (a
// tokenizer that does not belong to the model), before any rank runs a forward.
void check_task_tokens(const PreparedTask& t, const ModelConfig& config);

// The harness's metrics of `t` from its request scores (one per request, in order).
TaskScore task_metrics(const PreparedTask& t, const std::vector<LlScore>& scores);

struct TaskEvaluation {
  TaskScore score;
  std::vector<LlScore> requests;
  LlStats stats;
};

// Scores every request of `t` (with progress in examples/s and ETA) and computes the metrics.
TaskEvaluation evaluate_task(const PreparedTask& t, const Transformer& model,
                             const TaskOptions& opts, Comm& comm, ForwardHooks* hooks = nullptr,
                             const Placement& placement = Placement::replicated());

// Per-document scores as JSON lines (rank 0), for comparing against the harness's
// --log_samples: {task, acts, doc, gold, ll: [...], greedy: [...], subtask}. Written to a
// temporary name and renamed into place by close(); an unfinished file is removed.
class TaskSamplesWriter {
 public:
  TaskSamplesWriter(std::string path, Comm& comm);  // "" : writes nothing
  ~TaskSamplesWriter();
  void write(const PreparedTask& t, const std::string& acts, const std::vector<LlScore>& scores);
  void close();

 private:
  std::unique_ptr<AtomicFileWriter> out_;
};

}  // namespace rotq
