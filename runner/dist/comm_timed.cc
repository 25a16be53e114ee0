#include "runner/dist/comm_timed.h"

#include <ATen/core/Tensor.h>

namespace rotq {

template <typename F>
auto TimedComm::timed(double bytes, F f) {
  const auto t0 = std::chrono::steady_clock::now();
  struct Account {  // counts on every exit, a throwing collective included
    TimedComm* self;
    std::chrono::steady_clock::time_point t0;
    double bytes;
    ~Account() {
      self->seconds_ +=
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      self->bytes_ += bytes;
      ++self->calls_;
    }
  } account{this, t0, bytes};
  return f();
}

namespace {
double nbytes(const at::Tensor& t) { return static_cast<double>(t.numel() * t.element_size()); }
}  // namespace

void TimedComm::all_reduce(at::Tensor& t, ReduceOp op) {
  timed(nbytes(t), [&] { inner_.all_reduce(t, op); });
}
void TimedComm::broadcast(at::Tensor& t, int root) {
  timed(nbytes(t), [&] { inner_.broadcast(t, root); });
}
at::Tensor TimedComm::all_gather(const at::Tensor& t) {
  return timed(nbytes(t), [&] { return inner_.all_gather(t); });
}
void TimedComm::send(const at::Tensor& t, int dst, int tag) {
  timed(nbytes(t), [&] { inner_.send(t, dst, tag); });
}
void TimedComm::recv(at::Tensor& t, int src, int tag) {
  timed(nbytes(t), [&] { inner_.recv(t, src, tag); });
}
void TimedComm::barrier() {
  timed(0, [&] { inner_.barrier(); });
}

}  // namespace rotq
