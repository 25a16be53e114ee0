// LocalComm: the one-rank backend. Collectives are identities, so single-process runs need no MPI
// and take exactly the code path of an N-rank run.
#include <ATen/ATen.h>

#include <cstdlib>

#include "runner/dist/comm.h"
#include "solvers/error.h"

namespace rotq {
namespace {

class LocalComm final : public Comm {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string backend() const override { return "local"; }
  void all_reduce(at::Tensor& t, ReduceOp) override {
    require(t.defined(), "all_reduce: undefined tensor");
  }
  void broadcast(at::Tensor& t, int root) override {
    require(root == 0, "broadcast: root ", root, " out of range for 1 rank");
  }
  at::Tensor all_gather(const at::Tensor& t) override { return t.clone(); }
  void send(const at::Tensor&, int dst, int) override {
    fail("send to rank ", dst, ": a local (1-rank) communicator has no peers");
  }
  void recv(at::Tensor&, int src, int) override {
    fail("recv from rank ", src, ": a local (1-rank) communicator has no peers");
  }
  void barrier() override {}
  [[noreturn]] void abort(int exit_code) override { std::_Exit(exit_code); }
};

}  // namespace

std::unique_ptr<Comm> make_local_comm() { return std::make_unique<LocalComm>(); }

}  // namespace rotq
