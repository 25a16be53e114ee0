#include "runner/dist/comm.h"

#include <cstdlib>
#include <string>

#include "solvers/error.h"

namespace rotq {
namespace {

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  return std::atoi(v);
}

}  // namespace

bool launched_by_mpi() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"}) {
    if (std::getenv(var)) return true;
  }
  return false;
}

int local_rank_from_env() {
  for (const char* var : {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID"}) {
    int v = env_int(var, -1);
    if (v >= 0) return v;
  }
  return 0;
}

int local_size_from_env() {
  for (const char* var :
       {"OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE", "MPI_LOCALNRANKS"}) {
    int v = env_int(var, -1);
    if (v > 0) return v;
  }
  return 1;
}

#ifndef ROTQ_WITH_NCCL
std::unique_ptr<Comm> make_nccl_comm() {
  fail(
      "--comm nccl: this rotq was built without NCCL (configure with -DROTQ_WITH_CUDA=ON on a "
      "machine with the CUDA toolkit and NCCL)");
}
std::string nccl_version_string() { return ""; }
bool nccl_available() { return false; }
#else
bool nccl_available() { return true; }
#endif

std::unique_ptr<Comm> make_comm(const std::string& backend) {
  if (backend == "local") return make_local_comm();
  if (backend == "mpi") return make_mpi_comm();
  if (backend == "nccl") return make_nccl_comm();
  if (backend == "auto") return launched_by_mpi() ? make_mpi_comm() : make_local_comm();
  fail("--comm ", backend, ": expected auto, local, mpi or nccl");
}

}  // namespace rotq
