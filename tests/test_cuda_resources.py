"""Compile-time checks of the CUDA kernels the backend picks by default (no GPU needed).

ptxas reports registers and spills per kernel; the hot kernels must not spill, and the
pipelined tensor-core kernels with square tiles (mma.sync and wgmma) must fit two
256-thread blocks per SM on sm_90a (128 registers; the wide-tile ones run one block per SM
and may take 255). The XOR variants are not auto choices: on sm_90, where b1 XOR MMA is
emulated, both pipelined XOR kernels spill.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH")

# Kernels that auto selection uses, as they appear in mangled names.
NO_SPILLS = ("cdist_mma_async_kernelILb0", "cdist_mma_kernelILb0", "cdist_kernel", "pack_stream_kernel",
             "pack_columns_kernel", "pack_columns16_kernel", "radius_mma_kernel", "radius_mma_async_kernel",
             "topk_mma_kernel", "topk_mma_async_kernel", "cdist_wgmma_kernel")


@pytest.fixture(scope="module")
def compiles(tmp_path_factory) -> dict[str, Future]:
    """Every compile of this file started at once, on both cores: ``ptxas -v`` for each
    architecture the module ships, and the sm_90a SASS with line info (~36 s, not ~71 s
    one after another)."""
    work = tmp_path_factory.mktemp("ptxas")
    sass_report = _sass_report()

    def sass() -> tuple[dict, str] | str:
        try:
            sass_report.find_tool("nvdisasm")
        except SystemExit as exc:
            return str(exc)  # a skip reason
        return sass_report.disassemble(ROOT, "sm_90a", work)

    with ThreadPoolExecutor(3) as pool:
        jobs = {arch: pool.submit(ptxas_compile, work, arch) for arch in ("sm_80", "sm_90a")}
        jobs["sass"] = pool.submit(sass)
        yield jobs


@pytest.fixture(scope="module")
def ptxas_log(compiles) -> str:
    """What ``ptxas -v`` says compiling ops.cu for the architectures the module ships."""
    return "\n".join(compiles[arch].result() for arch in ("sm_80", "sm_90a"))


@pytest.fixture(scope="module")
def report(ptxas_log) -> dict[tuple[str, str], dict[str, int]]:
    return _sass_report().ptxas_report(ptxas_log)


def _sass_report():
    """benchmarks/sass_report.py (its ptxas and SASS parsers)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import sass_report
    finally:
        sys.path.pop(0)
    return sass_report


def ptxas_compile(work: Path, arch: str) -> str:
    """ptxas's report (stderr) compiling ops.cu for ``arch`` (sm_80 or sm_90a) as the module does."""
    cmd = [
        "nvcc", "-std=c++17", "-O3", "--expt-relaxed-constexpr", "-Xptxas", "-v", f"-I{ROOT / 'csrc'}",
        "-gencode", f"arch={arch.replace('sm_', 'compute_')},code={arch}",
        "-c", str(ROOT / "csrc" / "cuda" / "ops.cu"), "-o", str(work / f"ops-{arch}.o"),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


def test_wgmma_loops_get_no_injected_wait(ptxas_log):
    """ptxas never adds a wgmma wait of its own ("(C7517) warpgroup.wait is injected ... to
    allow use of registers defined by GMMA", an info line, not a warning): one at the join
    of the slice path and the per-tile branch put a full wait on every slice of the wide
    wgmma kernel, undoing its slice left in flight (stream_slices now nests its loops)."""
    assert "cdist_wgmma_kernel" in ptxas_log
    advisories = [line for line in ptxas_log.splitlines() if re.search(r"\(C75\d\d\)|warpgroup\.wait is injected", line)]
    assert not advisories, advisories


def test_every_architecture_compiles_the_same_kernels(report):
    """The host launches kernels by name, so every device pass must compile the same set:
    a template argument that differs per architecture (say, blocks per SM) would leave the
    kernel the host launches without code for the other architecture."""
    sm80 = {name for name, arch in report if arch == "sm_80"}
    sm90 = {name for name, arch in report if arch == "sm_90a"}
    assert sm80 and sm80 == sm90, sorted(sm80 ^ sm90)


def test_default_kernels_do_not_spill_and_async_cdist_fits_two_blocks(report):
    for arch in ("sm_80", "sm_90a"):  # the SASS the module ships (CMakeLists.txt)
        kernels = {name: r for (name, a), r in report.items() if a == arch}
        for key in NO_SPILLS:
            found = {name: r for name, r in kernels.items() if key in name}
            assert found, f"{key} not compiled for {arch}"
            for name, r in found.items():
                assert r.get("spill_stores") == 0 and r.get("spill_loads") == 0, f"{name} spills on {arch}: {r}"
        if arch == "sm_90a":  # square tiles: two blocks per SM there (one fits on sm_80's shared memory)
            for key in ("cdist_mma_async_kernelILb0ENS1_9WarpTilesILi4ELi4E", "cdist_wgmma_kernelINS1_10WgmmaTiles"):
                square = [r for name, r in kernels.items() if key in name]
                assert len(square) == 1 and square[0]["registers"] <= 128, (key, square)


def test_pipelined_loops_call_no_subroutine_per_slice(compiles, tmp_path):
    """The pipelined kernels' main loops (benchmarks/sass_report.py, the sm_90a SASS that
    H100 / H200 run) keep no subroutine call on the per-slice path: a 64-bit division there
    (the ring's stage or tile index by `%` or `/`) costs ~25-70 instructions a slice. The
    wide, deep and cluster wgmma kernels' slice loops leave their wgmma in flight (waits with
    gsb0 at 1, never 0) and the square one waits for them (0)."""
    sass_report = _sass_report()
    compiled = compiles["sass"].result()
    if isinstance(compiled, str):
        pytest.skip(compiled)
    counts = sass_report.report(ROOT, "sm_90a", tmp_path, compiled)
    for label in ("cdist async square (and)", "cdist async wide (and)", "topk async", "radius async (fill)",
                  "cdist wgmma square", "cdist wgmma wide", "cdist wgmma deep", "cdist wgmma cluster",
                  "cdist wgmma cluster4"):
        assert counts[label]["slice:mma"] > 0, (label, counts[label])
        assert counts[label].get("slice:calls", 0) == 0, (label, counts[label])
    for label, depth in (("cdist wgmma wide", "0x1"), ("cdist wgmma square", "0x0"), ("cdist wgmma deep", "0x1"),
                         ("cdist wgmma cluster", "0x1"), ("cdist wgmma cluster4", "0x1")):
        ins = sass_report.parse(compiled[1], sass_report.ARCH_KERNELS["sm_90a"][label], "ops.cu")
        j, i = sass_report.main_loop(ins)
        waits = [x.text for x in ins[j:i + 1] if x.text.startswith("WARPGROUP.DEPBAR")]
        assert waits == [f"WARPGROUP.DEPBAR.LE gsb0, {depth}"], (label, waits)
