// fastspline CUDA ops, host side: launchers on raw device pointers and a stream.
// Bit layout: see csrc/cpu/kernels.h. Each launcher throws std::runtime_error
// naming the CUDA call that failed (pybind11 turns it into RuntimeError).
#pragma once

#include <cstdint>
#include <string>

namespace fastspline {
namespace cuda {

std::string runtime_info();  // compiled CUDA version and architectures
int device_count();          // throws when there is no usable driver

// out[r] = popcount(a[r]) (b == nullptr) or popcount(a[r] ^ b[r]) over w words; rows contiguous.
void hamming_rows(const uint64_t* a, const uint64_t* b, int64_t rows, int64_t w, int64_t* out, std::uintptr_t stream);

}  // namespace cuda
}  // namespace fastspline
