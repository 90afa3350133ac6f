// pack_signs' threshold, shared by the CPU and CUDA kernels.
#pragma once

#include <cmath>

namespace fastspline {

// The largest float32 <= t. For float32 values x (and so for float16/bfloat16
// values, which float32 holds exactly), (x > t) == (x > round_down_to_float(t)):
// comparing in float32 stays exact.
static inline float round_down_to_float(double t) {
  if (std::isnan(t)) return (float)t;
  float f = (float)t;
  if ((double)f > t) f = std::nextafter(f, -INFINITY);
  return f;
}

}  // namespace fastspline
