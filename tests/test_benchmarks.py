"""Every benchmark script imports and parses its arguments (they are not run here:
timings belong in benchmarks/, never in tests)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("bench_*.py"))


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.stem)
def test_benchmark_script_starts(script: Path) -> None:
    result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout


def test_machine_info() -> None:
    sys.path.insert(0, str(BENCHMARKS[0].parent))
    try:
        from machine import cpu_info
    finally:
        sys.path.pop(0)
    info = cpu_info(("avx2", "no-such-flag"))
    assert info["model"] and info["logical_cpus"] >= 1 and 1 <= info["usable_cpus"] <= info["logical_cpus"]
    assert info["flags"]["no-such-flag"] is False
