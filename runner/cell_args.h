// The options of one experiment cell as `rotq quantize-eval` takes them (flags) and as experiment
// files set them (runner/experiment.h): both fill CellArgs, and make_cell turns them, checked,
// into the pipeline's QuantCell.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "runner/cmd_common.h"
#include "runner/quant_pipeline.h"

namespace rotq {

struct CellArgs {
  ModelOptions m;
  std::string rotation = "none";
  uint64_t seed = 0;
  bool no_r2 = false;
  bool no_online = false;
  int64_t optrot_steps = 1000;
  double optrot_lr = 0.02;
  std::string optrot_norm = "numel";
  std::string optrot_optimizer = "cayley";
  bool optrot_constant_lr = false;
  std::string optrot_matrices = "q,k,v,o,gate,up,down";
  std::string dfrot_gamma = "100";
  int64_t dfrot_iters = 100;
  std::string dfrot_init = "hadamard";
  std::string dfrot_rule = "quant-error";
  double dfrot_threshold = 8.5 / 64.0;
  bool dfrot_sym = false;
  bool dfrot_sum = false;
  int64_t dfrot_layers = 0;
  int64_t dfrot_nsamples = 1;
  int64_t dfrot_seqlen = 0;
  double fp_massive = 0;
  bool kl = false;
  std::string label;
  std::string placement = "replicated";
  int w_bits = 16;
  std::string w_quant = "rtn";
  int64_t w_group = 0;
  bool w_asym = false;
  bool no_w_clip = false;
  bool act_order = false;
  bool static_groups = false;
  double percdamp = 0.01;
  int64_t gptq_block = 128;
  std::string hessian_dtype = "float64";
  int a_bits = 16;
  double a_clip = 1.0;
  bool a_asym = false;
  bool o_proj_per_head = false;
  int kv_bits = 16;
  std::vector<std::string> acts_list;
  double kv_clip = 1.0;
  int64_t kv_group = 128;
  std::string calib;
  int64_t nsamples = 128;
  int64_t calib_seqlen = 0;
  std::vector<std::string> ppl_texts;
  int64_t seqlen = 0;
  int64_t max_windows = -1;
  int64_t batch = 0;
  std::string save;
  std::string save_dtype = "float32";
  // Zero-shot tasks (runner/task_registry.h): names, "zeroshot", "all" or NAME=PATH items.
  std::vector<std::string> tasks;
  std::string tasks_dir;
  int64_t tasks_limit = -1;
  int64_t tasks_batch = 32;
  std::optional<bool> bos;  // --bos / --no-bos (evaluation.bos); nullopt: the tokenizer's policy
  int64_t tasks_max_length = 0;
  std::string task_samples;
  std::vector<std::string> tasks_acts;  // A/KV pairs (of the evaluated ones) to score tasks under
};

// The options of one cell (rotation, quantization, calibration, evaluation, tasks) on `cmd`, as
// quantize-eval and tasks take them.
void add_cell_options(CLI::App* cmd, CellArgs& a);

// "100" -> 100, "inf" -> +inf (only the massive tokens count).
double parse_gamma(const std::string& text);
// "4/16" -> (4, 16): activation bits / KV-cache bits.
std::pair<int, int> parse_acts_pair(const std::string& text);
// The checked QuantCell of `a` (rotq::Error naming the option otherwise).
QuantCell make_cell(const CellArgs& a);

}  // namespace rotq
