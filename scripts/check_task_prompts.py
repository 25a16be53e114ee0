#!/usr/bin/env python3
"""Independent cross-check of `rotq task-requests` against lm-evaluation-harness prompt semantics.

    python3 scripts/check_task_prompts.py TASKS_DIR REQUESTS.jsonl [--limit N] [--tasks T ...]

REQUESTS.jsonl is the output of
    rotq task-requests --tasks all --tasks-dir TASKS_DIR [--limit N]
one JSON object a line: {"task", "doc", "gold", "requests": [[context, continuation], ...],
"choices": [...], "subtask"? (MMLU)}. "doc" is the 0-based position in the task's document list
(for MMLU: the subjects' lists concatenated in sorted file-name order, each cut to --limit).

This script rebuilds, from the data files alone and with the Python standard library only, what
lm-eval (EleutherAI/lm-evaluation-harness, the mirror's HEAD, 4e7e0d47) would build for every
document, and compares the requests, the gold index and the choices. Exit status 1 on any mismatch
or any missing / extra / duplicated document, 0 otherwise.

The lm-eval machinery it follows (lm_eval/api/task.py, ConfigurableTask; lm_eval/api/utils.py):
  * fewshot_context / build_qa_turn: the plain-text prompt is
        description + for each few-shot doc: doc_to_text + target_delimiter (" ") + answer
        + fewshot_delimiter ("\\n\\n"), then doc_to_text of the evaluated doc (no delimiter after
        it); Message.to_text = content + delimiter; the description is a "system" Message with no
        delimiter (maybe_delimit(None, description) = description).
  * construct_requests, output_type multiple_choice: [(ctx, target_delimiter + choice) for choice
        in doc_to_choice(doc)]; with multiple inputs (doc_to_text returns an int, winogrande):
        [(ctx_i, target_delimiter + doc_to_target(doc)) for ctx_i in the per-choice contexts]
        (multiple_input_context -> build_qa_turn(q=ctx_i, tgt_delim="")).
  * construct_requests, output_type loglikelihood (lambada): (ctx, doc_to_target(doc)), no
        delimiter added.
  * process_results: gold = doc_to_text(doc) for multiple inputs, else doc_to_target(doc); an int
        is the index, a str is looked up with choices.index(gold).
  * config/task.py TaskConfig defaults: target_delimiter " ", fewshot_delimiter "\\n\\n",
        description ""; FewshotConfig inherits them. utils.apply_template renders with Jinja
        (keep_trailing_newline=True); a "{{list}}" template is ast.literal_eval'ed back, so
        "{{choices.text}}" / "{{[sol1, sol2]}}" yield the strings unchanged; a rendered target that
        isdigit() becomes an int.
  * api/samplers.py FirstNSampler: the first n docs of the few-shot split (dev != test, so the
        evaluated doc is never removed from the pool).

Per-task functions (each names the lm-eval files it follows):
  arc_doc              lm_eval/tasks/arc/arc_easy.yaml (arc_challenge.yaml includes it)
  boolq_doc            lm_eval/tasks/super_glue/boolq/default.yaml
  openbookqa_doc       lm_eval/tasks/openbookqa/openbookqa.yaml
  piqa_doc             lm_eval/tasks/piqa/piqa.yaml
  copa_doc             lm_eval/tasks/super_glue/copa/default.yaml + utils.py
  winogrande_doc       lm_eval/tasks/winogrande/default.yaml + preprocess_winogrande.py
  lambada_doc          lm_eval/tasks/lambada/lambada_openai.yaml
  hellaswag_doc        lm_eval/tasks/hellaswag/hellaswag.yaml + utils.py (process_docs, preprocess)
  social_iqa_doc       lm_eval/tasks/siqa/siqa.yaml
  mmlu_docs            lm_eval/tasks/mmlu/default/_default_template_yaml + mmlu_SUBJECT.yaml

The data files are not in the Hugging Face layout lm-eval reads; each *_doc function first recovers
the HF fields from the record (its comments state the assumptions), then applies lm-eval's
doc_to_text / doc_to_target / doc_to_choice to those fields. Known limits of the data (they affect
both implementations equally, so the comparison cannot see them): the BoolQ passages lack
SuperGLUE's "Title -- " prefix; SIQA's context and question arrive already joined by one space.
"""
import argparse
import csv
import json
import os
import re
import sys

TARGET_DELIMITER = " "  # config/task.py TaskConfig.target_delimiter default
FEWSHOT_DELIMITER = "\n\n"  # config/task.py TaskConfig.fewshot_delimiter default
MAX_REPORTED = 5  # mismatches printed per task


# --------------------------------------------------------------------------------------------
# The expected form of one document


def expected(ctx_or_ctxs, choices, gold, continuations=None, subtask=None):
    """One document as rotq dumps it: requests, gold, choices (and MMLU's subtask).

    multiple_choice: ctx_or_ctxs is one context, requests pair it with " " + each choice.
    multiple inputs: ctx_or_ctxs is a list of contexts and continuations the shared continuation.
    loglikelihood:   pass continuations=[target] and choices=None (lm-eval has no doc_to_choice).
    """
    if isinstance(ctx_or_ctxs, list):  # task.py construct_requests, self.multiple_input branch
        requests = [[c, TARGET_DELIMITER + continuations] for c in ctx_or_ctxs]
    elif continuations is not None:  # loglikelihood: (ctx, doc_to_target(doc)), no delimiter
        requests = [[ctx_or_ctxs, t] for t in continuations]
    else:  # multiple_choice: [(ctx, f"{target_delimiter}{cont}") for cont in choices]
        requests = [[ctx_or_ctxs, TARGET_DELIMITER + c] for c in choices]
    return {"requests": requests, "gold": gold, "choices": choices, "subtask": subtask}


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def strip_prefix(text, prefix, what):
    if not text.startswith(prefix):
        raise ValueError(f"{what}: expected prefix {prefix!r} in {text[:80]!r}")
    return text[len(prefix):]


# --------------------------------------------------------------------------------------------
# One function per task: record -> HF fields -> lm-eval's request pairs


def arc_doc(rec):
    """arc_easy.yaml: doc_to_text "Question: {{question}}\\nAnswer:", doc_to_choice
    "{{choices.text}}", doc_to_target "{{choices.label.index(answerKey)}}".
    Foundry record: query = "Question: " + question, choices = choices.text, gold = the index."""
    question = strip_prefix(rec["query"], "Question: ", "arc")
    choices_text = list(rec["choices"])
    ctx = f"Question: {question}\nAnswer:"
    return expected(ctx, choices_text, rec["gold"])


def boolq_doc(rec):
    """super_glue/boolq/default.yaml: doc_to_text "{{passage}}\\nQuestion: {{question}}?\\nAnswer:",
    doc_to_choice ["no", "yes"], doc_to_target label.
    Foundry record: query = "Passage: " + passage + "\\nQuestion: " + question + "?" (split at the
    last "\\nQuestion: ": one passage itself contains that string), gold = label."""
    body = strip_prefix(rec["query"], "Passage: ", "boolq")
    passage, sep, question = body.rpartition("\nQuestion: ")
    if not sep or not question.endswith("?"):
        raise ValueError(f"boolq: unexpected query layout {rec['query'][-80:]!r}")
    question = question[:-1]
    ctx = f"{passage}\nQuestion: {question}?\nAnswer:"
    return expected(ctx, ["no", "yes"], rec["gold"])


def openbookqa_doc(rec):
    """openbookqa.yaml: doc_to_text question_stem (a feature name, returned as is), doc_to_choice
    "{{choices.text}}", doc_to_target "{{choices.label.index(answerKey.lstrip())}}".
    Foundry record: query = question_stem, choices = choices.text, gold = the index."""
    question_stem = rec["query"]
    return expected(question_stem, list(rec["choices"]), rec["gold"])


def piqa_doc(rec):
    """piqa.yaml: doc_to_text "Question: {{goal}}\\nAnswer:", doc_to_choice "{{[sol1, sol2]}}",
    doc_to_target label.
    Foundry record: query = "Question: " + goal + "\\n", choices = [sol1, sol2], gold = label."""
    goal = strip_prefix(rec["query"], "Question: ", "piqa")
    if not goal.endswith("\n"):
        raise ValueError(f"piqa: query does not end with a newline: {rec['query']!r}")
    goal = goal[:-1]
    sol1, sol2 = rec["choices"]
    ctx = f"Question: {goal}\nAnswer:"
    return expected(ctx, [sol1, sol2], rec["gold"])


def copa_convert_choice(choice):
    """super_glue/copa/utils.py convert_choice."""
    return choice[0].lower() + choice[1:]


def copa_doc(rec):
    """super_glue/copa/default.yaml + utils.py:
    doc_to_text    = premise.strip()[:-1] + " " + {"cause": "because", "effect": "therefore"}
    doc_to_choice  = [" " + convert_choice(choice1), " " + convert_choice(choice2)]
    doc_to_target  = " " + convert_choice(correct choice)  (a str: process_results looks it up
                     with choices.index, so gold is the label unless both choices are equal)
    construct_requests then adds target_delimiter " " in front of each choice, so every
    continuation starts with two spaces.
    Foundry record: query = premise without its final period + ", " + connector (note the comma,
    which lm-eval does not have); choices = [choice1, choice2] with the first letter already
    lower-cased (convert_choice is idempotent on them); gold = label. Assumption: each premise
    ended with one character (a period) that the foundry replaced by ","; doc_to_text drops it."""
    query = rec["query"]
    for connector, question in (("because", "cause"), ("therefore", "effect")):
        if query.endswith(", " + connector):
            premise = query[: -len(", " + connector)] + "."
            break
    else:
        raise ValueError(f"copa: no connector in {query!r}")
    choice1, choice2 = rec["choices"]
    label = rec["gold"]
    connector = {"cause": "because", "effect": "therefore"}[question]
    ctx = premise.strip()[:-1] + f" {connector}"
    choices = [" " + copa_convert_choice(choice1), " " + copa_convert_choice(choice2)]
    target = " " + copa_convert_choice(choice1 if label == 0 else choice2)
    return expected(ctx, choices, choices.index(target))


def winogrande_doc(rec):
    """winogrande/default.yaml + preprocess_winogrande.py:
    doc_to_text   = {"1": 0, "2": 1}[answer]  (an int: task.py sets multiple_input, and it is gold)
    doc_to_choice = [sentence[:idx] + option for option in (option1, option2)], idx = index of "_"
    doc_to_target = sentence[idx + 1:].strip()
    Requests: (each doc_to_choice string as context, " " + doc_to_target).
    Foundry record: context_options = doc_to_choice, continuation = doc_to_target, gold = answer-1.
    The blank's position is not stored; we put it after the options' common prefix cut at a word
    boundary. Any split gives the same sentence[:idx] + option, so the output does not depend on
    it. Assumption: the foundry built context_options without stripping, as doc_to_choice does."""
    opt_a, opt_b = rec["context_options"]
    common = os.path.commonprefix([opt_a, opt_b])
    prefix = common[: common.rfind(" ") + 1]
    doc = {
        "sentence": prefix + "_ " + rec["continuation"],
        "option1": opt_a[len(prefix):],
        "option2": opt_b[len(prefix):],
        "answer": str(rec["gold"] + 1),
    }
    idx = doc["sentence"].index("_")
    choices = [doc["sentence"][:idx] + opt for opt in (doc["option1"], doc["option2"])]
    target = doc["sentence"][idx + 1:].strip()
    gold = {"1": 0, "2": 1}[doc["answer"]]
    return expected(choices, choices, gold, continuations=target)


def lambada_doc(rec):
    """lambada/lambada_openai.yaml (output_type loglikelihood):
    doc_to_text "{{text.split(' ')[:-1]|join(' ')}}", doc_to_target "{{' '+text.split(' ')[-1]}}";
    one request (ctx, target). lm-eval has no doc_to_choice and no gold index for this task, so
    choices and gold are not compared (choices=None).
    Foundry record: text = context + " " + continuation (assumption: the foundry split the text at
    its last space; no continuation contains a space)."""
    text = rec["context"] + " " + rec["continuation"]
    words = text.split(" ")
    ctx = " ".join(words[:-1])
    target = " " + words[-1]
    return expected(ctx, None, None, continuations=[target])


def hellaswag_preprocess(text):
    """hellaswag/utils.py preprocess, verbatim."""
    text = text.strip()
    # NOTE: Brackets are artifacts of the WikiHow dataset portion of HellaSwag.
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    text = text.replace("  ", " ")
    return text


def hellaswag_doc(rec):
    """hellaswag/hellaswag.yaml + utils.py: process_docs builds
    query = preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize()),
    choices = [preprocess(e) for e in endings], gold = int(label); doc_to_text "{{query}}",
    doc_to_choice "choices", doc_to_target "{{label}}" (renders a digit string -> int).
    The record is already in the HF Rowan/hellaswag layout."""
    ctx = rec["ctx_a"] + " " + rec["ctx_b"].capitalize()
    query = hellaswag_preprocess(rec["activity_label"] + ": " + ctx)
    choices = [hellaswag_preprocess(ending) for ending in rec["endings"]]
    return expected(query, choices, int(rec["label"]))


SIQA_RE = re.compile(
    r"Please choose the correct answer to the question: (?P<cq>.*)\n\n"
    r"Answer1: (?P<a>.*) Answer2: (?P<b>.*) Answer3: (?P<c>.*)\n\n"
    r"Answer format: answer1/answer2/answer3",
    re.S,
)


def social_iqa_doc(rec):
    """siqa/siqa.yaml: doc_to_text "Q: {{context}} {{question}}\\nA:", target_delimiter " ",
    doc_to_choice "{{[answerA, answerB, answerC]}}", doc_to_target "{{ (label|int) - 1 }}".
    LLM-Adapters record: instruction = "Please choose the correct answer to the question:
    {context} {question}\\n\\nAnswer1: {answerA} Answer2: {answerB} Answer3: {answerC}\\n\\n
    Answer format: answer1/answer2/answer3", answer = "answer" + label.
    Assumptions: context and question were joined by exactly one space (as lm-eval's template
    joins them; we split at the last sentence end, which does not change the rendering); the
    answers are unaltered and none contains " Answer2: " / " Answer3: " (checked: one match)."""
    m = SIQA_RE.fullmatch(rec["instruction"])
    if m is None or any(" Answer%d: " % k in m.group(g) for g in "abc" for k in (2, 3)):
        raise ValueError(f"siqa: unexpected instruction {rec['instruction'][:120]!r}")
    joined = m.group("cq")
    cut = max(joined.rfind(". "), joined.rfind("? "), joined.rfind("! "))
    context, question = (joined[: cut + 1], joined[cut + 2:]) if cut >= 0 else ("", joined)
    label = strip_prefix(rec["answer"], "answer", "siqa")
    ctx = f"Q: {context} {question}\nA:" if context else f"Q: {question}\nA:"
    return expected(ctx, [m.group("a"), m.group("b"), m.group("c")], int(label) - 1)


MMLU_CHOICES = ["A", "B", "C", "D"]  # _default_template_yaml doc_to_choice


def mmlu_read(path):
    """SUBJECT_{dev,test}.csv -> cais/mmlu docs {question, choices[4], answer (int)}."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [
        {
            "question": r["question"],
            "choices": [r["choice0"], r["choice1"], r["choice2"], r["choice3"]],
            "answer": int(r["answer"]),
        }
        for r in rows
    ]


def mmlu_doc_to_text(doc):
    """_default_template_yaml doc_to_text (Jinja: question.strip(), choices as they are)."""
    c = doc["choices"]
    return (
        f"{doc['question'].strip()}\nA. {c[0]}\nB. {c[1]}\nC. {c[2]}\nD. {c[3]}\nAnswer:"
    )


def mmlu_docs(tasks_dir, num_fewshot, limit):
    """mmlu/default/_default_template_yaml + mmlu_SUBJECT.yaml: test_split test, fewshot_split
    dev, sampler first_n, doc_to_target answer, description "The following are multiple choice
    questions (with answers) about {subject, _ -> space}.\\n\\n" (checked against all 57 YAMLs).
    Few-shot turn (build_qa_turn): doc_to_text + " " + MMLU_CHOICES[answer] + "\\n\\n"."""
    test_dir = os.path.join(tasks_dir, "mmlu", "test")
    subjects = sorted(f[: -len("_test.csv")] for f in os.listdir(test_dir) if f.endswith("_test.csv"))
    out = []
    for subject in subjects:
        description = (
            "The following are multiple choice questions (with answers) about "
            f"{subject.replace('_', ' ')}.\n\n"
        )
        shots = ""
        if num_fewshot > 0:
            dev = mmlu_read(os.path.join(tasks_dir, "mmlu", "dev", f"{subject}_dev.csv"))
            if len(dev) < num_fewshot:
                raise ValueError(f"mmlu {subject}: {len(dev)} dev rows < {num_fewshot}")
            shots = "".join(
                mmlu_doc_to_text(d) + TARGET_DELIMITER + MMLU_CHOICES[d["answer"]] + FEWSHOT_DELIMITER
                for d in dev[:num_fewshot]
            )
        test = mmlu_read(os.path.join(test_dir, f"{subject}_test.csv"))
        for doc in test[:limit]:
            ctx = description + shots + mmlu_doc_to_text(doc)
            out.append(expected(ctx, list(MMLU_CHOICES), doc["answer"], subtask=subject))
    return out


# --------------------------------------------------------------------------------------------
# Task table

JSONL_TASKS = {
    "arc_easy": ("arc_easy.jsonl", arc_doc),
    "arc_challenge": ("arc_challenge.jsonl", arc_doc),
    "boolq": ("boolq.jsonl", boolq_doc),
    "openbookqa": ("openbookqa.jsonl", openbookqa_doc),
    "piqa": ("piqa.jsonl", piqa_doc),
    "copa": ("copa.jsonl", copa_doc),
    "winogrande": ("winogrande.jsonl", winogrande_doc),
    "lambada_openai": ("lambada_openai.jsonl", lambada_doc),
    "hellaswag": ("hellaswag_val_1k.jsonl", hellaswag_doc),
}
ALL_TASKS = list(JSONL_TASKS) + ["social_iqa", "mmlu", "mmlu_5shot"]


def build_task(task, tasks_dir, limit):
    """Expected documents of one task, in order."""
    if task in JSONL_TASKS:
        fname, fn = JSONL_TASKS[task]
        records = read_jsonl(os.path.join(tasks_dir, fname))
        return [fn(r) for r in records[:limit]]
    if task == "social_iqa":
        with open(os.path.join(tasks_dir, "social_iqa.test.json"), encoding="utf-8") as f:
            records = json.load(f)
        return [social_iqa_doc(r) for r in records[:limit]]
    if task == "mmlu":
        return mmlu_docs(tasks_dir, 0, limit)
    if task == "mmlu_5shot":
        return mmlu_docs(tasks_dir, 5, limit)
    raise KeyError(task)


# --------------------------------------------------------------------------------------------
# Comparison


def first_diff(a, b):
    """Offset of the first differing character of two strings."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def describe_mismatch(exp, got):
    """Lines describing how one dumped document differs from the expected one ([] if equal)."""
    lines = []
    if exp["subtask"] is not None and got.get("subtask") != exp["subtask"]:
        lines.append(f"  subtask: expected {exp['subtask']!r}, rotq {got.get('subtask')!r}")
    if exp["gold"] is not None and got.get("gold") != exp["gold"]:
        lines.append(f"  gold: expected {exp['gold']!r}, rotq {got.get('gold')!r}")
    if exp["choices"] is not None and got.get("choices") != exp["choices"]:
        lines.append(f"  choices: expected {exp['choices']!r}\n           rotq     {got.get('choices')!r}")
    got_reqs = [list(r) for r in got.get("requests", [])]
    if got_reqs != exp["requests"]:
        if len(got_reqs) != len(exp["requests"]):
            lines.append(f"  requests: expected {len(exp['requests'])}, rotq {len(got_reqs)}")
        differing = [i for i, (e, g) in enumerate(zip(exp["requests"], got_reqs)) if e != g]
        if differing:
            i = differing[0]
            lines.append(f"  {len(differing)} of {len(exp['requests'])} requests differ; the first, {i}:")
            for part, ev, gv in zip(("context", "continuation"), exp["requests"][i], got_reqs[i]):
                if ev != gv:
                    at = first_diff(ev, gv)
                    lines.append(
                        f"  request {i} {part} differs at char {at} "
                        f"(expected {ev[at:at + 30]!r}, rotq {gv[at:at + 30]!r})\n"
                        f"    expected: {ev!r}\n    rotq:     {gv!r}"
                    )
    return lines


def compare_task(task, exp_docs, got_docs):
    """Compare one task; returns (number compared, number of problems)."""
    problems = 0
    reported = 0
    compared = 0
    for i, exp in enumerate(exp_docs):
        got = got_docs.get(i)
        if got is None:
            problems += 1
            if reported < MAX_REPORTED:
                print(f"[{task}] doc {i}: missing from the dump")
                reported += 1
            continue
        compared += 1
        lines = describe_mismatch(exp, got)
        if lines:
            problems += 1
            if reported < MAX_REPORTED:
                print(f"[{task}] doc {i}:")
                print("\n".join(lines))
                reported += 1
    extra = sorted(set(got_docs) - set(range(len(exp_docs))))
    if extra:
        problems += len(extra)
        print(f"[{task}] {len(extra)} extra docs in the dump, first indices {extra[:5]}")
    return compared, problems


def load_dump(path):
    """{task: {doc index: record}}; duplicates are reported and counted."""
    by_task, dups = {}, 0
    for rec in read_jsonl(path):
        docs = by_task.setdefault(rec["task"], {})
        if rec["doc"] in docs:
            dups += 1
            print(f"[{rec['task']}] doc {rec['doc']}: duplicated in the dump")
        docs[rec["doc"]] = rec
    return by_task, dups


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tasks_dir")
    ap.add_argument("requests")
    ap.add_argument("--limit", type=int, default=None,
                    help="the dump holds the first N docs of each task (of each MMLU subject)")
    ap.add_argument("--tasks", nargs="+", default=ALL_TASKS, choices=ALL_TASKS, metavar="TASK",
                    help="tasks expected in the dump (default: all 12: %(choices)s)")
    args = ap.parse_args(argv)

    dump, problems = load_dump(args.requests)
    for task in sorted(set(dump) - set(args.tasks)):
        print(f"[{task}] unexpected task in the dump ({len(dump[task])} docs)")
        problems += len(dump[task])

    summary = []
    for task in args.tasks:
        exp_docs = build_task(task, args.tasks_dir, args.limit)
        compared, bad = compare_task(task, exp_docs, dump.get(task, {}))
        summary.append((task, len(exp_docs), compared, bad))
        problems += bad
    print()
    print(f"{'task':16} {'expected':>8} {'compared':>8} {'problems':>8}")
    for task, n_exp, n_cmp, bad in summary:
        print(f"{task:16} {n_exp:8d} {n_cmp:8d} {bad:8d}")
    if "lambada_openai" in args.tasks:
        print("note: lambada_openai is a loglikelihood task: lm-eval defines no choices or gold "
              "index for it; only its request is compared")
    print("OK" if problems == 0 else f"FAILED: {problems} problem(s)")
    return 0 if problems == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
