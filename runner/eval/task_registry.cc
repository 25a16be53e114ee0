#include "runner/eval/task_registry.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "runner/data/text.h"
#include "solvers/error.h"
#include "solvers/parse.h"

namespace rotq {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// lm-eval's default target_delimiter: the continuation of a multiple-choice request is " " +
// choice.
constexpr const char* kDelim = " ";

const json& field(const json& j, const char* key) {
  require(j.is_object() && j.contains(key), "missing field '", key, "'");
  return j.at(key);
}

std::string text_field(const json& j, const char* key) {
  const json& v = field(j, key);
  require(v.is_string(), "field '", key, "' is not a string");
  return v.get<std::string>();
}

std::vector<std::string> string_list(const json& j, const char* key) {
  const json& v = field(j, key);
  require(v.is_array() && !v.empty(), "field '", key, "' is not a non-empty list of strings");
  std::vector<std::string> out;
  for (const json& s : v) {
    require(s.is_string(), "field '", key, "' holds a non-string");
    out.push_back(s.get<std::string>());
  }
  return out;
}

// An integer label that may be stored as a number, a bool or a digit string ("1").
int64_t int_field(const json& j, const char* key) {
  const json& v = field(j, key);
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_boolean()) return v.get<bool>() ? 1 : 0;
  if (v.is_string()) {
    const std::string s = v.get<std::string>();
    if (!s.empty() && s.size() <= 9 && s.find_first_not_of("0123456789") == std::string::npos) {
      return *parse_integer(s);
    }
  }
  fail("field '", key, "' is not an integer");
}

int checked_gold(int64_t gold, size_t n, const char* key) {
  require(gold >= 0 && gold < static_cast<int64_t>(n), "field '", key, "' = ", gold,
          " is not a choice index in [0, ", n, ")");
  return static_cast<int>(gold);
}

bool starts_with(const std::string& s, const std::string& p) { return s.rfind(p, 0) == 0; }
bool ends_with(const std::string& s, const std::string& p) {
  return s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0;
}

// One context shared by every choice, each continued by " " + choice.
TaskDoc multiple_choice(const std::string& context, std::vector<std::string> choices, int gold) {
  TaskDoc d;
  for (const std::string& c : choices) d.requests.emplace_back(context, kDelim + c);
  d.choices = std::move(choices);
  d.gold = gold;
  return d;
}

// HF's {choices: {text: [...], label: [...]}, answerKey} (ARC, OpenBookQA).
TaskDoc labelled_choices(const json& j, const std::string& context) {
  const json& c = field(j, "choices");
  const std::vector<std::string> text = string_list(c, "text"), label = string_list(c, "label");
  require(text.size() == label.size(), "choices.text and choices.label differ in length");
  std::string key = text_field(j, "answerKey");
  key.erase(0, key.find_first_not_of(' '));  // lm-eval: answerKey.lstrip()
  const auto it = std::find(label.begin(), label.end(), key);
  require(it != label.end(), "answerKey '", key, "' is not one of choices.label");
  return multiple_choice(context, text, static_cast<int>(it - label.begin()));
}

// llm-foundry's {query, choices, gold}.
TaskDoc foundry_doc(const json& j, const std::string& context) {
  std::vector<std::string> choices = string_list(j, "choices");
  const int gold = checked_gold(int_field(j, "gold"), choices.size(), "gold");
  return multiple_choice(context, std::move(choices), gold);
}

// The JSON records of a task file: a JSON array, or one object per line. Each comes with its
// line number for error messages.
std::vector<std::pair<size_t, json>> read_json_records(const std::string& path) {
  const std::string text = read_file_bytes(path);
  std::vector<std::pair<size_t, json>> out;
  const size_t first = text.find_first_not_of(" \t\r\n");
  require(first != std::string::npos, path, ": the task file is empty");
  if (text[first] == '[') {
    json arr;
    try {
      arr = json::parse(text);
    } catch (const json::exception& e) {
      fail(path, ": not a JSON array of task records (", e.what(), ")");
    }
    for (size_t i = 0; i < arr.size(); ++i) out.emplace_back(i + 1, std::move(arr[i]));
    return out;
  }
  std::istringstream lines(text);
  size_t n = 0;
  for (std::string line; std::getline(lines, line);) {
    ++n;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      out.emplace_back(n, json::parse(line));
    } catch (const json::exception& e) {
      fail(path, ":", n, ": not a JSON record (", e.what(), ")");
    }
  }
  return out;
}

using DocBuilder = TaskDoc (*)(const json&);

DocBuilder builder_of(const std::string& name) {
  if (name == "arc_easy" || name == "arc_challenge") return arc_doc;
  if (name == "boolq") return boolq_doc;
  if (name == "openbookqa") return openbookqa_doc;
  if (name == "piqa") return piqa_doc;
  if (name == "copa") return copa_doc;
  if (name == "winogrande") return winogrande_doc;
  if (name == "lambada_openai") return lambada_doc;
  if (name == "hellaswag") return hellaswag_doc;
  if (name == "social_iqa") return siqa_doc;
  fail("task ", name, ": no JSON reader");
}

int mmlu_answer(const std::string& s) {
  const std::string a = py_strip(s);
  if (a.size() == 1 && a[0] >= '0' && a[0] <= '3') return a[0] - '0';
  if (a.size() == 1 && a[0] >= 'A' && a[0] <= 'D') return a[0] - 'A';
  fail("answer '", s, "' is not 0-3 or A-D");
}

// One MMLU CSV: rows question, choice0..choice3, answer (a header row is skipped).
std::vector<MmluQuestion> read_mmlu_csv(const std::string& path) {
  std::string text = read_file_bytes(path);
  if (text.rfind("\xEF\xBB\xBF", 0) == 0) text.erase(0, 3);  // a UTF-8 byte-order mark
  const auto rows = parse_csv(text, path);
  std::vector<MmluQuestion> out;
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto& r = rows[i];
    if (i == 0 && !r.empty() && r[0] == "question") continue;
    require(r.size() == 6, path, ": row ", i + 1, " has ", r.size(),
            " fields, expected 6 (question, 4 choices, answer)");
    MmluQuestion q;
    q.question = r[0];
    q.choices.assign(r.begin() + 1, r.begin() + 5);
    try {
      q.answer = mmlu_answer(r[5]);
    } catch (const Error& e) {
      fail(path, ": row ", i + 1, ": ", e.what());
    }
    out.push_back(std::move(q));
  }
  require(!out.empty(), path, ": no questions");
  return out;
}

// MMLU's subjects: the SUBJECT_test.csv files under DIR/test, sorted.
std::vector<std::string> mmlu_subjects(const std::string& dir) {
  const fs::path test = fs::path(dir) / "test";
  require(fs::is_directory(test), dir, ": not an MMLU directory (expected test/SUBJECT_test.csv)");
  std::vector<std::string> subjects;
  for (const auto& e : fs::directory_iterator(test)) {
    const std::string f = e.path().filename().string();
    if (ends_with(f, "_test.csv")) subjects.push_back(f.substr(0, f.size() - 9));
  }
  std::sort(subjects.begin(), subjects.end());
  require(!subjects.empty(), test.string(), ": no SUBJECT_test.csv files");
  return subjects;
}

std::vector<TaskDoc> load_mmlu(const TaskSpec& spec, const std::string& dir, int64_t limit) {
  std::vector<TaskDoc> docs;
  for (const std::string& subject : mmlu_subjects(dir)) {
    std::vector<MmluQuestion> dev;
    if (spec.num_fewshot > 0) {
      const std::string dev_path = (fs::path(dir) / "dev" / (subject + "_dev.csv")).string();
      dev = read_mmlu_csv(dev_path);
      require(static_cast<int>(dev.size()) >= spec.num_fewshot, dev_path, ": ", dev.size(),
              " exemplars, ", spec.num_fewshot, "-shot needs ", spec.num_fewshot);
    }
    const auto test = read_mmlu_csv((fs::path(dir) / "test" / (subject + "_test.csv")).string());
    const size_t n = limit < 0 ? test.size() : std::min<size_t>(test.size(), limit);
    for (size_t i = 0; i < n; ++i)
      docs.push_back(mmlu_doc(subject, dev, spec.num_fewshot, test[i]));
  }
  return docs;
}

}  // namespace

const std::vector<TaskSpec>& task_registry() {
  using K = TaskKind;
  static const std::vector<TaskSpec> r = {
      {"arc_challenge", "ARC-c", "arc_challenge.jsonl", K::kMultipleChoice, true, 0, true},
      {"arc_easy", "ARC-e", "arc_easy.jsonl", K::kMultipleChoice, true, 0, true},
      {"boolq", "BoolQ", "boolq.jsonl", K::kMultipleChoice, false, 0, true},
      {"hellaswag", "HellaS.", "hellaswag_val_1k.jsonl", K::kMultipleChoice, true, 0, true},
      {"lambada_openai", "LAMBADA", "lambada_openai.jsonl", K::kLastWord, false, 0, true},
      {"openbookqa", "OBQA", "openbookqa.jsonl", K::kMultipleChoice, true, 0, true},
      {"piqa", "PIQA", "piqa.jsonl", K::kMultipleChoice, true, 0, true},
      {"social_iqa", "SIQA", "social_iqa.test.json", K::kMultipleChoice, false, 0, true},
      {"winogrande", "WinoG.", "winogrande.jsonl", K::kMultipleChoice, false, 0, true},
      {"copa", "COPA", "copa.jsonl", K::kMultipleChoice, false, 0, false},
      {"mmlu", "MMLU", "mmlu", K::kMultipleChoice, false, 0, false},
      {"mmlu_5shot", "MMLU 5-shot", "mmlu", K::kMultipleChoice, false, 5, false},
  };
  return r;
}

const TaskSpec* lookup_task(const std::string& name) {
  for (const TaskSpec& s : task_registry()) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

const TaskSpec& find_task(const std::string& name) {
  if (const TaskSpec* s = lookup_task(name)) return *s;
  std::string known;
  for (const TaskSpec& s : task_registry()) known += (known.empty() ? "" : ", ") + s.name;
  fail("task '", name, "': unknown (expected one of ", known, ", zeroshot, all)");
}

std::vector<std::pair<std::string, std::string>> parse_task_list(
    const std::vector<std::string>& items) {
  std::vector<std::pair<std::string, std::string>> out;
  std::set<std::string> seen;
  const auto add = [&](const std::string& name, const std::string& path) {
    find_task(name);
    require(seen.insert(name).second, "task '", name, "' is listed twice");
    out.emplace_back(name, path);
  };
  for (const std::string& item : items) {
    std::stringstream ss(item);
    for (std::string t; std::getline(ss, t, ',');) {
      t = py_strip(t);
      if (t.empty()) continue;
      if (t == "zeroshot" || t == "all") {
        for (const TaskSpec& s : task_registry()) {
          if (t == "all" || s.zero_shot_avg) add(s.name, "");
        }
        continue;
      }
      const size_t eq = t.find('=');
      if (eq == std::string::npos) {
        add(t, "");
      } else {
        require(eq + 1 < t.size(), "task '", t, "': expected NAME=PATH");
        add(t.substr(0, eq), t.substr(eq + 1));
      }
    }
  }
  require(!out.empty(), "no tasks given (e.g. --tasks arc_easy,piqa or --tasks zeroshot)");
  return out;
}

std::vector<TaskDoc> load_task_docs(const TaskSpec& spec, const std::string& path, int64_t limit) {
  require(fs::exists(path), "task ", spec.name, ": ", path, " does not exist");
  std::vector<TaskDoc> docs;
  if (spec.name == "mmlu" || spec.name == "mmlu_5shot") {
    docs = load_mmlu(spec, path, limit);
  } else {
    require(!fs::is_directory(path), "task ", spec.name, ": ", path,
            " is a directory, expected a JSON-lines file");
    const DocBuilder build = builder_of(spec.name);
    for (auto& [line, j] : read_json_records(path)) {
      if (limit >= 0 && static_cast<int64_t>(docs.size()) >= limit) break;
      try {
        docs.push_back(build(j));
      } catch (const Error& e) {
        fail(path, ":", line, ": ", spec.name, " record: ", e.what());
      } catch (const json::exception& e) {
        fail(path, ":", line, ": ", spec.name, " record: ", e.what());
      }
    }
  }
  require(!docs.empty(), "task ", spec.name, ": ", path, " holds no examples");
  return docs;
}

std::string task_path(const TaskSpec& spec, const std::string& path, const std::string& dir) {
  if (!path.empty()) return path;
  require(!dir.empty(), "task ", spec.name, ": no tasks directory (give --tasks-dir, ",
          "evaluation.tasks_dir or ", spec.name, "=PATH)");
  return (fs::path(dir) / spec.file).string();
}

std::vector<std::string> task_data_files(const TaskSpec& spec, const std::string& path) {
  if (spec.name != "mmlu" && spec.name != "mmlu_5shot") return {path};
  std::vector<std::string> files;
  for (const std::string& s : mmlu_subjects(path)) {
    if (spec.num_fewshot > 0) files.push_back((fs::path(path) / "dev" / (s + "_dev.csv")).string());
    files.push_back((fs::path(path) / "test" / (s + "_test.csv")).string());
  }
  return files;
}

// ---- documents ----------------------------------------------------------------------------------

// lm-eval arc_easy/arc_challenge: "Question: {question}\nAnswer:", choices " " + text.
TaskDoc arc_doc(const json& j) {
  if (j.contains("query")) return foundry_doc(j, text_field(j, "query") + "\nAnswer:");
  return labelled_choices(j, "Question: " + text_field(j, "question") + "\nAnswer:");
}

// lm-eval boolq: "{passage}\nQuestion: {question}?\nAnswer:", choices " no" / " yes".
TaskDoc boolq_doc(const json& j) {
  if (j.contains("query")) {
    const std::string q = text_field(j, "query");
    require(starts_with(q, "Passage: "), "query does not start with 'Passage: '");
    return foundry_doc(j, q.substr(9) + "\nAnswer:");
  }
  const int64_t label = int_field(j, "label");
  require(label == 0 || label == 1, "field 'label' = ", label, ", expected 0/1");
  return multiple_choice(
      text_field(j, "passage") + "\nQuestion: " + text_field(j, "question") + "?\nAnswer:",
      {"no", "yes"}, static_cast<int>(label));
}

// lm-eval openbookqa: the question stem, choices " " + text.
TaskDoc openbookqa_doc(const json& j) {
  if (j.contains("query")) return foundry_doc(j, text_field(j, "query"));
  return labelled_choices(j, text_field(j, "question_stem"));
}

// lm-eval piqa: "Question: {goal}\nAnswer:", choices " " + sol1/sol2.
TaskDoc piqa_doc(const json& j) {
  if (j.contains("query")) {
    const std::string q = text_field(j, "query");  // "Question: {goal}\n"
    return foundry_doc(j, ends_with(q, "\n") ? q + "Answer:" : q + "\nAnswer:");
  }
  const int64_t label = int_field(j, "label");
  return multiple_choice("Question: " + text_field(j, "goal") + "\nAnswer:",
                         {text_field(j, "sol1"), text_field(j, "sol2")},
                         checked_gold(label, 2, "label"));
}

// lm-eval copa (super_glue): premise without its final period + " because"/" therefore"; the
// choices are " " + the choice with a lower-case first letter, and the request adds the target
// delimiter before them too (so the continuation starts with two spaces, as the harness sends it).
TaskDoc copa_doc(const json& j) {
  const auto convert = [](std::string c) {
    if (!c.empty()) c[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(c[0])));
    return " " + c;
  };
  if (j.contains("query")) {
    // llm-foundry joins "premise, connector"; the harness's context has no comma.
    std::string query = text_field(j, "query");
    for (const char* c : {", therefore", ", because"}) {
      if (ends_with(query, c)) query.erase(query.size() - std::string(c).size(), 1);
    }
    std::vector<std::string> choices;
    for (const std::string& c : string_list(j, "choices")) choices.push_back(convert(c));
    const int gold = checked_gold(int_field(j, "gold"), choices.size(), "gold");
    return multiple_choice(query, std::move(choices), gold);
  }
  const std::string question = text_field(j, "question");
  require(question == "cause" || question == "effect", "field 'question' = '", question,
          "', expected cause or effect");
  std::string premise = py_strip(text_field(j, "premise"));
  require(!premise.empty(), "field 'premise' is empty");
  premise.pop_back();  // the period
  return multiple_choice(premise + (question == "cause" ? " because" : " therefore"),
                         {convert(text_field(j, "choice1")), convert(text_field(j, "choice2"))},
                         checked_gold(int_field(j, "label"), 2, "label"));
}

// lm-eval winogrande (partial scoring): each option completes the sentence up to the blank (the
// contexts), and the same rest of the sentence is scored after each.
TaskDoc winogrande_doc(const json& j) {
  std::vector<std::string> contexts;
  std::string target;
  int gold = 0;
  if (j.contains("context_options")) {
    contexts = string_list(j, "context_options");
    target = text_field(j, "continuation");
    gold = checked_gold(int_field(j, "gold"), contexts.size(), "gold");
  } else {
    const std::string s = text_field(j, "sentence");
    const size_t blank = s.find('_');
    require(blank != std::string::npos, "field 'sentence' has no '_' blank");
    contexts = {s.substr(0, blank) + text_field(j, "option1"),
                s.substr(0, blank) + text_field(j, "option2")};
    target = py_strip(s.substr(blank + 1));
    const int64_t answer = int_field(j, "answer");  // "1" or "2"
    require(answer == 1 || answer == 2, "field 'answer' = ", answer, ", expected 1 or 2");
    gold = static_cast<int>(answer - 1);
  }
  TaskDoc d;
  for (const std::string& c : contexts) d.requests.emplace_back(c, kDelim + target);
  d.choices = contexts;
  d.gold = gold;
  return d;
}

// lm-eval lambada_openai: the text without its last word, continued by " " + the last word.
TaskDoc lambada_doc(const json& j) {
  std::string context, word;
  if (j.contains("context")) {
    context = text_field(j, "context");
    word = text_field(j, "continuation");
  } else {
    const std::string text = text_field(j, "text");
    const size_t sp = text.rfind(' ');
    require(sp != std::string::npos, "field 'text' has a single word");
    context = text.substr(0, sp);
    word = text.substr(sp + 1);
  }
  require(!word.empty(), "the target word is empty");
  TaskDoc d;
  d.requests.emplace_back(context, " " + word);
  d.choices = {word};
  return d;
}

std::string hellaswag_preprocess(const std::string& text) {
  std::string t = py_strip(text);
  for (size_t p = 0; (p = t.find(" [title]", p)) != std::string::npos; p += 2)
    t.replace(p, 8, ". ");
  // re.sub("\\[.*?\\]", "", t): drop each '[' up to the nearest following ']'.
  std::string kept;
  for (size_t i = 0; i < t.size(); ++i) {
    if (t[i] == '[') {
      // '.' does not match a newline: a ']' past one ends no match.
      const size_t close = t.find_first_of("]\n", i + 1);
      if (close != std::string::npos && t[close] == ']') {
        i = close;
        continue;
      }
    }
    kept += t[i];
  }
  // str.replace("  ", " "): one left-to-right pass over non-overlapping pairs.
  std::string out;
  for (size_t i = 0; i < kept.size(); ++i) {
    out += kept[i];
    if (kept[i] == ' ' && i + 1 < kept.size() && kept[i + 1] == ' ') ++i;
  }
  return out;
}

// lm-eval hellaswag: preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize()),
// choices preprocess(ending).
TaskDoc hellaswag_doc(const json& j) {
  if (j.contains("query")) return foundry_doc(j, text_field(j, "query"));
  const std::string ctx = text_field(j, "ctx_a") + " " + py_capitalize(text_field(j, "ctx_b"));
  std::vector<std::string> choices;
  for (const std::string& e : string_list(j, "endings")) choices.push_back(hellaswag_preprocess(e));
  const int gold = checked_gold(int_field(j, "label"), choices.size(), "label");
  return multiple_choice(hellaswag_preprocess(text_field(j, "activity_label") + ": " + ctx),
                         std::move(choices), gold);
}

// lm-eval social_iqa: "Q: {context} {question}\nA:", choices " " + answerA/B/C. LLM-Adapters'
// file embeds them in an instruction: "Please choose the correct answer to the question:
// {context} {question}\n\nAnswer1: a Answer2: b Answer3: c\n\nAnswer format: ...", gold "answerN".
TaskDoc siqa_doc(const json& j) {
  if (j.contains("instruction")) {
    const std::string ins = text_field(j, "instruction");
    const std::string lead = "Please choose the correct answer to the question: ";
    require(starts_with(ins, lead), "instruction does not start with '", lead, "'");
    const size_t a1 = ins.find("\n\nAnswer1: ");
    const size_t a2 = ins.find(" Answer2: ", a1);
    const size_t a3 = ins.find(" Answer3: ", a2);
    require(a1 != std::string::npos && a2 != std::string::npos && a3 != std::string::npos,
            "instruction lacks 'Answer1: ... Answer2: ... Answer3: '");
    size_t end = ins.find("\n\n", a3);
    if (end == std::string::npos) end = ins.size();
    const std::string question = ins.substr(lead.size(), a1 - lead.size());
    std::vector<std::string> choices = {ins.substr(a1 + 11, a2 - a1 - 11),
                                        ins.substr(a2 + 10, a3 - a2 - 10),
                                        ins.substr(a3 + 10, end - a3 - 10)};
    const std::string answer = text_field(j, "answer");
    require(
        answer.size() == 7 && starts_with(answer, "answer") && answer[6] >= '1' && answer[6] <= '3',
        "field 'answer' = '", answer, "', expected answer1, answer2 or answer3");
    return multiple_choice("Q: " + question + "\nA:", std::move(choices), answer[6] - '1');
  }
  const int64_t label = int_field(j, "label");  // "1".."3"
  require(label >= 1 && label <= 3, "field 'label' = ", label, ", expected 1-3");
  return multiple_choice(
      "Q: " + text_field(j, "context") + " " + text_field(j, "question") + "\nA:",
      {text_field(j, "answerA"), text_field(j, "answerB"), text_field(j, "answerC")},
      static_cast<int>(label - 1));
}

std::string mmlu_question_text(const MmluQuestion& q) {
  require(q.choices.size() == 4, "an MMLU question needs 4 choices, got ", q.choices.size());
  return py_strip(q.question) + "\nA. " + q.choices[0] + "\nB. " + q.choices[1] + "\nC. " +
         q.choices[2] + "\nD. " + q.choices[3] + "\nAnswer:";
}

TaskDoc mmlu_doc(const std::string& subject, const std::vector<MmluQuestion>& dev, int shots,
                 const MmluQuestion& q) {
  static const std::vector<std::string> letters = {"A", "B", "C", "D"};
  std::string name = subject;
  std::replace(name.begin(), name.end(), '_', ' ');
  std::string ctx =
      "The following are multiple choice questions (with answers) about " + name + ".\n\n";
  require(static_cast<int>(dev.size()) >= shots, "MMLU ", subject, ": ", shots,
          "-shot needs as many dev exemplars, got ", dev.size());
  for (int i = 0; i < shots; ++i) {
    ctx += mmlu_question_text(dev[i]) + " " + letters.at(dev[i].answer) + "\n\n";
  }
  TaskDoc d = multiple_choice(ctx + mmlu_question_text(q), letters, q.answer);
  d.subtask = subject;
  return d;
}

std::vector<std::vector<std::string>> parse_csv(const std::string& text,
                                                const std::string& origin) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> row;
  std::string cell;
  bool quoted = false, any = false;
  size_t line = 1;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (quoted) {
      if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') {
        cell += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        if (c == '\n') ++line;
        cell += c;
      }
      continue;
    }
    if (c == '"' && cell.empty()) {
      quoted = any = true;
    } else if (c == ',') {
      row.push_back(std::move(cell));
      cell.clear();
      any = true;
    } else if (c == '\n' || c == '\r') {
      if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
      ++line;
      if (any || !cell.empty()) {
        row.push_back(std::move(cell));
        rows.push_back(std::move(row));
      }
      row.clear();
      cell.clear();
      any = false;
    } else {
      cell += c;
      any = true;
    }
  }
  require(!quoted, origin, ":", line, ": a quoted CSV field is not closed");
  if (any || !cell.empty()) {
    row.push_back(std::move(cell));
    rows.push_back(std::move(row));
  }
  return rows;
}

}  // namespace rotq
