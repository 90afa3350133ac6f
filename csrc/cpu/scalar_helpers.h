// Scalar helpers included by each ISA file. Everything here is `static`, so each
// translation unit keeps its own copy compiled with its own flags (no ODR merge).
#pragma once

#include <cstdint>
#include <cstring>

#include "kernels.h"

namespace fastspline {
namespace {

static inline float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// IEEE binary16 -> float32, exact (subnormals, inf and NaN included).
static inline float half_to_float(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1Fu;
  uint32_t mantissa = h & 0x3FFu;
  if (exponent == 0x1F) return bits_to_float(sign | 0x7F800000u | (mantissa << 13));
  if (exponent == 0) {
    if (mantissa == 0) return bits_to_float(sign);
    // Subnormal: value = mantissa * 2^-24, exact in float32.
    float v = (float)mantissa * 5.9604644775390625e-08f;
    return sign ? -v : v;
  }
  return bits_to_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

static inline float bfloat16_to_float(uint16_t h) { return bits_to_float((uint32_t)h << 16); }

// Element i of a contiguous array of `dtype` compared with the threshold.
static inline bool element_greater(const void* x, int dtype, int64_t i, float thr32, double thr64) {
  switch (dtype) {
    case kFloat32: return static_cast<const float*>(x)[i] > thr32;
    case kFloat64: return static_cast<const double*>(x)[i] > thr64;
    case kFloat16: return half_to_float(static_cast<const uint16_t*>(x)[i]) > thr32;
    default: return bfloat16_to_float(static_cast<const uint16_t*>(x)[i]) > thr32;
  }
}

// NaN test of element i: float16 / bfloat16 by their bits (exponent all ones, mantissa non-zero).
static inline bool element_nan(const void* x, int dtype, int64_t i) {
  switch (dtype) {
    case kFloat32: { float v = static_cast<const float*>(x)[i]; return v != v; }
    case kFloat64: { double v = static_cast<const double*>(x)[i]; return v != v; }
    case kFloat16: return (static_cast<const uint16_t*>(x)[i] & 0x7FFFu) > 0x7C00u;
    default: return (static_cast<const uint16_t*>(x)[i] & 0x7FFFu) > 0x7F80u;
  }
}

static inline bool any_nan_scalar(const void* x, int dtype, int64_t begin, int64_t end) {
  bool found = false;
  for (int64_t i = begin; i < end; ++i) found |= element_nan(x, dtype, i);
  return found;
}

// Bits of elements [begin, end) (end - begin <= 64) of a contiguous array, bit 0 = begin.
static inline uint64_t pack_word_scalar(const void* x, int dtype, int64_t begin, int64_t end, float thr32,
                                        double thr64) {
  uint64_t word = 0;
  for (int64_t i = begin; i < end; ++i) word |= (uint64_t)element_greater(x, dtype, i, thr32, thr64) << (i - begin);
  return word;
}

// pack_rows of a KernelTable from the file's single-row packer.
template <void (*PackRow)(const void*, int, int64_t, float, double, uint64_t*)>
void pack_rows_with(const void* x, int dtype, int64_t rows, int64_t row_stride, int64_t n, float thr32, double thr64,
                    uint64_t* out) {
  const int64_t bytes = dtype == kFloat64 ? 8 : dtype == kFloat32 ? 4 : 2, w = (n + 63) / 64;
  const char* p = static_cast<const char*>(x);
  for (int64_t r = 0; r < rows; ++r) PackRow(p + r * row_stride * bytes, dtype, n, thr32, thr64, out + r * w);
}

}  // namespace
}  // namespace fastspline
