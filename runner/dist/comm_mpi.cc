// MpiComm: host tensors over MPI. Large buffers go in chunks (MPI counts are int, and moderate
// messages keep Open MPI's shared-memory transport on its fast path). MPI errors are returned, not
// fatal, so that each failure can be reported with the collective's name and the rank.
#include <ATen/ATen.h>
#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstdlib>

#include "runner/dist/comm.h"
#include "solvers/error.h"

namespace rotq {
namespace {

constexpr int64_t kDefaultChunkBytes = int64_t{1} << 28;  // 256 MiB per MPI call

// ROTQ_MPI_CHUNK_BYTES overrides the chunk size (tests use it to exercise the chunked path).
int64_t chunk_bytes_from_env() {
  const char* v = std::getenv("ROTQ_MPI_CHUNK_BYTES");
  const long long n = v ? std::atoll(v) : 0;
  return n > 0 ? n : kDefaultChunkBytes;
}

MPI_Datatype mpi_type(at::ScalarType t, const char* op) {
  switch (t) {
    case at::kFloat:
      return MPI_FLOAT;
    case at::kDouble:
      return MPI_DOUBLE;
    case at::kInt:
      return MPI_INT32_T;
    case at::kLong:
      return MPI_INT64_T;
    case at::kByte:
      return MPI_UINT8_T;
    case at::kChar:
      return MPI_INT8_T;
    case at::kBool:
      return MPI_UINT8_T;
    // 16-bit floats move as raw 16-bit words; they cannot be reduced by MPI itself.
    case at::kHalf:
    case at::kBFloat16:
      return MPI_UINT16_T;
    default:
      fail(op, ": dtype ", c10::toString(t), " is not supported by the MPI backend");
  }
}

MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return MPI_SUM;
    case ReduceOp::kMax:
      return MPI_MAX;
    case ReduceOp::kMin:
      return MPI_MIN;
  }
  return MPI_SUM;
}

}  // namespace

bool init_mpi() {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized) return false;
  int provided = 0;
  MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
  return true;
}

void finalize_mpi(bool owned) {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (owned && !finalized) MPI_Finalize();
}

namespace {

class MpiComm final : public Comm {
 public:
  MpiComm() {
    owns_mpi_ = init_mpi();
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
  }
  ~MpiComm() override { finalize_mpi(owns_mpi_); }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "mpi"; }

  void all_reduce(at::Tensor& t, ReduceOp op) override {
    check_host(t, "all_reduce");
    require(t.scalar_type() != at::kHalf && t.scalar_type() != at::kBFloat16 &&
                t.scalar_type() != at::kBool,
            "all_reduce on rank ", rank_, ": dtype ", c10::toString(t.scalar_type()),
            " cannot be reduced by MPI (upcast to float32 first)");
    MPI_Datatype type = mpi_type(t.scalar_type(), "all_reduce");
    for_chunks(t, [&](char* p, int count) {
      check(MPI_Allreduce(MPI_IN_PLACE, p, count, type, mpi_op(op), MPI_COMM_WORLD), "all_reduce");
    });
  }

  void broadcast(at::Tensor& t, int root) override {
    check_host(t, "broadcast");
    require(root >= 0 && root < size_, "broadcast: root ", root, " out of range [0, ", size_, ")");
    MPI_Datatype type = mpi_type(t.scalar_type(), "broadcast");
    for_chunks(t, [&](char* p, int count) {
      check(MPI_Bcast(p, count, type, root, MPI_COMM_WORLD), "broadcast");
    });
  }

  at::Tensor all_gather(const at::Tensor& t) override {
    at::Tensor src = t.contiguous();
    check_host(src, "all_gather");
    // A 0-d tensor gathers as [1]. (Spelled as one initialisation: assigning {1} to the vector
    // trips GCC 12's -Wfree-nonheap-object false positive.)
    const std::vector<int64_t> shape = src.dim() == 0 ? std::vector<int64_t>{1} : src.sizes().vec();
    std::vector<int64_t> out_shape = shape;
    out_shape[0] *= size_;
    at::Tensor out = at::empty(out_shape, src.options());
    // Each rank's block is sent as its own broadcast-sized chunks to respect the int count limit.
    const int64_t n = src.numel();
    const int64_t elem = src.element_size();
    const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(INT_MAX, chunk_bytes_ / elem));
    MPI_Datatype type = mpi_type(src.scalar_type(), "all_gather");
    at::Tensor send = src.reshape({-1});
    at::Tensor recv = out.reshape({size_, n});
    for (int64_t off = 0; off < n; off += chunk) {
      const int count = static_cast<int>(std::min(chunk, n - off));
      at::Tensor piece = at::empty({size_, count}, src.options());
      check(MPI_Allgather(static_cast<char*>(send.data_ptr()) + off * elem, count, type,
                          piece.data_ptr(), count, type, MPI_COMM_WORLD),
            "all_gather");
      recv.narrow(1, off, count).copy_(piece);
    }
    return out;
  }

  void send(const at::Tensor& t, int dst, int tag) override {
    at::Tensor src = t.contiguous();
    check_host(src, "send");
    MPI_Datatype type = mpi_type(src.scalar_type(), "send");
    for_chunks(src, [&](char* p, int count) {
      check(MPI_Send(p, count, type, dst, tag, MPI_COMM_WORLD), "send");
    });
  }

  void recv(at::Tensor& t, int src, int tag) override {
    check_host(t, "recv");
    MPI_Datatype type = mpi_type(t.scalar_type(), "recv");
    for_chunks(t, [&](char* p, int count) {
      check(MPI_Recv(p, count, type, src, tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE), "recv");
    });
  }

  void barrier() override { check(MPI_Barrier(MPI_COMM_WORLD), "barrier"); }

  [[noreturn]] void abort(int exit_code) override {
    MPI_Abort(MPI_COMM_WORLD, exit_code);
    std::_Exit(exit_code);
  }

 private:
  void check(int rc, const char* op) const {
    if (rc == MPI_SUCCESS) return;
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    fail("MPI ", op, " failed on rank ", rank_, " of ", size_, ": ", std::string(msg, len));
  }

  void check_host(const at::Tensor& t, const char* op) const {
    require(t.defined(), op, " on rank ", rank_, ": undefined tensor");
    require(t.device().is_cpu(), op, " on rank ", rank_,
            ": the MPI backend takes host tensors (use the NCCL backend for device tensors)");
    require(t.is_contiguous(), op, " on rank ", rank_, ": tensor must be contiguous");
  }

  template <typename F>
  void for_chunks(at::Tensor& t, F&& f) {
    const int64_t elem = t.element_size();
    const int64_t n = t.numel();
    const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(INT_MAX, chunk_bytes_ / elem));
    char* base = static_cast<char*>(t.data_ptr());
    for (int64_t off = 0; off < n; off += chunk) {
      f(base + off * elem, static_cast<int>(std::min(chunk, n - off)));
    }
  }

  int rank_ = 0;
  int size_ = 1;
  int64_t chunk_bytes_ = chunk_bytes_from_env();
  bool owns_mpi_ = false;
};

}  // namespace

std::unique_ptr<Comm> make_mpi_comm() { return std::make_unique<MpiComm>(); }

}  // namespace rotq
