// fastspline CPU ops: the drivers behind fastspline._C (threading, tiling,
// heaps, sorting), calling the micro-kernels of the active ISA.
// Every pointer is to contiguous row-major data unless strides are given;
// sizes and indices are int64. Bit layout: see kernels.h.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace fastspline {

// ---- instruction set selection (CPUID at load; FASTSPLINE_ISA is applied by Python)
std::vector<std::string> supported_isas();  // slowest first, always "scalar"
std::string active_isa();
void set_isa(const std::string& name);  // std::invalid_argument if unknown or unsupported

// ---- ops; `threads` is the OpenMP thread count to use (>= 1)
// x: element (i_0, ..., i_{d-1}) at x + sum(i_k * strides[k]) elements; the last dim is packed.
// out: [prod(sizes[:-1]), ceil(sizes[-1] / 64)] words.
// check_nan: also return whether any element is NaN (each piece is scanned right after it
// is packed, while in cache); false when not asked.
bool pack_signs(const void* x, int dtype, const std::vector<int64_t>& sizes, const std::vector<int64_t>& strides,
                double threshold, uint64_t* out, int threads, bool check_nan = false);
void unpack_bits(const uint64_t* words, int64_t rows, int64_t w, int64_t n_bits, bool* out, int threads);
void popcount(const uint64_t* words, int64_t rows, int64_t w, int64_t* out, int threads);
void hamming(const uint64_t* a, const uint64_t* b, int64_t rows, int64_t w, int64_t* out, int threads);
uint64_t hamming_total(const uint64_t* a, const uint64_t* b, int64_t n_words, int threads);
// fresh_out: out was just allocated (untouched), so its pages are faulted in ahead of the tiles.
void hamming_cdist(const uint64_t* a, int64_t n, const uint64_t* b, int64_t m, int64_t w, int32_t* out, int threads,
                   bool fresh_out);
void hamming_topk(const uint64_t* a, int64_t n, const uint64_t* b, int64_t m, int64_t w, int64_t k, int32_t* dist,
                  int64_t* index, int threads);
void hamming_radius_count(const uint64_t* a, int64_t n, const uint64_t* b, int64_t m, int64_t w, int64_t r,
                          int64_t* counts, int threads);
void hamming_radius_fill(const uint64_t* a, int64_t n, const uint64_t* b, int64_t m, int64_t w, int64_t r,
                         const int64_t* offsets, int64_t* i_out, int64_t* j_out, int32_t* d_out, int threads);
// words [n, w] with n_bits bits per row -> out [n_bits, ceil(n / 64)].
void bit_transpose(const uint64_t* words, int64_t n, int64_t w, int64_t n_bits, uint64_t* out, int threads);
// Sorted distinct rows: inverse[n], first[u] (row index of each distinct row), counts[u]; returns u.
int64_t count_regions(const uint64_t* codes, int64_t n, int64_t w, int64_t* inverse, int64_t* first, int64_t* counts);

}  // namespace fastspline
