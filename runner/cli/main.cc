// rotq: rotation-based post-training quantization of LLMs. One binary, one subcommand per stage;
// runs as a plain process (one rank) or under mpirun/srun (N ranks, same code path).
#include <malloc.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include "runner/cli/cmd_common.h"
#include "runner/record/cell_record.h"
#include "solvers/error.h"

namespace {

// Fresh pages cost ~15 us each to fault in on these VMs, and glibc serves every temporary of
// 128 KiB or more with a fresh mmap: per-op tensors in a loop then cost more than the arithmetic
// (3x on `rotq generate`). Keep freed memory in the heap instead. ROTQ_MALLOC_DEFAULTS=1 opts out.
void keep_freed_memory_in_heap() {
  const char* opt_out = std::getenv("ROTQ_MALLOC_DEFAULTS");
  if (opt_out && std::string(opt_out) == "1") return;
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
}

}  // namespace

int main(int argc, char** argv) {
  keep_freed_memory_in_heap();
  rotq::Runtime rt;
  CLI::App app{"rotq " + rotq::rotq_version() +
               ": rotation-based post-training quantization of LLMs"};
  app.require_subcommand(1);
  app.set_version_flag("--version", rotq::rotq_version());
  app.add_option("--comm", rt.comm_backend,
                 "communicator: auto (mpi under a launcher, else local), local, mpi or nccl")
      ->capture_default_str();
  app.add_option("--log-level", rt.log_level, "trace, debug, info, warn, error, off")
      ->capture_default_str();
  app.add_flag("--log-all-ranks", rt.log_all_ranks, "let every rank log at --log-level");
  app.add_option("--threads", rt.threads, "intra-op threads per rank (0: cores / local ranks)")
      ->check(CLI::Range(0, 4096));
  for (rotq::CommandRegistrar reg :
       {rotq::register_ppl, rotq::register_generate, rotq::register_convert, rotq::register_info,
        rotq::register_synth, rotq::register_tokenize, rotq::register_bench,
        rotq::register_hadamard, rotq::register_quantize_eval, rotq::register_inspect,
        rotq::register_plan, rotq::register_run, rotq::register_table, rotq::register_submit,
        rotq::register_parity}) {
    reg(app, rt);
  }
  // Subcommand callbacks run inside parse(); every failure is reported as one line.
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {  // --help, --version
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "rotq: error: %s (see rotq --help)\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::string msg = e.what();
    // LibTorch messages carry a C++ backtrace after the first line; keep the first line.
    const size_t nl = msg.find('\n');
    if (nl != std::string::npos) msg = msg.substr(0, nl);
    const int rank = rt.comm ? rt.comm->rank() : 0;
    if (rt.comm && rt.comm->size() > 1) {
      std::fprintf(stderr, "rotq: error on rank %d: %s\n", rank, msg.c_str());
      std::fflush(stderr);
      rt.comm->abort(1);  // ends every rank, not only this one
    }
    std::fprintf(stderr, "rotq: error: %s\n", msg.c_str());
    return 1;
  }
  return 0;
}
