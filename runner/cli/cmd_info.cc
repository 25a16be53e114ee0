// rotq info: what a checkpoint is (config, parameters, dtype, memory), read from its header only.
#include "runner/cli/cmd_common.h"

namespace rotq {
namespace {

struct InfoArgs {
  std::string model;
  bool json = false;
};

void run_info(Runtime& rt, const InfoArgs& a) {
  rt.init();
  auto reader = open_checkpoint(a.model);
  const ModelConfig& c = reader->config();
  const int64_t params = c.param_count();
  const int64_t bytes = params * dtype_bytes(c.dtype);
  nlohmann::json j = {{"command", "info"},
                      {"model", a.model},
                      {"format", reader->format()},
                      {"architecture", c.architecture},
                      {"dim", c.dim},
                      {"hidden_dim", c.hidden_dim},
                      {"n_layers", c.n_layers},
                      {"n_heads", c.n_heads},
                      {"n_kv_heads", c.n_kv_heads},
                      {"head_dim", c.head_dim},
                      {"vocab_size", c.vocab_size},
                      {"max_seq_len", c.max_seq_len},
                      {"rope_theta", c.rope_theta},
                      {"rope_scaling", c.rope_scaling.type},
                      {"norm_eps", c.norm_eps},
                      {"tied_embeddings", c.tie_embeddings},
                      {"dtype", c.dtype},
                      {"params", params},
                      {"bytes", bytes},
                      {"float32_bytes", params * 4},
                      {"tokenizer", reader->bundled_tokenizer()}};
  if (a.json) {
    print_json_line(rt.c(), j);
    return;
  }
  std::vector<std::vector<std::string>> rows;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "command") continue;
    rows.push_back(
        {it.key(), it.value().is_string() ? it.value().get<std::string>() : it.value().dump()});
  }
  rows.push_back({"memory", fmt_double(bytes / 1073741824.0, 3) + " GiB (" + c.dtype + ")"});
  print_table(rt.c(), {"field", "value"}, rows);
}

}  // namespace

void register_info(CLI::App& app, Runtime& rt) {
  auto a = std::make_shared<InfoArgs>();
  CLI::App* cmd = app.add_subcommand("info", "describe a checkpoint");
  cmd->add_option("model,--model", a->model, "llama2.c .bin file or HF directory")->required();
  cmd->add_flag("--json", a->json, "print one JSON object");
  cmd->callback([a, &rt] { run_info(rt, *a); });
}

}  // namespace rotq
