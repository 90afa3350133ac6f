// fastspline CUDA kernels (first full set; correctness first, then speed).
//   pack_signs     stream: rows with 16-byte aligned starts at one stride (the common
//                  activation layouts): 16-byte loads, V bits per vector ORed across
//                  32 / V lanes by shuffles. rows: any other layout, one warp per output
//                  word, two __ballot_sync over 64 elements, 8 words per step with their
//                  loads issued together. A strided packed dim with a contiguous
//                  neighbour (NCHW channels) takes one thread per word instead (columns),
//                  the warp's threads on adjacent rows; where 16 / sizeof(T) adjacent
//                  rows make an aligned 16-byte vector, one thread per vector of rows and
//                  word with 16-byte loads (columns16). Bandwidth-bound.
//   unpack_bits    one thread per output bool. Bandwidth-bound.
//   hamming_rows   one warp per row, __popcll + warp shuffle reduction. Bandwidth-bound.
//   hamming_total  grid-stride, block reduction, one atomicAdd per block.
//   hamming_cdist  64x64 output tile per 256-thread block, 16-word slices of A and B
//                  in shared memory (word-major, so reads are broadcasts or
//                  consecutive: no bank conflicts), 4x4 register block per thread.
//                  popc-bound.
//   cdist_mma      binary tensor cores (sm_80+): mma.sync m16n8k256 b1 with .xor.popc
//                  (or .and.popc + row popcounts), 128x128 output tile per 8-warp block,
//                  64x32 per warp, 512-bit K slices in padded shared memory
//                  (conflict-free fragment loads). Zero pad bits add nothing to XOR/AND.
//                  Long codes: a 3-stage cp.async ring of 1,024-bit K slices in
//                  swizzled shared memory and ldmatrix, 128x128 tiles or 256x128 with
//                  64x64 per warp (cdist_mma_async_kernel; backends/cuda.py times them).
//   bit_transpose  one warp per 64x64 bit block: 64 pairs of ballots.
// 64-bit indexing throughout.
#ifdef FASTSPLINE_CUDA_SIM  // the CPU emulator of tests/cuda_sim.py
#include "sim/cuda_sim.h"
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

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

#ifdef FASTSPLINE_CUDA_SIM
#define FASTSPLINE_DYNAMIC_SMEM(name) unsigned char* name = sim::dynamic_smem()
#else
#define FASTSPLINE_DYNAMIC_SMEM(name) extern __shared__ __align__(16) unsigned char name[]
#endif

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

// The stride s with row r at r * s elements, when the leading dims collapse to one (dims
// of size 1 ignored); -1 when they do not. n when there is at most one row.
int64_t row_stride(const Lead& lead, int64_t n) {
  int64_t s = -2, expect = 0;  // -2: no dim of size > 1 seen yet
  for (int k = lead.ndim - 1; k >= 0; --k) {
    if (lead.sizes[k] == 1) continue;
    if (s == -2) {
      s = lead.strides[k];
      expect = s * lead.sizes[k];
    } else {
      if (lead.strides[k] != expect) return -1;
      expect *= lead.sizes[k];
    }
  }
  return s == -2 ? n : s;
}

// x > threshold as real numbers: float32/16 compare with the threshold rounded down to
// float32 (exact for them), float64 with the float64 floor. False for NaN.
__device__ inline bool above(float v, float thr32, double) { return v > thr32; }
__device__ inline bool above(double v, float, double thr64) { return v > thr64; }
__device__ inline bool above(__half v, float thr32, double) { return __half2float(v) > thr32; }
__device__ inline bool above(__nv_bfloat16 v, float thr32, double) { return __bfloat162float(v) > thr32; }

// Rows packed along a contiguous (or short-strided) dim: each warp packs kU consecutive
// output words per step with two ballots each, issuing all 2 kU loads first (clamped to
// element 0 when out of range, then masked) so enough bytes are in flight; a grid of a
// few blocks per SM walks the words.
template <typename T, int kU>
__global__ void __launch_bounds__(kThreads) pack_rows_kernel(const T* __restrict__ x, Lead lead, int64_t n,
                                                             int64_t stride_n, int64_t rows, float thr32,
                                                             double thr64, u64* __restrict__ out) {
  const int lane = threadIdx.x % 32;
  const int64_t w = (n + 63) / 64, words = rows * w;
  const int64_t warps = (int64_t)gridDim.x * (blockDim.x / 32);
  for (int64_t q0 = ((int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32) * kU; q0 < words; q0 += warps * kU) {
    int64_t r = q0 / w, k = q0 % w;
    int64_t base = row_offset(lead, r);
    T v_lo[kU], v_hi[kU];
    bool m_lo[kU], m_hi[kU];
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const bool valid = q0 + u < words;
      const int64_t j_lo = k * 64 + lane, j_hi = j_lo + 32;
      m_lo[u] = valid && j_lo < n;
      m_hi[u] = valid && j_hi < n;
      v_lo[u] = __ldg(x + (m_lo[u] ? base + j_lo * stride_n : 0));
      v_hi[u] = __ldg(x + (m_hi[u] ? base + j_hi * stride_n : 0));
      if (++k == w && q0 + u + 1 < words) {
        k = 0;
        base = row_offset(lead, ++r);
      }
    }
    u64 mine = 0;
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const unsigned l = __ballot_sync(kFull, m_lo[u] && above(v_lo[u], thr32, thr64));
      const unsigned h = __ballot_sync(kFull, m_hi[u] && above(v_hi[u], thr32, thr64));
      if (lane == u) mine = (u64)l | ((u64)h << 32);
    }
    if (lane < kU && q0 + lane < words) out[q0 + lane] = mine;
  }
}

// 16 bytes of T (V = 16 / sizeof(T) elements, the first in the lowest address) -> V bits.
template <typename T>
__device__ inline unsigned vector_bits(uint4 raw, float thr32, double thr64) {
  const unsigned q[4] = {raw.x, raw.y, raw.z, raw.w};
  unsigned bits = 0;
  if constexpr (sizeof(T) == 8) {
#pragma unroll
    for (int i = 0; i < 2; ++i) bits |= (unsigned)above(__hiloint2double((int)q[2 * i + 1], (int)q[2 * i]), thr32, thr64) << i;
  } else if constexpr (sizeof(T) == 4) {
#pragma unroll
    for (int i = 0; i < 4; ++i) bits |= (unsigned)above(__uint_as_float(q[i]), thr32, thr64) << i;
  } else {
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const unsigned short h = (unsigned short)(q[i / 2] >> (16 * (i % 2)));
      T v;
      if constexpr (std::is_same_v<T, __half>) v = __ushort_as_half(h); else v = __ushort_as_bfloat16(h);
      bits |= (unsigned)above(v, thr32, thr64) << i;
    }
  }
  return bits;
}

// Rows of n elements with 16-byte aligned starts (n % V == 0, V = 16 / sizeof(T)), row r
// at x + r * row_stride. Each row is padded to vpad = 64 w / V vectors (whole output
// words), so over the padded stream p = r * vpad + j the output is one run of 32-bit
// words: vector p's V bits go to bit V (p % kL) of word p / kL (kL = 32 / V lanes share
// one), whatever the row. Lane l of a warp step takes p = p0 + 32 u + l (u < kU, all
// loads issued first; vectors past a row's n elements load nothing and give 0 bits),
// the kL lanes of a word OR their bits by shuffles and the first stores it. kDense:
// n % 64 == 0 and row_stride == n, so p is the vector's own index (no division).
template <typename T, int kU, bool kDense>
__global__ void __launch_bounds__(kThreads) pack_stream_kernel(const T* __restrict__ x, int64_t rows, int64_t vr,
                                                               int64_t vpad, int64_t row_stride, float thr32,
                                                               double thr64, unsigned* __restrict__ out) {
  constexpr int V = 16 / (int)sizeof(T), kL = 32 / V;
  const int lane = threadIdx.x % 32;
  const int64_t total = rows * vpad;
  const bool narrow = total <= 0xffffffffll;  // 32-bit division suffices
  const int64_t warps = (int64_t)gridDim.x * (blockDim.x / 32);
  for (int64_t p0 = ((int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32) * 32 * kU; p0 < total;
       p0 += warps * 32 * kU) {
    uint4 raw[kU];
    bool has[kU];
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const int64_t p = p0 + 32 * u + lane;
      const uint4* src = reinterpret_cast<const uint4*>(x) + p;
      has[u] = p < total;
      if (!kDense && has[u]) {
        const int64_t r = narrow ? (int64_t)((unsigned)p / (unsigned)vpad) : p / vpad, j = p - r * vpad;
        has[u] = j < vr;
        src = reinterpret_cast<const uint4*>(x + r * row_stride) + j;
      }
      raw[u] = has[u] ? __ldcs(src) : make_uint4(0, 0, 0, 0);  // streamed: read once
    }
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const int64_t p = p0 + 32 * u + lane;
      unsigned word = has[u] ? vector_bits<T>(raw[u], thr32, thr64) << (V * (lane % kL)) : 0u;
#pragma unroll
      for (int offset = 1; offset < kL; offset *= 2) word |= __shfl_xor_sync(kFull, word, offset);
      if (lane % kL == 0 && p < total) out[p / kL] = word;
    }
  }
}

int sm_count();

// Blocks of kThreads threads (with `smem` bytes of dynamic shared memory, the same on
// every launch of `kernel`) that fit on all SMs at once (cached per kernel and device).
template <auto kernel>
unsigned resident_grid(int smem = 0) {
  static int cached[64] = {};  // per kernel (one instantiation each) and device
  int device = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  if (device < 0 || device >= 64) device = 0;
  if (cached[device] == 0) {
    int per_sm = 0;
    check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, smem),
          "cudaOccupancyMaxActiveBlocksPerMultiprocessor");
    cached[device] = std::max(1, per_sm);
  }
  return (unsigned)(cached[device] * sm_count());
}

int sm_count() {
  static int cached[64] = {};
  int device = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  if (device < 0 || device >= 64) device = 0;
  if (cached[device] == 0) {
    int sms = 0;
    check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute");
    cached[device] = sms > 0 ? sms : 1;
  }
  return cached[device];
}

// Packing along a strided dim whose neighbours along the innermost other dim are
// adjacent (e.g. the channels of NCHW activations): one thread per output word, the
// threads of a warp on consecutive rows, so each of the 64 loads a thread makes is
// one coalesced access across the warp. No transposed copy of x is made.
template <typename T>
__global__ void pack_columns_kernel(const T* __restrict__ x, Lead lead, int64_t n, int64_t stride_n, int64_t rows,
                                    float thr32, double thr64, u64* __restrict__ out) {
  const int64_t w = (n + 63) / 64, words = rows * w, step = (int64_t)gridDim.x * blockDim.x;
  for (int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; t < words; t += step) {
    const int64_t k = t / rows, r = t % rows;  // consecutive threads: consecutive rows
    const T* p = x + row_offset(lead, r) + k * 64 * stride_n;
    const int bits = (int)min((int64_t)64, n - k * 64);
    u64 word = 0;
#pragma unroll 16
    for (int j = 0; j < bits; ++j) word |= (u64)above(p[j * stride_n], thr32, thr64) << j;
    out[r * w + k] = word;
  }
}

// The same layouts when V = 16 / sizeof(T) neighbouring rows are one aligned 16-byte
// vector (the innermost other dim's size, every other stride and x: whole vectors): one
// thread per V rows and output word, 16-byte loads, so a warp's load is 512 consecutive
// bytes instead of 128, with a quarter (float32) of the load instructions.
template <typename T>
__global__ void pack_columns16_kernel(const T* __restrict__ x, Lead lead, int64_t n, int64_t stride_n, int64_t rows,
                                      float thr32, double thr64, u64* __restrict__ out) {
  constexpr int V = 16 / (int)sizeof(T);
  const int64_t w = (n + 63) / 64, groups = rows / V, tasks = groups * w, step = (int64_t)gridDim.x * blockDim.x;
  for (int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; t < tasks; t += step) {
    const int64_t k = t / groups, r = t % groups * V;  // consecutive threads: consecutive vectors of rows
    const uint4* p = reinterpret_cast<const uint4*>(x + row_offset(lead, r) + k * 64 * stride_n);
    const int64_t step_n = stride_n / V;  // in vectors
    const int bits = (int)min((int64_t)64, n - k * 64);
    u64 words[V] = {};
#pragma unroll 8
    for (int j = 0; j < bits; ++j) {
      const unsigned b = vector_bits<T>(__ldcs(p + j * step_n), thr32, thr64);
#pragma unroll
      for (int i = 0; i < V; ++i) words[i] |= (u64)((b >> i) & 1u) << j;
    }
#pragma unroll
    for (int i = 0; i < V; ++i) out[(r + i) * w + k] = words[i];
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

// ------------------------------------------------------------------ all-pairs, binary tensor cores

// Blocks per SM the big-shared-memory kernels aim for: two on sm_90 (228 KB per SM), one
// on sm_80 (164 KB), where capping registers for a second block would only spill.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
#define FASTSPLINE_BIG_SMEM_BLOCKS 1
#else
#define FASTSPLINE_BIG_SMEM_BLOCKS 2
#endif

constexpr int kMmaTile = 128;                  // rows of A and of B per block
constexpr int kMmaChunks = 2;                  // 256-bit K chunks per shared-memory slice
constexpr int kMmaWords = kMmaChunks * 4;      // u64 words per row per slice
constexpr int kMmaStride = kMmaChunks * 8 + 4; // u32 per row in shared memory (+4: no bank conflicts)

#if defined(FASTSPLINE_CUDA_SIM)
template <bool kXor>
__device__ inline void mma_b1(int (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) { sim::mma_b1(kXor, d, a, b); }
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
template <bool kXor>
__device__ inline void mma_b1(int (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
  if constexpr (kXor) {
    asm volatile(
        "mma.sync.aligned.m16n8k256.row.col.s32.b1.b1.s32.xor.popc {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k256.row.col.s32.b1.b1.s32.and.popc {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
}
#endif

// The rows r0 + row0, r0 + row0 + step, ... of x (n rows of w words) a thread stages, from
// word `word` on: the first one's address as an integer (a row past the end is never
// formed as a pointer) and how many of rows r0 + row0 .. r0 + row0 + cap - 1 exist.
struct StagedRows {
  std::uintptr_t first = 0;
  int left = 0;
  StagedRows() = default;
  __device__ StagedRows(const u64* x, int64_t n, int64_t w, int64_t r0, int row0, int word, int cap)
      : first(reinterpret_cast<std::uintptr_t>(x) + (std::uintptr_t)((r0 + row0) * w + word) * 8),
        left((int)std::min<int64_t>(std::max<int64_t>(n - r0 - row0, 0), cap)) {}
};

// Fragments (PTX ISA, mma.m16n8k256 .b1): lane = 4 g + t. A (16x256, row): a0 = row g bits
// 32t.., a1 = row g+8 bits 32t.., a2 = row g bits 128+32t.., a3 = row g+8 bits 128+32t..;
// B (256x8, col): b0 = column g bits 32t.., b1 = column g bits 128+32t..; C (16x8): c0,c1 =
// row g columns 2t, 2t+1; c2,c3 = row g+8. Only the pairing of A's and B's K bits matters.
// With kXor false the tensor cores count a AND b, and d = |a| + |b| - 2 |a AND b|.
// One 128x128 tile (rows r0.. of a, c0.. of b) into acc, this warp's 64x32 piece: K in
// 512-bit slices staged synchronously in As / Bs (kMmaTile * kMmaStride u32 each). pop:
// kXor false, the popcount of row threadIdx.x % 128 of A (threads < 128) or of B. Ends
// with __syncthreads (As / Bs free again).
template <bool kXor>
__device__ __forceinline__ void mma_tile(const u64* __restrict__ a, int64_t n, const u64* __restrict__ b, int64_t m,
                                         int64_t w, int64_t r0, int64_t c0, unsigned* As, unsigned* Bs,
                                         int (&acc)[4][4][4], int& pop) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int wm = (warp / 4) * 64, wn = (warp % 4) * 32;  // this warp's 64x32 piece of the tile
  // Staging: this thread takes word kk of rows row0 + kRowStep q of A and of B.
  constexpr int kRowStep = kThreads / kMmaWords;
  const int kk = threadIdx.x % kMmaWords, row0 = threadIdx.x / kMmaWords;
  const StagedRows ra(a, n, w, r0, row0, kk, kMmaTile), rb(b, m, w, c0, row0, kk, kMmaTile);
  const std::uintptr_t step = (std::uintptr_t)w * kRowStep * 8;
  for (int64_t k0 = 0; k0 < w; k0 += kMmaWords) {
    const bool in_k = k0 + kk < w;
#pragma unroll
    for (int q = 0; q < kMmaTile / kRowStep; ++q) {
      const std::uintptr_t off = q * step + (std::uintptr_t)k0 * 8;
      const u64 va = in_k && kRowStep * q < ra.left ? __ldg(reinterpret_cast<const u64*>(ra.first + off)) : 0ull;
      const u64 vb = in_k && kRowStep * q < rb.left ? __ldg(reinterpret_cast<const u64*>(rb.first + off)) : 0ull;
      const int row = row0 + kRowStep * q;
      *reinterpret_cast<u64*>(&As[row * kMmaStride + 2 * kk]) = va;
      *reinterpret_cast<u64*>(&Bs[row * kMmaStride + 2 * kk]) = vb;
    }
    __syncthreads();
    if (!kXor) {  // 16-byte reads of my row (80-byte rows): no bank conflicts
      const uint4* src = reinterpret_cast<const uint4*>((threadIdx.x < kMmaTile ? As : Bs) +
                                                        (threadIdx.x % kMmaTile) * kMmaStride);
#pragma unroll
      for (int q = 0; q < kMmaWords / 2; ++q) {
        const uint4 v = src[q];
        pop += __popc(v.x) + __popc(v.y) + __popc(v.z) + __popc(v.w);
      }
    }
#pragma unroll
    for (int c = 0; c < kMmaChunks; ++c) {
      unsigned fa[4][4], fb[4][2];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const unsigned* p = &As[(wm + 16 * i + g) * kMmaStride + 8 * c + t];
        fa[i][0] = p[0];
        fa[i][1] = p[8 * kMmaStride];
        fa[i][2] = p[4];
        fa[i][3] = p[8 * kMmaStride + 4];
      }
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const unsigned* p = &Bs[(wn + 8 * j + g) * kMmaStride + 8 * c + t];
        fb[j][0] = p[0];
        fb[j][1] = p[4];
      }
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) mma_b1<kXor>(acc[i][j], fa[i], fb[j]);
    }
    __syncthreads();
  }
#endif
}

template <int WarpsN, int FragN>
struct WarpTiles {  // 8 warps, kWarpsN across the tile's columns; each 64 x 8 kFragN
  static constexpr int kWarpsN = WarpsN, kFragN = FragN;
  static constexpr int kWarpsM = kThreads / 32 / kWarpsN;
  static constexpr int kRows = kWarpsM * 64;          // rows of A per block
  static constexpr int kCols = kWarpsN * 8 * kFragN;  // rows of B per block
};
using SquareTiles = WarpTiles<4, 4>;  // 128 x 128 tiles, 64 x 32 per warp
using WideTiles = WarpTiles<2, 8>;    // 256 x 128 tiles, 64 x 64 per warp

// The tile's distances from acc, for this warp's pairs (tile-local row lr, even column
// lc), warps laid out as in WarpTiles: per row, at = emit.row(lr, lc0) once (lc0 = this
// lane's first column), then emit(at, lc, lc - lc0, d(lr, lc), d(lr, lc + 1)) for its
// pairs. kXor false: pop_a(lr) / pop_b(lc) give the row popcounts of the tile's A and B
// rows (read once per lane: 8 rows, 2 kFragN columns), and d = |a| + |b| - 2 |a AND b|.
template <bool kXor, int kWarpsN, int kFragN, typename Pop, typename Emit>
__device__ __forceinline__ void tile_results(const int (&acc)[4][kFragN][4], Pop pop_a, Pop pop_b, Emit emit) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int wm = (warp / kWarpsN) * 64, lc0 = (warp % kWarpsN) * 8 * kFragN + 2 * t;
  int pb[kFragN][2] = {};
  if (!kXor) {
#pragma unroll
    for (int j = 0; j < kFragN; ++j) {
      pb[j][0] = pop_b(lc0 + 8 * j);
      pb[j][1] = pop_b(lc0 + 8 * j + 1);
    }
  }
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int h = 0; h < 2; ++h) {  // h = 0: row g (c0, c1); h = 1: row g + 8 (c2, c3)
      const int lr = wm + 16 * i + g + 8 * h;
      const int pa = kXor ? 0 : pop_a(lr);
      const auto at = emit.row(lr, lc0);
#pragma unroll
      for (int j = 0; j < kFragN; ++j) {
        int v0 = acc[i][j][2 * h], v1 = acc[i][j][2 * h + 1];
        if (!kXor) {
          v0 = pa + pb[j][0] - 2 * v0;
          v1 = pa + pb[j][1] - 2 * v1;
        }
        emit(at, lc0 + 8 * j, 8 * j, v0, v1);
      }
    }
}

constexpr int kDistStride = kMmaTile + 8;  // a tile's distances in shared memory: int2 stores hit 2 banks at most

// Row popcounts of a tile from an array in shared memory.
struct SharedPops {
  const int* pop;
  __device__ int operator()(int i) const { return pop[i]; }
};

// Stores a distance pair into a tile's distances in shared memory (kDistStride per row).
struct StoreShared {
  int* dist;
  __device__ int* row(int lr, int lc0) const { return dist + lr * kDistStride + lc0; }
  __device__ void operator()(int* at, int, int dc, int v0, int v1) const {
    *reinterpret_cast<int2*>(at + dc) = make_int2(v0, v1);
  }
};

// Stores a distance pair into row-major int32 out (ldo per row), n x m valid, for the tile
// at (r0, c0). kChecked false: the caller has checked (interior()) that the tile lies
// wholly inside and its pairs are 8-byte aligned (out and ldo even), so every pair is one
// unchecked 8-byte store; else rows past n get a null row, columns are checked.
template <bool kChecked>
struct StorePair {
  int32_t* tile;  // out at (r0, c0)
  int64_t ldo;
  int rows, cols;  // of the tile inside n x m (capped: a tile has at most 256 of either)
  bool pairs;      // 8-byte pair stores are aligned
  __device__ StorePair(int32_t* out, int64_t ldo, int64_t r0, int64_t c0, int64_t n, int64_t m)
      : tile(out + r0 * ldo + c0), ldo(ldo), rows((int)std::min<int64_t>(n - r0, 1 << 16)),
        cols((int)std::min<int64_t>(m - c0, 1 << 16)),
        pairs(((reinterpret_cast<std::uintptr_t>(out) | (std::uintptr_t)ldo * 4 | (std::uintptr_t)c0 * 4) & 7) == 0) {}
  __device__ bool interior(int tile_rows, int tile_cols) const {
    return pairs && rows >= tile_rows && cols >= tile_cols;
  }
  __device__ int32_t* row(int lr, int lc0) const {
    return !kChecked || lr < rows ? tile + lr * ldo + lc0 : nullptr;
  }
  __device__ void operator()(int32_t* at, int lc, int dc, int v0, int v1) const {
    if (!kChecked) {
      *reinterpret_cast<int2*>(at + dc) = make_int2(v0, v1);
      return;
    }
    if (at == nullptr) return;
    if (pairs && lc + 1 < cols) {
      *reinterpret_cast<int2*>(at + dc) = make_int2(v0, v1);
    } else {
      if (lc < cols) at[dc] = v0;
      if (lc + 1 < cols) at[dc + 1] = v1;
    }
  }
};

// emit_to(store) for the tile (r0, c0) of kRows x kCols into out, with the StorePair that
// fits it: unchecked for interior tiles.
template <int kRows, int kCols, typename EmitTo>
__device__ __forceinline__ void store_pairs(int32_t* out, int64_t ldo, int64_t r0, int64_t c0, int64_t n, int64_t m,
                                            EmitTo emit_to) {
  const StorePair<true> checked(out, ldo, r0, c0, n, m);
  if (checked.interior(kRows, kCols))
    emit_to(StorePair<false>(out, ldo, r0, c0, n, m));
  else
    emit_to(checked);
}

// Stores a tile's distances from mma.sync accumulators into out (store_pairs).
template <bool kXor, typename Tiles, typename Pop>
__device__ __forceinline__ void store_tile(const int (&acc)[4][Tiles::kFragN][4], Pop pop_a, Pop pop_b, int32_t* out,
                                           int64_t ldo, int64_t r0, int64_t c0, int64_t n, int64_t m) {
  store_pairs<Tiles::kRows, Tiles::kCols>(out, ldo, r0, c0, n, m, [&](auto store) {
    tile_results<kXor, Tiles::kWarpsN, Tiles::kFragN>(acc, pop_a, pop_b, store);
  });
}

template <bool kXor>
__global__ void __launch_bounds__(kThreads) cdist_mma_kernel(const u64* __restrict__ a, int64_t n,
                                                             const u64* __restrict__ b, int64_t m, int64_t w,
                                                             int32_t* __restrict__ out, int64_t ldo) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  __shared__ __align__(16) unsigned As[kMmaTile * kMmaStride];
  __shared__ __align__(16) unsigned Bs[kMmaTile * kMmaStride];
  __shared__ int pop_a[kMmaTile], pop_b[kMmaTile];
  const int64_t r0 = (int64_t)blockIdx.y * kMmaTile, c0 = (int64_t)blockIdx.x * kMmaTile;
  int acc[4][4][4] = {};
  int pop = 0;
  mma_tile<kXor>(a, n, b, m, w, r0, c0, As, Bs, acc, pop);
  if (!kXor) {
    (threadIdx.x < kMmaTile ? pop_a : pop_b)[threadIdx.x % kMmaTile] = pop;
    __syncthreads();
  }
  store_tile<kXor, SquareTiles>(acc, SharedPops{pop_a}, SharedPops{pop_b}, out, ldo, r0, c0, n, m);
#endif
}

// Long codes: 1024-bit K slices (16 words a row) move global -> shared with cp.async (16
// bytes each, zero-filled past w) in a kStages-deep ring, so loads of slice s + 2 overlap
// the MMAs of slice s; fragments come from ldmatrix.x4 (its 8x8 b16 fragment is the b1
// one: lane 4 g + t holds row g, bits 32 t .. 32 t + 31 of a 128-bit row piece). A row's
// 8 pieces of 16 bytes sit swizzled, piece p at p ^ (row % 8): the 8 rows an ldmatrix
// matrix reads, and the 8 pieces of a row a cp.async step writes, fall in distinct banks.
// Two tile shapes (WarpTiles): 128 x 128 (2 blocks per SM on sm_90) and 256 x 128 with
// 64 x 64 per warp (one block per SM; per MMA, a third less shared-memory fragment
// traffic and a quarter less L2 traffic). Needs w even and 16-byte aligned a and b (the
// launcher checks). kXor false: the row popcounts come from pops_a / pops_b
// (hamming_rows_kernel beforehand), so the main loop's shared-memory reads are the
// fragments alone.
constexpr int kAsyncWords = 16;                // u64 words per row per slice
// Slices of w words (w = 0: one empty slice).
__host__ __device__ inline int64_t slice_count(int64_t w) { return std::max<int64_t>(1, (w + kAsyncWords - 1) / kAsyncWords); }
constexpr int kAsyncChunks = kAsyncWords / 4;  // 256-bit MMA K chunks per slice
constexpr int kStages = 3;

template <typename Tiles, int kRing = kStages>
constexpr int async_smem_bytes() {  // the ring: 98,304 (square), 147,456 (wide), 196,608 (wide wgmma)
  return kRing * (Tiles::kRows + Tiles::kCols) * kAsyncWords * 8;
}

#if defined(FASTSPLINE_CUDA_SIM)
__device__ inline unsigned smem_addr(const void* p) { return sim::smem_addr(p); }
__device__ inline void cp_async16(unsigned dst, const void* src, bool valid) { sim::cp_async16(dst, src, valid); }
__device__ inline void cp_async_commit() { sim::cp_async_commit(); }
template <int kPending>
__device__ inline void cp_async_wait() { sim::cp_async_wait(kPending); }
__device__ inline void ldmatrix_x4(unsigned (&r)[4], unsigned addr) { sim::ldmatrix_x4(r, addr); }
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
__device__ inline unsigned smem_addr(const void* p) { return (unsigned)__cvta_generic_to_shared(p); }

__device__ inline void cp_async16(unsigned dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0));
}

__device__ inline void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }

template <int kPending>  // waits until at most kPending committed groups are in flight
__device__ inline void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending)); }

__device__ inline void ldmatrix_x4(unsigned (&r)[4], unsigned addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
#endif

// wgmma (sm_90a): b1 m64nNk256 .and.popc (N = 128 or 256), both operands K-major in shared
// memory with the 128-byte swizzle (the ring's layout: 128-byte rows, 16-byte piece p of
// row r at p ^ (r % 8), 1,024-byte aligned 8-row groups). The descriptor: start address,
// stride 1,024 bytes between 8-row groups, swizzle mode 1 (128 bytes); a K step of 256
// bits advances the start by 32 bytes. Accumulators (per warpgroup, 64 x N s32, N / 2 a
// thread): warp w of the warpgroup holds rows 16 w .. 16 w + 15; lane 4 g + t holds, for
// j < N / 8, d[4 j] and d[4 j + 1] at row 16 w + g, columns 8 j + 2 t and + 1, d[4 j + 2],
// d[4 j + 3] at row + 8.
// The first 1,024-byte aligned shared address at or after p (the descriptors' swizzle is of
// address bits, so a wgmma operand's 8-row groups start there); kernels reserve 1,024 more.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800  // smem_addr's (the emulator's too)
__device__ inline unsigned char* align_1k(unsigned char* p) { return p + ((1024 - (smem_addr(p) & 1023)) & 1023); }
#endif

__device__ inline uint64_t wgmma_desc(unsigned addr) {
  return (uint64_t)((addr & 0x3ffff) >> 4) | (uint64_t)1 << 16 | (uint64_t)(1024 >> 4) << 32 | (uint64_t)1 << 62;
}
#if defined(FASTSPLINE_CUDA_SIM)
#define FASTSPLINE_WGMMA 1
template <int kAcc>
__device__ inline void wgmma_and(int (&d)[kAcc], uint64_t da, uint64_t db) { sim::wgmma_and(d, da, db); }
template <int kAcc>
__device__ inline void wgmma_fence(int (&)[kAcc]) {}
__device__ inline void fence_proxy_async() {}
__device__ inline void wgmma_commit() { sim::wgmma_commit(); }
template <int kPending, int kAcc>
__device__ inline void wgmma_wait(int (&)[kAcc]) { sim::wgmma_wait(kPending); }
#elif defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define FASTSPLINE_WGMMA 1
#define FASTSPLINE_D8(i) "+r"(d[i]), "+r"(d[i + 1]), "+r"(d[i + 2]), "+r"(d[i + 3]), "+r"(d[i + 4]), "+r"(d[i + 5]), \
                         "+r"(d[i + 6]), "+r"(d[i + 7])
#define FASTSPLINE_D64(i) FASTSPLINE_D8(i), FASTSPLINE_D8(i + 8), FASTSPLINE_D8(i + 16), FASTSPLINE_D8(i + 24), \
                          FASTSPLINE_D8(i + 32), FASTSPLINE_D8(i + 40), FASTSPLINE_D8(i + 48), FASTSPLINE_D8(i + 56)
// m64n128k256 (64 accumulators a thread) and m64n256k256 (128).
__device__ inline void wgmma_and(int (&d)[64], uint64_t da, uint64_t db) {
  asm volatile(
      "wgmma.mma_async.sync.aligned.m64n128k256.s32.b1.b1.and.popc {"
      "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,"
      "%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,"
      "%57,%58,%59,%60,%61,%62,%63"
      "}, %64, %65, 1;\n"
      : FASTSPLINE_D64(0)
      : "l"(da), "l"(db));
}
__device__ inline void wgmma_and(int (&d)[128], uint64_t da, uint64_t db) {
  asm volatile(
      "wgmma.mma_async.sync.aligned.m64n256k256.s32.b1.b1.and.popc {"
      "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,"
      "%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,"
      "%57,%58,%59,%60,%61,%62,%63,%64,%65,%66,%67,%68,%69,%70,%71,%72,%73,%74,%75,%76,%77,%78,%79,%80,%81,%82,%83,"
      "%84,%85,%86,%87,%88,%89,%90,%91,%92,%93,%94,%95,%96,%97,%98,%99,%100,%101,%102,%103,%104,%105,%106,%107,%108,"
      "%109,%110,%111,%112,%113,%114,%115,%116,%117,%118,%119,%120,%121,%122,%123,%124,%125,%126,%127"
      "}, %128, %129, 1;\n"
      : FASTSPLINE_D64(0), FASTSPLINE_D64(64)
      : "l"(da), "l"(db));
}
// Pins the accumulators' registers at this point (as CUTLASS's warpgroup_fence_operand):
// no read or write of them moves across a fence, an arrive or a wait.
template <int kAcc>
__device__ inline void pin(int (&d)[kAcc]) {
#pragma unroll
  for (int i = 0; i < kAcc; ++i) asm volatile("" : "+r"(d[i])::"memory");
}
template <int kAcc>
__device__ inline void wgmma_fence(int (&d)[kAcc]) {
  pin(d);
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ inline void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
// This thread's shared-memory writes (st.shared, cp.async) made visible to the async proxy
// wgmma reads through; then a barrier orders them before another thread's wgmma.
__device__ inline void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
// Waits until at most kPending of this warpgroup's committed groups are in flight.
template <int kPending, int kAcc>
__device__ inline void wgmma_wait(int (&d)[kAcc]) {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
  pin(d);
}
#undef FASTSPLINE_D64
#undef FASTSPLINE_D8
#endif

// Clusters, mbarriers and bulk copies (sm_90a; the emulator's sim:: twins): a CTA's rank in
// its cluster, the cluster-wide barrier, mbarriers addressed by shared address (arrivals on
// CTA `rank`'s barrier at the same offset: mapa), and cp.async.bulk global -> shared of
// every CTA in `mask` (same offsets), each completing `bytes` on its own barrier at `bar`.
#if defined(FASTSPLINE_CUDA_SIM)
#define FASTSPLINE_CLUSTER 1
__device__ inline unsigned cluster_rank() { return sim::cluster_ctarank(); }
__device__ inline void cluster_sync() { sim::cluster_sync(); }
__device__ inline void mbar_init(unsigned bar, unsigned count) { sim::mbarrier_init(bar, count); }
__device__ inline void mbar_fence_init() {}
__device__ inline void mbar_arrive(unsigned bar, unsigned rank) { sim::mbarrier_arrive(bar, rank, 0); }
__device__ inline void mbar_expect(unsigned bar, unsigned bytes) { sim::mbarrier_arrive(bar, sim::cluster_ctarank(), bytes); }
__device__ inline void mbar_wait(unsigned bar, unsigned parity) { sim::mbarrier_wait(bar, parity); }
__device__ inline void bulk_load(unsigned dst, const void* src, unsigned bytes, unsigned bar, unsigned mask) {
  sim::bulk_copy(dst, src, bytes, bar, mask);
}
#elif defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define FASTSPLINE_CLUSTER 1
__device__ inline unsigned cluster_rank() {
  unsigned r;
  asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(r));
  return r;
}
__device__ inline void cluster_sync() {
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}
__device__ inline void mbar_init(unsigned bar, unsigned count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
// The barriers' initialisation made visible to the cluster (before a cluster_sync).
__device__ inline void mbar_fence_init() { asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory"); }
__device__ inline void mbar_arrive(unsigned bar, unsigned rank) {
  asm volatile(
      "{\n.reg .b32 remote;\nmapa.shared::cluster.u32 remote, %0, %1;\n"
      "mbarrier.arrive.shared::cluster.b64 _, [remote];\n}\n" ::"r"(bar),
      "r"(rank)
      : "memory");
}
__device__ inline void mbar_expect(unsigned bar, unsigned bytes) {  // this CTA's barrier: tx += bytes, one arrival
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ inline void mbar_wait(unsigned bar, unsigned parity) {  // until the phase of this parity has completed
  asm volatile(
      "{\n.reg .pred done;\nWAIT:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT;\n}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
}
__device__ inline void bulk_load(unsigned dst, const void* src, unsigned bytes, unsigned bar, unsigned mask) {
  if (mask == 1u << cluster_rank())
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(dst),
                 "l"(src), "r"(bytes), "r"(bar)
                 : "memory");
  else
    asm volatile(
        "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster [%0], [%1], %2, [%3], "
        "%4;\n" ::"r"(dst),
        "l"(src), "r"(bytes), "r"(bar), "h"((unsigned short)mask)
        : "memory");
}
#endif

// Row popcounts of a tile's rows from 64-bit counts in global memory (0 past the end).
struct GlobalPops {
  const int64_t* pop;
  int64_t first, count;
  __device__ int operator()(int i) const { return first + i < count ? (int)pop[first + i] : 0; }
};

// The mma.sync side of stream_slices: each warp's 64 x 8 kFragN piece of the tile from
// ldmatrix fragments, acc[4][kFragN][4] (tile_results' layout).
// ldmatrix row addresses of this lane: A matrix q = lane / 8 is rows (q % 2) * 8 .. + 7 of
// an m16 tile, piece 2 c + q / 2 of 256-bit chunk c (a0..a3); B matrices are the low and
// high 128 bits (pieces 2 c, 2 c + 1) of n8 tiles j and j + 1 (b0, b1 of j, then of j + 1).
// Every such row is r8 = lane % 8 past a multiple of 8, so its pieces sit at p ^ r8.
template <bool kXor, typename Tiles>
struct MmaSyncMath {
  static constexpr int kFragN = Tiles::kFragN, kRowU32 = kAsyncWords * 2;
  static constexpr int kRing = kStages, kDepth = 0;  // ring stages; slices left in flight after slice()
  static constexpr bool kLoadAfter = false;          // stream_slices refills before slice()
  int acc[4][kFragN][4] = {};
  int r8, a_row, a_piece, b_row, b_piece;
  __device__ MmaSyncMath() {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, q = lane / 8;
    const int wm = (warp / Tiles::kWarpsN) * 64, wn = (warp % Tiles::kWarpsN) * 8 * kFragN;
    r8 = lane % 8;
    a_row = wm + (q % 2) * 8 + r8;
    a_piece = q / 2;
    b_row = Tiles::kRows + wn + (q / 2) * 8 + r8;
    b_piece = q % 2;
  }
  __device__ __forceinline__ void landed() {}  // this thread's copies of the next slice are in
  __device__ __forceinline__ void finish() {}  // a tile's last slice: its results are in acc
  // One K slice from the ring stage at shared address `stage`.
  __device__ __forceinline__ void slice(unsigned stage) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    const unsigned a_base = stage + a_row * kRowU32 * 4, b_base = stage + b_row * kRowU32 * 4;
#pragma unroll
    for (int c = 0; c < kAsyncChunks; ++c) {
      const unsigned a_off = ((2 * c + a_piece) ^ r8) * 16, b_off = ((2 * c + b_piece) ^ r8) * 16;
      unsigned fa[4][4], fb[kFragN][2];
#pragma unroll
      for (int i = 0; i < 4; ++i) ldmatrix_x4(fa[i], a_base + 16 * i * kRowU32 * 4 + a_off);
#pragma unroll
      for (int j = 0; j < kFragN; j += 2) {
        unsigned r[4];
        ldmatrix_x4(r, b_base + 8 * j * kRowU32 * 4 + b_off);
        fb[j][0] = r[0];
        fb[j][1] = r[1];
        fb[j + 1][0] = r[2];
        fb[j + 1][1] = r[3];
      }
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < kFragN; ++j) mma_b1<kXor>(acc[i][j], fa[i], fb[j]);
    }
#endif
  }
  __device__ __forceinline__ void clear() {
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < kFragN; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[i][j][e] = 0;
  }
};

// This block's stream of `count` tiles (tile_of(i, r0, c0): tile i's first rows of A and
// of B): their K slices run as one stream through the cp.async ring in smem
// (async_smem_bytes<Tiles, Math::kRing>()), so the ring loads the next tile's first slices
// while the current tile's last are multiplied by math.slice(stage). math.slice may leave
// the last Math::kDepth slices' math in flight (wgmma), so the ring loads kRing - 1 -
// kDepth slices ahead: the stage it refills was read by a slice that every thread has
// waited for before the barrier. With Math::kLoadAfter the refill comes after math.slice
// and a second barrier instead, when every thread has waited for one slice more: one
// slice further ahead (kRing - kDepth). After a tile's last slice, math.finish() (nothing in
// flight), on_tile(r0, c0) (the tile's results are in math), then math.clear(); every
// thread calls it, so it may hold barriers. The loading side keeps a cursor (tile, slice,
// ring stage) that steps by one entry, the multiplying side nested loops: no division per
// slice, tile_of once per tile on each side.
template <typename Tiles, typename Math, typename TileOf, typename OnTile>
__device__ __forceinline__ void stream_slices(const u64* __restrict__ a, int64_t n, const u64* __restrict__ b,
                                              int64_t m, int64_t w, int64_t count, unsigned* smem, TileOf tile_of,
                                              Math& math, OnTile on_tile) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  constexpr int kRows = Tiles::kRows, kCols = Tiles::kCols, kRowU32 = kAsyncWords * 2;
  constexpr int kStageU32 = (kRows + kCols) * kRowU32;  // A rows, then B rows
  constexpr bool kAfter = Math::kLoadAfter;  // refill after math.slice and a second barrier
  constexpr int kRing = Math::kRing, kAhead = kRing - 1 - Math::kDepth + (kAfter ? 1 : 0);  // slices loaded ahead
  static_assert(kAhead >= 1, "stream_slices: a ring of kDepth + 2 stages at least");
  const int64_t slices = slice_count(w);
  const int64_t total = count * slices;  // the stream of (tile, slice)
  const unsigned smem_base = smem_addr(smem);

  // Loading: 8 consecutive threads on one row's 8 pieces (128 bytes), 32 rows per step; A's
  // rows first (whole steps: kRows % 32 == 0), then B's. This thread's rows are row0 + 32 i,
  // all with row % 8 == row0 % 8, so their swizzled pieces sit at one offset.
  const int piece = threadIdx.x % 8, row0 = threadIdx.x / 8;
  const unsigned dst0 = smem_base + (row0 * kRowU32 + 4 * (piece ^ (row0 % 8))) * 4;
  const std::uintptr_t a_addr = reinterpret_cast<std::uintptr_t>(a), b_addr = reinterpret_cast<std::uintptr_t>(b);
  const std::uintptr_t row_bytes = (std::uintptr_t)w * 32 * 8;  // from one of this thread's rows to the next
  int64_t lt = 0, ls = 0;  // the next entry to load: slice ls of tile lt ...
  int lstage = 0;          // ... into this stage
  StagedRows ra, rb;       // this thread's rows of A / B in tile lt, at its piece
  auto start_tile = [&]() {
    int64_t r0, c0;
    tile_of(lt, r0, c0);
    ra = StagedRows(a, n, w, r0, row0, 2 * piece, kRows);
    rb = StagedRows(b, m, w, c0, row0, 2 * piece, kCols);
  };
  auto load = [&]() {
    const int64_t k = ls * kAsyncWords;
    const bool in_k = k + 2 * piece < w;  // w even: a piece is wholly inside or wholly outside
    const unsigned dst = dst0 + lstage * kStageU32 * 4;
    const std::uintptr_t a_k = ra.first + (std::uintptr_t)k * 8, b_k = rb.first + (std::uintptr_t)k * 8;
#pragma unroll
    for (int i = 0; i < (kRows + kCols) / 32; ++i) {
      const bool is_a = i < kRows / 32;  // known when unrolled
      const int li = is_a ? i : i - kRows / 32;
      const bool valid = in_k && 32 * li < (is_a ? ra.left : rb.left);
      const std::uintptr_t src = (is_a ? a_k : b_k) + li * row_bytes;
      cp_async16(dst + i * 32 * kRowU32 * 4, reinterpret_cast<const void*>(valid ? src : (is_a ? a_addr : b_addr)),
                 valid);
    }
    if (++lstage == kRing) lstage = 0;
    if (++ls == slices) {
      ls = 0;
      if (++lt < count) start_tile();
    }
  };

  if (count > 0) start_tile();
#pragma unroll
  for (int g = 0; g < kAhead; ++g) {
    if (g < total) load();
    cp_async_commit();
  }
  // Multiplying: entry g is slice cs of tile ct, in ring stage cstage. A loop of slices
  // inside a loop of tiles, not one loop over the entries with a branch to the per-tile code:
  // where that branch rejoined, ptxas put a full wgmma wait on every slice (C7517,
  // "warpgroup.wait is injected"), which undid WgmmaMath's slice left in flight.
  int64_t g = 0;
  int cstage = 0;
  for (int64_t ct = 0; ct < count; ++ct) {
    for (int64_t cs = 0; cs < slices; ++cs, ++g) {
      cp_async_wait<kAhead - 1>();
      math.landed();
      __syncthreads();  // entry g is in; everyone is done with entry g - 1 - kDepth's stage
      if (!kAfter) {
        if (g + kAhead < total) load();
        cp_async_commit();
      }
      math.slice(smem_base + cstage * kStageU32 * 4);
      if (kAfter) {
        __syncthreads();  // everyone is done with entry g - kDepth's stage
        if (g + kAhead < total) load();
        cp_async_commit();
      }
      if (++cstage == kRing) cstage = 0;
    }
    int64_t r0, c0;  // the tile's last slice is in
    tile_of(ct, r0, c0);
    math.finish();
    on_tile(r0, c0);
    math.clear();
  }
  cp_async_wait<0>();  // only empty groups can be left; no block exits with copies in flight
#endif
}

// stream_slices with mma.sync (MmaSyncMath): on_tile(r0, c0, acc) gets the accumulators.
template <bool kXor, typename Tiles, typename TileOf, typename OnTile>
__device__ __forceinline__ void stream_tiles(const u64* __restrict__ a, int64_t n, const u64* __restrict__ b,
                                             int64_t m, int64_t w, int64_t count, unsigned* smem, TileOf tile_of,
                                             OnTile on_tile) {
  MmaSyncMath<kXor, Tiles> math;
  stream_slices<Tiles>(a, n, b, m, w, count, smem, tile_of, math,
                       [&](int64_t r0, int64_t c0) { on_tile(r0, c0, math.acc); });
}

// A persistent grid's tiles for this block: of the n x m pairs in Tiles' tiles, block b takes
// tiles b, b + gridDim.x, ... (column tiles fastest, so blocks running together share A's
// rows); count of them, and tile i's first rows as stream_tiles' tile_of.
template <typename Tiles>
struct PersistentTiles {
  int64_t col_tiles, count;
  __device__ PersistentTiles(int64_t n, int64_t m) : col_tiles((m + Tiles::kCols - 1) / Tiles::kCols) {
    const int64_t tiles = (n + Tiles::kRows - 1) / Tiles::kRows * col_tiles;
    count = blockIdx.x < tiles ? (tiles - 1 - blockIdx.x) / gridDim.x + 1 : 0;
  }
  __device__ void operator()(int64_t i, int64_t& r0, int64_t& c0) const {
    const int64_t t = blockIdx.x + i * gridDim.x;
    r0 = t / col_tiles * Tiles::kRows;
    c0 = t % col_tiles * Tiles::kCols;
  }
};

// Blocks per SM a pipelined cdist kernel is compiled for: square AND tiles
// FASTSPLINE_BIG_SMEM_BLOCKS, wide tiles one, XOR ones one (on sm_90 their MMA is emulated
// and capping registers for a second block spills). A launch bound, not a template
// argument: the host pass and every device pass must name the same kernels.
template <bool kXor, typename Tiles>
constexpr int kAsyncMinBlocks = kXor || std::is_same_v<Tiles, WideTiles> ? 1 : FASTSPLINE_BIG_SMEM_BLOCKS;

// Persistent (PersistentTiles), one stream_tiles stream, each tile's results stored from
// registers.
template <bool kXor, typename Tiles>
__global__ void __launch_bounds__(kThreads, (kAsyncMinBlocks<kXor, Tiles>)) cdist_mma_async_kernel(
    const u64* __restrict__ a, int64_t n, const u64* __restrict__ b, int64_t m, int64_t w, int32_t* __restrict__ out,
    int64_t ldo, const int64_t* __restrict__ pops_a, const int64_t* __restrict__ pops_b) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  FASTSPLINE_DYNAMIC_SMEM(dyn_smem);
  const PersistentTiles<Tiles> tiles(n, m);
  stream_tiles<kXor, Tiles>(
      a, n, b, m, w, tiles.count, reinterpret_cast<unsigned*>(dyn_smem), tiles,
      [&](int64_t r0, int64_t c0, const int (&acc)[4][Tiles::kFragN][4]) {
        store_tile<kXor, Tiles>(acc, GlobalPops{pops_a, r0, n}, GlobalPops{pops_b, c0, m}, out, ldo, r0, c0, n, m);
      });
#endif
}

// The wgmma side of stream_slices for Tiles of 64 kWarpgroups x N (N = Tiles::kCols, 128
// or 256): warpgroup v takes rows 64 v .. 64 v + 63 of the tile against all N columns, by
// 4 wgmma m64nNk256 per 1,024-bit slice. kDepth 0: each slice's wgmma are waited for in
// slice(); 1: the previous slice's (the newest stays in flight over the next barrier,
// which is why stream_slices then loads one slice less ahead), all of them in finish().
// LoadAfter: stream_slices refills after slice() and a second barrier (one slice further).
template <typename Tiles, int Ring, int Depth, bool LoadAfter = false>
struct WgmmaMath {
  static constexpr int kRing = Ring, kDepth = Depth, kN = Tiles::kCols;
  static constexpr bool kLoadAfter = LoadAfter;
  static_assert(Tiles::kRows == 64 * (kThreads / 128) && (kN == 128 || kN == 256), "WgmmaMath: 64 rows a warpgroup");
  int acc[kN / 2] = {};
  unsigned a_off, b_off;
  __device__ WgmmaMath()
      : a_off((unsigned)(threadIdx.x / 128) * 64 * kAsyncWords * 8), b_off(Tiles::kRows * kAsyncWords * 8) {}
  __device__ __forceinline__ void landed() {
#if defined(FASTSPLINE_WGMMA)
    fence_proxy_async();  // cp.async wrote through the generic proxy; wgmma reads through the async one
#endif
  }
  __device__ __forceinline__ void slice(unsigned stage) {
#if defined(FASTSPLINE_WGMMA)
    wgmma_fence(acc);
    const uint64_t da = wgmma_desc(stage + a_off), db = wgmma_desc(stage + b_off);
#pragma unroll
    for (int c = 0; c < kAsyncChunks; ++c) wgmma_and(acc, da + 2 * c, db + 2 * c);  // + 32 bytes: the start field
    wgmma_commit();
    wgmma_wait<kDepth>(acc);
#endif
  }
  __device__ __forceinline__ void finish() {
#if defined(FASTSPLINE_WGMMA)
    if (kDepth > 0) wgmma_wait<0>(acc);
#endif
  }
  __device__ __forceinline__ void clear() {
#pragma unroll
    for (int i = 0; i < kN / 2; ++i) acc[i] = 0;
  }
};

// A tile's distances from WgmmaMath's accumulators (see wgmma_desc for their layout), with
// the row popcounts: d = |a| + |b| - 2 |a AND b|, emitted as in tile_results.
template <int kAcc, typename Pop, typename Emit>  // kAcc: accumulators a thread, N / 2
__device__ __forceinline__ void wgmma_tile_results(const int (&acc)[kAcc], Pop pop_a, Pop pop_b, Emit emit) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int lr = (warp / 4) * 64 + (warp % 4) * 16 + g, lc0 = 2 * t;
  const int pa0 = pop_a(lr), pa1 = pop_a(lr + 8);
  const auto at0 = emit.row(lr, lc0), at1 = emit.row(lr + 8, lc0);
#pragma unroll
  for (int j = 0; j < kAcc / 4; ++j) {  // both rows per column pair: two popcounts of B live at a time
    const int pb0 = pop_b(lc0 + 8 * j), pb1 = pop_b(lc0 + 8 * j + 1);
    emit(at0, lc0 + 8 * j, 8 * j, pa0 + pb0 - 2 * acc[4 * j], pa0 + pb1 - 2 * acc[4 * j + 1]);
    emit(at1, lc0 + 8 * j, 8 * j, pa1 + pb0 - 2 * acc[4 * j + 2], pa1 + pb1 - 2 * acc[4 * j + 3]);
  }
}

// The wgmma cdist kernels' tiles: 128 x 128 (two warpgroups of m64n128, 2 blocks per SM)
// and 128 x 256 (two of m64n256, one block per SM: a quarter less L2 traffic per pair
// than 128 x 128, and per wgmma half the A reads per column).
struct WgmmaTiles {
  static constexpr int kRows = 128, kCols = 128;
};
struct WgmmaWideTiles {
  static constexpr int kRows = 128, kCols = 256;
};
// The wide kernels' ring: 4 stages of 48 KB, each slice's wgmma one deep in flight. Staging
// 5 refills a stage at the slice's barrier, 2 slices ahead; staging 6 after the slice's
// wgmma and a second barrier, 3 ahead: half as many bytes again in flight per SM (on the
// H200, wgmma-wide's 96 KB in flight moved 1.6 GB from L2 in the time the square kernel's
// 2 x 64 KB moved 2.1 GB), for a second barrier a slice. Only timing tells which wins.
constexpr int kWgmmaWideRing = 4;
using WgmmaSquareMath = WgmmaMath<WgmmaTiles, kStages, 0>;
using WgmmaWideMath = WgmmaMath<WgmmaWideTiles, kWgmmaWideRing, 1>;
using WgmmaDeepMath = WgmmaMath<WgmmaWideTiles, kWgmmaWideRing, 1, true>;

template <typename Tiles, typename Math>
constexpr int kWgmmaSmemBytes = async_smem_bytes<Tiles, Math::kRing>() + 1024;  // + room to align the ring to 1,024

// cdist through wgmma (staging 4: WgmmaTiles, WgmmaSquareMath; staging 5: WgmmaWideTiles,
// WgmmaWideMath; staging 6: WgmmaWideTiles, WgmmaDeepMath; AND, row popcounts from pops_a /
// pops_b): the cp.async ring and persistent
// tiles of cdist_mma_async_kernel. Built with wgmma only for sm_90a (and the emulator):
// elsewhere it only sets *missing (when given) and computes nothing.
template <typename Tiles, typename Math>
__global__ void __launch_bounds__(kThreads, (Tiles::kCols == 128 ? FASTSPLINE_BIG_SMEM_BLOCKS : 1)) cdist_wgmma_kernel(
    const u64* __restrict__ a, int64_t n, const u64* __restrict__ b, int64_t m, int64_t w, int32_t* __restrict__ out,
    int64_t ldo, const int64_t* __restrict__ pops_a, const int64_t* __restrict__ pops_b, int* missing) {
#if defined(FASTSPLINE_WGMMA)
  FASTSPLINE_DYNAMIC_SMEM(dyn_smem);
  const PersistentTiles<Tiles> tiles(n, m);
  Math math;
  const auto on_tile = [&](int64_t r0, int64_t c0) {  // the tile's results are in math.acc
    const GlobalPops pa{pops_a, r0, n}, pb{pops_b, c0, m};
    store_pairs<Tiles::kRows, Tiles::kCols>(out, ldo, r0, c0, n, m,
                                            [&](auto store) { wgmma_tile_results(math.acc, pa, pb, store); });
  };
  stream_slices<Tiles>(a, n, b, m, w, tiles.count, reinterpret_cast<unsigned*>(align_1k(dyn_smem)), tiles, math,
                       on_tile);
#else
  if (missing != nullptr && threadIdx.x == 0 && blockIdx.x == 0) *missing = 1;
#endif
}

// ------------------------------------------------------------------ cdist in clusters (stagings 7, 8)

// Panels: a's rows re-laid out so that each (128-row panel, 1,024-bit slice) is one
// contiguous 16 KB block in the ring's swizzled layout (row i's 16-byte piece p at slot
// p ^ (i % 8)), rows past `rows` and words past w zero: one bulk copy moves it into a ring
// stage. panels * slices * 1,024 pieces, one thread each (grid-stride).
constexpr int kPanelRows = 128;
constexpr int kPanelBytes = kPanelRows * kAsyncWords * 8;  // 16 KB

__global__ void pack_panels_kernel(const u64* __restrict__ x, int64_t rows, int64_t w, int64_t panels, int64_t slices,
                                   uint4* __restrict__ out) {
  const int64_t total = panels * slices * kPanelRows * 8;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t row_in = i / 8;  // (panel, slice, row of the panel), row fastest
    const int r = (int)(row_in % kPanelRows), piece = (int)(i % 8) ^ (r % 8);
    const int64_t ps = row_in / kPanelRows, row = ps / slices * kPanelRows + r;
    const int64_t k = ps % slices * kAsyncWords + 2 * piece;
    u64 lo = 0, hi = 0;
    if (row < rows) {
      if (k < w) lo = x[row * w + k];
      if (k + 1 < w) hi = x[row * w + k + 1];
    }
    out[i] = make_uint4((unsigned)lo, (unsigned)(lo >> 32), (unsigned)hi, (unsigned)(hi >> 32));
  }
}

// Panels of a matrix of `rows` rows: whole tiles of `tile` rows (a multiple of 256).
__host__ __device__ inline int64_t cluster_panels(int64_t rows, int64_t tile = 256) {
  return (rows + tile - 1) / tile * (tile / kPanelRows);
}

// cdist in clusters of 2 x kCN CTAs (sm_90a), each a wide wgmma tile (128 x 256, WgmmaMath
// with one slice in flight) of a 256 x 256 kCN cluster tile: CTA rank r = rm + 2 rn takes
// rows 128 rm .. and columns 256 rn .. of it. Per slice each CTA's thread 0 bulk-copies
// piece rn of its A panel (16 / kCN KB) into the stages of the CTAs on its rows and piece rm
// of its B tile (one 16 KB panel) into those on its columns (multicast), so each A panel
// and B tile crosses L2 once per cluster: per pair a third less L2 traffic than
// wgmma-wide in 2 x 1 clusters, half in 2 x 2; one thread issues the copies. mbarriers per
// stage: full (thread 0's expect_tx of 48 KB, completed by the copies that land in it),
// empty (each warp of each CTA this CTA's copies land in, i.e. on its rows or columns, after
// the slice's wgmma completed: the stage may be refilled in all of them; as CUTLASS's
// PipelineTmaAsync, no arrivals from a CTA that does not read what it writes). kAhead
// slices loaded ahead (kAhead < kClusterRing).
// Cluster tiles column-fastest, cluster c taking c, c + clusters, ...; the row popcounts
// come from pops_a / pops_b (AND).
constexpr int kClusterRing = 4, kClusterAhead = 3;
constexpr int kClusterStageBytes = (WgmmaWideTiles::kRows + WgmmaWideTiles::kCols) * kAsyncWords * 8;  // 48 KB
constexpr int kClusterSmemBytes = 1024 + kClusterRing * kClusterStageBytes + 2 * kClusterRing * 8;  // 197,696

template <int kAhead, int kCN>
__global__ void __launch_bounds__(kThreads, 1) cdist_cluster_kernel(
    const uint4* __restrict__ pa, int64_t n, const uint4* __restrict__ pb, int64_t m, int64_t slices,
    int32_t* __restrict__ out, int64_t ldo, const int64_t* __restrict__ pops_a, const int64_t* __restrict__ pops_b,
    int* missing) {
  static_assert(kAhead >= 1 && kAhead < kClusterRing, "cdist_cluster_kernel: 1 <= kAhead < ring stages");
  static_assert(kCN == 1 || kCN == 2, "cdist_cluster_kernel: clusters of 2 x 1 or 2 x 2");
#if defined(FASTSPLINE_CLUSTER)
  using Tiles = WgmmaWideTiles;
  constexpr int kStage = kClusterStageBytes, kPanel16 = kPanelBytes / 16, kCtas = 2 * kCN, kPiece = kPanelBytes / kCN;
  FASTSPLINE_DYNAMIC_SMEM(dyn_smem);
  const unsigned ring = smem_addr(align_1k(dyn_smem));
  const unsigned full0 = ring + kClusterRing * kStage, empty0 = full0 + 8 * kClusterRing;
  const unsigned rank = cluster_rank();
  if (threadIdx.x == 0) {
    for (int s = 0; s < kClusterRing; ++s) {
      mbar_init(full0 + 8 * s, 1);
      mbar_init(empty0 + 8 * s, (kCN + 1) * kThreads / 32);  // each warp of the CTAs on my rows or columns
    }
    mbar_fence_init();
  }
  cluster_sync();  // both CTAs' barriers are initialised before any copy or arrival reaches them

  const unsigned rm = rank % 2, rn = rank / 2;
  const unsigned a_mask = kCN == 1 ? 1u << rm : 5u << rm, b_mask = 3u << (2 * rn);  // the CTAs on my rows / columns
  const int64_t cluster = blockIdx.x / kCtas, clusters = gridDim.x / kCtas;
  const int64_t col_tiles = (m + 256 * kCN - 1) / (256 * kCN), tiles = (n + 255) / 256 * col_tiles;
  const int64_t count = cluster < tiles ? (tiles - 1 - cluster) / clusters + 1 : 0, total = count * slices;

  // Loading (thread 0): entry e = slice ls of tile lt into stage lstage, whose previous
  // use (entry e - kClusterRing) every CTA it lands in must have released: empty's phase
  // lphase ^ 1.
  int64_t lt = 0, ls = 0;
  int lstage = 0;
  unsigned lphase = 0;
  bool refill = false;  // the ring has wrapped: a stage's previous use must be released first
  const uint4 *a_src = nullptr, *b_src = nullptr;  // tile lt's panels at slice 0
  auto start_tile = [&]() {
    const int64_t t = cluster + lt * clusters;
    a_src = pa + (t / col_tiles * 2 + rm) * slices * kPanel16 + rn * (kPiece / 16);
    b_src = pb + ((t % col_tiles * kCN + rn) * 2 + rm) * slices * kPanel16;
  };
  auto load = [&]() {
    const unsigned stage = ring + lstage * kStage, full = full0 + 8 * lstage;
    if (refill) mbar_wait(empty0 + 8 * lstage, lphase ^ 1);
    mbar_expect(full, kStage);
    bulk_load(stage + rn * kPiece, a_src + ls * kPanel16, kPiece, full, a_mask);
    bulk_load(stage + kPanelBytes * (1 + rm), b_src + ls * kPanel16, kPanelBytes, full, b_mask);
    if (++lstage == kClusterRing) lstage = 0, lphase ^= 1, refill = true;
    if (++ls == slices) {  // the cluster's next tile
      ls = 0;
      lt += 1;
      if (lt < count) start_tile();
    }
  };
  if (threadIdx.x == 0 && count > 0) {
    start_tile();
    for (int e = 0; e < kAhead && e < total; ++e) load();
  }

  // Multiplying: entry g in stage cstage, full's phase cphase. A warp releases a stage
  // (arrives on empty in both CTAs) once the stage's wgmma completed: the previous slice's
  // after this slice's wait, a tile's last after math.finish().
  WgmmaMath<Tiles, kClusterRing, 1> math;
  const bool releases = threadIdx.x % 32 == 0;
  auto release = [&](int stage) {
    __syncwarp();  // every lane of the warp is past its wait (wgmma.wait_group is per warp, aligned)
    if (releases)  // in the CTAs whose copies land in this stage: those on my rows or columns
#pragma unroll
      for (int r = 0; r < kCtas; ++r)
        if (r % 2 == (int)rm || r / 2 == (int)rn) mbar_arrive(empty0 + 8 * stage, r);
  };
  int64_t g = 0;
  int cstage = 0, pstage = 0;
  unsigned cphase = 0;
  for (int64_t ct = 0; ct < count; ++ct) {
    for (int64_t cs = 0; cs < slices; ++cs, ++g) {
      mbar_wait(full0 + 8 * cstage, cphase);
      math.slice(ring + cstage * kStage);
      if (cs > 0) release(pstage);
      if (threadIdx.x == 0 && g + kAhead < total) load();
      pstage = cstage;
      if (++cstage == kClusterRing) cstage = 0, cphase ^= 1;
    }
    const int64_t t = cluster + ct * clusters;
    const int64_t r0 = t / col_tiles * 256 + 128 * rm, c0 = (t % col_tiles * kCN + rn) * 256;
    math.finish();
    release(pstage);
    const GlobalPops pop_a{pops_a, r0, n}, pop_b{pops_b, c0, m};
    store_pairs<Tiles::kRows, Tiles::kCols>(out, ldo, r0, c0, n, m,
                                            [&](auto store) { wgmma_tile_results(math.acc, pop_a, pop_b, store); });
    math.clear();
  }
  cluster_sync();  // no CTA exits while its peer may still copy into it or arrive on its barriers
#else
  if (missing != nullptr && threadIdx.x == 0 && blockIdx.x == 0) *missing = 1;
#endif
}

// ------------------------------------------------------------------ top-k and radius, fused

// Both compute 128x128 tiles with mma_tile (and.popc) and put each tile's distances in
// shared memory (kDistStride int32 per row, aliasing the staging buffers, which are free
// between tiles), where warp w then reads rows 16 w .. 16 w + 15 in 32-column chunks.
constexpr int kStagingBytes = 2 * kMmaTile * kMmaStride * 4;
constexpr int kDistBytes = kMmaTile * kDistStride * 4;
constexpr int kTileSmemBytes = kStagingBytes > kDistBytes ? kStagingBytes : kDistBytes;
constexpr int kTopkMaxK = 32;
constexpr int kTopkSmemBytes = kTileSmemBytes + kMmaTile * kTopkMaxK * 8;  // + sorted lists
constexpr long long kNoKey = 0x7fffffffffffffffll;

// Tile (r0, c0) into dist; on return every thread may read it. smem: kTileSmemBytes.
__device__ __forceinline__ void tile_to_shared(const u64* __restrict__ a, int64_t n, const u64* __restrict__ b,
                                               int64_t m, int64_t w, int64_t r0, int64_t c0, unsigned char* smem,
                                               int* pop_a, int* pop_b) {
  unsigned* As = reinterpret_cast<unsigned*>(smem);
  unsigned* Bs = As + kMmaTile * kMmaStride;
  int acc[4][4][4] = {};
  int pop = 0;
  mma_tile<false>(a, n, b, m, w, r0, c0, As, Bs, acc, pop);  // ends with a barrier: As, Bs free
  (threadIdx.x < kMmaTile ? pop_a : pop_b)[threadIdx.x % kMmaTile] = pop;
  __syncthreads();
  int* dist = reinterpret_cast<int*>(smem);
  tile_results<false, 4, 4>(acc, SharedPops{pop_a}, SharedPops{pop_b}, StoreShared{dist});
  __syncthreads();
}

// Keys (distance << 32 | column): ordering them orders by distance, then lower index.
__device__ __forceinline__ long long shfl_xor_key(long long v, int mask) { return __shfl_xor_sync(kFull, v, mask); }

// Sorts one key per lane ascending across the warp (bitonic network).
__device__ __forceinline__ long long warp_sort(long long v, int lane) {
#pragma unroll
  for (int size = 2; size <= 32; size *= 2)
#pragma unroll
    for (int stride = size / 2; stride > 0; stride /= 2) {
      const long long other = shfl_xor_key(v, stride);
      const bool up = (lane & size) == 0 || size == 32, lower = (lane & stride) == 0;
      v = (lower == up) ? min(v, other) : max(v, other);
    }
  return v;
}

// Merges tile (c0..) of the distances in dist into the lists: warp w takes rows 16 w ..
// 16 w + 15 of the tile, 32 columns at a time; a chunk is skipped when no key beats a
// row's k-th best so far, else sorted and merged (min of the list and the reversed chunk,
// then a bitonic merge). Columns from c_end on count as absent.
__device__ __forceinline__ void topk_merge_tile(const int* dist, long long* lists, int64_t c0, int64_t c_end, int k) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int lr = warp * 16; lr < warp * 16 + 16; ++lr) {
    long long* list = lists + lr * kTopkMaxK;
#pragma unroll
    for (int q = 0; q < kMmaTile / 32; ++q) {
      const int64_t col = c0 + 32 * q + lane;
      const long long key = col < c_end ? ((long long)dist[lr * kDistStride + 32 * q + lane] << 32) | col : kNoKey;
      const long long kth = list[k - 1];
      if (__ballot_sync(kFull, key < kth) == 0) continue;
      const long long sorted = warp_sort(key, lane);
      long long v = min(list[lane], shfl_xor_key(sorted, 31));  // lane i: min(list[i], chunk[31 - i])
#pragma unroll
      for (int stride = 16; stride > 0; stride /= 2) {
        const long long other = shfl_xor_key(v, stride);
        v = (lane & stride) == 0 ? min(v, other) : max(v, other);
      }
      __syncwarp();
      list[lane] = v;
      __syncwarp();
    }
  }
}

// The first k keys of each row's list to cand[row][blockIdx.x][0..k).
__device__ __forceinline__ void topk_lists_out(const long long* lists, int64_t n, int64_t r0, int k, int splits,
                                               long long* cand) {
  for (int e = threadIdx.x; e < kMmaTile * k; e += kThreads) {
    const int lr = e / k, i = e % k;
    if (r0 + lr < n) cand[((r0 + lr) * splits + blockIdx.x) * k + i] = lists[lr * kTopkMaxK + i];
  }
}

// Per-block candidate lists: block (s, y) keeps, for each of its 128 rows, the 32 smallest
// keys over columns [s * cols_per_split, (s + 1) * cols_per_split) as a sorted list in
// shared memory (one key per lane); a 32-column chunk is skipped when no key beats the
// k-th best so far, else sorted and merged (min of the list and the reversed chunk, then a
// bitonic merge). The first k of each list go to cand[row][s][0..k); the caller merges the
// splits. Needs m < 2^31.
__global__ void __launch_bounds__(kThreads, FASTSPLINE_BIG_SMEM_BLOCKS) topk_mma_kernel(const u64* __restrict__ a, int64_t n,
                                                            const u64* __restrict__ b, int64_t m, int64_t w, int k,
                                                            int64_t cols_per_split, int splits,
                                                            long long* __restrict__ cand) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  FASTSPLINE_DYNAMIC_SMEM(dyn_smem);
  unsigned char* smem = dyn_smem;
  __shared__ int pop_a[kMmaTile], pop_b[kMmaTile];
  long long* lists = reinterpret_cast<long long*>(smem + kTileSmemBytes);
  const int* dist = reinterpret_cast<const int*>(smem);
  const int64_t r0 = (int64_t)blockIdx.y * kMmaTile;
  const int64_t c_begin = (int64_t)blockIdx.x * cols_per_split, c_end = min(m, c_begin + cols_per_split);
  for (int e = threadIdx.x; e < kMmaTile * kTopkMaxK; e += kThreads) lists[e] = kNoKey;
  __syncthreads();  // lists are read by other warps (also when this split has no columns)
  for (int64_t c0 = c_begin; c0 < c_end; c0 += kMmaTile) {
    tile_to_shared(a, n, b, m, w, r0, c0, smem, pop_a, pop_b);
    topk_merge_tile(dist, lists, c0, c_end, k);
    __syncthreads();  // dist aliases the next tile's staging buffers
  }
  topk_lists_out(lists, n, r0, k, splits, cand);
#endif
}

// The same with the tiles' K slices through stream_tiles' cp.async ring (row popcounts
// from pops_a / pops_b, counted beforehand) and each tile's distances in a buffer of
// their own past the ring (which is busy with the next tile's slices by then): 196 KB of
// shared memory, one block per SM, sm_90 class cards. Needs w even, a and b aligned.
constexpr int kTopkAsyncSmemBytes = async_smem_bytes<SquareTiles>() + kDistBytes + kMmaTile * kTopkMaxK * 8;

__global__ void __launch_bounds__(kThreads, 1) topk_mma_async_kernel(const u64* __restrict__ a, int64_t n,
                                                                    const u64* __restrict__ b, int64_t m, int64_t w,
                                                                    int k, int64_t cols_per_split, int splits,
                                                                    const int64_t* __restrict__ pops_a,
                                                                    const int64_t* __restrict__ pops_b,
                                                                    long long* __restrict__ cand) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  FASTSPLINE_DYNAMIC_SMEM(dyn_smem);
  int* dist = reinterpret_cast<int*>(dyn_smem + async_smem_bytes<SquareTiles>());
  long long* lists = reinterpret_cast<long long*>(dyn_smem + async_smem_bytes<SquareTiles>() + kDistBytes);
  const int64_t r0 = (int64_t)blockIdx.y * kMmaTile;
  const int64_t c_begin = (int64_t)blockIdx.x * cols_per_split, c_end = min(m, c_begin + cols_per_split);
  for (int e = threadIdx.x; e < kMmaTile * kTopkMaxK; e += kThreads) lists[e] = kNoKey;
  // The first stream step's barrier orders these before any merge.
  const int64_t tiles = c_end > c_begin ? (c_end - c_begin + kMmaTile - 1) / kMmaTile : 0;
  stream_tiles<false, SquareTiles>(
      a, n, b, m, w, tiles, reinterpret_cast<unsigned*>(dyn_smem),
      [&](int64_t i, int64_t& tr, int64_t& tc) {
        tr = r0;
        tc = c_begin + i * kMmaTile;
      },
      [&](int64_t tr, int64_t tc, const int (&acc)[4][4][4]) {
        tile_results<false, 4, 4>(acc, GlobalPops{pops_a, tr, n}, GlobalPops{pops_b, tc, m}, StoreShared{dist});
        __syncthreads();  // the tile's distances are in; the next write comes after a stream barrier
        topk_merge_tile(dist, lists, tc, c_end, k);
      });
  __syncthreads();  // lists complete (also when this range has no columns)
  topk_lists_out(lists, n, r0, k, splits, cand);
#endif
}

// Radius, for the tile (r0, c0) in dist (column tile tile_col of col_tiles): kFill false
// counts, per row, the columns with d <= r into counts[row * col_tiles + tile_col]; kFill
// true writes them in column order from offsets[row * col_tiles + tile_col] (an exclusive
// scan of the counts, row-major, so the output is sorted by (i, j)) into oi (row_base +
// row), oj, od. Warp w takes rows 16 w .. 16 w + 15 of the tile.
template <bool kFill>
__device__ __forceinline__ void radius_scan_tile(const int* dist, int64_t n, int64_t m, int r, int64_t r0, int64_t c0,
                                                 int64_t tile_col, int64_t row_base, int64_t col_tiles, int* counts,
                                                 const int64_t* offsets, int64_t* oi, int64_t* oj, int32_t* od) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int lr = warp * 16; lr < warp * 16 + 16; ++lr) {
    const int64_t row = r0 + lr;
    if (row >= n) break;
    const int64_t slot = row * col_tiles + tile_col;
    int64_t at = kFill ? offsets[slot] : 0;
#pragma unroll
    for (int q = 0; q < kMmaTile / 32; ++q) {
      const int64_t col = c0 + 32 * q + lane;
      const int d = dist[lr * kDistStride + 32 * q + lane];
      const bool hit = col < m && d <= r;
      const unsigned hits = __ballot_sync(kFull, hit);
      if (kFill && hit) {
        const int64_t pos = at + __popc(hits & ((1u << lane) - 1u));
        oi[pos] = row_base + row;
        oj[pos] = col;
        od[pos] = d;
      }
      at += __popc(hits);
    }
    if (!kFill && lane == 0) counts[slot] = (int)at;
  }
}

// Radius in two passes over the same tiles (one per block; radius_scan_tile).
template <bool kFill>
__global__ void __launch_bounds__(kThreads) radius_mma_kernel(const u64* __restrict__ a, int64_t n,
                                                              const u64* __restrict__ b, int64_t m, int64_t w, int r,
                                                              int64_t row_base, int64_t col_tiles,
                                                              int* __restrict__ counts,
                                                              const int64_t* __restrict__ offsets,
                                                              int64_t* __restrict__ oi, int64_t* __restrict__ oj,
                                                              int32_t* __restrict__ od) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  FASTSPLINE_DYNAMIC_SMEM(dyn_smem);
  __shared__ int pop_a[kMmaTile], pop_b[kMmaTile];
  const int64_t r0 = (int64_t)blockIdx.y * kMmaTile, c0 = (int64_t)blockIdx.x * kMmaTile;
  tile_to_shared(a, n, b, m, w, r0, c0, dyn_smem, pop_a, pop_b);
  radius_scan_tile<kFill>(reinterpret_cast<const int*>(dyn_smem), n, m, r, r0, c0, blockIdx.x, row_base, col_tiles,
                          counts, offsets, oi, oj, od);
#endif
}

// The same passes with the tiles' K slices through stream_tiles (persistent: block b takes
// tiles b, b + gridDim.x, ...; row popcounts from pops_a / pops_b, counted beforehand) and
// each tile's distances in a buffer of their own past the ring: 164 KB of shared memory,
// sm_90 class cards. Needs w even, a and b aligned.
constexpr int kRadiusAsyncSmemBytes = async_smem_bytes<SquareTiles>() + kDistBytes;

template <bool kFill>
__global__ void __launch_bounds__(kThreads, 1) radius_mma_async_kernel(
    const u64* __restrict__ a, int64_t n, const u64* __restrict__ b, int64_t m, int64_t w, int r, int* __restrict__ counts,
    const int64_t* __restrict__ offsets, int64_t* __restrict__ oi, int64_t* __restrict__ oj, int32_t* __restrict__ od,
    const int64_t* __restrict__ pops_a, const int64_t* __restrict__ pops_b) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  FASTSPLINE_DYNAMIC_SMEM(dyn_smem);
  int* dist = reinterpret_cast<int*>(dyn_smem + async_smem_bytes<SquareTiles>());
  const PersistentTiles<SquareTiles> tiles(n, m);
  stream_tiles<false, SquareTiles>(
      a, n, b, m, w, tiles.count, reinterpret_cast<unsigned*>(dyn_smem), tiles,
      [&](int64_t r0, int64_t c0, const int (&acc)[4][4][4]) {
        tile_results<false, 4, 4>(acc, GlobalPops{pops_a, r0, n}, GlobalPops{pops_b, c0, m}, StoreShared{dist});
        __syncthreads();  // the tile's distances are in; the next write comes after a stream barrier
        radius_scan_tile<kFill>(dist, n, m, r, r0, c0, c0 / kMmaTile, 0, tiles.col_tiles, counts, offsets, oi, oj, od);
      });
#endif
}

// ------------------------------------------------------------------ peak-rate probes (benchmarks)

// Back-to-back b1 MMAs on registers: the card's binary tensor-core rate.
template <bool kXor>
__global__ void peak_mma_kernel(int64_t iters, int* sink) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  unsigned fa[4] = {threadIdx.x, threadIdx.x * 3u, threadIdx.x * 5u, threadIdx.x * 7u};
  unsigned fb[2] = {blockIdx.x, threadIdx.x ^ 0x5555u};
  int acc[4][4] = {};
  for (int64_t it = 0; it < iters; ++it) {
#pragma unroll
    for (int q = 0; q < 4; ++q) mma_b1<kXor>(acc[q], fa, fb);
  }
  int s = 0;
#pragma unroll
  for (int q = 0; q < 4; ++q) s += acc[q][0] + acc[q][1] + acc[q][2] + acc[q][3];
  if (s == 0x7fffffff) sink[0] = s;  // never true in practice; keeps the work
#endif
}

// A wgmma kernel's slice math (WgmmaMath: 4 wgmma m64nNk256 .and.popc per warpgroup per
// slice, kDepth groups left in flight) back to back on one stage of random bits, no loads:
// the card's b1 rate through wgmma (sm_90a; elsewhere nothing runs, see wgmma_status).
// Kind 3: the square kernel's (m64n128, each slice waited for); kind 4: the wide one's
// (m64n256, one slice in flight). Dynamic shared memory: kPeakWgmmaSmem<Math>.
template <typename Math>
constexpr int kPeakWgmmaSmem = (128 + Math::kN) * 128 + 1024;

template <typename Math>
__global__ void peak_wgmma_kernel(int64_t iters, int* sink) {
#if defined(FASTSPLINE_WGMMA)
  FASTSPLINE_DYNAMIC_SMEM(dyn_smem);
  unsigned char* base = align_1k(dyn_smem);
  unsigned* words = reinterpret_cast<unsigned*>(base);
  for (int i = threadIdx.x; i < (128 + Math::kN) * 32; i += blockDim.x) words[i] = (unsigned)i * 2654435761u ^ blockIdx.x;
  fence_proxy_async();
  __syncthreads();
  Math math;
  const unsigned stage = smem_addr(base);
  for (int64_t it = 0; it < iters; ++it) math.slice(stage);
  math.finish();
  int s = 0;
#pragma unroll
  for (int i = 0; i < Math::kN / 2; ++i) s += math.acc[i];
  if (s == 0x7fffffff) sink[0] = s;
#endif
}

// Back-to-back XOR + popc on 32-bit registers: the card's popc rate.
__global__ void peak_popc_kernel(int64_t iters, int* sink) {
  unsigned x[8];
#pragma unroll
  for (int q = 0; q < 8; ++q) x[q] = threadIdx.x * (2u * q + 1u) + blockIdx.x;
  const unsigned y = threadIdx.x * 0x9E3779B9u;
  int acc[8] = {};
  for (int64_t it = 0; it < iters; ++it) {
#pragma unroll
    for (int q = 0; q < 8; ++q) {
      acc[q] += __popc(x[q] ^ y);
      x[q] += acc[q];
    }
  }
  int s = 0;
#pragma unroll
  for (int q = 0; q < 8; ++q) s += acc[q];
  if (s == 0x7fffffff) sink[0] = s;
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

// Launches pack kernel `variant` (1 rows, 2 columns, 3 stream, 4 columns16) for element type T.
template <typename T>
void launch_pack(int variant, const void* x, const Lead& lead, int64_t n, int64_t stride_n, int64_t rows, float thr32,
                 double thr64, u64* out, cudaStream_t s) {
  const T* xt = static_cast<const T*>(x);
  const int64_t words = rows * ((n + 63) / 64);
  if (variant == 3) {
    // One wave of resident blocks walks the input (equal shares, no partial last wave).
    constexpr int V = 16 / (int)sizeof(T);
    const int64_t vr = n / V, vpad = (n + 63) / 64 * (64 / V), rs = row_stride(lead, n);
    const unsigned want = grid_for(rows * vpad, kThreads * 8);
    unsigned* o32 = reinterpret_cast<unsigned*>(out);
    if (vpad == vr && (rs == n || rows == 1))
      pack_stream_kernel<T, 8, true><<<std::min(want, resident_grid<pack_stream_kernel<T, 8, true>>()), kThreads, 0, s>>>(
          xt, rows, vr, vpad, n, thr32, thr64, o32);
    else
      pack_stream_kernel<T, 8, false><<<std::min(want, resident_grid<pack_stream_kernel<T, 8, false>>()), kThreads, 0, s>>>(
          xt, rows, vr, vpad, rs, thr32, thr64, o32);
  } else if (variant == 4) {
    constexpr int V = 16 / (int)sizeof(T);
    pack_columns16_kernel<T><<<grid_for(words / V, kThreads), kThreads, 0, s>>>(xt, lead, n, stride_n, rows, thr32, thr64,
                                                                                out);
  } else if (variant == 2) {
    pack_columns_kernel<T><<<grid_for(words, kThreads), kThreads, 0, s>>>(xt, lead, n, stride_n, rows, thr32, thr64, out);
  } else {
    const unsigned grid = std::min((unsigned)sm_count() * 8, grid_for(words, kThreads / 32 * 8));
    pack_rows_kernel<T, 8><<<grid, kThreads, 0, s>>>(xt, lead, n, stride_n, rows, thr32, thr64, out);
  }
}

void pack_signs(const void* x, int dtype, const std::vector<int64_t>& sizes, const std::vector<int64_t>& strides,
                double threshold, uint64_t* out, std::uintptr_t stream, int variant, int allow) {
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
  cudaStream_t s = as_stream(stream);
  u64* o = reinterpret_cast<u64*>(out);
  // Kernels: 1 rows (a warp per 8 words, ballots; any layout), 2 columns (a strided packed
  // dim with a contiguous neighbour, e.g. NCHW channels), 3 stream (16-byte loads; rows
  // of whole 16-byte vectors, aligned, at one row stride), 4 columns16 (columns with
  // 16-byte loads, where vectors of neighbouring rows are whole and aligned). 0 picks
  // stream where it applies (and allow & 1), else columns16 (and allow & 2), else columns,
  // else rows. On an H200 (before stream and columns16 existed): 1 GiB float32 rows: rows
  // 0.55 ms; NCHW channels: columns 0.37, rows 1.17.
  const bool columns_ok = stride_n != 1 && lead.ndim > 0 && lead.strides[lead.ndim - 1] == 1 && lead.sizes[lead.ndim - 1] > 1;
  const int64_t vec = dtype == 1 ? 2 : dtype == 0 ? 4 : 8, rs = row_stride(lead, n);
  const bool aligned = (reinterpret_cast<std::uintptr_t>(x) & 15) == 0;
  const bool stream_ok = stride_n == 1 && n % vec == 0 && aligned && rs >= 0 && rs % vec == 0;
  bool columns16_ok = columns_ok && aligned && stride_n % vec == 0 && lead.sizes[lead.ndim - 1] % vec == 0;
  for (int k = 0; k + 1 < lead.ndim; ++k) columns16_ok = columns16_ok && lead.strides[k] % vec == 0;
  if (variant == 0) variant = stream_ok && (allow & 1) ? 3 : columns16_ok && (allow & 2) ? 4 : columns_ok ? 2 : 1;
  if ((variant == 2 && !columns_ok) || (variant == 3 && !stream_ok) || (variant == 4 && !columns16_ok) || variant < 1 ||
      variant > 4)
    throw std::invalid_argument("pack_signs: kernel " + std::to_string(variant) + " does not apply to this input");
  switch (dtype) {
    case 0: launch_pack<float>(variant, x, lead, n, stride_n, rows, thr32, threshold, o, s); break;
    case 1: launch_pack<double>(variant, x, lead, n, stride_n, rows, thr32, threshold, o, s); break;
    case 2: launch_pack<__half>(variant, x, lead, n, stride_n, rows, thr32, threshold, o, s); break;
    case 3: launch_pack<__nv_bfloat16>(variant, x, lead, n, stride_n, rows, thr32, threshold, o, s); break;
    default: throw std::invalid_argument("pack_signs: unknown dtype code " + std::to_string(dtype));
  }
  check(cudaGetLastError(), "pack kernel launch");
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

// gridDim.y is at most 65535: launch(first row, rows, grid y) for bands of 65535 row tiles.
template <typename Launch>
void for_row_bands(int64_t n, int64_t tile, Launch launch) {
  const int64_t band = (int64_t)65535 * tile;
  for (int64_t r = 0; r < n; r += band) {
    const int64_t rows = std::min(band, n - r);
    launch(r, rows, (unsigned)((rows + tile - 1) / tile));
  }
}

void hamming_cdist(const uint64_t* a, int64_t n, const uint64_t* b, int64_t m, int64_t w, int32_t* out, int64_t ldo,
                   std::uintptr_t stream) {
  if (n == 0 || m == 0) return;
  const int64_t col_tiles = (m + kTile - 1) / kTile;
  if (col_tiles > 0x7fffffff) throw std::invalid_argument("hamming_cdist: b has too many rows for one grid");
  for_row_bands(n, kTile, [&](int64_t r, int64_t rows, unsigned grid_y) {
    cdist_kernel<<<dim3((unsigned)col_tiles, grid_y), kThreads, 0, as_stream(stream)>>>(
        reinterpret_cast<const u64*>(a) + r * w, rows, reinterpret_cast<const u64*>(b), m, w, out + r * ldo, ldo);
    check(cudaGetLastError(), "cdist_kernel launch");
  });
}

// Whether `kernel` can have `bytes` of dynamic shared memory (plus `static_bytes`) on the
// current device; sets the opt-in once per (kernel, device). Cards with less (some
// sm_86/89) answer false and the caller falls back.
template <auto kernel>
bool smem_ready(int bytes, int static_bytes = 2 * kMmaTile * (int)sizeof(int)) {
  static int ready[64] = {};  // per kernel (one instantiation each) and device: 0 unknown, 1 yes, 2 no
  int device = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  if (device < 0 || device >= 64) device = 0;
  if (ready[device] == 0) {
    int optin = 0;
    check(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device), "cudaDeviceGetAttribute");
    const bool ok = optin >= bytes + static_bytes;
    if (ok)
      check(cudaFuncSetAttribute((const void*)kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes),
            "cudaFuncSetAttribute");
    ready[device] = ok ? 1 : 2;
  }
  return ready[device] == 1;
}

// The cp.async cdist kernels: square tiles (staging 2), wide tiles (staging 3).
template <bool kXor, typename Tiles>
constexpr auto kAsyncKernel = cdist_mma_async_kernel<kXor, Tiles>;

template <typename Tiles>
bool async_smem_ready() {
  constexpr int bytes = async_smem_bytes<Tiles>();  // no static shared memory
  return smem_ready<kAsyncKernel<true, Tiles>>(bytes, 0) && smem_ready<kAsyncKernel<false, Tiles>>(bytes, 0);
}

// The grid of a persistent kernel (PersistentTiles) over n x m pairs in Tiles' tiles: the
// blocks resident at once (with `bytes` of dynamic shared memory), at most one a tile.
template <auto kernel, typename Tiles>
unsigned persistent_grid(int64_t n, int64_t m, int bytes) {
  const int64_t tiles = (n + Tiles::kRows - 1) / Tiles::kRows * ((m + Tiles::kCols - 1) / Tiles::kCols);
  return (unsigned)std::min<int64_t>(tiles, resident_grid<kernel>(bytes));
}

template <typename Tiles>
void launch_async(const u64* a, int64_t n, const u64* b, int64_t m, int64_t w, int32_t* out, int64_t ldo, bool use_xor,
                  const int64_t* workspace, cudaStream_t s) {
  constexpr int bytes = async_smem_bytes<Tiles>();
  const auto kernel = use_xor ? kAsyncKernel<true, Tiles> : kAsyncKernel<false, Tiles>;
  const unsigned grid = use_xor ? persistent_grid<kAsyncKernel<true, Tiles>, Tiles>(n, m, bytes)
                                : persistent_grid<kAsyncKernel<false, Tiles>, Tiles>(n, m, bytes);
  kernel<<<grid, kThreads, bytes, s>>>(a, n, b, m, w, out, ldo, use_xor ? nullptr : workspace,
                                       use_xor ? nullptr : workspace + n);
  check(cudaGetLastError(), "cdist_mma_async_kernel launch");
}

// Whether the cp.async kernels can stage a and b: they move 16-byte pieces, so w even and
// both bases 16-byte aligned (row bands keep it).
static bool cp_async_layout(const void* a, const void* b, int64_t w) {
  return w % 2 == 0 && (reinterpret_cast<std::uintptr_t>(a) & 15) == 0 && (reinterpret_cast<std::uintptr_t>(b) & 15) == 0;
}

// Row popcounts of a's n and b's m rows into workspace[0..n) and [n..n + m), for the
// kernels that count a AND b from pipelined staging.
void row_popcounts(const u64* a, int64_t n, const u64* b, int64_t m, int64_t w, int64_t* workspace, cudaStream_t s) {
  hamming_rows_kernel<<<grid_for(n, kThreads / 32), kThreads, 0, s>>>(a, nullptr, n, w, workspace);
  hamming_rows_kernel<<<grid_for(m, kThreads / 32), kThreads, 0, s>>>(b, nullptr, m, w, workspace + n);
  check(cudaGetLastError(), "hamming_rows_kernel launch (row popcounts)");
}

// The wgmma cdist kernels: 128 x 128 tiles (staging 4), 128 x 256 (staging 5; 6 loads deeper).
constexpr auto kWgmmaSquare = cdist_wgmma_kernel<WgmmaTiles, WgmmaSquareMath>;
constexpr auto kWgmmaWide = cdist_wgmma_kernel<WgmmaWideTiles, WgmmaWideMath>;
constexpr auto kWgmmaDeep = cdist_wgmma_kernel<WgmmaWideTiles, WgmmaDeepMath>;
constexpr int kWgmmaSquareBytes = kWgmmaSmemBytes<WgmmaTiles, WgmmaSquareMath>;  // 99,328
constexpr int kWgmmaWideBytes = kWgmmaSmemBytes<WgmmaWideTiles, WgmmaWideMath>;  // 197,632 (staging 6 too)
static_assert(kWgmmaSmemBytes<WgmmaWideTiles, WgmmaDeepMath> == kWgmmaWideBytes, "one ring for both wide kernels");

// A wgmma cdist kernel over its persistent grid (AND; row popcounts in workspace).
template <auto kernel, typename Tiles>
void launch_wgmma(const u64* a, int64_t n, const u64* b, int64_t m, int64_t w, int32_t* out, int64_t ldo,
                  const int64_t* workspace, int bytes, cudaStream_t s) {
  const unsigned grid = persistent_grid<kernel, Tiles>(n, m, bytes);
  kernel<<<grid, kThreads, bytes, s>>>(a, n, b, m, w, out, ldo, workspace, workspace + n, nullptr);
  check(cudaGetLastError(), "cdist_wgmma_kernel launch");
}

// The clustered wgmma kernels (staging 7: 2 x 1 clusters, 8: 2 x 2): panels packed into
// the workspace after the row popcounts, then clusters over the cluster tiles, as many as
// fit at once (cudaOccupancyMaxActiveClusters, cached per kernel and device), at most one
// a tile.
template <int kCN>
constexpr auto kCluster = cdist_cluster_kernel<kClusterAhead, kCN>;

// The workspace (int64 words): n + m row popcounts, then (from a 16-byte boundary) the panels.
static int64_t cluster_panels_offset(int64_t n, int64_t m) { return (n + m + 1) / 2 * 2; }
static int64_t cluster_workspace(int64_t n, int64_t m, int64_t w, int kCN) {
  return cluster_panels_offset(n, m) + (cluster_panels(n) + cluster_panels(m, 256 * kCN)) * slice_count(w) * (kPanelBytes / 8);
}

#if !defined(FASTSPLINE_CUDA_SIM)
// A launch configuration of clusters of 2 x kCN CTAs along x (attr: its one attribute).
template <int kCN>
cudaLaunchConfig_t cluster_config(unsigned grid, cudaStream_t s, cudaLaunchAttribute* attr) {
  cudaLaunchConfig_t config = {};
  attr->id = cudaLaunchAttributeClusterDimension;
  attr->val.clusterDim.x = 2 * kCN;
  attr->val.clusterDim.y = 1;
  attr->val.clusterDim.z = 1;
  config.gridDim = dim3(grid);
  config.blockDim = dim3(kThreads);
  config.dynamicSmemBytes = kClusterSmemBytes;
  config.stream = s;
  config.attrs = attr;
  config.numAttrs = 1;
  return config;
}
#endif

template <int kCN>
unsigned cluster_grid(int64_t n, int64_t m, cudaStream_t s) {
  static int cached[64] = {};  // clusters resident at once, per device
  int device = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  if (device < 0 || device >= 64) device = 0;
  if (cached[device] == 0) {
    int clusters = 0;
#if defined(FASTSPLINE_CUDA_SIM)
    clusters = sim::max_active_clusters(2 * kCN);
#else
    cudaLaunchAttribute attr;
    const cudaLaunchConfig_t config = cluster_config<kCN>(2 * kCN * (unsigned)sm_count(), s, &attr);
    check(cudaOccupancyMaxActiveClusters(&clusters, kCluster<kCN>, &config), "cudaOccupancyMaxActiveClusters");
#endif
    cached[device] = std::max(1, clusters);
  }
  const int64_t tiles = (n + 255) / 256 * ((m + 256 * kCN - 1) / (256 * kCN));
  return (unsigned)(2 * kCN * std::min<int64_t>(tiles, cached[device]));
}

template <int kCN>
void launch_cluster(const u64* a, int64_t n, const u64* b, int64_t m, int64_t w, int32_t* out, int64_t ldo,
                    int64_t* workspace, cudaStream_t s) {
  const int64_t slices = slice_count(w), panels_a = cluster_panels(n), panels_b = cluster_panels(m, 256 * kCN);
  uint4* pa = reinterpret_cast<uint4*>(workspace + cluster_panels_offset(n, m));
  uint4* pb = pa + panels_a * slices * kPanelRows * 8;
  pack_panels_kernel<<<grid_for(panels_a * slices * kPanelRows * 8, kThreads), kThreads, 0, s>>>(a, n, w, panels_a,
                                                                                                  slices, pa);
  pack_panels_kernel<<<grid_for(panels_b * slices * kPanelRows * 8, kThreads), kThreads, 0, s>>>(b, m, w, panels_b,
                                                                                                  slices, pb);
  check(cudaGetLastError(), "pack_panels_kernel launch");
  const unsigned grid = cluster_grid<kCN>(n, m, s);
  const int64_t *pops_a = workspace, *pops_b = workspace + n;
  int* missing = nullptr;
#if defined(FASTSPLINE_CUDA_SIM)
  sim::launch_cluster(dim3(grid), dim3(kThreads), kClusterSmemBytes, s, 2 * kCN)(
      kCluster<kCN>, pa, n, pb, m, slices, out, ldo, pops_a, pops_b, missing);
#else
  cudaLaunchAttribute attr;
  const cudaLaunchConfig_t config = cluster_config<kCN>(grid, s, &attr);
  check(cudaLaunchKernelEx(&config, kCluster<kCN>, (const uint4*)pa, n, (const uint4*)pb, m, slices, out, ldo, pops_a,
                           pops_b, missing),
        "cudaLaunchKernelEx (cdist_cluster_kernel)");
#endif
  check(cudaGetLastError(), "cdist_cluster_kernel launch");
}

// Whether the wgmma kernels run on the current device: an sm_90 card and this module's
// sm_90a code (a probe launch of the square kernel, once per device; both are built for
// the same targets).
static bool wgmma_compiled(std::uintptr_t stream) {
  static int known[64] = {};  // per device: 0 unknown, 1 yes, 2 no
  int device = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  if (device < 0 || device >= 64) device = 0;
  if (known[device] == 0) {
    // compute capability 9.0 runs the sm_90a code; elsewhere the compute_90 PTX has no wgmma
    bool yes = compute_capability() == 90 && smem_ready<kWgmmaSquare>(kWgmmaSquareBytes, 0);
    if (yes) {  // the kernel's stub (no sm_90a code for this card) sets the flag
      cudaStream_t s = as_stream(stream);
      int* flag = nullptr;
      check(cudaMalloc(&flag, sizeof(int)), "cudaMalloc");
      int missing = 1;
      cudaError_t status = cudaMemsetAsync(flag, 0, sizeof(int), s);
      if (status == cudaSuccess) {
        kWgmmaSquare<<<1, kThreads, kWgmmaSquareBytes, s>>>(nullptr, 0, nullptr, 0, 0, nullptr, 0, nullptr, nullptr, flag);
        status = cudaGetLastError();
      }
      if (status == cudaSuccess) status = cudaMemcpyAsync(&missing, flag, sizeof(int), cudaMemcpyDeviceToHost, s);
      if (status == cudaSuccess) status = cudaStreamSynchronize(s);
      cudaFree(flag);
      check(status, "cdist_wgmma_kernel probe");
      yes = missing == 0;
    }
    known[device] = yes ? 1 : 2;
  }
  return known[device] == 1;
}

void hamming_cdist_mma(const uint64_t* a, int64_t n, const uint64_t* b, int64_t m, int64_t w, int32_t* out,
                       int64_t ldo, bool use_xor, int staging, std::uintptr_t stream, int64_t* workspace) {
  if (staging < 0 || staging > 8)
    throw std::invalid_argument(
        "hamming_cdist_mma: staging must be 0 (auto), 1 (sync), 2 (cp.async), 3 (cp.async, wide tiles), 4 (wgmma), 5 "
        "(wgmma, wide tiles), 6 (wgmma, wide tiles, loaded deeper), 7 (wgmma in clusters of two) or 8 (wgmma in "
        "clusters of four)");
  if (staging >= 4 && use_xor) throw std::invalid_argument("hamming_cdist_mma: the wgmma kernels count AND only");
  if (n == 0 || m == 0) return;
  const int64_t col_tiles = (m + kMmaTile - 1) / kMmaTile;
  if (col_tiles > 0x7fffffff) throw std::invalid_argument("hamming_cdist: b has too many rows for one grid");
  const bool async_ok = cp_async_layout(a, b, w);
  if (staging >= 2 && !async_ok)
    throw std::invalid_argument("hamming_cdist_mma: the cp.async kernel needs an even word count and 16-byte aligned rows");
  if (staging >= 2 && !use_xor && workspace == nullptr)
    throw std::invalid_argument("hamming_cdist_mma: the cp.async AND kernel needs a workspace of n + m int64");
  if (staging >= 7 && (reinterpret_cast<std::uintptr_t>(workspace) & 15) != 0)
    throw std::invalid_argument("hamming_cdist_mma: the clustered kernels' workspace must be 16-byte aligned");
  // Auto: cp.async from two slices up (2,048+ bits), wide tiles where the card has the
  // shared memory; shorter codes are bound by writing the output, where the synchronous
  // kernel (more blocks per SM) measured 75% of the roofline on an H200.
  const int forced = staging;
  if (staging == 0) staging = async_ok && w >= 2 * kAsyncWords && (use_xor || workspace) ? 3 : 1;
  if (staging >= 4 && !wgmma_compiled(stream))
    throw std::invalid_argument(
        "hamming_cdist_mma: the wgmma kernels need an sm_90 card (compute capability 9.0) and this module's sm_90a code");
  if (staging >= 5 && !(staging == 5   ? smem_ready<kWgmmaWide>(kWgmmaWideBytes, 0)
                        : staging == 6 ? smem_ready<kWgmmaDeep>(kWgmmaWideBytes, 0)
                        : staging == 7 ? smem_ready<kCluster<1>>(kClusterSmemBytes, 0)
                                       : smem_ready<kCluster<2>>(kClusterSmemBytes, 0)))
    throw std::invalid_argument("hamming_cdist_mma: this device has too little shared memory for the wide wgmma kernel");
  if (staging == 3 && !async_smem_ready<WideTiles>()) {
    if (forced == 3)
      throw std::invalid_argument("hamming_cdist_mma: this device has too little shared memory for the wide cp.async kernel");
    staging = 2;
  }
  if (staging == 2 && !async_smem_ready<SquareTiles>()) {
    if (forced == 2)
      throw std::invalid_argument("hamming_cdist_mma: this device has too little shared memory for the cp.async kernel");
    staging = 1;
  }
  cudaStream_t s = as_stream(stream);
  const u64* ap = reinterpret_cast<const u64*>(a);
  const u64* bp = reinterpret_cast<const u64*>(b);
  if (staging >= 2 && !use_xor) row_popcounts(ap, n, bp, m, w, workspace, s);  // added in the AND kernel's epilogue
  if (staging == 4) return launch_wgmma<kWgmmaSquare, WgmmaTiles>(ap, n, bp, m, w, out, ldo, workspace, kWgmmaSquareBytes, s);
  if (staging == 5) return launch_wgmma<kWgmmaWide, WgmmaWideTiles>(ap, n, bp, m, w, out, ldo, workspace, kWgmmaWideBytes, s);
  if (staging == 6) return launch_wgmma<kWgmmaDeep, WgmmaWideTiles>(ap, n, bp, m, w, out, ldo, workspace, kWgmmaWideBytes, s);
  if (staging == 7) return launch_cluster<1>(ap, n, bp, m, w, out, ldo, workspace, s);
  if (staging == 8) return launch_cluster<2>(ap, n, bp, m, w, out, ldo, workspace, s);
  if (staging == 3) return launch_async<WideTiles>(ap, n, bp, m, w, out, ldo, use_xor, workspace, s);
  if (staging == 2) return launch_async<SquareTiles>(ap, n, bp, m, w, out, ldo, use_xor, workspace, s);
  for_row_bands(n, kMmaTile, [&](int64_t r, int64_t rows, unsigned grid_y) {
    const dim3 grid((unsigned)col_tiles, grid_y);
    if (use_xor)
      cdist_mma_kernel<true><<<grid, kThreads, 0, s>>>(ap + r * w, rows, bp, m, w, out + r * ldo, ldo);
    else
      cdist_mma_kernel<false><<<grid, kThreads, 0, s>>>(ap + r * w, rows, bp, m, w, out + r * ldo, ldo);
    check(cudaGetLastError(), "cdist_mma_kernel launch");
  });
}

// The pipelined fused kernels (workspace != nullptr: n + m int64 for the row popcounts,
// counted here first): w even and a, b 16-byte aligned, and the card's shared memory for
// `kernel` (`bytes`, no static).
template <auto kernel>
void fused_async_prologue(const u64* a, int64_t n, const u64* b, int64_t m, int64_t w, int bytes, int64_t* workspace,
                          cudaStream_t s, const char* op) {
  if (!cp_async_layout(a, b, w))
    throw std::invalid_argument(std::string(op) + ": the pipelined kernel needs an even word count and 16-byte aligned rows");
  if (!smem_ready<kernel>(bytes, 0))
    throw std::invalid_argument(std::string(op) + ": this device has too little shared memory for the pipelined kernel");
  row_popcounts(a, n, b, m, w, workspace, s);
}

void hamming_topk_mma(const uint64_t* a, int64_t n, const uint64_t* b, int64_t m, int64_t w, int k, int splits,
                      int64_t* cand, std::uintptr_t stream, int64_t* workspace) {
  if (k < 1 || k > kTopkMaxK) throw std::invalid_argument("hamming_topk_mma: k must be in [1, 32]");
  if (splits < 1) throw std::invalid_argument("hamming_topk_mma: splits must be >= 1");
  if (m >= ((int64_t)1 << 31)) throw std::invalid_argument("hamming_topk_mma: b must have fewer than 2^31 rows");
  if (n == 0 || m == 0) return;
  const int64_t col_tiles = (m + kMmaTile - 1) / kMmaTile;
  const int64_t cols_per_split = (col_tiles + splits - 1) / splits * kMmaTile;
  const u64* ap = reinterpret_cast<const u64*>(a);
  const u64* bp = reinterpret_cast<const u64*>(b);
  cudaStream_t s = as_stream(stream);
  if (workspace != nullptr) {
    fused_async_prologue<topk_mma_async_kernel>(ap, n, bp, m, w, kTopkAsyncSmemBytes, workspace, s, "hamming_topk_mma");
    for_row_bands(n, kMmaTile, [&](int64_t r, int64_t rows, unsigned grid_y) {
      topk_mma_async_kernel<<<dim3((unsigned)splits, grid_y), kThreads, kTopkAsyncSmemBytes, s>>>(
          ap + r * w, rows, bp, m, w, k, cols_per_split, splits, workspace + r, workspace + n,
          reinterpret_cast<long long*>(cand) + r * splits * k);
      check(cudaGetLastError(), "topk_mma_async_kernel launch");
    });
    return;
  }
  if (!smem_ready<topk_mma_kernel>(kTopkSmemBytes))
    throw std::invalid_argument("hamming_topk_mma: this device has too little shared memory for the fused kernel");
  for_row_bands(n, kMmaTile, [&](int64_t r, int64_t rows, unsigned grid_y) {
    topk_mma_kernel<<<dim3((unsigned)splits, grid_y), kThreads, kTopkSmemBytes, s>>>(
        ap + r * w, rows, bp, m, w, k, cols_per_split, splits, reinterpret_cast<long long*>(cand) + r * splits * k);
    check(cudaGetLastError(), "topk_mma_kernel launch");
  });
}

// Pipelined radius pass kFill, persistent: a grid of the blocks resident at once.
template <bool kFill>
void launch_radius_async(const u64* a, int64_t n, const u64* b, int64_t m, int64_t w, int r, int32_t* counts,
                         const int64_t* offsets, int64_t* oi, int64_t* oj, int32_t* od, int64_t* workspace,
                         cudaStream_t s) {
  constexpr auto kernel = radius_mma_async_kernel<kFill>;
  fused_async_prologue<kernel>(a, n, b, m, w, kRadiusAsyncSmemBytes, workspace, s, "hamming_radius_mma");
  const unsigned grid = persistent_grid<kernel, SquareTiles>(n, m, kRadiusAsyncSmemBytes);
  kernel<<<grid, kThreads, kRadiusAsyncSmemBytes, s>>>(a, n, b, m, w, r, counts, offsets, oi, oj, od, workspace,
                                                       workspace + n);
  check(cudaGetLastError(), "radius_mma_async_kernel launch");
}

void hamming_radius_mma(const uint64_t* a, int64_t n, const uint64_t* b, int64_t m, int64_t w, int r, int32_t* counts,
                        const int64_t* offsets, int64_t* oi, int64_t* oj, int32_t* od, bool fill,
                        std::uintptr_t stream, int64_t* workspace) {
  if (r < 0) throw std::invalid_argument("hamming_radius_mma: r must be >= 0");
  if (fill && (offsets == nullptr || oi == nullptr || oj == nullptr || od == nullptr))
    throw std::invalid_argument("hamming_radius_mma: the fill pass needs offsets and outputs");
  if (n == 0 || m == 0) return;
  const int64_t col_tiles = (m + kMmaTile - 1) / kMmaTile;
  if (col_tiles > 0x7fffffff) throw std::invalid_argument("hamming_radius_mma: b has too many rows for one grid");
  const u64* ap = reinterpret_cast<const u64*>(a);
  const u64* bp = reinterpret_cast<const u64*>(b);
  cudaStream_t s = as_stream(stream);
  if (workspace != nullptr) {
    if (fill)
      launch_radius_async<true>(ap, n, bp, m, w, r, counts, offsets, oi, oj, od, workspace, s);
    else
      launch_radius_async<false>(ap, n, bp, m, w, r, counts, offsets, oi, oj, od, workspace, s);
    return;
  }
  if (!(fill ? smem_ready<radius_mma_kernel<true>>(kTileSmemBytes) : smem_ready<radius_mma_kernel<false>>(kTileSmemBytes)))
    throw std::invalid_argument("hamming_radius_mma: this device has too little shared memory for the fused kernel");
  for_row_bands(n, kMmaTile, [&](int64_t r0, int64_t rows, unsigned grid_y) {
    const dim3 grid((unsigned)col_tiles, grid_y);
    const u64* part = ap + r0 * w;
    if (fill)
      radius_mma_kernel<true><<<grid, kThreads, kTileSmemBytes, s>>>(
          part, rows, bp, m, w, r, r0, col_tiles, nullptr, offsets + r0 * col_tiles, oi, oj, od);
    else
      radius_mma_kernel<false><<<grid, kThreads, kTileSmemBytes, s>>>(
          part, rows, bp, m, w, r, r0, col_tiles, counts + r0 * col_tiles, nullptr, nullptr, nullptr, nullptr);
    check(cudaGetLastError(), "radius_mma_kernel launch");
  });
}

int64_t cdist_mma_workspace(int64_t n, int64_t m, int64_t w, bool use_xor, int staging) {
  if (use_xor || staging < 2) return 0;
  return staging >= 7 ? cluster_workspace(n, m, w, staging == 7 ? 1 : 2) : n + m;
}

int compute_capability() {
  int device = 0, major = 0, minor = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device), "cudaDeviceGetAttribute");
  check(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device), "cudaDeviceGetAttribute");
  return major * 10 + minor;
}

void peak(int kind, int64_t iters, int blocks, int32_t* sink, std::uintptr_t stream) {
  if (iters < 1 || blocks < 1) throw std::invalid_argument("peak: iters and blocks must be >= 1");
  cudaStream_t s = as_stream(stream);
  switch (kind) {
    case 0: peak_popc_kernel<<<blocks, kThreads, 0, s>>>(iters, sink); break;
    case 1: peak_mma_kernel<true><<<blocks, kThreads, 0, s>>>(iters, sink); break;
    case 2: peak_mma_kernel<false><<<blocks, kThreads, 0, s>>>(iters, sink); break;
    case 3:
    case 4: {
      constexpr auto k128 = peak_wgmma_kernel<WgmmaSquareMath>;
      constexpr auto k256 = peak_wgmma_kernel<WgmmaWideMath>;
      constexpr int b128 = kPeakWgmmaSmem<WgmmaSquareMath>, b256 = kPeakWgmmaSmem<WgmmaWideMath>;
      const bool wide = kind == 4;
      if (!wgmma_compiled(stream) || !(wide ? smem_ready<k256>(b256, 0) : smem_ready<k128>(b128, 0)))
        throw std::invalid_argument("peak: the wgmma probes need an sm_90 card and this module's sm_90a code");
      if (wide)
        k256<<<blocks, kThreads, b256, s>>>(iters, sink);
      else
        k128<<<blocks, kThreads, b128, s>>>(iters, sink);
      break;
    }
    default:
      throw std::invalid_argument(
          "peak: kind must be 0 (popc), 1 (b1 xor mma), 2 (b1 and mma), 3 (b1 and wgmma m64n128) or 4 (b1 and wgmma "
          "m64n256, pipelined)");
  }
  check(cudaGetLastError(), "peak kernel launch");
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
