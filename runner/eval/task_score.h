// One task's scores as lm-evaluation-harness reports them (runner/eval/task_eval.h computes them,
// runner/record/results.h stores them). Plain data, no LibTorch.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace rotq {

struct SubtaskScore {
  std::string name;
  int64_t n = 0;
  double acc = 0;
};

struct TaskScore {
  std::string task;
  int64_t n = 0, requests = 0, tokens = 0;
  double acc = 0, acc_stderr = 0;
  double acc_norm = -1, acc_norm_stderr = -1;  // -1: the task does not define it
  double acc_bytes = -1;
  double ppl = -1;               // LAMBADA's perplexity (-1 elsewhere)
  double acc_subject_mean = -1;  // MMLU: the mean of the subjects' accuracies
  std::string metric;            // the papers' metric: "acc_norm" or "acc"
  size_t acts_index = 0;         // the activation configuration (QuantCell::acts) it ran under
  int64_t cut = 0;  // continuations longer than the model's context (scored on their last L tokens)
  std::vector<SubtaskScore> subtasks;  // MMLU's subjects, by name
  double seconds = 0;
  double score() const { return metric == "acc_norm" ? acc_norm : acc; }
};

}  // namespace rotq
