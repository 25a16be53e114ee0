// TimedComm: a Comm decorator that counts the seconds spent inside collectives and the bytes this
// rank handed to them, so that runs can report the share of time spent communicating.
#pragma once

#include <chrono>
#include <cstdlib>

#include "solvers/comm.h"

namespace rotq {

class TimedComm final : public Comm {
 public:
  explicit TimedComm(Comm& inner) : inner_(inner) {}

  int rank() const override { return inner_.rank(); }
  int size() const override { return inner_.size(); }
  std::string backend() const override { return inner_.backend(); }

  void all_reduce(at::Tensor& t, ReduceOp op) override;
  void broadcast(at::Tensor& t, int root) override;
  at::Tensor all_gather(const at::Tensor& t) override;
  void send(const at::Tensor& t, int dst, int tag) override;
  void recv(at::Tensor& t, int src, int tag) override;
  void barrier() override;
  [[noreturn]] void abort(int exit_code) override {
    inner_.abort(exit_code);
    std::abort();  // inner_ aborts the job; this keeps the promise if it returned
  }

  double seconds() const { return seconds_; }  // inside collectives, waiting included
  double bytes() const { return bytes_; }      // this rank's tensors passed to collectives
  int64_t calls() const { return calls_; }

 private:
  template <typename F>
  auto timed(double bytes, F f);

  Comm& inner_;
  double seconds_ = 0, bytes_ = 0;
  int64_t calls_ = 0;
};

}  // namespace rotq
