// Seconds between successive laps: an iterative solver's per-step time. Each lap() is meant to
// follow a read that waited for the device (a loss's .item()), so that a step's GPU work is counted
// in the step that queued it.
#pragma once

#include <chrono>

namespace rotq {

class LapClock {
 public:
  // Seconds since the previous lap (or the clock's start); starts the next lap.
  double lap() {
    const auto now = std::chrono::steady_clock::now();
    const double seconds = std::chrono::duration<double>(now - last_).count();
    last_ = now;
    return seconds;
  }

 private:
  std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
};

}  // namespace rotq
