// rotq generate: text from a model (greedy at temperature 0), streamed to stdout.
#include <iostream>

#include "runner/cli/cmd_common.h"
#include "runner/eval/generate.h"

namespace rotq {
namespace {

struct GenerateArgs {
  ModelOptions m;
  GenerateOptions g;
};

void run_generate(Runtime& rt, GenerateArgs& a) {
  rt.init();
  LoadedModel lm = load_for_command(a.m, /*need_tokenizer=*/true);
  Transformer model(lm.model);
  const bool stream = !a.m.json && rt.c().is_root();
  GenerateResult r = generate(model, *lm.tokenizer, a.g, [&](const std::string& piece) {
    if (stream) std::cout << piece << std::flush;
  });
  if (a.m.json) {
    print_json_line(rt.c(), {{"command", "generate"},
                             {"model", a.m.model},
                             {"text", r.text},
                             {"tokens", r.tokens},
                             {"seconds", r.seconds},
                             {"temperature", a.g.temperature},
                             {"seed", a.g.seed}});
  } else if (rt.c().is_root()) {
    std::cout << "\n";
  }
}

}  // namespace

void register_generate(CLI::App& app, Runtime& rt) {
  auto a = std::make_shared<GenerateArgs>();
  CLI::App* cmd = app.add_subcommand("generate", "generate text (greedy at temperature 0)");
  add_model_options(cmd, a->m);
  cmd->add_option("--steps", a->g.steps, "positions in all, prompt included")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 24));
  cmd->add_option("--temperature", a->g.temperature, "0: greedy")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1e6));
  cmd->add_option("--top-p", a->g.top_p, "nucleus sampling mass")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--seed", a->g.seed, "sampling seed")->capture_default_str();
  cmd->add_option("--prompt", a->g.prompt, "prompt text (default: start from BOS)");
  add_bos_flags(cmd, a->g.bos);
  cmd->callback([a, &rt] { run_generate(rt, *a); });
}

}  // namespace rotq
