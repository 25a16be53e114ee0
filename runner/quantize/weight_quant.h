// Weight quantization of a whole model, layer by layer: RTN, or GPTQ calibrated true-sequentially
// ([q,k,v] → o → [gate,up] → down within a layer; each layer fed the outputs of the already
// quantized layers before it). Calibration is data-parallel: each rank runs its share of the
// windows and the Hessian sums are all-reduced, so every rank computes the same weights.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <string>
#include <vector>

#include "models/weights.h"
#include "runner/dist/placement.h"
#include "solvers/comm.h"
#include "solvers/gptq.h"
#include "solvers/quantizer.h"

namespace rotq {

enum class WeightMethod { kRtn, kGptq };
WeightMethod parse_weight_method(const std::string& name);  // "rtn" | "gptq"
const char* weight_method_name(WeightMethod m);

struct WeightQuantOptions {
  WeightMethod method = WeightMethod::kRtn;
  QuantSpec spec;  // bits 16: weights stay in floating point
  GptqOptions gptq;
  // Accumulation of Σxxᵀ and GPTQ's arithmetic (GPTQ follows H's dtype). float64 by default, so
  // that sums over 128×2048 tokens and the Cholesky factors lose nothing to rounding and results
  // do not depend on the number of ranks; float32 reproduces the reference code.
  at::ScalarType hessian_dtype = at::kDouble;
  int64_t calib_batch = 8;  // windows per calibration forward
};

struct LayerQuantStats {
  int64_t layer = 0;
  double seconds = 0;        // whole layer: calibration forwards + quantization
  double quant_seconds = 0;  // the quantizer alone (GPTQ or RTN)
  double quant_flops = 0;    // GPTQ's estimated FLOPs
};

struct WeightQuantReport {
  std::vector<LayerQuantStats> layers;
  double seconds = 0;
  double quant_seconds = 0;
  double quant_flops = 0;
};

// The linears quantized in a layer (lm_head and embeddings stay in floating point, as in QuaRot).
const std::vector<LayerTensor>& quantized_linears();

// RTN: no data needed.
WeightQuantReport quantize_weights_rtn(Model& model, const WeightQuantOptions& opts);

// GPTQ on `calib` [nsamples, seqlen] windows (the same tensor on every rank): data-parallel
// calibration (each rank runs its share of the windows; Hessians all-reduced), row-parallel
// quantization (each rank a slice of each linear's rows; slices all-gathered). With `shard`,
// `model` is this rank's part of a model sharded by layers: each layer's owner streams it to the
// other ranks for their windows, and keeps the quantized result.
WeightQuantReport quantize_weights_gptq(Model& model, const at::Tensor& calib,
                                        const WeightQuantOptions& opts, Comm& comm,
                                        const Placement& placement = Placement::replicated());

}  // namespace rotq
