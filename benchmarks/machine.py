"""What the benchmarks record about the machine they ran on (shared by the bench_*.py scripts).

    from machine import cpu_info
"""
from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def cpu_info(flags_of_interest: Sequence[str] = ()) -> dict[str, Any]:
    """The CPU model (from /proc/cpuinfo where there is one), logical and usable CPUs,
    and whether the first processor has each of ``flags_of_interest``."""
    model = platform.processor() or "unknown"
    flags: set[str] = set()
    with contextlib.suppress(FileNotFoundError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break  # the first processor's entry is enough
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info: dict[str, Any] = {"model": model, "logical_cpus": os.cpu_count(), "usable_cpus": usable}
    if flags_of_interest:
        info["flags"] = {flag: flag in flags for flag in flags_of_interest}
    return info
