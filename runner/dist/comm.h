// Creating the Comm backend for this process: local (one rank) or MPI (launched by mpirun/srun).
#pragma once

#include <memory>
#include <string>

#include "solvers/comm.h"

namespace rotq {

// True when this process was started by an MPI launcher (Open MPI's mpirun, PMIx/srun, PMI).
bool launched_by_mpi();

// backend: "auto" (MPI when launched by an MPI launcher, else local), "local", "mpi", "nccl".
std::unique_ptr<Comm> make_comm(const std::string& backend);

std::unique_ptr<Comm> make_local_comm();
std::unique_ptr<Comm> make_mpi_comm();  // calls MPI_Init; MPI_Finalize when destroyed
// MPI's lifetime, shared by the MPI and NCCL backends: init_mpi initializes it unless it already
// is and says whether it did; finalize_mpi(true) finalizes it once.
bool init_mpi();
void finalize_mpi(bool owned);
// NCCL on the GPU given by the local rank (bootstrapped over MPI). Only in builds configured
// with -DROTQ_WITH_CUDA=ON; make_comm("nccl") says so otherwise.
std::unique_ptr<Comm> make_nccl_comm();
bool nccl_available();              // built with NCCL
std::string nccl_version_string();  // "2.28.9", or "" without NCCL

// Rank within the node, from the launcher's environment (Open MPI, Slurm, PMIx), else 0.
int local_rank_from_env();
int local_size_from_env();

}  // namespace rotq
