// pybind11 module fastspline._cuda: CUDA ops on raw device pointers and the
// caller's stream (torch.cuda.current_stream().cuda_stream). No libtorch;
// fastspline/backends/cuda.py allocates outputs and passes data_ptr()s.
// Launches are asynchronous on that stream; the GIL is released meanwhile.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "../cuda/ops.h"

namespace py = pybind11;

namespace {

template <class T>
T* ptr(std::uintptr_t address, int64_t count, const char* what) {
  if (count < 0) throw std::invalid_argument(std::string(what) + ": negative size " + std::to_string(count));
  if (address == 0 && count > 0) throw std::invalid_argument(std::string(what) + ": null pointer for non-empty data");
  return reinterpret_cast<T*>(address);
}

}  // namespace

#ifndef FASTSPLINE_CUDA_MODULE  // tests/cuda_sim.py builds the same bindings as _cuda_sim
#define FASTSPLINE_CUDA_MODULE _cuda
#endif

PYBIND11_MODULE(FASTSPLINE_CUDA_MODULE, m) {
  m.doc() = "fastspline CUDA kernels";
  using namespace fastspline::cuda;
  using gil = py::call_guard<py::gil_scoped_release>;
  m.def("build_info", [] { return runtime_info(); });
  m.def("device_count", &device_count);
  m.def(
      "pack_signs",
      [](std::uintptr_t x, int dtype, const std::vector<int64_t>& sizes, const std::vector<int64_t>& strides,
         double threshold, std::uintptr_t out, std::uintptr_t stream, int variant, int allow) {
        pack_signs(ptr<const void>(x, 1, "x"), dtype, sizes, strides, threshold, ptr<uint64_t>(out, 1, "out"), stream,
                   variant, allow);
      },
      py::arg("x"), py::arg("dtype"), py::arg("sizes"), py::arg("strides"), py::arg("threshold"), py::arg("out"),
      py::arg("stream"), py::arg("variant") = 0, py::arg("allow") = 3, gil());
  m.def(
      "unpack_bits",
      [](std::uintptr_t words, int64_t rows, int64_t w, int64_t n_bits, std::uintptr_t out, std::uintptr_t stream) {
        unpack_bits(ptr<const uint64_t>(words, rows * w, "words"), rows, w, n_bits, ptr<bool>(out, rows * n_bits, "out"),
                    stream);
      },
      gil());
  m.def(
      "hamming_rows",
      [](std::uintptr_t a, std::uintptr_t b, int64_t rows, int64_t w, std::uintptr_t out, std::uintptr_t stream) {
        hamming_rows(ptr<const uint64_t>(a, rows * w, "a"), reinterpret_cast<const uint64_t*>(b), rows, w,
                     ptr<int64_t>(out, rows, "out"), stream);
      },
      py::arg("a"), py::arg("b"), py::arg("rows"), py::arg("w"), py::arg("out"), py::arg("stream") = 0, gil());
  m.def(
      "hamming_total",
      [](std::uintptr_t a, std::uintptr_t b, int64_t n, std::uintptr_t total, std::uintptr_t stream) {
        hamming_total(ptr<const uint64_t>(a, n, "a"), ptr<const uint64_t>(b, n, "b"), n,
                      ptr<int64_t>(total, 1, "total"), stream);
      },
      gil());
  m.def(
      "hamming_cdist",
      [](std::uintptr_t a, int64_t n, std::uintptr_t b, int64_t mm, int64_t w, std::uintptr_t out, int64_t ldo,
         std::uintptr_t stream) {
        hamming_cdist(ptr<const uint64_t>(a, n * w, "a"), n, ptr<const uint64_t>(b, mm * w, "b"), mm, w,
                      ptr<int32_t>(out, n * mm, "out"), ldo, stream);
      },
      gil());
  m.def(
      "hamming_cdist_mma",
      [](std::uintptr_t a, int64_t n, std::uintptr_t b, int64_t mm, int64_t w, std::uintptr_t out, int64_t ldo,
         bool use_xor, std::uintptr_t stream, int staging, std::uintptr_t workspace) {
        hamming_cdist_mma(ptr<const uint64_t>(a, n * w, "a"), n, ptr<const uint64_t>(b, mm * w, "b"), mm, w,
                          ptr<int32_t>(out, n * mm, "out"), ldo, use_xor, staging, stream,
                          ptr<int64_t>(workspace, 0, "workspace"));
      },
      py::arg("a"), py::arg("n"), py::arg("b"), py::arg("m"), py::arg("w"), py::arg("out"), py::arg("ldo"),
      py::arg("use_xor"), py::arg("stream"), py::arg("staging") = 0, py::arg("workspace") = 0, gil());
  m.def("cdist_mma_workspace", &cdist_mma_workspace, py::arg("n"), py::arg("m"), py::arg("w"), py::arg("use_xor"),
        py::arg("staging"), "int64 words of workspace hamming_cdist_mma needs");
  m.def(
      "hamming_topk_mma",
      [](std::uintptr_t a, int64_t n, std::uintptr_t b, int64_t mm, int64_t w, int k, int splits, std::uintptr_t cand,
         std::uintptr_t stream, std::uintptr_t workspace) {
        hamming_topk_mma(ptr<const uint64_t>(a, n * w, "a"), n, ptr<const uint64_t>(b, mm * w, "b"), mm, w, k, splits,
                         ptr<int64_t>(cand, n * (int64_t)splits * k, "cand"), stream,
                         ptr<int64_t>(workspace, 0, "workspace"));
      },
      py::arg("a"), py::arg("n"), py::arg("b"), py::arg("m"), py::arg("w"), py::arg("k"), py::arg("splits"),
      py::arg("cand"), py::arg("stream"), py::arg("workspace") = 0, gil());
  m.def(
      "hamming_radius_mma",
      [](std::uintptr_t a, int64_t n, std::uintptr_t b, int64_t mm, int64_t w, int r, std::uintptr_t counts,
         std::uintptr_t offsets, std::uintptr_t oi, std::uintptr_t oj, std::uintptr_t od, bool fill,
         std::uintptr_t stream, std::uintptr_t workspace) {
        const int64_t slots = n * ((mm + 127) / 128);
        hamming_radius_mma(ptr<const uint64_t>(a, n * w, "a"), n, ptr<const uint64_t>(b, mm * w, "b"), mm, w, r,
                           ptr<int32_t>(counts, fill ? 0 : slots, "counts"),
                           ptr<const int64_t>(offsets, fill ? slots : 0, "offsets"), ptr<int64_t>(oi, 0, "oi"),
                           ptr<int64_t>(oj, 0, "oj"), ptr<int32_t>(od, 0, "od"), fill, stream,
                           ptr<int64_t>(workspace, 0, "workspace"));
      },
      py::arg("a"), py::arg("n"), py::arg("b"), py::arg("m"), py::arg("w"), py::arg("r"), py::arg("counts"),
      py::arg("offsets"), py::arg("oi"), py::arg("oj"), py::arg("od"), py::arg("fill"), py::arg("stream"),
      py::arg("workspace") = 0, gil());
  m.def("compute_capability", &compute_capability);
  m.def(
      "peak",
      [](int kind, int64_t iters, int blocks, std::uintptr_t sink, std::uintptr_t stream) {
        peak(kind, iters, blocks, ptr<int32_t>(sink, 1, "sink"), stream);
      },
      gil());
  m.def(
      "bit_transpose",
      [](std::uintptr_t words, int64_t n, int64_t w, int64_t n_bits, std::uintptr_t out, std::uintptr_t stream) {
        bit_transpose(ptr<const uint64_t>(words, n * w, "words"), n, w, n_bits,
                      ptr<uint64_t>(out, n_bits * ((n + 63) / 64), "out"), stream);
      },
      gil());
}
