// Mean and sample standard deviation: seeds in result tables, examples in task scores; the median
// of timings (a step's typical cost, robust to a warm-up or a stall).
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

namespace rotq {

struct MeanSd {
  double mean = 0, sd = 0;  // sd with n - 1; 0 for fewer than two values
};

inline MeanSd mean_sd(const std::vector<double>& v) {
  MeanSd m;
  for (double x : v) m.mean += x;
  m.mean /= static_cast<double>(v.size());
  double var = 0;
  for (double x : v) var += (x - m.mean) * (x - m.mean);
  if (v.size() > 1) m.sd = std::sqrt(var / static_cast<double>(v.size() - 1));
  return m;
}

// lm-eval's mean_stderr: the sample standard deviation over sqrt(n).
inline double mean_stderr(const std::vector<double>& v) {
  return mean_sd(v).sd / std::sqrt(static_cast<double>(v.size()));
}

// The median (the mean of the middle two for an even count); 0 for none.
inline double median(std::vector<double> v) {
  if (v.empty()) return 0;
  const size_t mid = v.size() / 2;
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(mid), v.end());
  const double upper = v[mid];
  if (v.size() % 2 == 1) return upper;
  return (*std::max_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(mid)) + upper) / 2;
}

}  // namespace rotq
