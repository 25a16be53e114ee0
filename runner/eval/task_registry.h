// Zero-shot tasks and MMLU as lm-evaluation-harness defines them: each task turns its documents
// into (context, continuation) log-likelihood requests with the harness's prompt, target delimiter
// and metrics, so that scores compare with the papers'. Prompt construction is plain string code
// (no LibTorch) and is unit-tested string for string.
//
// Files are read in either layout the data come in (one JSON object per line, or a JSON array):
// the llm-foundry layout of ../shared/data/tasks ({query, choices, gold}; WinoGrande's
// {context_options, continuation, gold}; LAMBADA's {context, continuation}; SIQA in LLM-Adapters'
// instruction text) and the Hugging Face fields lm-eval reads (ARC {question, choices{text,label},
// answerKey}, PIQA {goal, sol1, sol2, label}, ...). MMLU is a directory dev/ + test/ of
// SUBJECT_{dev,test}.csv files (question, 4 choices, answer 0-3 or A-D).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "runner/core/py_str.h"

namespace rotq {

// One scored example: its requests (context, continuation) in choice order, the answer strings
// whose lengths normalise acc_norm, and the gold index. A loglikelihood task (LAMBADA) has one
// request and gold 0.
struct TaskDoc {
  std::vector<std::pair<std::string, std::string>> requests;
  std::vector<std::string> choices;
  int gold = 0;
  std::string subtask;  // MMLU's subject ("" elsewhere)
};

enum class TaskKind {
  kMultipleChoice,  // acc = argmax of summed log-likelihoods; acc_norm where the task defines it
  kLastWord,        // LAMBADA: acc = the greedy continuation equals the target; perplexity
};

struct TaskSpec {
  std::string name;   // registry name: arc_easy, ..., mmlu, mmlu_5shot
  std::string title;  // table header in the papers' style
  std::string file;   // default data path under the tasks directory
  TaskKind kind = TaskKind::kMultipleChoice;
  bool acc_norm = false;      // lm-eval reports acc_norm: the papers' metric for it
  int num_fewshot = 0;        // MMLU 5-shot
  bool zero_shot_avg = true;  // counted in the papers' zero-shot average (MMLU is apart)
};

// Every task, in the papers' column order.
const std::vector<TaskSpec>& task_registry();
// The spec of `name`, or null (results written by a rotq that knew other tasks).
const TaskSpec* lookup_task(const std::string& name);
// The spec of `name`; rotq::Error listing the known names otherwise.
const TaskSpec& find_task(const std::string& name);
// "arc_easy,piqa" or "zeroshot" (the nine of the papers' average) or "all" -> task names; a
// "name=PATH" item reads that task from PATH instead of the tasks directory. Duplicates are errors.
std::vector<std::pair<std::string, std::string>> parse_task_list(
    const std::vector<std::string>& items);

// The task's documents from `path` (a file, or MMLU's directory), the first `limit` (< 0: all;
// MMLU: the first `limit` of each subject). rotq::Error naming the file, line and field on bad
// input.
std::vector<TaskDoc> load_task_docs(const TaskSpec& spec, const std::string& path,
                                    int64_t limit = -1);
// Where task `spec` is read: `path` when given (a NAME=PATH item), else `dir` / the registry's file
// name; rotq::Error when neither is given.
std::string task_path(const TaskSpec& spec, const std::string& path, const std::string& dir);
// The files a task reads from `path` (checksums in results).
std::vector<std::string> task_data_files(const TaskSpec& spec, const std::string& path);

// --- Prompt construction, one document at a time (exposed for the tests) ----------------------
TaskDoc arc_doc(const nlohmann::json& j);
TaskDoc boolq_doc(const nlohmann::json& j);
TaskDoc openbookqa_doc(const nlohmann::json& j);
TaskDoc piqa_doc(const nlohmann::json& j);
TaskDoc copa_doc(const nlohmann::json& j);
TaskDoc winogrande_doc(const nlohmann::json& j);
TaskDoc lambada_doc(const nlohmann::json& j);
TaskDoc hellaswag_doc(const nlohmann::json& j);
TaskDoc siqa_doc(const nlohmann::json& j);

// lm-eval's HellaSwag text cleaning: strip, " [title]" -> ". ", drop "[...]", "  " -> " ".
std::string hellaswag_preprocess(const std::string& text);

struct MmluQuestion {
  std::string question;
  std::vector<std::string> choices;  // 4
  int answer = 0;
};
// "Q\nA. c0\nB. c1\nC. c2\nD. c3\nAnswer:" (the question stripped).
std::string mmlu_question_text(const MmluQuestion& q);
// The MMLU document for `q` of `subject` (e.g. "abstract_algebra") with the first `shots` dev
// exemplars: "The following are multiple choice questions (with answers) about abstract
// algebra.\n\n" + each exemplar's text + " " + its letter + "\n\n" + the question's text.
TaskDoc mmlu_doc(const std::string& subject, const std::vector<MmluQuestion>& dev, int shots,
                 const MmluQuestion& q);

// RFC 4180 CSV (quoted fields, doubled quotes, newlines inside quotes); `origin` names errors.
std::vector<std::vector<std::string>> parse_csv(const std::string& text, const std::string& origin);

}  // namespace rotq
