#include "runner/eval/task_eval.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "runner/core/progress.h"
#include "runner/core/stats.h"
#include "solvers/error.h"

namespace rotq {
namespace {

// numpy.argmax: the first maximum.
size_t argmax(const std::vector<double>& v) {
  return static_cast<size_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

}  // namespace

PreparedTask prepare_task(const std::string& name, const std::string& path, const TaskOptions& opts,
                          const Tokenizer& tok) {
  PreparedTask t;
  t.spec = &find_task(name);
  t.path = task_path(*t.spec, path, opts.dir);
  t.docs = load_task_docs(*t.spec, t.path, opts.limit);
  for (size_t d = 0; d < t.docs.size(); ++d) {
    t.first.push_back(t.requests.size());
    for (const auto& [context, continuation] : t.docs[d].requests) {
      try {
        t.requests.push_back(encode_request(tok, context, continuation, opts.bos));
      } catch (const Error& e) {
        fail("task ", name, " (", t.path, "), example ", d, ": ", e.what());
      }
      t.tokens += static_cast<int64_t>(t.requests.back().context.size() +
                                       t.requests.back().continuation.size());
    }
  }
  return t;
}

void check_task_tokens(const PreparedTask& t, const ModelConfig& config) {
  for (size_t d = 0; d < t.docs.size(); ++d) {
    for (size_t r = t.first[d]; r < (d + 1 < t.docs.size() ? t.first[d + 1] : t.requests.size());
         ++r) {
      for (const auto* ids : {&t.requests[r].context, &t.requests[r].continuation}) {
        for (int32_t id : *ids) {
          require(id >= 0 && id < config.vocab_size, "task ", t.spec->name, ", example ", d,
                  ": token id ", id, " is outside the model's vocabulary of ", config.vocab_size,
                  " (a tokenizer of another model?)");
        }
      }
    }
  }
}

TaskScore task_metrics(const PreparedTask& t, const std::vector<LlScore>& scores) {
  require(scores.size() == t.requests.size(), "task ", t.spec->name, ": ", scores.size(),
          " scores for ", t.requests.size(), " requests");
  TaskScore s;
  s.task = t.spec->name;
  s.n = static_cast<int64_t>(t.docs.size());
  s.requests = static_cast<int64_t>(t.requests.size());
  s.tokens = t.tokens;
  std::vector<double> acc, acc_norm, acc_bytes, ll;
  std::map<std::string, std::pair<int64_t, double>> subjects;  // n, correct
  for (size_t d = 0; d < t.docs.size(); ++d) {
    const TaskDoc& doc = t.docs[d];
    const size_t k = doc.requests.size();
    if (t.spec->kind == TaskKind::kLastWord) {
      acc.push_back(scores[t.first[d]].greedy ? 1.0 : 0.0);
      ll.push_back(scores[t.first[d]].logprob);
      continue;
    }
    std::vector<double> lls(k), by_chars(k), by_bytes(k);
    for (size_t i = 0; i < k; ++i) {
      lls[i] = scores[t.first[d] + i].logprob;
      by_chars[i] = lls[i] / static_cast<double>(utf8_length(doc.choices.at(i)));
      by_bytes[i] = lls[i] / static_cast<double>(doc.choices.at(i).size());
    }
    const double hit = argmax(lls) == static_cast<size_t>(doc.gold) ? 1.0 : 0.0;
    acc.push_back(hit);
    acc_norm.push_back(argmax(by_chars) == static_cast<size_t>(doc.gold) ? 1.0 : 0.0);
    acc_bytes.push_back(argmax(by_bytes) == static_cast<size_t>(doc.gold) ? 1.0 : 0.0);
    if (!doc.subtask.empty()) {
      auto& [n, correct] = subjects[doc.subtask];
      ++n;
      correct += hit;
    }
  }
  s.acc = mean_sd(acc).mean;
  s.acc_stderr = mean_stderr(acc);
  s.metric = "acc";
  if (t.spec->kind == TaskKind::kLastWord) s.ppl = std::exp(-mean_sd(ll).mean);
  if (t.spec->acc_norm) {
    s.acc_norm = mean_sd(acc_norm).mean;
    s.acc_norm_stderr = mean_stderr(acc_norm);
    s.acc_bytes = mean_sd(acc_bytes).mean;
    s.metric = "acc_norm";
  }
  if (!subjects.empty()) {
    double sum = 0;
    for (const auto& [name, nc] : subjects) {
      s.subtasks.push_back({name, nc.first, nc.second / static_cast<double>(nc.first)});
      sum += s.subtasks.back().acc;
    }
    s.acc_subject_mean = sum / static_cast<double>(s.subtasks.size());
  }
  return s;
}

TaskEvaluation evaluate_task(const PreparedTask& t, const Transformer& model,
                             const TaskOptions& opts, Comm& comm, ForwardHooks* hooks,
                             const Placement& placement) {
  LlOptions lo;
  lo.batch = opts.batch;
  lo.max_length = opts.max_length;
  const int64_t docs = static_cast<int64_t>(t.docs.size());
  Progress progress("task " + t.spec->name, docs, "ex");
  // Requests finish out of document order (longest first): report the share of this rank's
  // requests done as the share of the task's examples.
  const auto report = [&](int64_t done, int64_t total) {
    const int64_t ex = total > 0 ? docs * done / total : docs;
    progress.update(ex, static_cast<double>(ex));
  };
  TaskEvaluation e;
  e.requests = score_requests(model, t.requests, lo, comm, hooks, placement, report, &e.stats);
  e.score = task_metrics(t, e.requests);
  e.score.cut = e.stats.cut;
  if (e.stats.cut > 0) {
    spdlog::warn(
        "task {}: {} of {} continuations are longer than the model's context; their last "
        "{} tokens were scored",
        t.spec->name, e.stats.cut, t.requests.size(),
        opts.max_length > 0 ? opts.max_length : model.config().max_seq_len);
  }
  e.score.seconds = progress.elapsed();
  return e;
}

TaskSamplesWriter::TaskSamplesWriter(std::string path, Comm& comm) {
  if (path.empty() || !comm.is_root()) return;
  out_ = std::make_unique<AtomicFileWriter>(std::move(path));
}

TaskSamplesWriter::~TaskSamplesWriter() = default;  // an unfinished file's temporary goes with it

void TaskSamplesWriter::write(const PreparedTask& t, const std::string& acts,
                              const std::vector<LlScore>& scores) {
  if (!out_) return;
  std::string lines;
  for (size_t d = 0; d < t.docs.size(); ++d) {
    nlohmann::json ll = nlohmann::json::array(), greedy = nlohmann::json::array();
    for (size_t i = 0; i < t.docs[d].requests.size(); ++i) {
      ll.push_back(scores.at(t.first[d] + i).logprob);
      greedy.push_back(scores.at(t.first[d] + i).greedy);
    }
    nlohmann::json j = {{"task", t.spec->name},   {"acts", acts}, {"doc", d},
                        {"gold", t.docs[d].gold}, {"ll", ll},     {"greedy", greedy}};
    if (!t.docs[d].subtask.empty()) j["subtask"] = t.docs[d].subtask;
    lines += j.dump() + "\n";
  }
  out_->write(lines);
}

void TaskSamplesWriter::close() {
  if (!out_) return;
  out_->commit();
  out_.reset();
}

}  // namespace rotq
