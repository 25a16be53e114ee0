#include "runner/core/progress.h"

#include <spdlog/spdlog.h>

namespace rotq {

Progress::Progress(std::string what, int64_t total, std::string unit, double interval_s)
    : what_(std::move(what)), unit_(std::move(unit)), total_(total), interval_(interval_s) {
  start_ = last_ = std::chrono::steady_clock::now();
}

double Progress::elapsed() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void Progress::update(int64_t done, double units) {
  const auto now = std::chrono::steady_clock::now();
  const bool finished = done >= total_;
  if (!finished && std::chrono::duration<double>(now - last_).count() < interval_) return;
  last_ = now;
  const double t = elapsed();
  const double rate = t > 0 ? units / t : 0;
  const double eta = done > 0 ? t * static_cast<double>(total_ - done) / done : 0;
  spdlog::info("{} {}/{} ({:.0f}%), {:.1f} {}/s, elapsed {:.1f}s, ETA {:.1f}s", what_, done, total_,
               100.0 * done / std::max<int64_t>(1, total_), rate, unit_, t, eta);
}

}  // namespace rotq
