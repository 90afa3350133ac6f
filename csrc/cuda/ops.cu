// fastspline CUDA kernels. First kernel: row-wise popcount / Hamming distance,
// one warp per row, grid-stride over rows; bandwidth-bound (each word read once).
// 64-bit indexing throughout.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "ops.h"

namespace fastspline {
namespace cuda {
namespace {

void check(cudaError_t status, const char* call) {
  if (status != cudaSuccess)
    throw std::runtime_error(std::string("fastspline._cuda: ") + call + " failed: " + cudaGetErrorName(status) + ": " +
                             cudaGetErrorString(status));
}

__global__ void hamming_rows_kernel(const unsigned long long* __restrict__ a, const unsigned long long* __restrict__ b,
                                    int64_t rows, int64_t w, int64_t* __restrict__ out) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = (int64_t)gridDim.x * (blockDim.x / 32);
  for (int64_t r = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32; r < rows; r += warps) {
    long long sum = 0;
    for (int64_t k = lane; k < w; k += 32) {
      unsigned long long v = a[r * w + k];
      if (b != nullptr) v ^= b[r * w + k];
      sum += __popcll(v);
    }
    for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_down_sync(0xffffffffu, sum, offset);
    if (lane == 0) out[r] = sum;
  }
}

}  // namespace

std::string runtime_info() {
  return "CUDA " + std::to_string(CUDART_VERSION / 1000) + "." + std::to_string(CUDART_VERSION % 1000 / 10);
}

int device_count() {
  int count = 0;
  check(cudaGetDeviceCount(&count), "cudaGetDeviceCount");
  return count;
}

void hamming_rows(const uint64_t* a, const uint64_t* b, int64_t rows, int64_t w, int64_t* out, std::uintptr_t stream) {
  if (rows == 0) return;
  const int threads = 256;
  const int64_t blocks = (rows + threads / 32 - 1) / (threads / 32);
  const unsigned grid = (unsigned)(blocks < 65535 * 8 ? blocks : 65535 * 8);
  hamming_rows_kernel<<<grid, threads, 0, reinterpret_cast<cudaStream_t>(stream)>>>(
      reinterpret_cast<const unsigned long long*>(a), reinterpret_cast<const unsigned long long*>(b), rows, w, out);
  check(cudaGetLastError(), "hamming_rows_kernel launch");
}

}  // namespace cuda
}  // namespace fastspline
