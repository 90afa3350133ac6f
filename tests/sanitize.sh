#!/usr/bin/env bash
# Run the CPU op tests against fastspline._C built with AddressSanitizer + UBSan.
# Builds the sanitized module into a temporary copy of the package (the installed
# one is untouched), preloads the sanitizer runtimes (Python is not instrumented),
# first checks that a planted out-of-bounds write IS reported (so this step can
# fail), then runs the op and property tests on the cpu backend, every ISA.
# Then the CUDA kernels' code in the SIMT emulator (tests/test_cuda_sim.py), built with
# the same sanitizers: out-of-bounds reads of the inputs by any kernel show up here.
# Fails on any sanitizer report. ~3 minutes on 2 cores.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
asan=$(gcc -print-file-name=libasan.so)
ubsan=$(gcc -print-file-name=libubsan.so)
if [ ! -e "$asan" ] || [ ! -e "$ubsan" ]; then
  echo "sanitize.sh: gcc's libasan/libubsan not found" >&2
  exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python -c "import pybind11" 2>/dev/null || python -m pip install -q pybind11 cmake ninja
cmake -S "$root" -B "$work/build" -G Ninja -DFASTSPLINE_SANITIZE=ON -DFASTSPLINE_CUDA=OFF \
  -Dpybind11_DIR="$(python -c 'import pybind11; print(pybind11.get_cmake_dir())')" \
  -DPython_EXECUTABLE="$(command -v python)" -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$work/lib" > "$work/cmake.log"
cmake --build "$work/build" -j "$(nproc)" > "$work/build.log"
mkdir -p "$work/pkg"
cp -r "$root/fastspline" "$work/pkg/"
rm -f "$work/pkg/fastspline/"_C*.so "$work/pkg/fastspline/"_cuda*.so
cp "$work/lib/"_C*.so "$work/pkg/fastspline/"
cd "$work/pkg"
export LD_PRELOAD="$asan $ubsan"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# The canary: a popcount of 100 rows into a 10-element output must be reported.
if python -c "
import torch
from fastspline import _C
assert '$work' in _C.__file__, _C.__file__
a = torch.zeros(100, 2, dtype=torch.int64); out = torch.empty(10, dtype=torch.int64)
_C.popcount(a.data_ptr(), 100, 2, out.data_ptr(), 1)
" > "$work/canary.log" 2>&1 || ! grep -q "ERROR: AddressSanitizer: heap-buffer-overflow" "$work/canary.log"; then
  echo "sanitize.sh: the planted overflow was not reported; the sanitizer is not active" >&2
  cat "$work/canary.log" >&2
  exit 1
fi
echo "sanitize.sh: canary reported as expected; running the cpu op tests under ASan + UBSan"
python -m pytest "$root/tests/test_ops.py" "$root/tests/test_properties.py" -q -p no:cacheprovider -k cpu
echo "sanitize.sh: the CUDA kernels in the SIMT emulator under ASan + UBSan"
# The cuda backend's Python side needs fastspline._cuda to import (it is not called).
cp "$root"/fastspline/_cuda*.so "$work/pkg/fastspline/"
python -c "from fastspline.backends import cuda"
export FASTSPLINE_SIM_SANITIZE=1 FASTSPLINE_SIM_BUILD_DIR="$work/sim"
python -m pytest "$root/tests/test_ops.py" "$root/tests/test_properties.py" -q -p no:cacheprovider -k "sim"
python -m pytest "$root/tests/test_cuda_sim.py" -q -p no:cacheprovider \
  -k "cdist_kernels or pack_kernels or (fused_search and forward)"
