// fastspline CPU kernels: the dispatch table shared by the ISA translation units.
//
// Bit layout (the contract of every kernel, the same as fastspline/ops.py):
//   codes are 64-bit words read as unsigned; bit j of word w is bit 64*w + j,
//   least-significant first; pad bits past n_bits are zero. A code of n_bits
//   bits is W = ceil(n_bits / 64) words; a [rows, W] matrix is row-major.
//
// Each ISA file (scalar.cpp, avx2.cpp, avx512.cpp) is compiled with its own
// flags and only fills a KernelTable of small inner loops ("micro-kernels").
// Those files use no STL templates: an inline template instantiated under
// -mavx512f could be picked by the linker for every caller and run AVX-512
// code on a CPU without it. Threading, tiling, heaps and sorting live in
// ops.cpp, which is compiled without ISA flags.
#pragma once

#include <cstdint>

namespace fastspline {

// Float dtypes of pack_signs, numbered as in fastspline/backends/cpu.py.
enum DType : int { kFloat32 = 0, kFloat64 = 1, kFloat16 = 2, kBFloat16 = 3 };

struct KernelTable {
  const char* name;
  // hamming_cdist packs B in blocks of `lanes` rows, word-major inside a block:
  // bp[(block * ldb) + k * lanes + l] = b[block * lanes + l][k] (zero past the last row).
  int lanes;

  // For each of `rows` rows of n contiguous elements (row r starts row_stride
  // elements after row r-1): out[r * ceil(n/64) + k] = bits (x[i] > threshold).
  // Floats of 32 bits or less compare against thr32 (threshold rounded toward
  // -inf to float32, which makes the comparison exact), float64 against thr64.
  void (*pack_rows)(const void* x, int dtype, int64_t rows, int64_t row_stride, int64_t n, float thr32, double thr64,
                    uint64_t* out);

  // out[r] = popcount of row r (w words), rows contiguous.
  void (*popcount_rows)(const uint64_t* a, int64_t rows, int64_t w, int64_t* out);
  // out[r] = popcount(a[r] ^ b[r]).
  void (*hamming_rows)(const uint64_t* a, const uint64_t* b, int64_t rows, int64_t w, int64_t* out);
  // popcount of a ^ b over n words.
  uint64_t (*hamming_sum)(const uint64_t* a, const uint64_t* b, int64_t n);

  // out[i * ldo + j] (+)= popcount(a_i ^ b_j) over kw words, for i < na, j < nb.
  // a_i = a + i * lda; b_j is lane j % lanes of block j / lanes of bp (block stride ldb).
  // accumulate = false overwrites, true adds (blocking over the words of long codes).
  void (*cdist_tile)(const uint64_t* a, int64_t lda, int64_t na, const uint64_t* bp, int64_t ldb, int64_t nb,
                     int64_t kw, int32_t* out, int64_t ldo, bool accumulate);

  // True when any of n contiguous elements of `dtype` at x is NaN (pack_signs' NaN
  // check, run on a row right after packing it, while it is in cache).
  bool (*any_nan)(const void* x, int dtype, int64_t n);
};

// Tables of the ISA files; nullptr when that file was compiled out (not x86-64).
const KernelTable* scalar_table();
const KernelTable* avx2_table();
const KernelTable* avx512_table();

}  // namespace fastspline
