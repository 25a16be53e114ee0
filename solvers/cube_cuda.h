// OptRot's bfloat16 gradient reads (AR)^∘3 rounded to bfloat16. As ATen ops that is two passes
// over the m×C float32 AR (pow, then the conversion: 3 float32 reads/writes and a bfloat16 write
// per element); this kernel is one (a float32 read, a bfloat16 write), the same values: x·x·x in
// float32 (ATen's pow(x, 3)) rounded to nearest-even (c10::BFloat16's conversion).
#pragma once

#include <cstdint>

namespace rotq::detail {

// y[i] = bfloat16(x[i]·x[i]·x[i]) for n contiguous float32 x on the device; y holds n bfloat16 (as
// raw 16-bit values). Launches on the legacy default stream (rotq's ATen work runs there) and
// raises rotq::Error on a launch failure.
void cube_to_bf16_cuda(const float* x, uint16_t* y, int64_t n);

}  // namespace rotq::detail
