// Zero-shot tasks as lm-evaluation-harness scores them: each task's prompt string for string (on
// hand-made records in both file layouts and on the first record of the real files), the
// harness's tokenization of a pair, acc / acc_norm / LAMBADA / MMLU metrics on hand-computed
// scores, and the scorer's invariance to batch size on the real model (with fake quantization).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "models/checkpoint.h"
#include "models/quant_hooks.h"
#include "models/tokenizers/tokenizer.h"
#include "models/transformer.h"
#include "runner/core/py_str.h"
#include "runner/dist/comm.h"
#include "runner/eval/loglikelihood.h"
#include "runner/eval/task_eval.h"
#include "runner/eval/task_registry.h"
#include "solvers/error.h"
#include "tests/test_util.h"

namespace {

using nlohmann::json;
using rotq::TaskDoc;
using Pair = std::pair<std::string, std::string>;

const std::string kTasks = rotq_test::shared_data("tasks");
const std::string kStories = rotq_test::project_data("stories260K/stories260K.bin");
const std::string kTok = rotq_test::project_data("stories260K/tok512.bin");

void expect_doc(const TaskDoc& d, const std::vector<Pair>& requests, int gold) {
  ASSERT_EQ(d.requests.size(), requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(d.requests[i].first, requests[i].first) << "request " << i;
    EXPECT_EQ(d.requests[i].second, requests[i].second) << "request " << i;
  }
  EXPECT_EQ(d.gold, gold);
}

TEST(TaskPrompts, ArcBothLayouts) {
  const std::vector<Pair> want = {{"Question: Which gas do plants take in?\nAnswer:", " oxygen"},
                                  {"Question: Which gas do plants take in?\nAnswer:", " CO2"}};
  expect_doc(rotq::arc_doc(json::parse(R"({"query": "Question: Which gas do plants take in?",
                                          "choices": ["oxygen", "CO2"], "gold": 1})")),
             want, 1);
  expect_doc(rotq::arc_doc(json::parse(R"({"question": "Which gas do plants take in?",
      "choices": {"text": ["oxygen", "CO2"], "label": ["A", "B"]}, "answerKey": "B"})")),
             want, 1);
}

TEST(TaskPrompts, BoolqIsPassageQuestionAnswer) {
  const std::vector<Pair> want = {
      {"Ice floats.\nQuestion: is ice lighter than water?\nAnswer:", " no"},
      {"Ice floats.\nQuestion: is ice lighter than water?\nAnswer:", " yes"}};
  expect_doc(rotq::boolq_doc(json::parse(R"({"query":
      "Passage: Ice floats.\nQuestion: is ice lighter than water?", "choices": ["no", "yes"], "gold": 1})")),
             want, 1);
  expect_doc(
      rotq::boolq_doc(json::parse(
          R"({"passage": "Ice floats.", "question": "is ice lighter than water", "label": true})")),
      want, 1);
}

TEST(TaskPrompts, OpenbookqaPiqaSiqa) {
  expect_doc(rotq::openbookqa_doc(json::parse(R"({"question_stem": "Predators eat",
      "choices": {"text": ["lions", "bunnies"], "label": ["A", "B"]}, "answerKey": " B"})")),
             {{"Predators eat", " lions"}, {"Predators eat", " bunnies"}}, 1);
  const std::vector<Pair> piqa = {{"Question: How to boil water?\nAnswer:", " Heat it."},
                                  {"Question: How to boil water?\nAnswer:", " Cool it."}};
  expect_doc(rotq::piqa_doc(json::parse(R"({"query": "Question: How to boil water?\n",
      "choices": ["Heat it.", "Cool it."], "gold": 0})")),
             piqa, 0);
  expect_doc(
      rotq::piqa_doc(json::parse(
          R"({"goal": "How to boil water?", "sol1": "Heat it.", "sol2": "Cool it.", "label": 0})")),
      piqa, 0);
  const std::vector<Pair> siqa = {{"Q: Tracy went home. Why?\nA:", " tired"},
                                  {"Q: Tracy went home. Why?\nA:", " to eat"},
                                  {"Q: Tracy went home. Why?\nA:", " bored"}};
  expect_doc(
      rotq::siqa_doc(json::parse(
          R"({"instruction": "Please choose the correct answer to the question: Tracy went home. Why?\n\nAnswer1: tired Answer2: to eat Answer3: bored\n\nAnswer format: answer1/answer2/answer3",
      "input": "", "output": "the correct answer is answer2", "answer": "answer2"})")),
      siqa, 1);
  expect_doc(rotq::siqa_doc(json::parse(R"({"context": "Tracy went home.", "question": "Why?",
      "answerA": "tired", "answerB": "to eat", "answerC": "bored", "label": "2"})")),
             siqa, 1);
}

TEST(TaskPrompts, CopaDropsThePeriodAndLowercasesTheChoice) {
  // The harness's choices are " " + choice and the request adds its " " delimiter: two spaces.
  const std::vector<Pair> want = {
      {"The man turned on the faucet therefore", "  the toilet filled."},
      {"The man turned on the faucet therefore", "  water flowed."}};
  expect_doc(rotq::copa_doc(json::parse(R"({"premise": "The man turned on the faucet.",
      "choice1": "The toilet filled.", "choice2": "Water flowed.", "question": "effect", "label": 1})")),
             want, 1);
  expect_doc(rotq::copa_doc(json::parse(R"({"query": "The man turned on the faucet, therefore",
      "choices": ["the toilet filled.", "water flowed."], "gold": 1})")),
             want, 1);
}

TEST(TaskPrompts, WinograndeScoresTheRestAfterEachOption) {
  const std::vector<Pair> want = {
      {"Sarah was a better surgeon than Maria so Sarah", " always got the easier cases."},
      {"Sarah was a better surgeon than Maria so Maria", " always got the easier cases."}};
  expect_doc(rotq::winogrande_doc(json::parse(R"({"sentence":
      "Sarah was a better surgeon than Maria so _ always got the easier cases.",
      "option1": "Sarah", "option2": "Maria", "answer": "2"})")),
             want, 1);
  const TaskDoc d = rotq::winogrande_doc(json::parse(R"({"context_options":
      ["Sarah was a better surgeon than Maria so Sarah", "Sarah was a better surgeon than Maria so Maria"],
      "continuation": "always got the easier cases.", "gold": 1})"));
  expect_doc(d, want, 1);
  EXPECT_EQ(d.choices[1], "Sarah was a better surgeon than Maria so Maria");
}

TEST(TaskPrompts, LambadaIsTheTextWithoutItsLastWord) {
  const std::vector<Pair> want = {{"He opened the door and saw his", " dog"}};
  expect_doc(rotq::lambada_doc(json::parse(R"({"text": "He opened the door and saw his dog"})")),
             want, 0);
  expect_doc(rotq::lambada_doc(json::parse(
                 R"({"context": "He opened the door and saw his", "continuation": "dog"})")),
             want, 0);
}

TEST(TaskPrompts, HellaswagPreprocessing) {
  // Expected strings from lm-eval's hellaswag/utils.py (process_docs, preprocess) run in Python.
  const TaskDoc d = rotq::hellaswag_doc(json::parse(R"({"activity_label": "Home and Garden",
      "ctx_a": "[header] How to grow roses. [title] Pick a  spot.", "ctx_b": "you NEED sunlight [step] daily",
      "endings": [" [substeps] Water them. ", "Prune [title] often."], "label": "1"})"));
  expect_doc(d,
             {{"Home and Garden: How to grow roses.. Pick a spot. You need sunlight daily",
               "  Water them."},
              {"Home and Garden: How to grow roses.. Pick a spot. You need sunlight daily",
               " Prune. often."}},
             1);
  EXPECT_EQ(d.choices[0], " Water them.");
  EXPECT_EQ(rotq::hellaswag_preprocess("a   b [x\ny] c"), "a  b [x\ny] c");
  EXPECT_EQ(rotq::py_capitalize("you NEED"), "You need");
  // Python's strip(): Unicode whitespace (U+0085, U+00A0, U+3000) too, other characters kept.
  EXPECT_EQ(rotq::py_strip("\xc2\xa0 that\xc2\x85\n"), "that");
  EXPECT_EQ(rotq::py_strip("\xe3\x80\x80x\xc3\xa9"), "x\xc3\xa9");
  EXPECT_EQ(rotq::py_rstrip("a \xe2\x80\xa8"), "a");
  EXPECT_EQ(rotq::py_strip(" \t "), "");
  // Malformed UTF-8 is kept as it is: no byte is taken for a space it does not encode.
  EXPECT_EQ(rotq::py_strip("\xc2 abc"), "\xc2 abc");
  EXPECT_EQ(rotq::py_strip("\xc0\xa0x"), "\xc0\xa0x");
  EXPECT_EQ(rotq::py_strip("\xe2\x80\n\n"), "\xe2\x80");
  EXPECT_EQ(rotq::hellaswag_preprocess("a [title][title] b"), "a. b");  // Python: one pass
}

TEST(TaskPrompts, MmluZeroAndFewShot) {
  const rotq::MmluQuestion dev0{"What is 1+1? ", {"1", "2", "3", "4"}, 1};
  const rotq::MmluQuestion dev1{"What is 2+2?", {"4", "5", "6", "7"}, 0};
  const rotq::MmluQuestion q{" What is 3+3?", {"5", "6", "7", "8"}, 1};
  const std::string head =
      "The following are multiple choice questions (with answers) about high school math.\n\n";
  const std::string body = "What is 3+3?\nA. 5\nB. 6\nC. 7\nD. 8\nAnswer:";
  const TaskDoc zero = rotq::mmlu_doc("high_school_math", {}, 0, q);
  expect_doc(zero,
             {{head + body, " A"}, {head + body, " B"}, {head + body, " C"}, {head + body, " D"}},
             1);
  EXPECT_EQ(zero.subtask, "high_school_math");
  const TaskDoc two = rotq::mmlu_doc("high_school_math", {dev0, dev1}, 2, q);
  EXPECT_EQ(two.requests[0].first, head +
                                       "What is 1+1?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer: B\n\n"
                                       "What is 2+2?\nA. 4\nB. 5\nC. 6\nD. 7\nAnswer: A\n\n" +
                                       body);
  EXPECT_THROW(rotq::mmlu_doc("x", {dev0}, 2, q), rotq::Error);
}

TEST(TaskPrompts, CsvQuotesAndNewlines) {
  const auto rows = rotq::parse_csv("a,\"b,c\",\"say \"\"hi\"\"\"\r\n\"x\ny\",,z\n", "t.csv");
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0], (std::vector<std::string>{"a", "b,c", "say \"hi\""}));
  EXPECT_EQ(rows[1], (std::vector<std::string>{"x\ny", "", "z"}));
  EXPECT_THROW(rotq::parse_csv("a,\"b\n", "t.csv"), rotq::Error);
}

// The first record of each real file, and the files' sizes (../shared/data/README.md).
TEST(TaskData, RealFilesLoadWithTheHarnessPrompts) {
  const auto load = [](const std::string& name, int64_t limit = -1) {
    const rotq::TaskSpec& s = rotq::find_task(name);
    return rotq::load_task_docs(s, kTasks + "/" + s.file, limit);
  };
  const std::vector<std::pair<std::string, size_t>> sizes = {
      {"arc_easy", 2376},   {"arc_challenge", 1172}, {"boolq", 3270}, {"openbookqa", 500},
      {"winogrande", 1267}, {"piqa", 1838},          {"copa", 100},   {"lambada_openai", 5153},
      {"hellaswag", 1000},  {"social_iqa", 1954},    {"mmlu", 14042}};
  for (const auto& [name, n] : sizes) {
    const auto docs = load(name);
    EXPECT_EQ(docs.size(), n) << name;
    for (const TaskDoc& d : docs) {
      ASSERT_GE(d.gold, 0) << name;
      ASSERT_LT(d.gold, static_cast<int>(d.requests.size()) + (name == "lambada_openai")) << name;
    }
  }
  expect_doc(load("arc_easy", 1)[0],
             {{"Question: Which statement best explains why photosynthesis is the foundation of "
               "most food webs?\nAnswer:",
               " Sunlight is the source of energy for nearly all ecosystems."},
              {"Question: Which statement best explains why photosynthesis is the foundation of "
               "most food webs?\nAnswer:",
               " Most ecosystems are found on land instead of in water."},
              {"Question: Which statement best explains why photosynthesis is the foundation of "
               "most food webs?\nAnswer:",
               " Carbon dioxide is more available than other gases."},
              {"Question: Which statement best explains why photosynthesis is the foundation of "
               "most food webs?\nAnswer:",
               " The producers in all ecosystems are plants."}},
             0);
  const TaskDoc hs = load("hellaswag", 1)[0];
  EXPECT_EQ(hs.requests[3].first,
            "Pole vault: Pole vault is a sport where you run with a pole and stop and swing your "
            "body. A few women");
  EXPECT_EQ(hs.requests[3].second,
            " are in the gym practicing to do this pole vault, trying to do their best.");
  EXPECT_EQ(hs.gold, 3);
  const TaskDoc siqa = load("social_iqa", 1)[0];
  EXPECT_EQ(siqa.requests[0].first,
            "Q: Tracy didn't go home that evening and resisted Riley's attacks. What does Tracy "
            "need to do before this?\nA:");
  EXPECT_EQ(siqa.requests[2].second, " Find somewhere to go");
  EXPECT_EQ(siqa.gold, 2);
  const TaskDoc boolq = load("boolq", 1)[0];
  EXPECT_EQ(boolq.requests[0].first.rfind("All biomass goes through", 0), 0u);
  const std::string tail = "\nQuestion: does ethanol take more energy make that produces?\nAnswer:";
  EXPECT_EQ(boolq.requests[0].first.substr(boolq.requests[0].first.size() - tail.size()), tail);
  const TaskDoc copa = load("copa", 1)[0];
  expect_doc(copa,
             {{"The man turned on the faucet therefore", "  the toilet filled with water."},
              {"The man turned on the faucet therefore", "  water flowed from the spout."}},
             1);
  const TaskDoc lambada = load("lambada_openai", 1)[0];
  EXPECT_EQ(lambada.requests[0].second, " signs");
  const TaskDoc mmlu5 = load("mmlu_5shot", 1)[0];
  EXPECT_EQ(mmlu5.subtask, "abstract_algebra");
  EXPECT_EQ(
      mmlu5.requests[0].first.rfind(
          "The following are multiple choice questions (with answers) about abstract algebra.\n\n"
          "Find all c in Z_3 such that Z_3[x]/(x^2 + c) is a field.\nA. 0\nB. 1\nC. 2\nD. "
          "3\nAnswer: B\n\n",
          0),
      0u);
  EXPECT_EQ(load("mmlu", 2).size(), 2u * 57u);
  // sociology's 70th question ends with U+0085, which the harness's question.strip() removes.
  std::vector<TaskDoc> sociology;
  for (TaskDoc& d : load("mmlu", 70)) {
    if (d.subtask == "sociology") sociology.push_back(std::move(d));
  }
  ASSERT_EQ(sociology.size(), 70u);
  const TaskDoc& soc = sociology.back();
  EXPECT_NE(soc.requests[0].first.find("Role-learning theory suggests that\nA. "),
            std::string::npos)
      << soc.requests[0].first;
}

TEST(TaskData, BadInputNamesTheFileLineAndField) {
  rotq_test::TempDir d;
  std::ofstream(d.str("arc.jsonl")) << R"({"query": "Q", "choices": ["a"], "gold": 0})"
                                    << "\n"
                                    << R"({"query": "Q", "choices": ["a", "b"]})"
                                    << "\n";
  try {
    rotq::load_task_docs(rotq::find_task("arc_easy"), d.str("arc.jsonl"));
    FAIL();
  } catch (const rotq::Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("arc.jsonl:2"), std::string::npos) << m;
    EXPECT_NE(m.find("'gold'"), std::string::npos) << m;
  }
  std::ofstream(d.str("bad.jsonl")) << "{not json\n";
  EXPECT_THROW(rotq::load_task_docs(rotq::find_task("piqa"), d.str("bad.jsonl")), rotq::Error);
  EXPECT_THROW(rotq::load_task_docs(rotq::find_task("piqa"), d.str("none.jsonl")), rotq::Error);
  EXPECT_THROW(rotq::find_task("arc"), rotq::Error);
  EXPECT_THROW(rotq::parse_task_list({"piqa,piqa"}), rotq::Error);
  const auto nine = rotq::parse_task_list({"zeroshot"});
  EXPECT_EQ(nine.size(), 9u);
  EXPECT_EQ(rotq::parse_task_list({"piqa=/x/p.jsonl"})[0].second, "/x/p.jsonl");
}

// The harness's pair tokenization with the LLaMA-2 vocabulary: the context alone, the whole
// string split after it, trailing spaces moved to the continuation, BOS first.
TEST(TaskTokens, EncodePairSplitsTheWholeString) {
  auto tok = rotq::load_tokenizer(rotq_test::shared_data("tokenizers/llama2/tokenizer.model"));
  const auto enc = [&](const std::string& s) {
    std::vector<int32_t> v = {tok->bos_id()};
    const auto body = tok->encode(s);
    v.insert(v.end(), body.begin(), body.end());
    return v;
  };
  const rotq::LlRequest q =
      rotq::encode_request(*tok, "Question: Why?\nAnswer:", " Because.", true);
  EXPECT_EQ(q.context, enc("Question: Why?\nAnswer:"));
  std::vector<int32_t> whole = q.context;
  whole.insert(whole.end(), q.continuation.begin(), q.continuation.end());
  EXPECT_EQ(whole, enc("Question: Why?\nAnswer: Because."));
  // "Answer: " + "B": the space joins the continuation.
  const rotq::LlRequest s = rotq::encode_request(*tok, "Answer: ", "B", true);
  EXPECT_EQ(s.context, enc("Answer:"));
  const std::vector<int32_t> ab = enc("Answer: B");
  EXPECT_EQ(s.continuation, std::vector<int32_t>(ab.begin() + s.context.size(), ab.end()));
  const rotq::LlRequest nobos = rotq::encode_request(*tok, "Answer:", " B", false);
  EXPECT_EQ(nobos.context, tok->encode("Answer:"));
  const rotq::LlRequest empty = rotq::encode_request(*tok, "", "Hello", true);
  EXPECT_EQ(empty.context, std::vector<int32_t>{tok->bos_id()});
  EXPECT_EQ(empty.continuation, tok->encode("Hello"));
}

rotq::PreparedTask hand_task(const std::string& name, const std::vector<TaskDoc>& docs) {
  rotq::PreparedTask t;
  t.spec = &rotq::find_task(name);
  t.docs = docs;
  for (const TaskDoc& d : docs) {
    t.first.push_back(t.requests.size());
    for (size_t i = 0; i < d.requests.size(); ++i) t.requests.push_back({{1}, {2}});
  }
  return t;
}

TaskDoc choices_doc(const std::vector<std::string>& choices, int gold,
                    const std::string& subtask = "") {
  TaskDoc d;
  for (const std::string& c : choices) d.requests.emplace_back("ctx", " " + c);
  d.choices = choices;
  d.gold = gold;
  d.subtask = subtask;
  return d;
}

std::vector<rotq::LlScore> lls(const std::vector<double>& v) {
  std::vector<rotq::LlScore> s;
  for (double x : v) s.push_back({x, false});
  return s;
}

TEST(TaskMetrics, AccAndAccNormOnAHandComputedCase) {
  // Doc 0: ll (-2, -4), lengths (1, 4): acc picks 0, acc_norm (-2, -1) picks 1 = gold.
  // Doc 1: ll (-1, -3), lengths (2, 1): both pick 0 = gold.
  // Doc 2: ll (-3, -2.7): "éé" is 2 characters but 4 bytes, "abc" 3 and 3: per character
  //        (-1.5, -0.9) picks 1 = gold, per byte (-0.75, -0.9) picks 0; acc picks 1.
  // Doc 3: a tie (-1, -1) goes to the first choice, as numpy.argmax: acc and acc_norm miss gold 1.
  const auto t = hand_task(
      "arc_easy", {choices_doc({"a", "bbbb"}, 1), choices_doc({"cc", "d"}, 0),
                   choices_doc({"\xc3\xa9\xc3\xa9", "abc"}, 1), choices_doc({"x", "y"}, 1)});
  const rotq::TaskScore s = rotq::task_metrics(t, lls({-2, -4, -1, -3, -3, -2.7, -1, -1}));
  EXPECT_DOUBLE_EQ(s.acc, 0.5);        // docs 1, 2
  EXPECT_DOUBLE_EQ(s.acc_norm, 0.75);  // docs 0, 1, 2
  EXPECT_DOUBLE_EQ(s.acc_bytes, 0.5);  // docs 0, 1
  EXPECT_EQ(s.metric, "acc_norm");
  EXPECT_DOUBLE_EQ(s.score(), 0.75);
  // lm-eval's stderr: sample standard deviation / sqrt(n) = sqrt(1/3) / 2.
  EXPECT_NEAR(s.acc_stderr, std::sqrt(1.0 / 3.0) / 2.0, 1e-15);
  // A task without acc_norm reports acc as its score.
  const rotq::TaskScore b =
      rotq::task_metrics(hand_task("boolq", {choices_doc({"no", "yes"}, 1)}), lls({-1, -0.5}));
  EXPECT_EQ(b.metric, "acc");
  EXPECT_LT(b.acc_norm, 0);
  EXPECT_DOUBLE_EQ(b.score(), 1.0);
}

TEST(TaskMetrics, LambadaGreedyAccuracyAndPerplexity) {
  TaskDoc d;
  d.requests = {{"ctx", " w"}};
  d.choices = {"w"};
  const auto t = hand_task("lambada_openai", {d, d, d});
  const rotq::TaskScore s = rotq::task_metrics(t, {{-1.0, true}, {-2.0, false}, {-3.0, true}});
  EXPECT_DOUBLE_EQ(s.acc, 2.0 / 3.0);
  EXPECT_NEAR(s.ppl, std::exp(2.0), 1e-12);
  EXPECT_EQ(s.metric, "acc");
}

TEST(TaskMetrics, MmluWeightsBySizeAndAveragesSubjects) {
  // Subject a: 1 of 1 right; subject b: 1 of 3 right. By size 2/4, over subjects (1 + 1/3) / 2.
  const auto t =
      hand_task("mmlu", {choices_doc({"A", "B"}, 0, "a"), choices_doc({"A", "B"}, 0, "b"),
                         choices_doc({"A", "B"}, 1, "b"), choices_doc({"A", "B"}, 1, "b")});
  const rotq::TaskScore s = rotq::task_metrics(t, lls({-1, -2, -1, -2, -1, -2, -1, -2}));
  EXPECT_DOUBLE_EQ(s.acc, 0.5);
  EXPECT_NEAR(s.acc_subject_mean, (1.0 + 1.0 / 3.0) / 2.0, 1e-15);
  ASSERT_EQ(s.subtasks.size(), 2u);
  EXPECT_EQ(s.subtasks[1].name, "b");
  EXPECT_EQ(s.subtasks[1].n, 3);
}

// Scores of a few real tasks on stories260K with `batch`, in `dtype`, optionally under W4A4KV4
// fake quantization. The tasks are read and tokenized once for all calls.
struct RealScores {
  std::vector<std::vector<rotq::LlScore>> requests;
  std::vector<rotq::TaskScore> scores;
};
const std::vector<rotq::PreparedTask>& real_tasks() {
  static const std::vector<rotq::PreparedTask> tasks = [] {
    auto tok = rotq::load_tokenizer(kTok, 512);
    std::vector<rotq::PreparedTask> out;
    for (const char* name : {"arc_easy", "hellaswag", "lambada_openai", "winogrande", "mmlu"}) {
      rotq::TaskOptions o;
      o.dir = kTasks;
      o.limit = std::string(name) == "mmlu" ? 1 : 8;
      out.push_back(rotq::prepare_task(name, "", o, *tok));
    }
    return out;
  }();
  return tasks;
}
RealScores real_scores(int64_t batch, at::ScalarType dtype, bool quantized) {
  rotq::LoadOptions lo;
  lo.dtype = dtype;
  const rotq::Model m = rotq::load_model(kStories, lo);
  const rotq::Transformer tf(m);
  auto comm = rotq::make_local_comm();
  rotq::ActQuantHooks hooks(m.config, rotq::default_activation_quant(4, 4));
  RealScores r;
  for (const rotq::PreparedTask& t : real_tasks()) {
    rotq::TaskOptions o;
    o.batch = batch;
    rotq::TaskEvaluation e = rotq::evaluate_task(t, tf, o, *comm, quantized ? &hooks : nullptr);
    r.requests.push_back(e.requests);
    r.scores.push_back(e.score);
  }
  return r;
}

// The top two values of `v` are further apart than `gap` (so that no perturbation of every value
// by at most gap / 2 can change the argmax).
bool clear_winner(const std::vector<double>& v, double gap) {
  std::vector<double> s = v;
  std::sort(s.rbegin(), s.rend());
  return s.size() < 2 || s[0] - s[1] > gap;
}

// Two runs of the same requests: every log-likelihood within `tol` (absolute, plus 1e-6 relative
// for long continuations), and every document's choice (by ll and by ll per character) the same
// wherever its top two choices are more than 2 tol apart; a near-tie may go either way, and is
// the only thing allowed to change an accuracy. Returns the largest log-likelihood difference.
double expect_same_scores(const RealScores& a, const RealScores& b, double tol) {
  double worst = 0;
  const auto& tasks = real_tasks();
  for (size_t t = 0; t < tasks.size(); ++t) {
    const rotq::PreparedTask& task = tasks[t];
    if (a.requests[t].size() != task.requests.size() ||
        b.requests[t].size() != task.requests.size()) {
      ADD_FAILURE() << task.spec->name << ": request counts differ";
      continue;
    }
    EXPECT_EQ(a.scores[t].n, b.scores[t].n) << task.spec->name;
    for (size_t r = 0; r < task.requests.size(); ++r) {
      const double la = a.requests[t][r].logprob, lb = b.requests[t][r].logprob;
      worst = std::max(worst, std::abs(la - lb));
      EXPECT_NEAR(la, lb, tol + 1e-6 * std::abs(la)) << task.spec->name << " request " << r;
    }
    int near_ties = 0, changed = 0;
    for (size_t d = 0; d < task.docs.size(); ++d) {
      const size_t k = task.docs[d].requests.size(), f = task.first[d];
      if (k < 2) continue;  // LAMBADA: one request, compared above
      for (const bool per_char : {false, true}) {
        std::vector<double> va(k), vb(k);
        double gap = 0;
        for (size_t i = 0; i < k; ++i) {
          const double len =
              per_char ? static_cast<double>(rotq::utf8_length(task.docs[d].choices[i])) : 1.0;
          va[i] = a.requests[t][f + i].logprob / len;
          vb[i] = b.requests[t][f + i].logprob / len;
          gap = std::max(gap, 2 * (tol + 1e-6 * std::abs(a.requests[t][f + i].logprob)) / len);
        }
        const bool same = std::max_element(va.begin(), va.end()) - va.begin() ==
                          std::max_element(vb.begin(), vb.end()) - vb.begin();
        if (clear_winner(va, gap)) {
          EXPECT_TRUE(same) << task.spec->name << " doc " << d << (per_char ? " (per char)" : "");
        } else {
          ++near_ties;
          changed += !same;
        }
      }
    }
    // Accuracies differ by at most the near-ties that went the other way.
    const double n = static_cast<double>(task.docs.size());
    EXPECT_LE(std::abs(a.scores[t].acc - b.scores[t].acc) * n, changed + 1e-9) << task.spec->name;
    if (changed)
      std::printf("%s: %d of %d near-ties changed\n", task.spec->name.c_str(), changed, near_ties);
  }
  return worst;
}

// Batch size 1 and 32 give the same scores on the real model. Batches hold inputs of one length,
// so nothing is padded; what is left is the last bit of vectorized elementwise kernels (silu, exp)
// whose loop tails fall elsewhere in a bigger tensor, which depends on the CPU's vector width: the
// floating-point model's log-likelihoods agree within 1e-4 in float32 (4e-5 seen on AVX-512).
// Under W4A4KV4 fake quantization such a last-bit difference can move a value
// across a rounding boundary (float32 log-likelihoods then differ by 1e-2 and more), so the
// quantized comparison runs in float64, where a crossing would need a value within 1e-16 of a
// boundary.
TEST(TaskBatching, BatchSizeOneAndThirtyTwoAgree) {
  const RealScores f1 = real_scores(1, at::kFloat, false), f32 = real_scores(32, at::kFloat, false);
  const double fp32 = expect_same_scores(f1, f32, 1e-4);
  const RealScores q1 = real_scores(1, at::kDouble, true), q32 = real_scores(32, at::kDouble, true);
  const double fp64q = expect_same_scores(q1, q32, 1e-9);
  std::printf("max |d ll| batch 1 vs 32: float32 %.3g, float64 W4A4KV4 %.3g\n", fp32, fp64q);
  // The quantized model scores differently from the floating-point one (the hooks are active).
  double moved = 0;
  for (size_t r = 0; r < f32.requests[0].size(); ++r) {
    moved = std::max(moved, std::abs(f32.requests[0][r].logprob - q32.requests[0][r].logprob));
  }
  EXPECT_GT(moved, 1e-2);
}

// A request's score is the sum of the per-token log-probabilities a plain forward gives.
TEST(TaskBatching, ScoreEqualsTheForwardsLogProbabilities) {
  rotq::LoadOptions lo;
  lo.dtype = at::kDouble;
  const rotq::Model m = rotq::load_model(kStories, lo);
  const rotq::Transformer tf(m);
  auto tok = rotq::load_tokenizer(kTok, 512);
  auto comm = rotq::make_local_comm();
  const rotq::LlRequest q =
      rotq::encode_request(*tok, "Once upon a time, there was a", " little girl.", true);
  std::vector<int32_t> full = q.context;
  full.insert(full.end(), q.continuation.begin(), q.continuation.end());
  at::Tensor ids =
      at::tensor(std::vector<int64_t>(full.begin(), full.end()), at::kLong).unsqueeze(0);
  const at::Tensor lp = at::log_softmax(tf.logits(tf.hidden_states(ids)[0]), -1);
  double want = 0;
  bool greedy = true;
  for (size_t k = 0; k < q.continuation.size(); ++k) {
    const int64_t pos = static_cast<int64_t>(q.context.size() + k) - 1;
    want += lp[pos][q.continuation[k]].item<double>();
    greedy = greedy && lp[pos].argmax().item<int64_t>() == q.continuation[k];
  }
  rotq::LlOptions o;
  const auto got = rotq::score_requests(tf, {q, q}, o, *comm, nullptr);
  EXPECT_NEAR(got[0].logprob, want, 1e-10);
  EXPECT_EQ(got[0].greedy, greedy);
  EXPECT_EQ(got[1].logprob, got[0].logprob);
  // Left truncation: with a context of L = len(continuation) + 2 the model reads the last L
  // tokens of context + continuation[:-1].
  const int64_t cl = static_cast<int64_t>(q.continuation.size()), L = cl + 2;
  o.max_length = L;
  const auto cut = rotq::score_requests(tf, {q}, o, *comm, nullptr);
  std::vector<int64_t> tail(full.end() - (L + 1), full.end() - 1);
  const at::Tensor tlp =
      at::log_softmax(tf.logits(tf.hidden_states(at::tensor(tail, at::kLong).unsqueeze(0))[0]), -1);
  double twant = 0;
  for (int64_t k = 0; k < cl; ++k) twant += tlp[L - cl + k][q.continuation[k]].item<double>();
  EXPECT_NEAR(cut[0].logprob, twant, 1e-10);
  // A continuation longer than the context (which the harness refuses) is scored on its last L
  // tokens, read from the L tokens before them.
  ASSERT_GE(cl, 3);
  const int64_t S = cl - 1;
  o.max_length = S;
  rotq::LlStats stats;
  const auto over = rotq::score_requests(tf, {q}, o, *comm, nullptr, rotq::Placement::replicated(),
                                         nullptr, &stats);
  EXPECT_EQ(stats.cut, 1);
  std::vector<int64_t> win(full.end() - (S + 1), full.end() - 1);
  const at::Tensor wlp =
      at::log_softmax(tf.logits(tf.hidden_states(at::tensor(win, at::kLong).unsqueeze(0))[0]), -1);
  double owant = 0;
  for (int64_t k = 0; k < S; ++k) owant += wlp[k][q.continuation[cl - S + k]].item<double>();
  EXPECT_NEAR(over[0].logprob, owant, 1e-10);
}

}  // namespace
