#include "runner/rotate/inspect.h"

#include <ATen/ATen.h>

#include <cmath>
#include <fstream>

#include "models/base/files.h"
#include "runner/core/csv.h"
#include "solvers/dfrot.h"
#include "solvers/error.h"
#include "solvers/quantizer.h"

namespace rotq {

MatrixStats matrix_stats(const at::Tensor& w) {
  const at::Tensor d = w.to(at::kDouble);
  const at::Tensor c = d - d.mean();
  const double var = c.pow(2).mean().item<double>();
  MatrixStats s;
  s.kurtosis = var > 0 ? c.pow(4).mean().item<double>() / (var * var) : 0;
  const double fro = d.pow(2).sum().sqrt().item<double>();
  s.incoherence =
      fro > 0 ? d.abs().max().item<double>() * std::sqrt(static_cast<double>(d.numel())) / fro : 0;
  return s;
}

at::Tensor rotated_by_r1(const at::Tensor& w, LayerTensor t, const at::Tensor& r) {
  if (!r.defined()) return w;
  const at::Tensor wd = w.to(at::kDouble), rd = r.to(at::kDouble);
  const bool writer = t == LayerTensor::kWo || t == LayerTensor::kWDown;
  return writer ? at::matmul(rd.t(), wd) : at::matmul(wd, rd);
}

at::Tensor relative_token_error(const at::Tensor& x, const at::Tensor& r, int bits,
                                bool symmetric) {
  require(x.dim() == 2, "relative_token_error: expected tokens [N, C], got ", x.sizes());
  at::Tensor xd = x.to(at::kDouble);
  if (r.defined()) xd = at::matmul(xd, r.to(at::kDouble));
  QuantSpec q;
  q.bits = bits;
  q.symmetric = symmetric;
  return per_token_quant_error(xd, q) / xd.pow(2).sum(1).sqrt().clamp_min(1e-30);
}

void write_csv(const std::string& path, const std::vector<std::string>& header,
               const std::vector<std::vector<std::string>>& rows) {
  std::string text = csv_row(header) + "\n";
  for (const auto& r : rows) text += csv_row(r) + "\n";
  write_file_atomically(path, text);
}

}  // namespace rotq
