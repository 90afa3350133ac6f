// AVX-512 micro-kernels (F, BW, VL, DQ, VPOPCNTDQ), compiled with those flags
// only in this file and called only when CPUID reports them.
//
// cdist_tile: B is packed 8 rows per zmm (one 64-bit lane per row, word-major),
// so a word of A is broadcast and XOR-ed against 8 rows at once and VPOPCNTQ
// accumulates per lane: no horizontal reductions. A 4x4 register block
// (4 rows of A x 32 rows of B, 16 accumulators) keeps it popcount-bound;
// distances leave as int32 through masked stores, so tails need no copies.
#include "kernels.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#include <cstdint>

#include "scalar_helpers.h"

namespace fastspline {
namespace {

inline __mmask16 low_mask16(int64_t count) {  // count in [0, 16]
  return count >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (count > 0 ? count : 0)) - 1u);
}

inline __mmask8 low_mask8(int64_t count) {  // count in [0, 8]
  return count >= 8 ? (__mmask8)0xFF : (__mmask8)((1u << (count > 0 ? count : 0)) - 1u);
}

// Bits (x > thr) of 16 elements (fewer under `mask`; lanes outside it are 0).
template <int DT>
inline uint64_t greater16(const char* p, __mmask16 mask, __m512 thr) {
  __m512 v;
  if (DT == kFloat32) {
    v = _mm512_maskz_loadu_ps(mask, p);
  } else if (DT == kFloat16) {
    v = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, p));
  } else {  // bfloat16: the upper half of a float32
    v = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, p)), 16));
  }
  // _CMP_GT_OQ: false for NaN, so NaN packs as 0.
  return (uint64_t)_mm512_mask_cmp_ps_mask(mask, v, thr, _CMP_GT_OQ);
}

template <int DT>
void pack_words16(const void* x, int64_t n, float thr32, uint64_t* out) {
  constexpr int64_t kSize = DT == kFloat32 ? 4 : 2;
  const char* p = static_cast<const char*>(x);
  const __m512 thr = _mm512_set1_ps(thr32);
  int64_t begin = 0;
  for (; begin + 64 <= n; begin += 64) {
    const char* q = p + begin * kSize;
    out[begin / 64] = greater16<DT>(q, 0xFFFF, thr) | greater16<DT>(q + 16 * kSize, 0xFFFF, thr) << 16 |
                      greater16<DT>(q + 32 * kSize, 0xFFFF, thr) << 32 |
                      greater16<DT>(q + 48 * kSize, 0xFFFF, thr) << 48;
  }
  if (begin < n) {
    uint64_t word = 0;
    for (int part = 0; part < 4; ++part) {
      int64_t first = begin + 16 * part;
      if (first >= n) break;
      word |= greater16<DT>(p + first * kSize, low_mask16(n - first), thr) << (16 * part);
    }
    out[begin / 64] = word;
  }
}

void pack_words_f64(const double* x, int64_t n, double thr64, uint64_t* out) {
  const __m512d thr = _mm512_set1_pd(thr64);
  for (int64_t begin = 0; begin < n; begin += 64) {
    uint64_t word = 0;
    for (int part = 0; part < 8; ++part) {
      int64_t first = begin + 8 * part;
      if (first >= n) break;
      __mmask8 mask = low_mask8(n - first);
      __m512d v = _mm512_maskz_loadu_pd(mask, x + first);
      word |= (uint64_t)_mm512_mask_cmp_pd_mask(mask, v, thr, _CMP_GT_OQ) << (8 * part);
    }
    out[begin / 64] = word;
  }
}

void pack_contiguous(const void* x, int dtype, int64_t n, float thr32, double thr64, uint64_t* out) {
  switch (dtype) {
    case kFloat32: pack_words16<kFloat32>(x, n, thr32, out); break;
    case kFloat16: pack_words16<kFloat16>(x, n, thr32, out); break;
    case kBFloat16: pack_words16<kBFloat16>(x, n, thr32, out); break;
    default: pack_words_f64(static_cast<const double*>(x), n, thr64, out); break;
  }
}

// NaN: float32/64 unordered with themselves; 16-bit floats by their bits (|h| > inf).
// Masked loads for the tail: nothing past x + n is read.
bool any_nan(const void* x, int dtype, int64_t n) {
  if (dtype == kFloat32) {
    const float* p = static_cast<const float*>(x);
    __mmask16 found = 0;
    for (int64_t i = 0; i < n; i += 16) {
      const __mmask16 mask = low_mask16(n - i);
      const __m512 v = _mm512_maskz_loadu_ps(mask, p + i);
      found |= _mm512_mask_cmp_ps_mask(mask, v, v, _CMP_UNORD_Q);
    }
    return found != 0;
  }
  if (dtype == kFloat64) {
    const double* p = static_cast<const double*>(x);
    __mmask8 found = 0;
    for (int64_t i = 0; i < n; i += 8) {
      const __mmask8 mask = low_mask8(n - i);
      const __m512d v = _mm512_maskz_loadu_pd(mask, p + i);
      found |= _mm512_mask_cmp_pd_mask(mask, v, v, _CMP_UNORD_Q);
    }
    return found != 0;
  }
  const uint16_t* p = static_cast<const uint16_t*>(x);
  const __m512i abs_mask = _mm512_set1_epi16(0x7FFF);
  const __m512i inf = _mm512_set1_epi16(dtype == kFloat16 ? 0x7C00 : 0x7F80);
  __mmask32 found = 0;
  for (int64_t i = 0; i < n; i += 32) {
    const __mmask32 mask = n - i >= 32 ? (__mmask32)0xFFFFFFFFu : (__mmask32)((1u << (n - i)) - 1u);
    const __m512i v = _mm512_and_si512(_mm512_maskz_loadu_epi16(mask, p + i), abs_mask);
    found |= _mm512_mask_cmpgt_epi16_mask(mask, v, inf);  // both non-negative as int16
  }
  return found != 0;
}

// Sum of popcount(a[k] (^ b[k])) over w words, 8 at a time with a masked tail.
template <bool XOR>
inline int64_t row_popcount(const uint64_t* a, const uint64_t* b, int64_t w) {
  __m512i acc = _mm512_setzero_si512();
  int64_t k = 0;
  for (; k + 8 <= w; k += 8) {
    __m512i v = _mm512_loadu_si512(a + k);
    if (XOR) v = _mm512_xor_si512(v, _mm512_loadu_si512(b + k));
    acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(v));
  }
  if (k < w) {
    __mmask8 mask = low_mask8(w - k);
    __m512i v = _mm512_maskz_loadu_epi64(mask, a + k);
    if (XOR) v = _mm512_xor_si512(v, _mm512_maskz_loadu_epi64(mask, b + k));
    acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(v));
  }
  return _mm512_reduce_add_epi64(acc);
}

void popcount_rows(const uint64_t* a, int64_t rows, int64_t w, int64_t* out) {
  for (int64_t r = 0; r < rows; ++r) out[r] = row_popcount<false>(a + r * w, nullptr, w);
}

void hamming_rows(const uint64_t* a, const uint64_t* b, int64_t rows, int64_t w, int64_t* out) {
  for (int64_t r = 0; r < rows; ++r) out[r] = row_popcount<true>(a + r * w, b + r * w, w);
}

uint64_t hamming_sum(const uint64_t* a, const uint64_t* b, int64_t n) {
  __m512i acc0 = _mm512_setzero_si512(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
  int64_t k = 0;
  for (; k + 32 <= n; k += 32) {
    acc0 = _mm512_add_epi64(acc0, _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(a + k), _mm512_loadu_si512(b + k))));
    acc1 = _mm512_add_epi64(acc1, _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(a + k + 8), _mm512_loadu_si512(b + k + 8))));
    acc2 = _mm512_add_epi64(acc2, _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(a + k + 16), _mm512_loadu_si512(b + k + 16))));
    acc3 = _mm512_add_epi64(acc3, _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(a + k + 24), _mm512_loadu_si512(b + k + 24))));
  }
  acc0 = _mm512_add_epi64(_mm512_add_epi64(acc0, acc1), _mm512_add_epi64(acc2, acc3));
  return (uint64_t)_mm512_reduce_add_epi64(acc0) + (uint64_t)row_popcount<true>(a + k, b + k, n - k);
}

// R rows of A against C packed blocks of B (8 rows each); `last` masks the lanes
// of the last block that are real rows.
template <int R, int C>
inline void block(const uint64_t* a, int64_t lda, const uint64_t* bp, int64_t ldb, int64_t kw, int32_t* out,
                  int64_t ldo, bool accumulate, __mmask8 last) {
  __m512i acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_si512();
  for (int64_t k = 0; k < kw; ++k) {
    __m512i bv[C];
    for (int c = 0; c < C; ++c) bv[c] = _mm512_loadu_si512(bp + c * ldb + k * 8);
    for (int r = 0; r < R; ++r) {
      __m512i av = _mm512_set1_epi64((long long)a[r * lda + k]);
      for (int c = 0; c < C; ++c) acc[r][c] = _mm512_add_epi64(acc[r][c], _mm512_popcnt_epi64(_mm512_xor_si512(av, bv[c])));
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) {
      __mmask8 mask = c == C - 1 ? last : (__mmask8)0xFF;
      int32_t* dst = out + r * ldo + c * 8;
      __m256i v = _mm512_cvtepi64_epi32(acc[r][c]);
      if (accumulate) v = _mm256_add_epi32(v, _mm256_maskz_loadu_epi32(mask, dst));
      _mm256_mask_storeu_epi32(dst, mask, v);
    }
}

template <int R>
inline void row_block(const uint64_t* a, int64_t lda, const uint64_t* bp, int64_t ldb, int64_t nb, int64_t kw,
                      int32_t* out, int64_t ldo, bool accumulate) {
  int64_t j = 0;
  for (; j + 32 <= nb; j += 32) block<R, 4>(a, lda, bp + (j / 8) * ldb, ldb, kw, out + j, ldo, accumulate, 0xFF);
  for (; j < nb; j += 8)
    block<R, 1>(a, lda, bp + (j / 8) * ldb, ldb, kw, out + j, ldo, accumulate, low_mask8(nb - j));
}

void cdist_tile(const uint64_t* a, int64_t lda, int64_t na, const uint64_t* bp, int64_t ldb, int64_t nb, int64_t kw,
                int32_t* out, int64_t ldo, bool accumulate) {
  int64_t i = 0;
  for (; i + 4 <= na; i += 4) row_block<4>(a + i * lda, lda, bp, ldb, nb, kw, out + i * ldo, ldo, accumulate);
  for (; i < na; ++i) row_block<1>(a + i * lda, lda, bp, ldb, nb, kw, out + i * ldo, ldo, accumulate);
}

const KernelTable table = {
    "avx512", 8, pack_rows_with<pack_contiguous>, popcount_rows, hamming_rows, hamming_sum, cdist_tile, any_nan,
};

}  // namespace

const KernelTable* avx512_table() { return &table; }

}  // namespace fastspline

#else  // not x86-64: this ISA does not exist

namespace fastspline {
const KernelTable* avx512_table() { return nullptr; }
}  // namespace fastspline

#endif
