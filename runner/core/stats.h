// Mean and sample standard deviation: seeds in result tables, examples in task scores.
#pragma once

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

}  // namespace rotq
