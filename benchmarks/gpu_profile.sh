#!/usr/bin/env bash
# Nsight Compute profile of the tensor-core cdist kernels at 16,384^2 x 8,192 bits, the one
# CUDA target not met (33% of the wgmma b1 peak on an H200 in session 16, 43% inside one
# kernel call): where the main loop stalls, how busy L2 and the pipes are (session 16's
# run: results/cdist-ncu-NVIDIA_H200-*.csv; --print-details all since, for the stall
# reasons that run's section headers left out). For a lent GPU machine whose ncu can read the
# hardware counters (Firecracker ones could; gVisor ones could not, see the device notes).
# (The b1 peaks through wgmma are bench_gpu.py's "b1 wgmma and" probes.) About 25 s a staging.
# Writes to $OUT (or benchmarks/results/): cdist-ncu-<staging>.csv and gpu-profile.log.
#   device run:  bash benchmarks/gpu_profile.sh
#   STAGINGS="wgmma-cluster4 wgmma-cluster wgmma-deep wgmma-wide wgmma async wide sync" (default) picks the cdist stagings profiled.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 FASTSPLINE_TEST_SIM=0
out_dir=${OUT:-benchmarks/results}
mkdir -p "$out_dir"
log="$out_dir/gpu-profile.log"
: >"$log"
status=0
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name())" || exit 1
FASTSPLINE_CUDA=1 python3 -m pip install --no-build-isolation --no-deps -e . -q 2>&1 | tail -20
ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
[ -n "$ncu" ] || { echo "no ncu on this machine" | tee -a "$log"; exit 1; }
# The profiled call runs inside an NVTX range "profile", after the self-checks and a warm-up
# (so ncu sees the forced kernel at full size, nothing else).
driver='import torch, fastspline as fs
gen = torch.Generator(device="cuda").manual_seed(0)
a = torch.randint(-(2**63), 2**63 - 1, (16384, 128), generator=gen, device="cuda")
out = torch.empty(8192, 16384, dtype=torch.int32, device="cuda")
fs.hamming_cdist(a[:8192], a, out=out)
torch.cuda.synchronize()
torch.cuda.nvtx.range_push("profile")
fs.hamming_cdist(a[:8192], a, out=out)
torch.cuda.nvtx.range_pop()
torch.cuda.synchronize()'
# One CSV row per metric; the summary prints the named columns (the kernel's name made the
# rows too long to read). --print-details all adds the sections' tables (stall reasons);
# an ncu without that option profiles again without it.
summary='import csv, sys
rows = list(csv.reader(open(sys.argv[1])))
head = next((i for i, r in enumerate(rows) if r[:1] == ["ID"]), None)
if head is None:
    sys.exit("no ncu table in " + sys.argv[1])
sec, name, value, unit = (rows[head].index(c) for c in ("Section Name", "Metric Name", "Metric Value", "Metric Unit"))
for r in rows[head + 1:]:
    if len(r) > max(sec, name, value, unit) and r[name]:
        print(f"  {r[sec][:30]:30} {r[name][:60]:60} {r[value]:>18} {r[unit]}")'
for staging in ${STAGINGS:-wgmma-cluster4 wgmma-cluster wgmma-deep wgmma-wide wgmma async wide sync}; do
  echo "== staging $staging" | tee -a "$log"
  csv="$out_dir/cdist-ncu-$staging.csv"
  for details in "--print-details all" ""; do
    # shellcheck disable=SC2086  # $details: an option and its value, or nothing
    FASTSPLINE_CUDA_CDIST=mma-and FASTSPLINE_CUDA_MMA_STAGING=$staging timeout 240 "$ncu" --clock-control none \
      --nvtx --nvtx-include "profile/" --kernel-name "regex:cdist_(mma|wgmma)" --launch-count 1 \
      --section SpeedOfLight --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
      --section WarpStateStats --section SchedulerStats --section Occupancy --section LaunchStats \
      --csv --page details $details python3 -c "$driver" >"$csv" 2>>"$log" && break
    [ -n "$details" ] && echo "!! ncu failed with $details: again without it" | tee -a "$log"
    [ -z "$details" ] && status=1
  done
  python3 -c "$summary" "$csv" 2>&1 | tee -a "$log"
done
exit $status
