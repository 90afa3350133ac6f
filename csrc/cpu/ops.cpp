// Drivers of the CPU ops: ISA dispatch, OpenMP threading, tiling, heaps, sorting.
// Compiled without ISA flags; all SIMD work goes through the active KernelTable.
// Loops use dynamic schedules: on a shared machine a thread that loses its core
// would otherwise hold a static half of the work (and everyone at the barrier).
#include "ops.h"

#include <omp.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif
#if defined(__x86_64__) || defined(_M_X64)
#include <xmmintrin.h>  // _mm_getcsr / _mm_setcsr (SSE: baseline on x86-64)
#endif

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <utility>

#include "../threshold.h"
#include "kernels.h"
#include "scalar_helpers.h"

namespace fastspline {

// ------------------------------------------------------------------ dispatch

namespace {

bool cpu_has_avx512() {
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  return avx512_table() != nullptr && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512vpopcntdq") && __builtin_cpu_supports("popcnt");
#else
  return false;
#endif
}

bool cpu_has_avx2() {
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  return avx2_table() != nullptr && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c") &&
         __builtin_cpu_supports("popcnt");
#else
  return false;
#endif
}

const KernelTable* table_for(const std::string& name) {
  if (name == "scalar") return scalar_table();
  if (name == "avx2" && cpu_has_avx2()) return avx2_table();
  if (name == "avx512" && cpu_has_avx512()) return avx512_table();
  return nullptr;
}

const KernelTable* best_table() {
  if (cpu_has_avx512()) return avx512_table();
  if (cpu_has_avx2()) return avx2_table();
  return scalar_table();
}

const KernelTable* g_table = best_table();

inline const KernelTable& kt() { return *g_table; }

}  // namespace

std::vector<std::string> supported_isas() {
  std::vector<std::string> out{"scalar"};
  if (cpu_has_avx2()) out.push_back("avx2");
  if (cpu_has_avx512()) out.push_back("avx512");
  return out;
}

std::string active_isa() { return kt().name; }

void set_isa(const std::string& name) {
  const KernelTable* t = table_for(name);
  if (t == nullptr) throw std::invalid_argument("isa '" + name + "' is unknown or not supported by this CPU");
  g_table = t;
}

// ------------------------------------------------------------------ helpers

namespace {

constexpr int64_t kParallelMin = 1 << 14;  // below this many words, threads cost more than they save
// pack_signs reads 64 elements per word written: its tasks are at least this many words
// (256 KiB of float32), so a layer of 128K+ elements packs on two threads.
constexpr int64_t kPackTaskWords = 1 << 10;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

int element_size(int dtype) {
  switch (dtype) {
    case kFloat32: return 4;
    case kFloat64: return 8;
    case kFloat16:
    case kBFloat16: return 2;
    default: throw std::invalid_argument("pack_signs: unknown dtype code " + std::to_string(dtype));
  }
}

// 64x64 bit transpose in place: bit c of a[r] <-> bit r of a[c]. Recursive block
// swaps (32x32 blocks, then 16x16, ...): 6 rounds of 32 masked swaps.
void transpose64(uint64_t* a) {
  uint64_t m = 0x00000000FFFFFFFFULL;
  for (int j = 32; j != 0; j >>= 1, m ^= (m << j)) {
    for (int k = 0; k < 64; k = ((k | j) + 1) & ~j) {
      uint64_t t = ((a[k] >> j) ^ a[k | j]) & m;
      a[k] ^= t << j;
      a[k | j] ^= t;
    }
  }
}

// Large outputs are freshly mapped memory: asking for transparent huge pages
// before the first write turns ~16k page faults per 64 MiB into ~32 (torch's
// THP_MEM_ALLOC_ENABLE and numpy do the same). Advisory: failure is harmless.
void prefer_huge_pages(void* data, int64_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = 2u << 20;
  if (bytes < (int64_t)(2 * kHuge)) return;
  uintptr_t begin = ((uintptr_t)data + kHuge - 1) & ~(kHuge - 1);
  uintptr_t end = ((uintptr_t)data + (uintptr_t)bytes) & ~(kHuge - 1);
  if (end > begin) madvise((void*)begin, end - begin, MADV_HUGEPAGE);
#else
  (void)data;
  (void)bytes;
#endif
}

// Touch every page of an int32 buffer once, in order: the kernel zeroes a fresh
// page on its first write (~3.7 ms per 64 MiB here, and no faster with two threads
// faulting at once). Other threads may be writing results meanwhile, so the touch
// is an atomic add of 0: it faults the page in for writing and changes no value.
void prefault(int32_t* data, int64_t count) {
#if defined(__linux__)
  // One call faults the range in for writing without touching its contents (Linux >= 5.14).
  constexpr int kPopulateWrite = 23;  // MADV_POPULATE_WRITE
  const uintptr_t page = 4096, begin = (uintptr_t)data & ~(page - 1);
  const uintptr_t end = ((uintptr_t)(data + count) + page - 1) & ~(page - 1);
  if (madvise((void*)begin, end - begin, kPopulateWrite) == 0) return;
#endif
  for (int64_t i = 0; i < count; i += 4096 / sizeof(int32_t)) __atomic_fetch_add(data + i, 0, __ATOMIC_RELAXED);
}

// pack_signs compares floats exactly, subnormals included. MXCSR.DAZ (set by
// torch.set_flush_denormal(True), on the calling thread only) makes SSE/AVX compares
// read subnormal inputs (and a subnormal float32 threshold) as 0, so rows packed on
// the caller would differ from rows packed on OpenMP workers. Each pack task clears
// DAZ for its duration and restores the caller's MXCSR after.
struct ExactFloatCompares {
#if defined(__x86_64__) || defined(_M_X64)
  static constexpr unsigned kDaz = 0x0040;
  unsigned saved = _mm_getcsr();
  ExactFloatCompares() {
    if (saved & kDaz) _mm_setcsr(saved & ~kDaz);
  }
  ~ExactFloatCompares() {
    if (saved & kDaz) _mm_setcsr(saved);
  }
#else
  ExactFloatCompares() {}
#endif
  ExactFloatCompares(const ExactFloatCompares&) = delete;
  ExactFloatCompares& operator=(const ExactFloatCompares&) = delete;
};

// Leading (non-packed) dims of a strided view, with size-1 dims dropped and
// neighbours merged where memory allows; row-major order of rows is kept.
struct Dims {
  std::vector<int64_t> sizes, strides;
};

Dims coalesce(const std::vector<int64_t>& sizes, const std::vector<int64_t>& strides) {
  Dims d;
  for (size_t k = 0; k < sizes.size(); ++k) {
    if (sizes[k] == 1) continue;
    if (!d.sizes.empty() && d.strides.back() == strides[k] * sizes[k]) {
      d.sizes.back() *= sizes[k];
      d.strides.back() = strides[k];
    } else {
      d.sizes.push_back(sizes[k]);
      d.strides.push_back(strides[k]);
    }
  }
  return d;
}

// Element offset of row `row` (row-major over d).
inline int64_t row_offset(const Dims& d, int64_t row) {
  int64_t offset = 0;
  for (size_t k = d.sizes.size(); k-- > 0;) {
    offset += (row % d.sizes[k]) * d.strides[k];
    row /= d.sizes[k];
  }
  return offset;
}

}  // namespace

// ------------------------------------------------------------------ pack / unpack

bool pack_signs(const void* x, int dtype, const std::vector<int64_t>& sizes, const std::vector<int64_t>& strides,
                double threshold, uint64_t* out, int threads, bool check_nan) {
  if (sizes.empty() || sizes.size() != strides.size())
    throw std::invalid_argument("pack_signs: sizes and strides must be non-empty and of equal length");
  const int64_t es = element_size(dtype);
  const int64_t n = sizes.back(), stride_n = strides.back(), w = ceil_div(n, 64);
  const Dims lead = coalesce(std::vector<int64_t>(sizes.begin(), sizes.end() - 1),
                             std::vector<int64_t>(strides.begin(), strides.end() - 1));
  int64_t rows = 1;
  for (int64_t s : lead.sizes) rows *= s;
  if (rows == 0 || n == 0) return false;
  bool nan = false;  // any NaN seen (only looked for when check_nan)
  const ExactFloatCompares exact;  // for the threshold's rounding (a subnormal float64 threshold)
  const float thr32 = round_down_to_float(threshold);
  const KernelTable& t = kt();
  const char* base = static_cast<const char*>(x);

  if (stride_n == 1 || n == 1) {  // each row is contiguous: runs of rows along the innermost leading dim
    Dims outer = lead;
    const int64_t inner = outer.sizes.empty() ? 1 : outer.sizes.back();
    const int64_t inner_stride = outer.sizes.empty() ? 0 : outer.strides.back();
    if (!outer.sizes.empty()) {
      outer.sizes.pop_back();
      outer.strides.pop_back();
    }
    // Tasks of 1,024 to 16,384 words, about 4 per thread: small layers still split, big ones
    // keep long runs (the bit-stream path cuts rows per run).
    const int64_t task_words = std::clamp<int64_t>(rows * w / (4 * std::max(threads, 1)), kPackTaskWords, kParallelMin);
    const int64_t run = std::max<int64_t>(1, std::min(inner, task_words / w));
    const int64_t runs = ceil_div(inner, run), tasks = (rows / inner) * runs;
    // Short rows stored back to back (n < 64, one word each): pack the run as one bit
    // stream at full SIMD width, then cut each row's n bits out of it.
    const bool stream = n < 64 && inner_stride == n;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1) reduction(|| : nan) if (tasks > 1)
    for (int64_t task = 0; task < tasks; ++task) {
      const ExactFloatCompares exact;
      const int64_t g = task / runs, r0 = (task % runs) * run, rn = std::min(run, inner - r0);
      const char* first = base + (row_offset(outer, g) + r0 * inner_stride) * es;
      uint64_t* dst = out + (g * inner + r0) * w;
      if (!stream) {  // row by row, each scanned for NaN while in cache when asked
        for (int64_t r = 0; r < rn; ++r) {
          const char* row = first + r * inner_stride * es;
          t.pack_rows(row, dtype, 1, 0, n, thr32, threshold, dst + r * w);
          if (check_nan) nan = t.any_nan(row, dtype, n) || nan;
        }
        continue;
      }
      std::vector<uint64_t> bits(ceil_div(rn * n, 64) + 1, 0);
      constexpr int64_t kPiece = 64 * 64;  // elements (whole words) packed, then scanned when asked
      for (int64_t i = 0; i < rn * n; i += kPiece) {
        const int64_t count = std::min(kPiece, rn * n - i);
        t.pack_rows(first + i * es, dtype, 1, 0, count, thr32, threshold, bits.data() + i / 64);
        if (check_nan) nan = t.any_nan(first + i * es, dtype, count) || nan;
      }
      const uint64_t mask = (uint64_t(1) << n) - 1;
      for (int64_t r = 0; r < rn; ++r) {
        const int64_t offset = r * n, q = offset / 64, s = offset % 64;
        uint64_t v = bits[q] >> s;
        if (s + n > 64) v |= bits[q + 1] << (64 - s);
        dst[r] = v & mask;
      }
    }
    return nan;
  }

  // Strided packed dim. If the innermost leading dim is contiguous, read along it
  // (64 elements -> one word per packed index j), then transpose 64x64 bit blocks.
  const int64_t inner = lead.sizes.empty() ? 1 : lead.sizes.back();
  if (!lead.sizes.empty() && lead.strides.back() == 1 && inner >= 8) {
    const int64_t groups = rows / inner, i_blocks = ceil_div(inner, 64);
    Dims outer = lead;
    outer.sizes.pop_back();
    outer.strides.pop_back();
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1) reduction(|| : nan)
    for (int64_t task = 0; task < groups * i_blocks; ++task) {
      const ExactFloatCompares exact;
      const int64_t g = task / i_blocks, i0 = (task % i_blocks) * 64;
      const int64_t count = std::min<int64_t>(64, inner - i0);
      const char* plane = base + (row_offset(outer, g) + i0) * es;
      uint64_t block[64];
      for (int64_t j0 = 0; j0 < n; j0 += 64) {
        const int64_t jn = std::min<int64_t>(64, n - j0);
        for (int64_t j = 0; j < jn; ++j) {
          const char* line = plane + (j0 + j) * stride_n * es;
          t.pack_rows(line, dtype, 1, 0, count, thr32, threshold, &block[j]);
          if (check_nan) nan = t.any_nan(line, dtype, count) || nan;
        }
        for (int64_t j = jn; j < 64; ++j) block[j] = 0;
        transpose64(block);
        uint64_t* dst = out + (g * inner + i0) * w + j0 / 64;
        for (int64_t i = 0; i < count; ++i) dst[i * w] = block[i];
      }
    }
    return nan;
  }

  // General strides: element by element.
#pragma omp parallel for num_threads(threads) schedule(static) reduction(|| : nan) if (rows * n > kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const ExactFloatCompares exact;
    const char* row = base + row_offset(lead, r) * es;
    for (int64_t k = 0; k < w; ++k) {
      uint64_t word = 0;
      for (int64_t j = k * 64; j < std::min<int64_t>(n, k * 64 + 64); ++j) {
        const char* element = row + j * stride_n * es;
        word |= (uint64_t)element_greater(element, dtype, 0, thr32, threshold) << (j - k * 64);
        if (check_nan) nan = element_nan(element, dtype, 0) || nan;
      }
      out[r * w + k] = word;
    }
  }
  return nan;
}

void unpack_bits(const uint64_t* words, int64_t rows, int64_t w, int64_t n_bits, bool* out, int threads) {
  prefer_huge_pages(out, rows * n_bits);
#pragma omp parallel for num_threads(threads) schedule(dynamic, 64) if (rows * w > kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    bool* dst = out + r * n_bits;
    for (int64_t k = 0; k < w; ++k) {
      const uint64_t word = words[r * w + k];
      const int64_t jn = std::min<int64_t>(64, n_bits - k * 64);
      for (int64_t j = 0; j < jn; ++j) dst[k * 64 + j] = (word >> j) & 1;
    }
  }
}

// ------------------------------------------------------------------ row-wise

void popcount(const uint64_t* words, int64_t rows, int64_t w, int64_t* out, int threads) {
  const KernelTable& t = kt();
  const int64_t chunk = std::max<int64_t>(1, kParallelMin / std::max<int64_t>(w, 1));
  const int64_t chunks = ceil_div(rows, chunk);
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1) if (chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t r0 = c * chunk, rn = std::min(chunk, rows - r0);
    t.popcount_rows(words + r0 * w, rn, w, out + r0);
  }
}

void hamming(const uint64_t* a, const uint64_t* b, int64_t rows, int64_t w, int64_t* out, int threads) {
  const KernelTable& t = kt();
  const int64_t chunk = std::max<int64_t>(1, kParallelMin / std::max<int64_t>(w, 1));
  const int64_t chunks = ceil_div(rows, chunk);
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1) if (chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t r0 = c * chunk, rn = std::min(chunk, rows - r0);
    t.hamming_rows(a + r0 * w, b + r0 * w, rn, w, out + r0);
  }
}

uint64_t hamming_total(const uint64_t* a, const uint64_t* b, int64_t n_words, int threads) {
  const KernelTable& t = kt();
  const int64_t chunks = ceil_div(n_words, kParallelMin * 4);
  uint64_t total = 0;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1) reduction(+ : total) if (chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t k0 = c * kParallelMin * 4;
    total += t.hamming_sum(a + k0, b + k0, std::min<int64_t>(kParallelMin * 4, n_words - k0));
  }
  return total;
}

// ------------------------------------------------------------------ all-pairs

namespace {

// B in the active table's interleaved layout (see KernelTable::lanes).
struct PackedB {
  std::vector<uint64_t> storage;
  const uint64_t* data;
  int64_t ldb;  // words between blocks of `lanes` rows
  int lanes;
};

PackedB pack_b(const KernelTable& t, const uint64_t* b, int64_t m, int64_t w, int threads) {
  PackedB p;
  p.lanes = t.lanes;
  if (t.lanes == 1) {  // the row-major layout already is the packed one
    p.data = b;
    p.ldb = w;
    return p;
  }
  const int64_t lanes = t.lanes, blocks = ceil_div(m, lanes);
  p.ldb = w * lanes;
  p.storage.assign(blocks * p.ldb, 0);
  uint64_t* dst = p.storage.data();
#pragma omp parallel for num_threads(threads) schedule(static) if (m * w > (int64_t(1) << 22))  // a copy: threads pay off only for large B
  for (int64_t blk = 0; blk < blocks; ++blk)
    for (int64_t l = 0; l < lanes && blk * lanes + l < m; ++l) {
      const uint64_t* src = b + (blk * lanes + l) * w;
      for (int64_t k = 0; k < w; ++k) dst[blk * p.ldb + k * lanes + l] = src[k];
    }
  p.data = dst;
  return p;
}

// Tiling: a tile is kTileA rows of A x tile_b(w) rows of B; long codes are cut
// into blocks of kWordBlock words so a tile's share of B stays in L1/L2.
constexpr int64_t kTileA = 64;
constexpr int64_t kWordBlock = 512;

int64_t tile_b(int64_t w) {
  const int64_t kw = std::max<int64_t>(1, std::min(w, kWordBlock));
  return std::max<int64_t>(64, std::min<int64_t>(1024, (32768 / (kw * 8)) / 32 * 32));
}

// dist[i * ld + j] = d(a_{i0+i}, b_{j0+j}) for i < na, j < nb.
void compute_tile(const KernelTable& t, const uint64_t* a, int64_t i0, int64_t na, const PackedB& pb, int64_t j0,
                  int64_t nb, int64_t w, int32_t* dist, int64_t ld) {
  if (w == 0) {
    for (int64_t i = 0; i < na; ++i) std::fill(dist + i * ld, dist + i * ld + nb, 0);
    return;
  }
  const uint64_t* bblock = pb.data + (j0 / pb.lanes) * pb.ldb;
  for (int64_t k0 = 0; k0 < w; k0 += kWordBlock) {
    const int64_t kw = std::min(kWordBlock, w - k0);
    t.cdist_tile(a + i0 * w + k0, w, na, bblock + k0 * pb.lanes, pb.ldb, nb, kw, dist, ld, k0 > 0);
  }
}

}  // namespace

void hamming_cdist(const uint64_t* a, int64_t n, const uint64_t* b, int64_t m, int64_t w, int32_t* out, int threads,
                   bool fresh_out) {
  const KernelTable& t = kt();
  if (fresh_out) prefer_huge_pages(out, n * m * (int64_t)sizeof(int32_t));
  const PackedB pb = pack_b(t, b, m, w, threads);
  const int64_t tb = tile_b(w), a_tiles = ceil_div(n, kTileA), b_tiles = ceil_div(m, tb);
  // A large fresh output: thread 0 first touches its pages, ahead of the tiles
  // (which run in row order), while the other threads compute; then it joins them.
  const int64_t out_bytes = n * m * (int64_t)sizeof(int32_t);
  const bool touch_ahead = fresh_out && threads > 1 && out_bytes >= (int64_t)(8 << 20);
#pragma omp parallel num_threads(threads) if (n * m * std::max<int64_t>(w, 1) > kParallelMin)
  {
    if (touch_ahead && omp_get_thread_num() == 0) prefault(out, n * m);
#pragma omp for schedule(dynamic, 1) collapse(2) nowait
    for (int64_t ia = 0; ia < a_tiles; ++ia)
      for (int64_t jb = 0; jb < b_tiles; ++jb) {
        const int64_t i0 = ia * kTileA, j0 = jb * tb;
        compute_tile(t, a, i0, std::min(kTileA, n - i0), pb, j0, std::min(tb, m - j0), w, out + i0 * m + j0, m);
      }
  }
}

namespace {

// For each block of kTileA rows of A (one task each, in parallel), a visitor made
// per thread sees begin(i0, na), then row(i, local, dist_row, j0, nb) for every
// row over the tiles of B in increasing j, then end(i0, na).
template <class MakeVisitor>
void scan_rows(const uint64_t* a, int64_t n, const uint64_t* b, int64_t m, int64_t w, int threads,
               MakeVisitor make_visitor) {
  const KernelTable& t = kt();
  const PackedB pb = pack_b(t, b, m, w, threads);
  const int64_t tb = tile_b(w), a_tiles = ceil_div(n, kTileA);
  // An exception may not leave an OpenMP region (std::terminate: the process dies).
  // The first one (a visitor's buffers failing to allocate: top-k keeps 64 * k
  // entries per thread) is kept, the remaining tasks skipped, and it is rethrown after.
  std::exception_ptr error;
  std::atomic<bool> failed{false};
  auto keep = [&] {
#pragma omp critical(fastspline_scan_rows)
    if (!error) error = std::current_exception();
    failed.store(true, std::memory_order_relaxed);
  };
#pragma omp parallel num_threads(threads) if (n * m * std::max<int64_t>(w, 1) > kParallelMin)
  {
    auto visitor = make_visitor();
    std::vector<int32_t> dist;
    try {
      dist.resize(kTileA * tb);
    } catch (...) {
      keep();
    }
#pragma omp for schedule(dynamic, 1)
    for (int64_t ia = 0; ia < a_tiles; ++ia) {
      if (failed.load(std::memory_order_relaxed)) continue;
      try {
        const int64_t i0 = ia * kTileA, na = std::min(kTileA, n - i0);
        visitor.begin(i0, na);
        for (int64_t j0 = 0; j0 < m; j0 += tb) {
          const int64_t nb = std::min(tb, m - j0);
          compute_tile(t, a, i0, na, pb, j0, nb, w, dist.data(), tb);
          for (int64_t i = 0; i < na; ++i) visitor.row(i0 + i, i, dist.data() + i * tb, j0, nb);
        }
        visitor.end(i0, na);
      } catch (...) {
        keep();
      }
    }
  }
  if (error) std::rethrow_exception(error);
}

// Bounded max-heap of (distance, index) per row: it keeps the k smallest pairs.
// Candidates arrive in increasing index, so an equal distance never displaces
// an earlier index: ties go to the lower index.
struct TopkVisitor {
  using Entry = std::pair<int32_t, int64_t>;
  int64_t k;
  int32_t* dist;
  int64_t* index;
  std::vector<Entry> heap;
  std::vector<int64_t> size;

  void begin(int64_t, int64_t na) {
    heap.resize(na * k);
    size.assign(na, 0);
  }
  void row(int64_t, int64_t local, const int32_t* d, int64_t j0, int64_t nb) {
    Entry* h = heap.data() + local * k;
    int64_t& s = size[local];
    int64_t j = 0;
    for (; j < nb && s < k; ++j) {
      h[s++] = Entry(d[j], j0 + j);
      std::push_heap(h, h + s);
    }
    for (; j < nb; ++j)
      if (d[j] < h[0].first) {
        std::pop_heap(h, h + k);
        h[k - 1] = Entry(d[j], j0 + j);
        std::push_heap(h, h + k);
      }
  }
  void end(int64_t i0, int64_t na) {
    for (int64_t local = 0; local < na; ++local) {
      Entry* h = heap.data() + local * k;
      std::sort_heap(h, h + k);
      for (int64_t q = 0; q < k; ++q) {
        dist[(i0 + local) * k + q] = h[q].first;
        index[(i0 + local) * k + q] = h[q].second;
      }
    }
  }
};

struct RadiusCountVisitor {
  int64_t r;
  int64_t* counts;
  void begin(int64_t, int64_t) {}
  void row(int64_t i, int64_t, const int32_t* d, int64_t, int64_t nb) {
    int64_t c = 0;
    for (int64_t j = 0; j < nb; ++j) c += d[j] <= r;
    counts[i] += c;
  }
  void end(int64_t, int64_t) {}
};

struct RadiusFillVisitor {
  int64_t r;
  const int64_t* offsets;
  int64_t *i_out, *j_out;
  int32_t* d_out;
  std::vector<int64_t> cursor;
  void begin(int64_t i0, int64_t na) { cursor.assign(offsets + i0, offsets + i0 + na); }
  void row(int64_t i, int64_t local, const int32_t* d, int64_t j0, int64_t nb) {
    int64_t& p = cursor[local];
    for (int64_t j = 0; j < nb; ++j)
      if (d[j] <= r) {
        i_out[p] = i;
        j_out[p] = j0 + j;
        d_out[p] = d[j];
        ++p;
      }
  }
  void end(int64_t, int64_t) {}
};

}  // namespace

void hamming_topk(const uint64_t* a, int64_t n, const uint64_t* b, int64_t m, int64_t w, int64_t k, int32_t* dist,
                  int64_t* index, int threads) {
  if (k < 1 || k > m) throw std::out_of_range("hamming_topk: k must be in [1, m]");
  scan_rows(a, n, b, m, w, threads, [&] { return TopkVisitor{k, dist, index, {}, {}}; });
}

void hamming_radius_count(const uint64_t* a, int64_t n, const uint64_t* b, int64_t m, int64_t w, int64_t r,
                          int64_t* counts, int threads) {
  std::fill(counts, counts + n, 0);
  scan_rows(a, n, b, m, w, threads, [&] { return RadiusCountVisitor{r, counts}; });
}

void hamming_radius_fill(const uint64_t* a, int64_t n, const uint64_t* b, int64_t m, int64_t w, int64_t r,
                         const int64_t* offsets, int64_t* i_out, int64_t* j_out, int32_t* d_out, int threads) {
  scan_rows(a, n, b, m, w, threads, [&] { return RadiusFillVisitor{r, offsets, i_out, j_out, d_out, {}}; });
}

// ------------------------------------------------------------------ transpose, regions

void bit_transpose(const uint64_t* words, int64_t n, int64_t w, int64_t n_bits, uint64_t* out, int threads) {
  const int64_t row_blocks = ceil_div(n, 64), out_w = row_blocks;
  prefer_huge_pages(out, n_bits * out_w * (int64_t)sizeof(uint64_t));
#pragma omp parallel for num_threads(threads) schedule(dynamic, 256) if (n * w > kParallelMin)
  for (int64_t task = 0; task < row_blocks * w; ++task) {
    const int64_t rb = task / w, k = task % w;
    const int64_t rows = std::min<int64_t>(64, n - rb * 64), bits = std::min<int64_t>(64, n_bits - k * 64);
    uint64_t block[64];
    for (int64_t r = 0; r < rows; ++r) block[r] = words[(rb * 64 + r) * w + k];
    for (int64_t r = rows; r < 64; ++r) block[r] = 0;
    transpose64(block);
    for (int64_t c = 0; c < bits; ++c) out[(k * 64 + c) * out_w + rb] = block[c];
  }
}

int64_t count_regions(const uint64_t* codes, int64_t n, int64_t w, int64_t* inverse, int64_t* first, int64_t* counts) {
  // Rows ordered lexicographically by words read as signed int64, as torch.unique(dim=0).
  auto less = [&](int64_t x, int64_t y) {
    const int64_t* rx = reinterpret_cast<const int64_t*>(codes + x * w);
    const int64_t* ry = reinterpret_cast<const int64_t*>(codes + y * w);
    for (int64_t k = 0; k < w; ++k)
      if (rx[k] != ry[k]) return rx[k] < ry[k];
    return x < y;  // equal rows stay in index order: first[u] is the first occurrence
  };
  std::vector<int64_t> order(n);
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  std::sort(order.begin(), order.end(), less);
  int64_t u = -1;
  for (int64_t q = 0; q < n; ++q) {
    const int64_t row = order[q];
    if (q == 0 || std::memcmp(codes + row * w, codes + order[q - 1] * w, w * sizeof(uint64_t)) != 0) {
      ++u;
      first[u] = row;
      counts[u] = 0;
    }
    inverse[row] = u;
    ++counts[u];
  }
  return u + 1;
}

}  // namespace fastspline
