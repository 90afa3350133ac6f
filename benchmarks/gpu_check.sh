#!/usr/bin/env bash
# GPU check, for a lent GPU machine (see README "GPU check"): build the CUDA module,
# run the GPU backends bit-exact against the reference, time the ops at huge-layer
# sizes, then run the whole CPU test matrix on the GPU backends through proxies.
# About 6 minutes on an H100/H200. Results go to $OUT (or benchmarks/results/):
# gpu-<card>.json, gpu-tests.log, gpu-bench.log, gpu-matrix.log.
#   device run:  bash benchmarks/gpu_check.sh
#   GPU_CHECK_TARGETS=1 bash benchmarks/gpu_check.sh: build, self-checks, then only the
#   measurements behind the CUDA targets (bench_gpu.py --targets), for kernel work.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
export FASTSPLINE_TEST_SIM=0  # the real kernels run here: no emulator build (tests/cuda_sim.py)
out_dir=${OUT:-benchmarks/results}
mkdir -p "$out_dir"
status=0
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name())" || exit 1
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem,driver_version --format=csv || true
# The image has torch, pybind11, cmake and ninja: build against them, fetch nothing.
start=$(date +%s)
FASTSPLINE_CUDA=1 python3 -m pip install --no-build-isolation --no-deps -e . -q 2>&1 | tail -20
echo "build: $(( $(date +%s) - start )) s"
python3 -c "import fastspline, pprint; pprint.pprint(fastspline.build_info())" || exit 1
# The kernels get their per-device self-checks first, all in one process;
# one that disagrees is turned off by the library itself. If that process crashes or
# hangs, each check that did not pass there runs in a process of its own: a kernel whose
# check crashes or hangs it is turned off for the rest of this run (FASTSPLINE_CUDA_DISABLE,
# by the switch before its check's name) and fails it.
checks="mma:mma_status async:mma_async_status wide:mma_wide_status wgmma:wgmma_status wgmma:wgmma_wide_status
wgmma:wgmma_deep_status cluster:wgmma_cluster_status cluster:wgmma_cluster4_status stream:pack_stream_status
columns16:pack_columns16_status fused:topk_status fused:radius_status fused:topk_pipelined_status
fused:radius_pipelined_status"
disable=""
all=$(for pair in $checks; do printf "print('self-check %s:', cuda.%s(dev) or 'passed', flush=True)\n" "${pair#*:}" "${pair#*:}"; done)
first=$(mktemp)
if ! timeout 120 python3 -c "import torch; from fastspline.backends import cuda; dev = torch.device('cuda')
$all" | tee "$first"; then
  echo "!! a self-check crashed or hung its process: each one not finished there again, alone"
  for pair in $checks; do
    name=${pair%%:*} check=${pair#*:}
    if grep -q "^self-check $check: passed$" "$first"; then continue; fi
    # Earlier crashes carry over, so a later check is not blamed for them.
    if ! FASTSPLINE_CUDA_DISABLE=$disable timeout 45 python3 -c "import torch; from fastspline.backends import cuda
print('self-check $check:', cuda.$check(torch.device('cuda')) or 'passed')"; then
      echo "!! the $name kernel crashed or hung its self-check: disabled for this run"
      case ",$disable," in *",$name,"*) ;; *) disable=${disable:+$disable,}$name ;; esac
      status=1
    fi
  done
fi
rm -f "$first"
export FASTSPLINE_CUDA_DISABLE=$disable
if [ "${GPU_CHECK_TARGETS:-0}" = 1 ]; then  # the targets' measurements alone (~1 min): kernel work
  timeout 240 python3 benchmarks/bench_gpu.py --targets --out-dir "$out_dir" 2>&1 | tee "$out_dir/gpu-targets.log" || status=1
  exit $status
fi
# Compiled Triton on the GPU, not the interpreter the CPU tests use.
export TRITON_INTERPRET=0
FASTSPLINE_TRITON_AUTOTUNE=0 timeout 240 python3 -m pytest tests/test_gpu.py tests/test_cuda_module.py -q -p no:cacheprovider -rfE 2>&1 \
  | tee "$out_dir/gpu-tests.log" | tail -25 || status=1
timeout 240 python3 benchmarks/bench_gpu.py --out-dir "$out_dir" 2>&1 | tee "$out_dir/gpu-bench.log" || status=1
# The shared op matrix and properties on cuda@gpu / triton@gpu (tests/gpu_proxy.py);
# one autotune config so the many shapes do not each start a tuning run.
workers=$(( $(nproc) > 8 ? 8 : $(nproc) ))
FASTSPLINE_TEST_GPU=1 FASTSPLINE_TRITON_AUTOTUNE=0 timeout ${MATRIX_TIMEOUT:-200} python3 -m pytest \
  tests/test_ops.py tests/test_properties.py -q -p no:cacheprovider -k gpu -n "$workers" -rfE 2>&1 \
  | tee "$out_dir/gpu-matrix.log" | tail -30 || status=1
exit $status
