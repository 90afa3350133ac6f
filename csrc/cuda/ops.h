// fastspline CUDA ops, host side: launchers on raw device pointers and a stream.
// Bit layout: see csrc/cpu/kernels.h (64-bit words, bit j of word w = bit 64*w+j,
// least-significant first, pad bits zero). All sizes and indices are int64.
// Each launcher throws std::runtime_error naming the CUDA call that failed
// (pybind11 turns it into RuntimeError). Outputs are written, never read first,
// except hamming_total's accumulator, which the caller zeroes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace fastspline {
namespace cuda {

std::string runtime_info();  // compiled CUDA version
int device_count();          // throws when there is no usable driver

// Float dtypes numbered as in csrc/cpu/kernels.h: 0 float32, 1 float64, 2 float16, 3 bfloat16.
// x: element (i_0..i_{d-1}) at x + sum(i_k * strides[k]) elements, d <= 8; the last dim is packed.
// out: [prod(sizes[:-1]), ceil(sizes[-1]/64)] words.
// variant: 0 auto; 1 rows (any layout), 2 columns (packed dim strided, innermost other dim
// contiguous), 3 stream (packed dim contiguous, n and the row stride whole 16-byte
// vectors, x 16-byte aligned, leading dims collapsing to one row stride), 4 columns16
// (columns where the innermost other dim's size, the other strides and x are whole 16-byte
// vectors); see ops.cu. allow: the kernels auto may pick beyond 1 and 2 (bit 0: 3, bit 1: 4).
void pack_signs(const void* x, int dtype, const std::vector<int64_t>& sizes, const std::vector<int64_t>& strides,
                double threshold, uint64_t* out, std::uintptr_t stream, int variant = 0, int allow = 3);
// out: bool [rows, n_bits].
void unpack_bits(const uint64_t* words, int64_t rows, int64_t w, int64_t n_bits, bool* out, std::uintptr_t stream);
// out[r] = popcount(a[r]) (b == nullptr) or popcount(a[r] ^ b[r]) over w words; rows contiguous.
void hamming_rows(const uint64_t* a, const uint64_t* b, int64_t rows, int64_t w, int64_t* out, std::uintptr_t stream);
// *total += popcount(a ^ b) over n words (total: one int64 on the device, zeroed by the caller).
void hamming_total(const uint64_t* a, const uint64_t* b, int64_t n, int64_t* total, std::uintptr_t stream);
// out[i * ldo + j] = popcount(a_i ^ b_j) for i < n, j < m; a [n, w], b [m, w] contiguous.
void hamming_cdist(const uint64_t* a, int64_t n, const uint64_t* b, int64_t m, int64_t w, int32_t* out, int64_t ldo,
                   std::uintptr_t stream);
// The same on binary tensor cores (sm_80+ only: the caller checks compute_capability()):
// mma.sync b1 with .xor.popc (use_xor) or .and.popc and row popcounts.
// staging: 0 auto, 1 synchronous shared-memory loads, 2 a cp.async pipeline (w even,
// a and b 16-byte aligned, enough shared memory, and for AND a workspace of n + m int64
// for row popcounts: else invalid_argument); auto takes 2 from 2,048-bit codes where it
// applies; 3 the same with 256 x 128 tiles; 4 wgmma with 128 x 128 tiles, 5 wgmma with
// 128 x 256 tiles and one slice in flight, 6 the same loaded 3 slices ahead instead of 2,
// 7 wide tiles in clusters of two CTAs sharing B by multicast bulk copies, 8 in clusters of
// 2 x 2 sharing A and B (4-8: AND only, sm_90 cards, else invalid_argument; never auto's
// static choice).
void hamming_cdist_mma(const uint64_t* a, int64_t n, const uint64_t* b, int64_t m, int64_t w, int32_t* out,
                       int64_t ldo, bool use_xor, int staging, std::uintptr_t stream, int64_t* workspace = nullptr);
// The int64 words of workspace hamming_cdist_mma needs for (n, m, w, use_xor, staging): n + m
// row popcounts for the pipelined AND kernels (staging 2-6), and for stagings 7 and 8 (wgmma
// in clusters) a and b re-laid out in 128-row panels after them; 0 without.
int64_t cdist_mma_workspace(int64_t n, int64_t m, int64_t w, bool use_xor, int staging);
// Fused top-k on binary tensor cores (sm_80+): for 1 <= k <= 32, cand [n, splits, k] gets
// each row's k smallest keys (distance << 32 | index of b) over each of `splits` column
// ranges, ascending (0x7fff... where a range has fewer than k columns); the caller merges
// the splits. a, b contiguous, m < 2^31.
// workspace (n + m int64) != nullptr: the pipelined kernel (cp.async ring, persistent tile
// stream; w even, a and b 16-byte aligned, sm_90 class shared memory), else synchronous staging.
void hamming_topk_mma(const uint64_t* a, int64_t n, const uint64_t* b, int64_t m, int64_t w, int k, int splits,
                      int64_t* cand, std::uintptr_t stream, int64_t* workspace = nullptr);
// Fused radius on binary tensor cores, two passes over 128x128 tiles. fill false:
// counts [n, ceil(m / 128)] = pairs with d <= r per row and column tile. fill true:
// offsets (same shape, int64, the exclusive row-major scan of counts) -> oi, oj, od sorted
// by (i, j).
void hamming_radius_mma(const uint64_t* a, int64_t n, const uint64_t* b, int64_t m, int64_t w, int r, int32_t* counts,
                        const int64_t* offsets, int64_t* oi, int64_t* oj, int32_t* od, bool fill,
                        std::uintptr_t stream, int64_t* workspace = nullptr);  // workspace: as for top-k
int compute_capability();  // of the current device, e.g. 90
// Peak-rate probes for the benchmarks: kind 0 XOR+popc on registers, 1 b1 MMA xor, 2 b1 MMA and,
// 3 b1 wgmma and m64n128k256, 4 the same m64n256k256 with one group in flight (3, 4: sm_90
// cards with the sm_90a code, else invalid_argument); `blocks` blocks of 256 threads, `iters`
// iterations (popc: 8 per thread; mma: 4 per warp; wgmma: 4 per warpgroup).
void peak(int kind, int64_t iters, int blocks, int32_t* sink, std::uintptr_t stream);
// words [n, w] holding n_bits bits per row -> out [n_bits, ceil(n/64)].
void bit_transpose(const uint64_t* words, int64_t n, int64_t w, int64_t n_bits, uint64_t* out, std::uintptr_t stream);

}  // namespace cuda
}  // namespace fastspline
