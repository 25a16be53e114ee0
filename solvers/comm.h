// Comm: the one interface for collectives over ranks (c10d's ProcessGroup idea, at a tenth of the
// size). Solvers are written against it so that the same code runs on 1 rank or 64; backends live
// in runner/ (LocalComm: one process, no MPI; MpiComm: host tensors over Open MPI; NcclComm: device
// tensors). Every collective takes contiguous tensors and works in place where that is natural.
// Failures throw rotq::Error naming the collective and the rank.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

namespace rotq {

enum class ReduceOp { kSum, kMax, kMin };

class Comm {
 public:
  virtual ~Comm() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string backend() const = 0;  // "local", "mpi", "nccl"

  // In place: every rank ends with the reduction of all ranks' `t` (same shape/dtype everywhere).
  virtual void all_reduce(at::Tensor& t, ReduceOp op = ReduceOp::kSum) = 0;
  // In place: every rank ends with root's `t` (`t` must already have the right shape/dtype).
  virtual void broadcast(at::Tensor& t, int root) = 0;
  // Concatenation of every rank's `t` along dim 0, in rank order (equal shapes on all ranks).
  virtual at::Tensor all_gather(const at::Tensor& t) = 0;
  // Point to point; `recv` fills a preallocated tensor of the sender's shape and dtype.
  virtual void send(const at::Tensor& t, int dst, int tag = 0) = 0;
  virtual void recv(at::Tensor& t, int src, int tag = 0) = 0;
  virtual void barrier() = 0;
  // Ends every rank of the job now (used after an unrecoverable error on one rank).
  [[noreturn]] virtual void abort(int exit_code) = 0;

  bool is_root() const { return rank() == 0; }
};

}  // namespace rotq
