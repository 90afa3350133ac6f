#!/usr/bin/env bash
# GPU check, for a lent GPU machine (see README "GPU check"): build the CUDA module,
# run the GPU backends bit-exact against the reference, then time the ops at
# huge-layer sizes. Under 8 minutes on an H100/H200. Results go to $OUT (or
# benchmarks/results/) as gpu-<card>.json.
#   device run:  bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
out_dir=${OUT:-benchmarks/results}
mkdir -p "$out_dir"
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem --format=csv || true
# The image has torch, pybind11, cmake and ninja: build against them, fetch nothing.
FASTSPLINE_CUDA=1 python3 -m pip install --no-build-isolation --no-deps -e . -q
python3 -c "import fastspline, pprint; pprint.pprint(fastspline.build_info())"
# Compiled Triton on the GPU, not the interpreter the CPU tests use.
TRITON_INTERPRET=0 python3 -m pytest tests/test_gpu.py tests/test_cuda_module.py tests/test_triton.py -q -p no:cacheprovider 2>&1 | tee "$out_dir/gpu-tests.log"
TRITON_INTERPRET=0 python3 benchmarks/bench_gpu.py --out-dir "$out_dir"
