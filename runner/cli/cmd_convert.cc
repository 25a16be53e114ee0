// rotq convert: any checkpoint rotq reads -> an HF directory (config.json + safetensors), with the
// tokenizer copied alongside so that the directory is self-contained.
#include <spdlog/spdlog.h>

#include <filesystem>

#include "runner/cli/cmd_common.h"
#include "solvers/error.h"

namespace rotq {
namespace {

struct ConvertArgs {
  ModelOptions m;
  std::string out;
  std::string out_dtype = "float32";
  int64_t shard_bytes = 0;
};

void run_convert(Runtime& rt, const ConvertArgs& a) {
  rt.init();
  require(!a.out.empty(), "--out: expected an output directory");
  auto reader = open_checkpoint(a.m.model);
  spdlog::info("converting {} ({}) -> {} [{}]", a.m.model, reader->format(), a.out, a.out_dtype);
  scalar_type_from_name(a.out_dtype);
  Model model = load_model(*reader);
  SaveOptions so;
  so.dtype = a.out_dtype;
  so.max_shard_bytes = a.shard_bytes;
  if (rt.c().is_root()) {
    save_hf_checkpoint(model, a.out, so);
    const std::string tok = a.m.tokenizer.empty() ? reader->bundled_tokenizer() : a.m.tokenizer;
    if (!tok.empty()) copy_tokenizer(tok, a.out);
  }
  rt.c().barrier();
  if (a.m.json) {
    print_json_line(rt.c(), {{"command", "convert"},
                             {"model", a.m.model},
                             {"out", a.out},
                             {"dtype", a.out_dtype},
                             {"params", model.config.param_count()}});
  } else if (rt.c().is_root()) {
    std::printf("wrote %s (%s, %lld parameters)\n", a.out.c_str(), a.out_dtype.c_str(),
                static_cast<long long>(model.config.param_count()));
  }
}

}  // namespace

void register_convert(CLI::App& app, Runtime& rt) {
  auto a = std::make_shared<ConvertArgs>();
  CLI::App* cmd = app.add_subcommand("convert", "write a checkpoint as an HF directory");
  add_model_options(cmd, a->m);
  cmd->add_option("--out", a->out, "output directory")->required();
  cmd->add_option("--out-dtype", a->out_dtype, "storage dtype: float32, float16, bfloat16")
      ->capture_default_str();
  cmd->add_option("--shard-bytes", a->shard_bytes, "split into shards of at most this many bytes")
      ->check(CLI::Range(int64_t{0}, INT64_MAX));
  cmd->callback([a, &rt] { run_convert(rt, *a); });
}

}  // namespace rotq
