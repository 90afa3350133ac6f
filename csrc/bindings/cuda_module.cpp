// pybind11 module fastspline._cuda: CUDA ops on raw device pointers and the
// caller's stream (torch.cuda.current_stream().cuda_stream). No libtorch.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "../cuda/ops.h"

namespace py = pybind11;

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "fastspline CUDA kernels";
  using namespace fastspline::cuda;
  m.def("build_info", [] { return runtime_info(); });
  m.def("device_count", &device_count);
  m.def(
      "hamming_rows",
      [](std::uintptr_t a, std::uintptr_t b, int64_t rows, int64_t w, std::uintptr_t out, std::uintptr_t stream) {
        if (rows < 0 || w < 0) throw std::invalid_argument("hamming_rows: negative size");
        if (rows > 0 && (a == 0 || out == 0)) throw std::invalid_argument("hamming_rows: null pointer");
        hamming_rows(reinterpret_cast<const uint64_t*>(a), reinterpret_cast<const uint64_t*>(b), rows, w,
                     reinterpret_cast<int64_t*>(out), stream);
      },
      py::arg("a"), py::arg("b"), py::arg("rows"), py::arg("w"), py::arg("out"), py::arg("stream") = 0,
      py::call_guard<py::gil_scoped_release>());
}
