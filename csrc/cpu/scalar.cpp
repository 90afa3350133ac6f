// Scalar micro-kernels: the portable base that avx2.cpp and avx512.cpp override.
// Compiled with -mpopcnt on x86-64 (a plain __builtin_popcountll is a library
// call, about 5x slower); cdist_tile is a 4x4 register block, popcount-bound.
#include <cstdint>

#include "kernels.h"
#include "scalar_helpers.h"

namespace fastspline {
namespace {

inline int64_t popcount64(uint64_t x) { return __builtin_popcountll(x); }

void pack_contiguous(const void* x, int dtype, int64_t n, float thr32, double thr64, uint64_t* out) {
  for (int64_t begin = 0; begin < n; begin += 64) {
    int64_t end = begin + 64 < n ? begin + 64 : n;
    out[begin / 64] = pack_word_scalar(x, dtype, begin, end, thr32, thr64);
  }
}

bool any_nan(const void* x, int dtype, int64_t n) { return any_nan_scalar(x, dtype, 0, n); }

void popcount_rows(const uint64_t* a, int64_t rows, int64_t w, int64_t* out) {
  for (int64_t r = 0; r < rows; ++r) {
    int64_t sum = 0;
    for (int64_t k = 0; k < w; ++k) sum += popcount64(a[r * w + k]);
    out[r] = sum;
  }
}

void hamming_rows(const uint64_t* a, const uint64_t* b, int64_t rows, int64_t w, int64_t* out) {
  for (int64_t r = 0; r < rows; ++r) {
    int64_t sum = 0;
    for (int64_t k = 0; k < w; ++k) sum += popcount64(a[r * w + k] ^ b[r * w + k]);
    out[r] = sum;
  }
}

uint64_t hamming_sum(const uint64_t* a, const uint64_t* b, int64_t n) {
  uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t k = 0;
  for (; k + 4 <= n; k += 4) {
    s0 += popcount64(a[k] ^ b[k]);
    s1 += popcount64(a[k + 1] ^ b[k + 1]);
    s2 += popcount64(a[k + 2] ^ b[k + 2]);
    s3 += popcount64(a[k + 3] ^ b[k + 3]);
  }
  for (; k < n; ++k) s0 += popcount64(a[k] ^ b[k]);
  return s0 + s1 + s2 + s3;
}

// R rows of a against C rows of b (lanes = 1, so b_j = bp + j * ldb).
template <int R, int C>
inline void block(const uint64_t* a, int64_t lda, const uint64_t* bp, int64_t ldb, int64_t kw, int32_t* out,
                  int64_t ldo, bool accumulate) {
  int64_t acc[R][C] = {};
  for (int64_t k = 0; k < kw; ++k) {
    uint64_t bv[C];
    for (int c = 0; c < C; ++c) bv[c] = bp[c * ldb + k];
    for (int r = 0; r < R; ++r) {
      uint64_t av = a[r * lda + k];
      for (int c = 0; c < C; ++c) acc[r][c] += popcount64(av ^ bv[c]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) {
      int32_t v = (int32_t)acc[r][c];
      out[r * ldo + c] = accumulate ? out[r * ldo + c] + v : v;
    }
}

template <int R>
inline void row_block(const uint64_t* a, int64_t lda, const uint64_t* bp, int64_t ldb, int64_t nb, int64_t kw,
                      int32_t* out, int64_t ldo, bool accumulate) {
  int64_t j = 0;
  for (; j + 4 <= nb; j += 4) block<R, 4>(a, lda, bp + j * ldb, ldb, kw, out + j, ldo, accumulate);
  for (; j < nb; ++j) block<R, 1>(a, lda, bp + j * ldb, ldb, kw, out + j, ldo, accumulate);
}

void cdist_tile(const uint64_t* a, int64_t lda, int64_t na, const uint64_t* bp, int64_t ldb, int64_t nb, int64_t kw,
                int32_t* out, int64_t ldo, bool accumulate) {
  int64_t i = 0;
  for (; i + 4 <= na; i += 4) row_block<4>(a + i * lda, lda, bp, ldb, nb, kw, out + i * ldo, ldo, accumulate);
  for (; i < na; ++i) row_block<1>(a + i * lda, lda, bp, ldb, nb, kw, out + i * ldo, ldo, accumulate);
}

const KernelTable table = {
    "scalar", 1, pack_rows_with<pack_contiguous>, popcount_rows, hamming_rows, hamming_sum, cdist_tile, any_nan,
};

}  // namespace

const KernelTable* scalar_table() { return &table; }

}  // namespace fastspline
