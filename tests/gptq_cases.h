// One GPTQ configuration of the solver tests (quant_test, aten_path_test): the quantizer and the
// column-loop options, with a one-line description for failure messages.
#pragma once

#include <cstdint>
#include <string>

#include "solvers/gptq.h"
#include "solvers/quantizer.h"

namespace rotq_test {

struct GptqCase {
  rotq::QuantSpec spec;
  bool act_order;
  bool static_groups;
  int64_t blocksize;
};

inline std::string describe(const GptqCase& c) {
  return c.spec.describe() + (c.act_order ? " act_order" : "") +
         (c.static_groups ? " static" : "") + " block" + std::to_string(c.blocksize);
}

inline rotq::GptqOptions options(const GptqCase& c) {
  rotq::GptqOptions o;
  o.act_order = c.act_order;
  o.static_groups = c.static_groups;
  o.blocksize = c.blocksize;
  return o;
}

}  // namespace rotq_test
