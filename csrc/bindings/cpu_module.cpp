// pybind11 module fastspline._C: the CPU ops on raw pointers (tensor.data_ptr()).
// No libtorch: fastspline/backends/cpu.py allocates outputs and passes addresses.
// Every entry releases the GIL; bad sizes raise std::invalid_argument -> ValueError.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "../cpu/ops.h"

namespace py = pybind11;
using fastspline::active_isa;

namespace {

template <class T>
T* ptr(std::uintptr_t address, int64_t count, const char* what) {
  if (count < 0) throw std::invalid_argument(std::string(what) + ": negative size " + std::to_string(count));
  if (address == 0 && count > 0) throw std::invalid_argument(std::string(what) + ": null pointer for non-empty data");
  return reinterpret_cast<T*>(address);
}

int threads_of(int threads) { return threads < 1 ? 1 : threads; }

void check_sizes(const char* op, std::initializer_list<int64_t> sizes) {
  for (int64_t s : sizes)
    if (s < 0) throw std::invalid_argument(std::string(op) + ": negative size " + std::to_string(s));
}

std::string compiler() {
#if defined(__clang__)
  return std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  return "gcc " + std::to_string(__GNUC__) + "." + std::to_string(__GNUC_MINOR__) + "." +
         std::to_string(__GNUC_PATCHLEVEL__);
#else
  return "unknown";
#endif
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastspline C++ CPU kernels (AVX-512 VPOPCNTDQ / AVX2 / scalar, OpenMP)";
  using namespace fastspline;
  using gil = py::call_guard<py::gil_scoped_release>;

  m.def("supported_isas", &supported_isas);
  m.def("isa", &active_isa);
  m.def("set_isa", &set_isa, py::arg("name"));
  m.def("build_info", [] {
    py::dict d;
    d["compiler"] = compiler();
    d["cxx_standard"] = (long)__cplusplus;
#ifdef _OPENMP
    d["openmp"] = (long)_OPENMP;
#else
    d["openmp"] = py::none();
#endif
    return d;
  });

  m.def(
      "pack_signs",
      [](std::uintptr_t x, int dtype, const std::vector<int64_t>& sizes, const std::vector<int64_t>& strides,
         double threshold, std::uintptr_t out, int threads, bool check_nan) {
        int64_t n = 1;
        for (int64_t s : sizes) n *= s;
        check_sizes("pack_signs", {n});
        return pack_signs(ptr<const void>(x, n, "pack_signs x"), dtype, sizes, strides, threshold,
                          ptr<uint64_t>(out, n, "pack_signs out"), threads_of(threads), check_nan);
      },
      py::arg("x"), py::arg("dtype"), py::arg("sizes"), py::arg("strides"), py::arg("threshold"), py::arg("out"),
      py::arg("threads"), py::arg("check_nan") = false, gil());
  m.def(
      "unpack_bits",
      [](std::uintptr_t words, int64_t rows, int64_t w, int64_t n_bits, std::uintptr_t out, int threads) {
        check_sizes("unpack_bits", {rows, w, n_bits});
        if (n_bits > w * 64 || n_bits <= (w - 1) * 64) throw std::invalid_argument("unpack_bits: n_bits does not match w");
        unpack_bits(ptr<const uint64_t>(words, rows * w, "words"), rows, w, n_bits,
                    ptr<bool>(out, rows * n_bits, "out"), threads_of(threads));
      },
      gil());
  m.def(
      "popcount",
      [](std::uintptr_t words, int64_t rows, int64_t w, std::uintptr_t out, int threads) {
        check_sizes("popcount", {rows, w});
        popcount(ptr<const uint64_t>(words, rows * w, "words"), rows, w, ptr<int64_t>(out, rows, "out"),
                 threads_of(threads));
      },
      gil());
  m.def(
      "hamming",
      [](std::uintptr_t a, std::uintptr_t b, int64_t rows, int64_t w, std::uintptr_t out, int threads) {
        check_sizes("hamming", {rows, w});
        hamming(ptr<const uint64_t>(a, rows * w, "a"), ptr<const uint64_t>(b, rows * w, "b"), rows, w,
                ptr<int64_t>(out, rows, "out"), threads_of(threads));
      },
      gil());
  m.def(
      "hamming_total",
      [](std::uintptr_t a, std::uintptr_t b, int64_t n_words, int threads) {
        check_sizes("hamming_total", {n_words});
        return hamming_total(ptr<const uint64_t>(a, n_words, "a"), ptr<const uint64_t>(b, n_words, "b"), n_words,
                             threads_of(threads));
      },
      gil());
  m.def(
      "hamming_totals",  // hamming_total of each (a[i], b[i], n_words[i]): one call for many pairs
      [](const std::vector<std::uintptr_t>& a, const std::vector<std::uintptr_t>& b, const std::vector<int64_t>& n_words,
         int threads) {
        if (a.size() != b.size() || a.size() != n_words.size())
          throw std::invalid_argument("hamming_totals: a, b and n_words must have the same length");
        std::vector<uint64_t> totals(a.size());
        for (size_t i = 0; i < a.size(); ++i) {
          check_sizes("hamming_totals", {n_words[i]});
          totals[i] = hamming_total(ptr<const uint64_t>(a[i], n_words[i], "a"), ptr<const uint64_t>(b[i], n_words[i], "b"),
                                    n_words[i], threads_of(threads));
        }
        return totals;
      },
      gil());
  m.def(
      "hamming_cdist",
      [](std::uintptr_t a, int64_t n, std::uintptr_t b, int64_t mm, int64_t w, std::uintptr_t out, int threads,
         bool fresh_out) {
        check_sizes("hamming_cdist", {n, mm, w});
        hamming_cdist(ptr<const uint64_t>(a, n * w, "a"), n, ptr<const uint64_t>(b, mm * w, "b"), mm, w,
                      ptr<int32_t>(out, n * mm, "out"), threads_of(threads), fresh_out);
      },
      py::arg("a"), py::arg("n"), py::arg("b"), py::arg("m"), py::arg("w"), py::arg("out"), py::arg("threads"),
      py::arg("fresh_out") = false, gil());
  m.def(
      "hamming_topk",
      [](std::uintptr_t a, int64_t n, std::uintptr_t b, int64_t mm, int64_t w, int64_t k, std::uintptr_t dist,
         std::uintptr_t index, int threads) {
        check_sizes("hamming_topk", {n, mm, w});
        hamming_topk(ptr<const uint64_t>(a, n * w, "a"), n, ptr<const uint64_t>(b, mm * w, "b"), mm, w, k,
                     ptr<int32_t>(dist, n * k, "dist"), ptr<int64_t>(index, n * k, "index"), threads_of(threads));
      },
      gil());
  m.def(
      "hamming_radius_count",
      [](std::uintptr_t a, int64_t n, std::uintptr_t b, int64_t mm, int64_t w, int64_t r, std::uintptr_t counts,
         int threads) {
        check_sizes("hamming_radius", {n, mm, w, r});
        hamming_radius_count(ptr<const uint64_t>(a, n * w, "a"), n, ptr<const uint64_t>(b, mm * w, "b"), mm, w, r,
                             ptr<int64_t>(counts, n, "counts"), threads_of(threads));
      },
      gil());
  m.def(
      "hamming_radius_fill",
      [](std::uintptr_t a, int64_t n, std::uintptr_t b, int64_t mm, int64_t w, int64_t r, std::uintptr_t offsets,
         std::uintptr_t i_out, std::uintptr_t j_out, std::uintptr_t d_out, int threads) {
        check_sizes("hamming_radius", {n, mm, w, r});
        const int64_t* off = ptr<const int64_t>(offsets, n + 1, "offsets");
        const int64_t total = off[n];
        hamming_radius_fill(ptr<const uint64_t>(a, n * w, "a"), n, ptr<const uint64_t>(b, mm * w, "b"), mm, w, r,
                            off, ptr<int64_t>(i_out, total, "i"), ptr<int64_t>(j_out, total, "j"),
                            ptr<int32_t>(d_out, total, "d"), threads_of(threads));
      },
      gil());
  m.def(
      "bit_transpose",
      [](std::uintptr_t words, int64_t n, int64_t w, int64_t n_bits, std::uintptr_t out, int threads) {
        check_sizes("bit_transpose", {n, w, n_bits});
        if (n_bits > w * 64 || n_bits <= (w - 1) * 64)
          throw std::invalid_argument("bit_transpose: n_bits does not match w");
        bit_transpose(ptr<const uint64_t>(words, n * w, "words"), n, w, n_bits,
                      ptr<uint64_t>(out, n_bits * ((n + 63) / 64), "out"), threads_of(threads));
      },
      gil());
  m.def(
      "count_regions",
      [](std::uintptr_t codes, int64_t n, int64_t w, std::uintptr_t inverse, std::uintptr_t first,
         std::uintptr_t counts) {
        check_sizes("count_regions", {n, w});
        return count_regions(ptr<const uint64_t>(codes, n * w, "codes"), n, w, ptr<int64_t>(inverse, n, "inverse"),
                             ptr<int64_t>(first, n, "first"), ptr<int64_t>(counts, n, "counts"));
      },
      gil());
}
