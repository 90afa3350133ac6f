#!/usr/bin/env bash
# CI reliability step: the fuzz run and the huge-size tests, which the normal
# `python -m pytest` skips (markers fuzz and huge, see tests/conftest.py).
# - tests/test_fuzz.py: every op on every backend and CPU instruction set, bit-exact
#   against the numpy oracle and the reference backend, fixed seeds; fails unless at
#   least 10,000 examples ran (counted per example, printed per implementation; the
#   cpu backend's examples are shared by the instruction sets the CPU runs, so a CPU
#   without AVX-512 runs as many).
# - tests/test_huge.py: rows past 2**31 bits, pair counts and offsets past 32 bits,
#   under ~5 GiB and ~20 s each.
# About 2 minutes on 2 cores (125 s in a CI run).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
counts=$(mktemp)
trap 'rm -f "$counts"' EXIT
started=$SECONDS
HYPOTHESIS_PROFILE=fuzz FASTSPLINE_FUZZ_COUNTS="$counts" python -m pytest \
  "$root/tests/test_fuzz.py" "$root/tests/test_huge.py" -m "fuzz or huge" -q -p no:cacheprovider
python - "$counts" <<'PY'
import json, sys
counts = json.load(open(sys.argv[1]))
total = sum(counts.values())
print(f"fuzz.sh: {total} examples over {len(counts)} (op, implementation) pairs")
if total < 10_000:
    sys.exit(f"fuzz.sh: only {total} examples ran, expected at least 10,000")
PY
echo "fuzz.sh: done in $((SECONDS - started)) s"
