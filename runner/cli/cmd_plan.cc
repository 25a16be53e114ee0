// rotq plan: the layer placement over N ranks and each rank's predicted peak memory, from the
// model's config alone (see runner/dist/placement.h for the memory model), and the bytes the
// distributed pipeline moves per layer; with --train, a learned rotation's (SpinQuant's) training
// peak per rank and traffic per step. Refuses (non-zero exit) when a rank would not fit.
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "runner/cli/cmd_common.h"
#include "runner/dist/placement.h"
#include "solvers/error.h"

namespace rotq {
namespace {

struct PlanArgs {
  std::string model;
  bool train = false;  // a learned rotation's training peak instead of the quantization pipeline's
  TrainingOptions train_opts;
  std::string train_method = "spinquant";  // or ostquant (its FP teacher adds to the peak)
  std::string act_dtype;                   // "": the weights'
  std::string placement = "layers";
  int ranks = 1;
  double device_mem_gib = 0;
  std::string weight_dtype;  // "": the checkpoint's
  PlacementOptions opts;
  bool json = false;
};

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

std::string gib(double bytes) { return fmt_double(bytes / kGiB, 2); }

// The largest per-rank peak of a prediction (RankMemory or TrainingMemory rows).
template <class M>
double worst_peak(const std::vector<M>& mem) {
  double worst = 0;
  for (const M& m : mem) worst = std::max(worst, m.peak);
  return worst;
}

// The fewest ranks (1 .. layers) whose worst peak fits `device_bytes`, or 0 when none does;
// `peak(r)` is negative for a count that cannot be used.
template <class F>
int fewest_ranks(int64_t layers, double device_bytes, F peak) {
  for (int r = 1; r <= layers; ++r) {
    const double p = peak(r);
    if (p >= 0 && p <= device_bytes) return r;
  }
  return 0;
}

int min_ranks_that_fit(const ModelConfig& c, PlacementOptions o, double device_bytes) {
  return fewest_ranks(c.n_layers, device_bytes, [&](int r) {
    o.ranks = r;
    return worst_peak(predict_memory(c, place_layers(c, r, o.weight_bytes), o));
  });
}

nlohmann::json rank_json(const RankMemory& m, double device_bytes) {
  return {{"rank", m.rank},
          {"layers", {m.layer_begin, m.layer_end}},
          {"embed", m.embed},
          {"head", m.head},
          {"shard_bytes", m.shard},
          {"streamed_bytes", m.streamed},
          {"activation_bytes", m.activations},
          {"forward_bytes", m.forward},
          {"gptq_bytes", m.gptq},
          {"rotation_bytes", m.rotation},
          {"peak_bytes", m.peak},
          {"fits", m.peak <= device_bytes}};
}

// Rank counts must split the step's windows evenly.
int min_training_ranks(const ModelConfig& c, TrainingOptions o, double device_bytes) {
  return fewest_ranks(c.n_layers, device_bytes, [&](int r) {
    if (o.batch % r != 0) return -1.0;
    o.ranks = r;
    return worst_peak(predict_training_memory(c, place_layers(c, r, o.weight_bytes), o));
  });
}

void run_train_plan(Runtime& rt, PlanArgs& a, const ModelConfig& c, double device) {
  TrainingOptions& o = a.train_opts;
  o.ranks = a.ranks;
  o.sharded = a.placement == "layers";
  o.weight_bytes = a.opts.weight_bytes;
  o.act_bytes = a.act_dtype.empty() ? 0 : dtype_bytes(a.act_dtype);
  o.seqlen = a.opts.seqlen;
  o.ostquant = a.train_method == "ostquant";
  const char* method = o.ostquant ? "OSTQuant" : "SpinQuant";
  require(o.batch % o.ranks == 0, "--train-batch ", o.batch, " does not split over ", o.ranks,
          " ranks");
  require(!(o.sharded && o.offload),
          "--offload keeps the whole model in host memory: use "
          "--placement replicated");
  const std::vector<TrainingMemory> mem =
      predict_training_memory(c, place_layers(c, o.ranks, o.weight_bytes), o);
  const TrainingTraffic t = training_traffic(c, o);
  const double worst = worst_peak(mem);
  const bool fits = worst <= device;
  const int need = fits ? o.ranks : min_training_ranks(c, o, device);
  if (a.json) {
    nlohmann::json ranks = nlohmann::json::array();
    for (const TrainingMemory& m : mem) {
      ranks.push_back({{"rank", m.rank},
                       {"resident_bytes", m.resident},
                       {"globals_bytes", m.globals},
                       {"streamed_bytes", m.streamed},
                       {"layer_inputs_bytes", m.layer_inputs},
                       {"graph_bytes", m.graph},
                       {"head_bytes", m.head},
                       {"rotations_bytes", m.rotations},
                       {"host_bytes", m.host},
                       {"peak_bytes", m.peak},
                       {"fits", m.peak <= device}});
    }
    print_json_line(rt.c(), {{"command", "plan"},
                             {"train", a.train_method},
                             {"model", a.model},
                             {"params", c.param_count()},
                             {"ranks", o.ranks},
                             {"placement", a.placement},
                             {"offload", o.offload},
                             {"batch", o.batch},
                             {"micro_batch", o.micro_batch},
                             {"seqlen", o.seqlen},
                             {"device_mem_gib", a.device_mem_gib},
                             {"fits", fits},
                             {"min_ranks_that_fit", need},
                             {"per_rank", ranks},
                             {"traffic_per_step",
                              {{"layer_streams", t.layer_streams},
                               {"host_copies", t.host_copies},
                               {"gradient_allreduce", t.gradient_allreduce}}}});
  } else {
    if (rt.c().is_root()) {
      std::printf(
          "%s: %s, %.2fB parameters; %s training on %d rank(s) of %.1f GiB (%s%s), "
          "%lld windows x %lld tokens per step, micro-batch %lld\n",
          a.model.c_str(), c.summary().c_str(), c.param_count() / 1e9, method, o.ranks,
          a.device_mem_gib, a.placement.c_str(), o.offload ? ", offloaded" : "",
          static_cast<long long>(o.batch), static_cast<long long>(o.seqlen),
          static_cast<long long>(o.micro_batch));
    }
    std::vector<std::vector<std::string>> rows;
    for (const TrainingMemory& m : mem) {
      rows.push_back({std::to_string(m.rank), gib(m.resident), gib(m.globals), gib(m.streamed),
                      gib(m.layer_inputs), gib(std::max(m.graph, m.head)), gib(m.rotations),
                      gib(m.peak), m.peak <= device ? "yes" : "NO", gib(m.host)});
    }
    print_table(rt.c(),
                {"rank", "resident", "globals", "streamed", "layer inputs", "graph/head",
                 "rotations", "peak GiB", "fits", "host GiB"},
                rows);
    print_table(rt.c(), {"traffic per step", "GiB"},
                {{"layer streams (owners -> all, twice)", gib(t.layer_streams)},
                 {"host -> device layer copies (twice)", gib(t.host_copies)},
                 {"gradient all-reduce (float64)", gib(t.gradient_allreduce)}});
  }
  if (!fits) {
    fail(a.model, ": ", method, " training does not fit ", o.ranks, " rank(s) of ",
         a.device_mem_gib, " GiB: a rank needs ", gib(worst), " GiB; ",
         need > 0 ? "it fits on " + std::to_string(need) + " ranks"
                  : std::string("no rank count fits (try --offload or a smaller --micro-batch)"));
  }
}

void run_plan(Runtime& rt, PlanArgs& a) {
  rt.init();
  require(a.ranks >= 1, "--ranks ", a.ranks, ": expected at least 1");
  require(a.device_mem_gib > 0 && std::isfinite(a.device_mem_gib), "--device-mem ",
          a.device_mem_gib, ": expected a positive number of GiB");
  const ModelConfig c = read_model_config(a.model);
  a.opts.ranks = a.ranks;
  a.opts.weight_bytes = dtype_bytes(a.weight_dtype.empty() ? c.dtype : a.weight_dtype);
  const double device = a.device_mem_gib * kGiB;
  if (a.train) return run_train_plan(rt, a, c, device);
  const Placement p = place_layers(c, a.ranks, a.opts.weight_bytes);
  const std::vector<RankMemory> mem = predict_memory(c, p, a.opts);
  const LayerTraffic t = layer_traffic(c, a.opts);
  const RankMemory* worst = &mem[0];
  for (const RankMemory& m : mem) {
    if (m.peak > worst->peak) worst = &m;
  }
  const bool fits = worst->peak <= device;

  if (a.json) {
    nlohmann::json ranks = nlohmann::json::array();
    for (const RankMemory& m : mem) ranks.push_back(rank_json(m, device));
    print_json_line(rt.c(), {{"command", "plan"},
                             {"model", a.model},
                             {"params", c.param_count()},
                             {"weight_bytes", a.opts.weight_bytes},
                             {"ranks", a.ranks},
                             {"device_mem_gib", a.device_mem_gib},
                             {"fits", fits},
                             {"per_rank", ranks},
                             {"traffic_per_layer",
                              {{"layer_broadcast", t.layer_broadcast},
                               {"hessian_allreduce", t.hessian_allreduce},
                               {"rows_allgather", t.rows_allgather},
                               {"pipeline_send_per_window", t.pipeline_send},
                               {"rotation_allreduce_per_iteration", t.rotation_allreduce}}}});
  } else {
    if (rt.c().is_root()) {
      std::printf(
          "%s: %s, %.2fB parameters, weights at %lld bytes; %d rank(s) of %.1f GiB; "
          "calibration %lld x %lld, batch %lld\n",
          a.model.c_str(), c.summary().c_str(), c.param_count() / 1e9,
          static_cast<long long>(a.opts.weight_bytes), a.ranks, a.device_mem_gib,
          static_cast<long long>(a.opts.nsamples), static_cast<long long>(a.opts.seqlen),
          static_cast<long long>(a.opts.calib_batch));
    }
    std::vector<std::vector<std::string>> rows;
    for (const RankMemory& m : mem) {
      std::string extra = m.embed ? "embed" : "";
      if (m.head) extra += extra.empty() ? "head" : "+head";
      rows.push_back(
          {std::to_string(m.rank),
           "[" + std::to_string(m.layer_begin) + ", " + std::to_string(m.layer_end) + ")", extra,
           gib(m.shard), gib(m.streamed), gib(m.activations),
           gib(std::max({m.forward, m.gptq, m.rotation})), gib(m.peak),
           m.peak <= device ? "yes" : "NO"});
    }
    print_table(rt.c(),
                {"rank", "layers", "globals", "shard GiB", "streamed", "activations", "workspace",
                 "peak GiB", "fits"},
                rows);
    print_table(rt.c(), {"traffic per layer", "GiB"},
                {{"layer broadcast (owner -> all)", gib(t.layer_broadcast)},
                 {"Hessian all-reduce (4 inputs, float64)", gib(t.hessian_allreduce)},
                 {"quantized rows all-gather", gib(t.rows_allgather)},
                 {"pipeline send per window (float32)", gib(t.pipeline_send)},
                 {"DFRot/OptRot all-reduce per iteration", gib(t.rotation_allreduce)}});
  }
  if (!fits) {
    const int need = min_ranks_that_fit(c, a.opts, device);
    fail(a.model, " does not fit ", a.ranks, " rank(s) of ", a.device_mem_gib, " GiB: rank ",
         worst->rank, " needs ", gib(worst->peak), " GiB (shard ", gib(worst->shard), " GiB); ",
         need > 0 ? "it fits on " + std::to_string(need) + " ranks"
                  : std::string("no rank count fits (each rank holds at least one layer)"));
  }
}

}  // namespace

void register_plan(CLI::App& app, Runtime& rt) {
  auto a = std::make_shared<PlanArgs>();
  CLI::App* cmd = app.add_subcommand(
      "plan", "layer placement over ranks and predicted peak memory per rank (config.json only)");
  cmd->add_option("--model", a->model, "config.json, HF directory or llama2.c .bin")->required();
  cmd->add_option("--ranks", a->ranks, "ranks (one per GPU)")->required();
  cmd->add_option("--device-mem", a->device_mem_gib, "memory per rank in GiB (e.g. 80)")
      ->required();
  cmd->add_option("--weight-dtype", a->weight_dtype,
                  "storage dtype of the weights (default: the checkpoint's)");
  cmd->add_option("--nsamples", a->opts.nsamples, "calibration windows")->capture_default_str();
  cmd->add_option("--seqlen", a->opts.seqlen, "calibration window length")->capture_default_str();
  cmd->add_option("--calib-batch", a->opts.calib_batch, "windows per calibration forward")
      ->capture_default_str();
  cmd->add_flag("--train", a->train,
                "the training peak of a learned rotation (SpinQuant) instead of the quantization "
                "pipeline's");
  cmd->add_option("--train-method", a->train_method, "training: spinquant | ostquant")
      ->capture_default_str()
      ->check(CLI::IsMember({"spinquant", "ostquant"}));
  cmd->add_option("--train-batch", a->train_opts.batch, "training windows per step, all ranks")
      ->capture_default_str();
  cmd->add_option("--micro-batch", a->train_opts.micro_batch,
                  "training windows per forward/backward")
      ->capture_default_str();
  cmd->add_option("--act-dtype", a->act_dtype,
                  "training activations' dtype (default: the weights')");
  cmd->add_option("--placement", a->placement, "training: layers (sharded) | replicated")
      ->capture_default_str()
      ->check(CLI::IsMember({"layers", "replicated"}));
  cmd->add_flag("--offload", a->train_opts.offload,
                "training: the model in host memory, one layer on the device at a time");
  cmd->add_flag("--json", a->json, "print one JSON object");
  cmd->get_option("--ranks")->check(CLI::Range(1, 1 << 20));
  cmd->get_option("--device-mem")->check(CLI::Range(1e-3, 1e9));
  cmd->get_option("--nsamples")->check(CLI::Range(int64_t{1}, int64_t{1000000}));
  cmd->get_option("--seqlen")->check(CLI::Range(int64_t{1}, int64_t{1} << 24));
  cmd->get_option("--calib-batch")->check(CLI::Range(int64_t{1}, int64_t{1000000}));
  cmd->get_option("--train-batch")->check(CLI::Range(int64_t{1}, int64_t{1000000}));
  cmd->get_option("--micro-batch")->check(CLI::Range(int64_t{1}, int64_t{1000000}));
  cmd->get_option("--act-dtype")
      ->check(CLI::IsMember({"float32", "float64", "bfloat16", "float16"}));
  cmd->callback([a, &rt] { run_plan(rt, *a); });
}

}  // namespace rotq
