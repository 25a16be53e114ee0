// NcclComm: collectives through NCCL on device memory, one rank per GPU. Written against raw
// device pointers and a CUDA stream (not LibTorch's CUDA API), so it builds with the CUDA toolkit
// and NCCL even where LibTorch is CPU-only. Device tensors (a CUDA LibTorch) are used in place;
// host tensors are staged through a device buffer, so every stage of rotq can run over NCCL.
//
// Bootstrap: MPI gives rank and size; rank 0's ncclUniqueId is broadcast over MPI; the device is
// local_rank % visible devices (local_rank from Open MPI's or Slurm's environment). A process
// started without an MPI launcher is one rank of one and needs no MPI at all.
//
// Failures never hang: each collective is waited for by polling the stream with a deadline
// (ROTQ_COMM_TIMEOUT_S, default 600 s) while watching ncclCommGetAsyncError. A timeout or an
// asynchronous NCCL error aborts the communicator and throws rotq::Error naming the rank and the
// collective; the CLI then ends every rank (Comm::abort).
#include <ATen/ATen.h>
#include <cuda_runtime.h>
#include <mpi.h>
#include <nccl.h>

#include <chrono>
#include <cstdlib>
#include <thread>

#include "runner/dist/comm.h"
#include "solvers/error.h"

namespace rotq {
namespace {

ncclDataType_t nccl_type(at::ScalarType t, const char* op, int rank) {
  switch (t) {
    case at::kFloat:
      return ncclFloat32;
    case at::kDouble:
      return ncclFloat64;
    case at::kHalf:
      return ncclFloat16;
    case at::kBFloat16:
      return ncclBfloat16;
    case at::kInt:
      return ncclInt32;
    case at::kLong:
      return ncclInt64;
    case at::kByte:
    case at::kBool:
      return ncclUint8;
    case at::kChar:
      return ncclInt8;
    default:
      fail("nccl ", op, " on rank ", rank, ": dtype ", c10::toString(t), " is not supported");
  }
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return ncclSum;
    case ReduceOp::kMax:
      return ncclMax;
    case ReduceOp::kMin:
      return ncclMin;
  }
  return ncclSum;
}

double timeout_from_env() {
  const char* v = std::getenv("ROTQ_COMM_TIMEOUT_S");
  const double s = v ? std::atof(v) : 0;
  return s > 0 ? s : 600.0;
}

class NcclComm final : public Comm {
 public:
  NcclComm() {
    use_mpi_ = launched_by_mpi();
    if (use_mpi_) {
      owns_mpi_ = init_mpi();
      MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
      MPI_Comm_size(MPI_COMM_WORLD, &size_);
    }
    int devices = 0;
    const cudaError_t e = cudaGetDeviceCount(&devices);
    require(e == cudaSuccess && devices > 0, "nccl backend on rank ", rank_,
            ": no CUDA device visible (", cudaGetErrorString(e),
            "); use --comm mpi on machines without GPUs");
    device_ = local_rank_from_env() % devices;
    cuda_check(cudaSetDevice(device_), "cudaSetDevice");
    ncclUniqueId id;
    if (rank_ == 0) nccl_check(ncclGetUniqueId(&id), "ncclGetUniqueId");
    if (use_mpi_) {
      require(MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, MPI_COMM_WORLD) == MPI_SUCCESS,
              "nccl backend on rank ", rank_, ": broadcasting the NCCL unique id over MPI failed");
    }
    timeout_s_ = timeout_from_env();
    // Non-blocking init, so that a rank that never arrives cannot hang this one.
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    nccl_check(ncclCommInitRankConfig(&comm_, size_, id, rank_, &config), "ncclCommInitRank");
    wait_for_comm("ncclCommInitRank");
    cuda_check(cudaStreamCreate(&stream_), "cudaStreamCreate");
  }

  ~NcclComm() override {
    if (comm_) {
      // A non-blocking communicator is finalized (its outstanding work flushed) before it is
      // destroyed, as NCCL documents; bounded by the same deadline as a collective.
      ncclCommFinalize(comm_);
      settle();
      ncclCommDestroy(comm_);
    }
    if (stream_) cudaStreamDestroy(stream_);
    if (staging_) cudaFree(staging_);
    finalize_mpi(owns_mpi_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "nccl"; }

  // One rank: reductions and broadcasts are the identity. NCCL would still copy the buffer (the
  // 7B run on one H200 spent 19 s of 235 s moving 44 GB of Hessians onto themselves).
  void all_reduce(at::Tensor& t, ReduceOp op) override {
    const ncclDataType_t type = nccl_type(t.scalar_type(), "all_reduce", rank_);
    if (size_ == 1) return;
    with_device_buffer(t, /*copy_in=*/true, /*copy_out=*/true, "all_reduce", [&](void* p) {
      return ncclAllReduce(p, p, t.numel(), type, nccl_op(op), comm_, stream_);
    });
  }

  void broadcast(at::Tensor& t, int root) override {
    require(root >= 0 && root < size_, "nccl broadcast: root ", root, " out of range [0, ", size_,
            ")");
    const ncclDataType_t type = nccl_type(t.scalar_type(), "broadcast", rank_);
    if (size_ == 1) return;
    with_device_buffer(
        t, /*copy_in=*/rank_ == root, /*copy_out=*/rank_ != root, "broadcast",
        [&](void* p) { return ncclBroadcast(p, p, t.numel(), type, root, comm_, stream_); });
  }

  at::Tensor all_gather(const at::Tensor& t) override {
    at::Tensor src = t.contiguous();
    // A 0-d tensor gathers as [1]. (Spelled as one initialisation: assigning {1} to the vector
    // trips GCC 12's -Wfree-nonheap-object false positive.)
    std::vector<int64_t> shape = src.dim() == 0 ? std::vector<int64_t>{1} : src.sizes().vec();
    shape[0] *= size_;
    at::Tensor out = at::empty(shape, src.options());
    const ncclDataType_t type = nccl_type(src.scalar_type(), "all_gather", rank_);
    if (size_ == 1) return src.clone().view(shape);
    const size_t in_bytes = src.numel() * src.element_size();
    if (src.is_cuda()) {
      run("all_gather", [&] {
        return ncclAllGather(src.data_ptr(), out.data_ptr(), src.numel(), type, comm_, stream_);
      });
      return out;
    }
    char* dev = static_cast<char*>(staging(in_bytes * (size_ + 1)));
    cuda_check(cudaMemcpyAsync(dev, src.data_ptr(), in_bytes, cudaMemcpyHostToDevice, stream_),
               "all_gather: copy to device");
    run("all_gather",
        [&] { return ncclAllGather(dev, dev + in_bytes, src.numel(), type, comm_, stream_); });
    cuda_check(cudaMemcpy(out.data_ptr(), dev + in_bytes, in_bytes * size_, cudaMemcpyDeviceToHost),
               "all_gather: copy to host");
    return out;
  }

  void send(const at::Tensor& t, int dst, int /*tag*/) override {
    // NCCL matches point-to-point messages by order between a pair of ranks, as MPI does for one
    // tag; rotq's pipelines use one tag per pair.
    at::Tensor src = t.contiguous();
    const ncclDataType_t type = nccl_type(src.scalar_type(), "send", rank_);
    with_device_buffer(src, /*copy_in=*/true, /*copy_out=*/false, "send", [&](void* p) {
      return ncclSend(p, src.numel(), type, dst, comm_, stream_);
    });
  }

  void recv(at::Tensor& t, int src, int /*tag*/) override {
    const ncclDataType_t type = nccl_type(t.scalar_type(), "recv", rank_);
    with_device_buffer(t, /*copy_in=*/false, /*copy_out=*/true, "recv",
                       [&](void* p) { return ncclRecv(p, t.numel(), type, src, comm_, stream_); });
  }

  void barrier() override {
    at::Tensor one = at::ones({1}, at::kInt);
    all_reduce(one, ReduceOp::kSum);
  }

  [[noreturn]] void abort(int exit_code) override {
    if (comm_) ncclCommAbort(comm_);
    comm_ = nullptr;
    if (use_mpi_) MPI_Abort(MPI_COMM_WORLD, exit_code);
    std::_Exit(exit_code);
  }

 private:
  void cuda_check(cudaError_t e, const char* what) const {
    require(e == cudaSuccess, "nccl backend on rank ", rank_, ": ", what, ": ",
            cudaGetErrorString(e));
  }
  void nccl_check(ncclResult_t r, const char* what) const {
    require(r == ncclSuccess || r == ncclInProgress, "nccl ", what, " on rank ", rank_, ": ",
            ncclGetErrorString(r));
  }

  // Waits for a non-blocking communicator operation (init) to finish, with the deadline.
  // Polls the communicator until its pending operation (init, finalize) settles or the deadline
  // passes; the last state (ncclInProgress: timed out).
  ncclResult_t settle() {
    const auto t0 = std::chrono::steady_clock::now();
    ncclResult_t state = ncclInProgress;
    for (;;) {
      ncclCommGetAsyncError(comm_, &state);
      if (state != ncclInProgress ||
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() >
              timeout_s_) {
        return state;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }

  void wait_for_comm(const char* what) {
    const ncclResult_t state = settle();
    if (state == ncclInProgress) fail_and_abort(what, "timed out (a rank did not arrive)");
    if (state != ncclSuccess) fail_and_abort(what, ncclGetErrorString(state));
  }

  [[noreturn]] void fail_and_abort(const char* what, const std::string& why) {
    if (comm_) ncclCommAbort(comm_);
    comm_ = nullptr;
    fail("nccl ", what, " on rank ", rank_, " of ", size_, ": ", why);
  }

  // Enqueues one NCCL call on the stream and waits for it with the deadline.
  template <typename F>
  void run(const char* what, F enqueue) {
    const ncclResult_t r = enqueue();
    if (r != ncclSuccess && r != ncclInProgress) fail_and_abort(what, ncclGetErrorString(r));
    const auto t0 = std::chrono::steady_clock::now();
    for (;;) {
      // The communicator first (a non-blocking one may still be enqueueing), then the stream.
      ncclResult_t state = ncclSuccess;
      ncclCommGetAsyncError(comm_, &state);
      if (state != ncclSuccess && state != ncclInProgress) {
        fail_and_abort(what, ncclGetErrorString(state));
      }
      if (state == ncclSuccess) {
        const cudaError_t q = cudaStreamQuery(stream_);
        if (q == cudaSuccess) return;
        if (q != cudaErrorNotReady) fail_and_abort(what, cudaGetErrorString(q));
      }
      if (std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() >
          timeout_s_) {
        fail_and_abort(what, "timed out after " + std::to_string(timeout_s_) +
                                 " s (another rank died or is stuck; ROTQ_COMM_TIMEOUT_S)");
      }
      std::this_thread::yield();
    }
  }

  void* staging(size_t bytes) {
    if (bytes > staging_bytes_) {
      if (staging_) cudaFree(staging_);
      staging_ = nullptr;
      cuda_check(cudaMalloc(&staging_, bytes), "cudaMalloc (staging buffer)");
      staging_bytes_ = bytes;
    }
    return staging_;
  }

  // Runs `op(device pointer)` on t's memory: in place for a contiguous device tensor, through the
  // staging buffer for a host tensor.
  template <typename F>
  void with_device_buffer(at::Tensor& t, bool copy_in, bool copy_out, const char* what, F op) {
    require(t.is_contiguous(), "nccl ", what, " on rank ", rank_, ": tensor must be contiguous");
    const size_t bytes = t.numel() * t.element_size();
    if (t.is_cuda()) {
      run(what, [&] { return op(t.data_ptr()); });
      return;
    }
    void* dev = staging(std::max<size_t>(bytes, 1));
    if (copy_in) {
      cuda_check(cudaMemcpyAsync(dev, t.data_ptr(), bytes, cudaMemcpyHostToDevice, stream_),
                 "copy to device");
    }
    run(what, [&] { return op(dev); });
    if (copy_out) {
      cuda_check(cudaMemcpy(t.data_ptr(), dev, bytes, cudaMemcpyDeviceToHost), "copy to host");
    }
  }
  template <typename F>
  void with_device_buffer(const at::Tensor& t, bool copy_in, bool copy_out, const char* what,
                          F op) {
    at::Tensor x = t;
    with_device_buffer(x, copy_in, copy_out, what, op);
  }

  int rank_ = 0, size_ = 1, device_ = 0;
  bool use_mpi_ = false, owns_mpi_ = false;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  void* staging_ = nullptr;
  size_t staging_bytes_ = 0;
  double timeout_s_ = 600;
};

}  // namespace

std::unique_ptr<Comm> make_nccl_comm() { return std::make_unique<NcclComm>(); }

std::string nccl_version_string() {
  int v = 0;
  ncclGetVersion(&v);
  return std::to_string(v / 10000) + "." + std::to_string((v / 100) % 100) + "." +
         std::to_string(v % 100);
}

}  // namespace rotq
