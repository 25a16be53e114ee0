// rotq ppl: perplexity of a model on a text with the papers' protocol (see perplexity.h).
#include <spdlog/spdlog.h>

#include <algorithm>
#include <string>
#include <vector>

#include "runner/cell/cell_options.h"
#include "runner/cli/cmd_common.h"
#include "runner/data/calibration.h"
#include "runner/data/text.h"
#include "runner/eval/perplexity.h"

namespace rotq {
namespace {

struct PplArgs {
  ModelOptions m;
  std::vector<std::string> texts;
  std::string text_format = "auto";
  int64_t seqlen = 0;
  int64_t max_windows = -1;
  int64_t batch = 0;
  std::optional<bool> bos;
};

void run_ppl(Runtime& rt, const PplArgs& a) {
  rt.init();
  LoadedModel lm = load_for_command(a.m, /*need_tokenizer=*/true);
  const int64_t seqlen = a.seqlen > 0 ? a.seqlen : default_window(lm.model.config);
  Transformer model(lm.model);
  const BosPolicy bos = effective_bos(*lm.tokenizer, a.bos);
  spdlog::info("BOS {}: {}", bos.add ? "prepended" : "not prepended", bos.source);
  std::vector<std::vector<std::string>> rows;
  for (const std::string& path : a.texts) {
    const TextFormat fmt = resolve_text_format(parse_text_format(a.text_format), path);
    const std::string text = read_text(path, fmt);
    std::vector<int32_t> tokens = encode_with_bos(*lm.tokenizer, text, bos.add);
    spdlog::info("{}: {} bytes ({}), {} tokens", path, text.size(), text_format_name(fmt),
                 tokens.size());
    PplOptions po;
    po.seqlen = seqlen;
    po.max_windows = a.max_windows;
    po.batch = a.batch;
    const PplResult r = perplexity(model, tokens, po, rt.c());
    if (a.m.json) {
      print_json_line(rt.c(), {{"command", "ppl"},
                               {"model", a.m.model},
                               {"text", path},
                               {"text_format", text_format_name(fmt)},
                               {"seqlen", seqlen},
                               {"windows", r.windows},
                               {"text_tokens", r.text_tokens},
                               {"bos", bos.add},
                               {"bos_source", bos.source},
                               {"tokenizer", lm.tokenizer->kind()},
                               {"scored_tokens", r.scored_tokens},
                               {"ppl", r.ppl},
                               {"mean_nll", r.mean_nll},
                               {"seconds", r.seconds},
                               {"tokens_per_s", r.tokens_per_s},
                               {"ranks", rt.c().size()},
                               {"dtype", a.m.dtype}});
    }
    rows.push_back({a.m.model, path, std::to_string(seqlen), std::to_string(r.windows),
                    std::to_string(r.text_tokens), fmt_double(r.ppl, 4),
                    fmt_double(r.tokens_per_s, 0)});
  }
  if (!a.m.json) {
    print_table(rt.c(), {"model", "text", "seqlen", "windows", "tokens", "ppl", "tok/s"}, rows);
  }
}

}  // namespace

void register_ppl(CLI::App& app, Runtime& rt) {
  auto a = std::make_shared<PplArgs>();
  CLI::App* cmd = app.add_subcommand("ppl", "perplexity on a text (non-overlapping windows)");
  add_model_options(cmd, a->m);
  cmd->add_option("--text", a->texts, "text file(s) to score, one table row each")->required();
  cmd->add_option("--text-format", a->text_format,
                  "auto | hf-rows (WikiText rows joined by blank lines, as the papers) | raw")
      ->capture_default_str();
  cmd->add_option("--seqlen", a->seqlen, "window length in tokens (0: min(2048, model context))")
      ->capture_default_str();
  cmd->add_option("--max-windows", a->max_windows, "score only the first K windows");
  cmd->add_option("--batch", a->batch, "windows per forward pass (0: auto)");
  add_bos_flags(cmd, a->bos);
  add_schema_checks(cmd);
  cmd->callback([a, &rt] { run_ppl(rt, *a); });
}

}  // namespace rotq
