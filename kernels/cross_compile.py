"""Compile every Triton kernel, in every autotune config, for a CUDA arch without a GPU.

    python -m fastspline.kernels.cross_compile [--arch 90] [--quick] [--ptxas-stats]

The compiled (GPU) code path of the kernels - libdevice popcount, the autotune
configs, the top-k config pruning - cannot run on a machine without a GPU, but it
can be compiled: a stand-in driver reports the target, and each kernel's
``warmup`` builds PTX and a cubin (with the ptxas that ships with triton) without
launching anything. Checks on the PTX: every popcount is ``popc.b64`` and the
float32 threshold compare keeps subnormals (no ``.ftz``). ``--ptxas-stats``
prints registers and spills per config (``ptxas -v``); ``--quick`` compiles the
first config of each kernel variant and the shortest top-k list only (seconds
instead of minutes: the top-k sorting networks are slow to compile). Must run in a process
without ``TRITON_INTERPRET=1`` and before any kernel was launched there; the
tests run it in a subprocess.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Case:
    name: str
    kernel: Any  # an Autotuner over a JITFunction
    args: tuple
    kwargs: dict[str, Any]
    popcount: bool  # the PTX must contain popc.b64
    float32_compare: bool = False  # the PTX compares float32 without flushing subnormals


class _CrossCompileDriver:
    """The part of a Triton driver that ``JITFunction.run(warmup=True)`` asks for."""

    def __init__(self, arch: int) -> None:
        from triton.backends.compiler import GPUTarget

        self.target = GPUTarget("cuda", arch, 32)

    def get_current_target(self):
        return self.target

    def get_current_device(self) -> int:
        return self.target.arch  # kernels cache their target per device: one 'device' per arch

    def get_current_stream(self, device: int | None = None) -> int:
        return 0


def cases(quick: bool) -> Iterator[Case]:
    from . import distance, layout, regions, search

    words = torch.zeros(100, 3, dtype=torch.int64)
    counts = torch.zeros(100, dtype=torch.int64)
    strides = (3, 1, 3, 1)
    for has_b, total in ((False, False), (True, False), (True, True)):
        yield Case(
            f"rows has_b={has_b} total={total}", distance._rows_kernel,
            (words, words, counts, 100, 3, *strides), {"HAS_B": has_b, "TOTAL": total, "USE_LIBDEVICE": True}, True,
        )
    yield Case(
        "cdist", distance._cdist_kernel,
        (words, words, torch.zeros(100, 100, dtype=torch.int32), 100, 100, 3, *strides, 100),
        {"USE_LIBDEVICE": True}, True,
    )
    signs = torch.zeros(100, 192, dtype=torch.int8)
    yield Case(
        "cdist_dot", distance._cdist_dot_kernel,
        (signs, signs, torch.zeros(100, 100, dtype=torch.int32), 100, 100, 192, 100), {}, False,
    )
    for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        x = torch.zeros(4, 130, dtype=dtype)
        is_fp64, is_bf16 = dtype == torch.float64, dtype == torch.bfloat16
        threshold = torch.zeros(1, dtype=torch.float64 if is_fp64 else torch.float32)
        yield Case(
            f"pack_signs {dtype}", layout._pack_signs_kernel,
            (x.view(torch.int16) if is_bf16 else x, threshold, words, 4, 130, 3, 4, 1, 1, 0, 0, 0, 130, 1),
            {"IS_FP64": is_fp64, "IS_BF16": is_bf16}, False, float32_compare=not is_fp64,
        )
    yield Case(
        "unpack_bits", layout._unpack_bits_kernel,
        (words, torch.zeros(100, 150, dtype=torch.uint8), 100, 3, 150, 3, 1), {}, False,
    )
    yield Case(
        "bit_transpose", layout._bit_transpose_kernel,
        (words, torch.zeros(150, 2, dtype=torch.int64), 100, 3, 150, 2, 3, 1), {}, False,
    )
    for length in (search.MIN_TOPK_LIST,) if quick else (16, 64, 512, search.MAX_TOPK_LIST):
        for decode in (True, False):
            yield Case(
                f"topk L={length} decode={decode}", search._topk_kernel,
                (words, words, words, torch.zeros(100, 8, dtype=torch.int32), words, 100, 100, 3, 8,
                 *strides, 7, 127, 100, 1),
                {"L": length, "DECODE": decode, "BLOCK_N": max(1, min(32, 2048 // length)), "USE_LIBDEVICE": True},
                True,
            )
    for name, kernel, extra in (
        ("radius count", search._radius_count_kernel, (counts,)),
        ("radius fill", search._radius_fill_kernel, (counts, counts, counts, torch.zeros(10, dtype=torch.int32))),
    ):
        yield Case(
            name, kernel, (words, words, *extra, 100, 100, 3, 5, *strides),
            {"BLOCK_M": search.RADIUS_BLOCK_M, "USE_LIBDEVICE": True}, True,
        )
    yield Case("row_starts", regions._row_starts_kernel, (words, counts, counts, 100, 3, 3, 1), {}, False)


def _ptxas_stats(ptx: str, arch: int) -> str:
    from triton.backends.nvidia.compiler import get_ptxas

    suffix = "a" if arch >= 90 else ""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.ptx")
        with open(path, "w") as f:
            f.write(ptx)
        result = subprocess.run(
            [get_ptxas(arch).path, f"-arch=sm_{arch}{suffix}", "-v", path, "-o", os.devnull],
            capture_output=True, text=True, check=True,
        )
    registers = re.search(r"Used (\d+) registers", result.stderr)
    spills = re.search(r"(\d+) bytes spill stores", result.stderr)
    return f"{registers.group(1) if registers else '?'} regs, {spills.group(1) if spills else '?'} B spilled"


def check(arch: int, quick: bool, stats: bool, log: Callable[[str], None] = print) -> list[str]:
    """Compile every case for ``sm_<arch>``; returns the problems found (empty: all good)."""
    from triton.runtime.driver import driver

    from . import common

    if common.INTERPRETED:
        raise RuntimeError("cross_compile needs compiled kernels: unset TRITON_INTERPRET")
    driver.set_active(_CrossCompileDriver(arch))
    problems: list[str] = []
    for case in cases(quick):
        kernel = case.kernel
        kernel.nargs = dict(zip(kernel.arg_names, case.args))  # what prune_configs reads
        configs = kernel.prune_configs(case.kwargs)
        if quick:
            configs = configs[:1]
        for config in configs:
            kwargs = {**case.kwargs, **config.all_kwargs(), **common.LAUNCH_OPTIONS}
            start = time.perf_counter()
            compiled = kernel.fn.warmup(*case.args, grid=(1,), **kwargs)
            ptx = compiled.asm["ptx"]
            label = f"{case.name} [{config}]"
            if case.popcount and "popc.b64" not in ptx:
                problems.append(f"{label}: no popc.b64 in the PTX")
            if case.float32_compare and re.search(r"setp\.\w+\.ftz\.f32", ptx):
                problems.append(f"{label}: the float32 compare flushes subnormals (.ftz)")
            extra = f", {_ptxas_stats(ptx, arch)}" if stats else ""
            log(f"sm_{arch} {label}: {time.perf_counter() - start:.1f} s{extra}")
        kernel.nargs = None
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, action="append", help="CUDA arch, e.g. 80 or 90 (repeatable; default 90)")
    parser.add_argument("--quick", action="store_true", help="first config per kernel variant, shortest top-k list")
    parser.add_argument("--ptxas-stats", action="store_true", help="print registers and spills per config")
    options = parser.parse_args(argv)
    problems = []
    for arch in options.arch or [90]:
        problems += check(arch, options.quick, options.ptxas_stats)
    for problem in problems:
        print("PROBLEM:", problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
