// rotq synth: a random-weight HF checkpoint of any LLaMA-family shape, for tests and benchmarks.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>

#include "models/base/files.h"
#include "models/base/resources.h"
#include "models/synth.h"
#include "runner/cli/cmd_common.h"
#include "solvers/error.h"

namespace rotq {
namespace {

struct SynthArgs {
  std::string like = "tiny";
  std::string dims;
  std::string out;
  std::string dtype = "float32";
  std::string tokenizer;
  uint64_t seed = 0;
  int64_t shard_bytes = 0;
  bool json = false;
  std::string massive;
  bool massive_set = false;
};

void run_synth(Runtime& rt, const SynthArgs& a) {
  rt.init();
  ModelConfig cfg = synth_preset(a.like);
  apply_dims(cfg, a.dims);
  scalar_type_from_name(a.dtype);
  const MassiveSpec massive = a.massive_set ? MassiveSpec::parse(a.massive) : MassiveSpec{};
  SaveOptions so;
  so.dtype = a.dtype;
  so.max_shard_bytes = a.shard_bytes;
  spdlog::info("synth {} ({} parameters, seed {}) -> {}", cfg.summary(), cfg.param_count(), a.seed,
               a.out);
  if (massive.enabled) {
    const MassiveChannels ch = massive_channels(cfg, massive, a.seed);
    std::string chans;
    for (int64_t c : ch.massive) chans += (chans.empty() ? "" : ",") + std::to_string(c);
    spdlog::info("{}: massive channels {}, signature {}, dc {}", massive.describe(), chans,
                 ch.signature, ch.dc);
  }
  if (rt.c().is_root()) {
    require_disk_space(a.out, static_cast<double>(cfg.param_count()) * dtype_bytes(a.dtype),
                       "rotq synth " + cfg.summary());
    // Tensors are drawn one at a time in float32: the largest must fit in memory.
    const double largest = static_cast<double>(
        std::max({cfg.vocab_size * cfg.dim, cfg.hidden_dim * cfg.dim, cfg.q_dim() * cfg.dim}));
    require_memory(largest * 4, "rotq synth's largest tensor (" + cfg.summary() + ")",
                   "choose smaller --dims");
    write_synthetic_checkpoint(cfg, a.seed, a.out, so, massive);
    if (!a.tokenizer.empty()) {
      auto tok = load_tokenizer(a.tokenizer);
      require(tok->vocab_size() <= cfg.vocab_size, a.tokenizer, ": ", tok->vocab_size(),
              " tokens do not fit the synthetic vocabulary of ", cfg.vocab_size);
      // The tokenizer's own files, so that the directory is a complete HF directory.
      for (const auto& [from, name] : tokenizer_files(*tok, a.tokenizer)) {
        write_file_atomically((std::filesystem::path(a.out) / name).string(),
                              read_file_bytes(from));
      }
    }
  }
  rt.c().barrier();
  if (a.json) {
    print_json_line(rt.c(), {{"command", "synth"},
                             {"out", a.out},
                             {"params", cfg.param_count()},
                             {"config", cfg.summary()},
                             {"seed", a.seed}});
  } else if (rt.c().is_root()) {
    std::printf("wrote %s: %s, %lld parameters\n", a.out.c_str(), cfg.summary().c_str(),
                static_cast<long long>(cfg.param_count()));
  }
}

}  // namespace

void register_synth(CLI::App& app, Runtime& rt) {
  auto a = std::make_shared<SynthArgs>();
  CLI::App* cmd = app.add_subcommand("synth", "write a random-weight LLaMA-family HF checkpoint");
  cmd->add_option("--like", a->like, "shape preset (tiny, 100m, llama-2-7b, llama-3-8b, ...)")
      ->capture_default_str();
  cmd->add_option("--dims", a->dims,
                  "overrides: dim=,hidden=,layers=,heads=,kv_heads=,head_dim=,vocab=,ctx=,theta=,"
                  "eps=,tied=,arch=");
  cmd->add_option("--out", a->out, "output directory")->required();
  cmd->add_option("--dtype", a->dtype, "storage dtype")->capture_default_str();
  cmd->add_option("--seed", a->seed, "weights seed")->capture_default_str();
  cmd->add_option("--shard-bytes", a->shard_bytes, "split into shards of at most this many bytes")
      ->check(CLI::Range(int64_t{0}, INT64_MAX));
  cmd->add_option("--tokenizer", a->tokenizer,
                  "tokenizer to copy into the directory (a file, or a directory with "
                  "tokenizer.json + tokenizer_config.json)");
  cmd->add_flag("--json", a->json, "print one JSON object");
  CLI::Option* massive =
      cmd->add_option("--massive", a->massive,
                      "plant massive activations and attention sinks (models/massive.h): "
                      "layer=,channels=,magnitude=,tokens=ID;ID,outliers=,outlier_scale=,sinks=,"
                      "sink_logit=,logit_scale= (empty: defaults)")
          ->expected(0, 1);
  cmd->callback([a, &rt, massive] {
    a->massive_set = massive->count() > 0;
    run_synth(rt, *a);
  });
}

}  // namespace rotq
