// AVX2 micro-kernels (AVX2 + F16C + POPCNT), compiled with those flags only here.
// Overrides pack_rows and cdist_tile of the scalar base; the row-wise
// popcounts keep the scalar POPCNT loops (bandwidth-bound either way).
//
// cdist_tile: B packed 4 rows per ymm; popcount by the nibble lookup table
// (VPSHUFB), counted in bytes for up to 31 words (8 bits each < 256), then
// widened to 64-bit lanes with VPSADBW. 2x2 block of 2 rows x 8 B rows.
#include "kernels.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#include <cstdint>

#include "scalar_helpers.h"

namespace fastspline {
namespace {

template <int DT>
inline uint64_t greater8(const char* p, __m256 thr) {
  __m256 v;
  if (DT == kFloat32) {
    v = _mm256_loadu_ps(reinterpret_cast<const float*>(p));
  } else if (DT == kFloat16) {
    v = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  } else {
    v = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16));
  }
  return (uint64_t)(uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(v, thr, _CMP_GT_OQ));
}

template <int DT>
void pack_words8(const void* x, int64_t n, float thr32, double thr64, uint64_t* out) {
  constexpr int64_t kSize = DT == kFloat32 ? 4 : 2;
  const char* p = static_cast<const char*>(x);
  const __m256 thr = _mm256_set1_ps(thr32);
  int64_t begin = 0;
  for (; begin + 64 <= n; begin += 64) {
    uint64_t word = 0;
    for (int part = 0; part < 8; ++part) word |= greater8<DT>(p + (begin + 8 * part) * kSize, thr) << (8 * part);
    out[begin / 64] = word;
  }
  if (begin < n) out[begin / 64] = pack_word_scalar(x, DT, begin, n, thr32, thr64);
}

void pack_words_f64(const double* x, int64_t n, double thr64, uint64_t* out) {
  const __m256d thr = _mm256_set1_pd(thr64);
  int64_t begin = 0;
  for (; begin + 64 <= n; begin += 64) {
    uint64_t word = 0;
    for (int part = 0; part < 16; ++part)
      word |= (uint64_t)(uint32_t)_mm256_movemask_pd(_mm256_cmp_pd(_mm256_loadu_pd(x + begin + 4 * part), thr, _CMP_GT_OQ))
              << (4 * part);
    out[begin / 64] = word;
  }
  if (begin < n) out[begin / 64] = pack_word_scalar(x, kFloat64, begin, n, 0.0f, thr64);
}

void pack_contiguous(const void* x, int dtype, int64_t n, float thr32, double thr64, uint64_t* out) {
  switch (dtype) {
    case kFloat32: pack_words8<kFloat32>(x, n, thr32, thr64, out); break;
    case kFloat16: pack_words8<kFloat16>(x, n, thr32, thr64, out); break;
    case kBFloat16: pack_words8<kBFloat16>(x, n, thr32, thr64, out); break;
    default: pack_words_f64(static_cast<const double*>(x), n, thr64, out); break;
  }
}

// NaN: float32/64 unordered with themselves; 16-bit floats by their bits (|h| > inf).
bool any_nan(const void* x, int dtype, int64_t n) {
  int64_t i = 0;
  int found = 0;
  if (dtype == kFloat32) {
    const float* p = static_cast<const float*>(x);
    __m256 acc = _mm256_setzero_ps();
    for (; i + 8 <= n; i += 8) {
      __m256 v = _mm256_loadu_ps(p + i);
      acc = _mm256_or_ps(acc, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    }
    found = _mm256_movemask_ps(acc);
  } else if (dtype == kFloat64) {
    const double* p = static_cast<const double*>(x);
    __m256d acc = _mm256_setzero_pd();
    for (; i + 4 <= n; i += 4) {
      __m256d v = _mm256_loadu_pd(p + i);
      acc = _mm256_or_pd(acc, _mm256_cmp_pd(v, v, _CMP_UNORD_Q));
    }
    found = _mm256_movemask_pd(acc);
  } else {
    const uint16_t* p = static_cast<const uint16_t*>(x);
    const __m256i abs_mask = _mm256_set1_epi16(0x7FFF);
    const __m256i inf = _mm256_set1_epi16(dtype == kFloat16 ? 0x7C00 : 0x7F80);
    __m256i acc = _mm256_setzero_si256();
    for (; i + 16 <= n; i += 16) {
      __m256i v = _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i)), abs_mask);
      acc = _mm256_or_si256(acc, _mm256_cmpgt_epi16(v, inf));  // both non-negative as int16
    }
    found = _mm256_movemask_epi8(acc);
  }
  return found != 0 || any_nan_scalar(x, dtype, i, n);
}

inline __m256i popcount_bytes(__m256i v) {
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,  //
                                       0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i low = _mm256_set1_epi8(0x0F);
  __m256i lo = _mm256_shuffle_epi8(lut, _mm256_and_si256(v, low));
  __m256i hi = _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(v, 4), low));
  return _mm256_add_epi8(lo, hi);
}

// R rows of A against C packed blocks of B (4 rows each); `valid` = real rows in the last block.
template <int R, int C>
inline void block(const uint64_t* a, int64_t lda, const uint64_t* bp, int64_t ldb, int64_t kw, int32_t* out,
                  int64_t ldo, bool accumulate, int valid) {
  const __m256i zero = _mm256_setzero_si256();
  __m256i acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = zero;
  for (int64_t k0 = 0; k0 < kw; k0 += 31) {
    int64_t k1 = k0 + 31 < kw ? k0 + 31 : kw;
    __m256i bytes[R][C];
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < C; ++c) bytes[r][c] = zero;
    for (int64_t k = k0; k < k1; ++k) {
      __m256i bv[C];
      for (int c = 0; c < C; ++c) bv[c] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bp + c * ldb + k * 4));
      for (int r = 0; r < R; ++r) {
        __m256i av = _mm256_set1_epi64x((long long)a[r * lda + k]);
        for (int c = 0; c < C; ++c) bytes[r][c] = _mm256_add_epi8(bytes[r][c], popcount_bytes(_mm256_xor_si256(av, bv[c])));
      }
    }
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < C; ++c) acc[r][c] = _mm256_add_epi64(acc[r][c], _mm256_sad_epu8(bytes[r][c], zero));
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) {
      alignas(32) int64_t lanes[4];
      _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), acc[r][c]);
      int n = c == C - 1 ? valid : 4;
      int32_t* dst = out + r * ldo + c * 4;
      for (int l = 0; l < n; ++l) dst[l] = accumulate ? dst[l] + (int32_t)lanes[l] : (int32_t)lanes[l];
    }
}

template <int R>
inline void row_block(const uint64_t* a, int64_t lda, const uint64_t* bp, int64_t ldb, int64_t nb, int64_t kw,
                      int32_t* out, int64_t ldo, bool accumulate) {
  int64_t j = 0;
  for (; j + 8 <= nb; j += 8) block<R, 2>(a, lda, bp + (j / 4) * ldb, ldb, kw, out + j, ldo, accumulate, 4);
  for (; j < nb; j += 4) {
    int valid = nb - j < 4 ? (int)(nb - j) : 4;
    block<R, 1>(a, lda, bp + (j / 4) * ldb, ldb, kw, out + j, ldo, accumulate, valid);
  }
}

void cdist_tile(const uint64_t* a, int64_t lda, int64_t na, const uint64_t* bp, int64_t ldb, int64_t nb, int64_t kw,
                int32_t* out, int64_t ldo, bool accumulate) {
  int64_t i = 0;
  for (; i + 2 <= na; i += 2) row_block<2>(a + i * lda, lda, bp, ldb, nb, kw, out + i * ldo, ldo, accumulate);
  for (; i < na; ++i) row_block<1>(a + i * lda, lda, bp, ldb, nb, kw, out + i * ldo, ldo, accumulate);
}

KernelTable make_table() {
  KernelTable t = *scalar_table();  // the base: row-wise popcounts stay scalar POPCNT
  t.name = "avx2";
  t.lanes = 4;
  t.pack_rows = pack_rows_with<pack_contiguous>;
  t.cdist_tile = cdist_tile;
  t.any_nan = any_nan;
  return t;
}

}  // namespace

const KernelTable* avx2_table() {
  static const KernelTable table = make_table();
  return &table;
}

}  // namespace fastspline

#else

namespace fastspline {
const KernelTable* avx2_table() { return nullptr; }
}  // namespace fastspline

#endif
