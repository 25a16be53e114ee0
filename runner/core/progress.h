// Progress lines for long loops: "what k/N, rate unit/s, ETA", at most every `interval` seconds.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace rotq {

class Progress {
 public:
  Progress(std::string what, int64_t total, std::string unit, double interval_s = 2.0);
  // Reports `done` items (and `units` processed so far, for the rate); logs when due or finished.
  void update(int64_t done, double units);
  double elapsed() const;

 private:
  std::string what_, unit_;
  int64_t total_;
  double interval_;
  std::chrono::steady_clock::time_point start_, last_;
};

}  // namespace rotq
