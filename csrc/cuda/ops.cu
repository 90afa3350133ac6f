// fastspline CUDA kernels (first full set; correctness first, then speed).
//   pack_signs     one warp per output word: two __ballot_sync over 64 elements;
//                  coalesced when the packed dim is contiguous. Bandwidth-bound.
//   unpack_bits    one thread per output bool. Bandwidth-bound.
//   hamming_rows   one warp per row, __popcll + warp shuffle reduction. Bandwidth-bound.
//   hamming_total  grid-stride, block reduction, one atomicAdd per block.
//   hamming_cdist  64x64 output tile per 256-thread block, 16-word slices of A and B
//                  in shared memory (word-major, so reads are broadcasts or
//                  consecutive: no bank conflicts), 4x4 register block per thread.
//                  popc-bound. (A b1 tensor-core path is the CUDA issue's next step.)
//   bit_transpose  one warp per 64x64 bit block: 64 pairs of ballots.
// 64-bit indexing throughout.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "../threshold.h"
#include "ops.h"

namespace fastspline {
namespace cuda {
namespace {

using u64 = unsigned long long;
constexpr unsigned kFull = 0xffffffffu;
constexpr int kThreads = 256;
constexpr int kMaxDims = 8;

void check(cudaError_t status, const char* call) {
  if (status != cudaSuccess)
    throw std::runtime_error(std::string("fastspline._cuda: ") + call + " failed: " + cudaGetErrorName(status) + ": " +
                             cudaGetErrorString(status));
}

cudaStream_t as_stream(std::uintptr_t stream) { return reinterpret_cast<cudaStream_t>(stream); }

unsigned grid_for(int64_t work_items, int items_per_block) {
  const int64_t blocks = (work_items + items_per_block - 1) / items_per_block;
  return (unsigned)std::max<int64_t>(1, std::min<int64_t>(blocks, 1 << 20));  // grid-stride loops cover the rest
}

// ------------------------------------------------------------------ pack / unpack

struct Lead {  // the leading (non-packed) dims of pack_signs' input
  int ndim;
  int64_t sizes[kMaxDims];
  int64_t strides[kMaxDims];
};

__device__ inline int64_t row_offset(const Lead& lead, int64_t row) {
  int64_t offset = 0;
  for (int k = lead.ndim - 1; k >= 0; --k) {
    offset += (row % lead.sizes[k]) * lead.strides[k];
    row /= lead.sizes[k];
  }
  return offset;
}

template <typename T>
__device__ inline bool greater(const T* x, int64_t i, float thr32, double thr64);
template <>
__device__ inline bool greater<float>(const float* x, int64_t i, float thr32, double) {
  return x[i] > thr32;  // false for NaN
}
template <>
__device__ inline bool greater<double>(const double* x, int64_t i, float, double thr64) {
  return x[i] > thr64;
}
template <>
__device__ inline bool greater<__half>(const __half* x, int64_t i, float thr32, double) {
  return __half2float(x[i]) > thr32;
}
template <>
__device__ inline bool greater<__nv_bfloat16>(const __nv_bfloat16* x, int64_t i, float thr32, double) {
  return __bfloat162float(x[i]) > thr32;
}

template <typename T>
__global__ void pack_signs_kernel(const T* __restrict__ x, Lead lead, int64_t n, int64_t stride_n, int64_t rows,
                                  float thr32, double thr64, u64* __restrict__ out) {
  const int lane = threadIdx.x % 32;
  const int64_t w = (n + 63) / 64, words = rows * w;
  const int64_t warps = (int64_t)gridDim.x * (blockDim.x / 32);
  for (int64_t q = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32; q < words; q += warps) {
    const int64_t r = q / w, k = q % w;
    const int64_t base = row_offset(lead, r);
    const int64_t j_lo = k * 64 + lane, j_hi = j_lo + 32;
    const bool b_lo = j_lo < n && greater<T>(x, base + j_lo * stride_n, thr32, thr64);
    const bool b_hi = j_hi < n && greater<T>(x, base + j_hi * stride_n, thr32, thr64);
    const unsigned lo = __ballot_sync(kFull, b_lo), hi = __ballot_sync(kFull, b_hi);
    if (lane == 0) out[q] = (u64)lo | ((u64)hi << 32);
  }
}

__global__ void unpack_bits_kernel(const u64* __restrict__ words, int64_t rows, int64_t w, int64_t n_bits,
                                   bool* __restrict__ out) {
  const int64_t total = rows * n_bits, step = (int64_t)gridDim.x * blockDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
    const int64_t r = i / n_bits, j = i % n_bits;
    out[i] = (words[r * w + j / 64] >> (j % 64)) & 1ull;
  }
}

// ------------------------------------------------------------------ row-wise

__global__ void hamming_rows_kernel(const u64* __restrict__ a, const u64* __restrict__ b, int64_t rows, int64_t w,
                                    int64_t* __restrict__ out) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = (int64_t)gridDim.x * (blockDim.x / 32);
  for (int64_t r = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32; r < rows; r += warps) {
    long long sum = 0;
    for (int64_t k = lane; k < w; k += 32) {
      u64 v = a[r * w + k];
      if (b != nullptr) v ^= b[r * w + k];
      sum += __popcll(v);
    }
    for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_down_sync(kFull, sum, offset);
    if (lane == 0) out[r] = sum;
  }
}

__global__ void hamming_total_kernel(const u64* __restrict__ a, const u64* __restrict__ b, int64_t n,
                                     unsigned long long* __restrict__ total) {
  __shared__ unsigned long long partial[kThreads / 32];
  unsigned long long sum = 0;
  const int64_t step = (int64_t)gridDim.x * blockDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step) sum += __popcll(a[i] ^ b[i]);
  for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_down_sync(kFull, sum, offset);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = sum;
  __syncthreads();
  if (threadIdx.x < 32) {
    sum = threadIdx.x < blockDim.x / 32 ? partial[threadIdx.x] : 0;
    for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_down_sync(kFull, sum, offset);
    if (threadIdx.x == 0) atomicAdd(total, sum);
  }
}

// ------------------------------------------------------------------ all-pairs

constexpr int kTile = 64;   // rows of A and of B per block
constexpr int kSlice = 16;  // words of each row staged in shared memory at a time

__global__ void __launch_bounds__(kThreads) cdist_kernel(const u64* __restrict__ a, int64_t n,
                                                         const u64* __restrict__ b, int64_t m, int64_t w,
                                                         int32_t* __restrict__ out, int64_t ldo) {
  // Word-major slices: As[k][row]. A thread reads As[k][ty + 16 i] (the same address
  // across a half-warp: broadcast) and Bs[k][tx + 16 j] (16 consecutive words).
  __shared__ u64 As[kSlice][kTile];
  __shared__ u64 Bs[kSlice][kTile];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int64_t r0 = (int64_t)blockIdx.y * kTile, c0 = (int64_t)blockIdx.x * kTile;
  int acc[4][4] = {};
  for (int64_t k0 = 0; k0 < w; k0 += kSlice) {
    const int slice = (int)min((int64_t)kSlice, w - k0);
    for (int e = threadIdx.x; e < kTile * kSlice; e += kThreads) {
      const int row = e / kSlice, kk = e % kSlice;  // consecutive threads read consecutive words
      const int64_t gr = r0 + row, gc = c0 + row, gk = k0 + kk;
      As[kk][row] = (gr < n && kk < slice) ? a[gr * w + gk] : 0ull;
      Bs[kk][row] = (gc < m && kk < slice) ? b[gc * w + gk] : 0ull;
    }
    __syncthreads();
    for (int kk = 0; kk < slice; ++kk) {
      u64 av[4], bv[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) av[i] = As[kk][ty + 16 * i];
#pragma unroll
      for (int j = 0; j < 4; ++j) bv[j] = Bs[kk][tx + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] += __popcll(av[i] ^ bv[j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t row = r0 + ty + 16 * i, col = c0 + tx + 16 * j;
      if (row < n && col < m) out[row * ldo + col] = acc[i][j];
    }
}

// ------------------------------------------------------------------ transpose

__global__ void bit_transpose_kernel(const u64* __restrict__ words, int64_t n, int64_t w, int64_t n_bits,
                                     u64* __restrict__ out) {
  const int lane = threadIdx.x % 32;
  const int64_t row_blocks = (n + 63) / 64, tasks = row_blocks * w;
  const int64_t warps = (int64_t)gridDim.x * (blockDim.x / 32);
  for (int64_t task = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32; task < tasks; task += warps) {
    const int64_t rb = task / w, k = task % w;
    const int64_t r_lo = rb * 64 + lane, r_hi = r_lo + 32;
    const u64 w_lo = r_lo < n ? words[r_lo * w + k] : 0ull;
    const u64 w_hi = r_hi < n ? words[r_hi * w + k] : 0ull;
    u64 mine_lo = 0, mine_hi = 0;  // output words of bits c = lane and c = lane + 32
    for (int c = 0; c < 64; ++c) {
      const unsigned lo = __ballot_sync(kFull, (w_lo >> c) & 1ull);
      const unsigned hi = __ballot_sync(kFull, (w_hi >> c) & 1ull);
      if (lane == c % 32) {
        const u64 word = (u64)lo | ((u64)hi << 32);
        if (c < 32) mine_lo = word; else mine_hi = word;
      }
    }
    const int64_t c_lo = k * 64 + lane, c_hi = c_lo + 32;
    if (c_lo < n_bits) out[c_lo * row_blocks + rb] = mine_lo;
    if (c_hi < n_bits) out[c_hi * row_blocks + rb] = mine_hi;
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

void pack_signs(const void* x, int dtype, const std::vector<int64_t>& sizes, const std::vector<int64_t>& strides,
                double threshold, uint64_t* out, std::uintptr_t stream) {
  if (sizes.empty() || sizes.size() != strides.size() || sizes.size() > kMaxDims + 1)
    throw std::invalid_argument("pack_signs: sizes and strides must have equal length in [1, 9]");
  Lead lead{};
  lead.ndim = (int)sizes.size() - 1;
  int64_t rows = 1;
  for (int k = 0; k < lead.ndim; ++k) {
    lead.sizes[k] = sizes[k];
    lead.strides[k] = strides[k];
    rows *= sizes[k];
  }
  const int64_t n = sizes.back(), stride_n = strides.back(), words = rows * ((n + 63) / 64);
  if (words == 0) return;
  const float thr32 = round_down_to_float(threshold);
  const unsigned grid = grid_for(words, kThreads / 32);
  cudaStream_t s = as_stream(stream);
  u64* o = reinterpret_cast<u64*>(out);
  switch (dtype) {
    case 0: pack_signs_kernel<float><<<grid, kThreads, 0, s>>>((const float*)x, lead, n, stride_n, rows, thr32, threshold, o); break;
    case 1: pack_signs_kernel<double><<<grid, kThreads, 0, s>>>((const double*)x, lead, n, stride_n, rows, thr32, threshold, o); break;
    case 2: pack_signs_kernel<__half><<<grid, kThreads, 0, s>>>((const __half*)x, lead, n, stride_n, rows, thr32, threshold, o); break;
    case 3:
      pack_signs_kernel<__nv_bfloat16><<<grid, kThreads, 0, s>>>((const __nv_bfloat16*)x, lead, n, stride_n, rows, thr32,
                                                                 threshold, o);
      break;
    default: throw std::invalid_argument("pack_signs: unknown dtype code " + std::to_string(dtype));
  }
  check(cudaGetLastError(), "pack_signs_kernel launch");
}

void unpack_bits(const uint64_t* words, int64_t rows, int64_t w, int64_t n_bits, bool* out, std::uintptr_t stream) {
  if (rows * n_bits == 0) return;
  unpack_bits_kernel<<<grid_for(rows * n_bits, kThreads), kThreads, 0, as_stream(stream)>>>(
      reinterpret_cast<const u64*>(words), rows, w, n_bits, out);
  check(cudaGetLastError(), "unpack_bits_kernel launch");
}

void hamming_rows(const uint64_t* a, const uint64_t* b, int64_t rows, int64_t w, int64_t* out, std::uintptr_t stream) {
  if (rows == 0) return;
  hamming_rows_kernel<<<grid_for(rows, kThreads / 32), kThreads, 0, as_stream(stream)>>>(
      reinterpret_cast<const u64*>(a), reinterpret_cast<const u64*>(b), rows, w, out);
  check(cudaGetLastError(), "hamming_rows_kernel launch");
}

void hamming_total(const uint64_t* a, const uint64_t* b, int64_t n, int64_t* total, std::uintptr_t stream) {
  if (n == 0) return;
  const unsigned grid = (unsigned)std::min<int64_t>(grid_for(n, kThreads * 8), 4096);
  hamming_total_kernel<<<grid, kThreads, 0, as_stream(stream)>>>(
      reinterpret_cast<const u64*>(a), reinterpret_cast<const u64*>(b), n, reinterpret_cast<unsigned long long*>(total));
  check(cudaGetLastError(), "hamming_total_kernel launch");
}

void hamming_cdist(const uint64_t* a, int64_t n, const uint64_t* b, int64_t m, int64_t w, int32_t* out, int64_t ldo,
                   std::uintptr_t stream) {
  if (n == 0 || m == 0) return;
  const int64_t col_tiles = (m + kTile - 1) / kTile;
  if (col_tiles > 0x7fffffff) throw std::invalid_argument("hamming_cdist: b has too many rows for one grid");
  // gridDim.y is at most 65535: launch row bands of 65535 tiles.
  const int64_t band = (int64_t)65535 * kTile;
  for (int64_t r = 0; r < n; r += band) {
    const int64_t rows = std::min(band, n - r);
    dim3 grid((unsigned)col_tiles, (unsigned)((rows + kTile - 1) / kTile));
    cdist_kernel<<<grid, kThreads, 0, as_stream(stream)>>>(reinterpret_cast<const u64*>(a) + r * w, rows,
                                                            reinterpret_cast<const u64*>(b), m, w, out + r * ldo, ldo);
    check(cudaGetLastError(), "cdist_kernel launch");
  }
}

void bit_transpose(const uint64_t* words, int64_t n, int64_t w, int64_t n_bits, uint64_t* out, std::uintptr_t stream) {
  const int64_t tasks = ((n + 63) / 64) * w;
  if (tasks == 0 || n_bits == 0) return;
  bit_transpose_kernel<<<grid_for(tasks, kThreads / 32), kThreads, 0, as_stream(stream)>>>(
      reinterpret_cast<const u64*>(words), n, w, n_bits, reinterpret_cast<u64*>(out));
  check(cudaGetLastError(), "bit_transpose_kernel launch");
}

}  // namespace cuda
}  // namespace fastspline
