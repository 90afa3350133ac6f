"""Every benchmark script imports and parses its arguments (they are not run here:
timings belong in benchmarks/, never in tests)."""
from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("bench_*.py"))


def test_machine_info() -> None:
    sys.path.insert(0, str(BENCHMARKS[0].parent))
    try:
        from machine import cpu_info
    finally:
        sys.path.pop(0)
    info = cpu_info(("avx2", "no-such-flag"))
    assert info["model"] and info["logical_cpus"] >= 1 and 1 <= info["usable_cpus"] <= info["logical_cpus"]
    assert info["flags"]["no-such-flag"] is False


def test_cli_bench_names_every_script(capfd) -> None:
    """`fastspline bench NAME` exists for each script and passes its arguments on: each
    script starts (a process of its own, as `bench` runs it) and parses --help."""
    from fastspline import cli

    assert {f"bench_{name}.py" for name in cli.BENCHMARKS} == {p.name for p in BENCHMARKS}
    with ThreadPoolExecutor(2) as pool:  # ~3 s each, most of it importing torch: two at a time
        codes = dict(zip(cli.BENCHMARKS, pool.map(lambda name: cli.main(["bench", name, "--help"]), cli.BENCHMARKS)))
    assert codes == dict.fromkeys(cli.BENCHMARKS, 0)
    out = capfd.readouterr().out
    for name in cli.BENCHMARKS:
        assert out.count(f"usage: bench_{name}.py") == 1, out


def test_cli_bench_writes_results_outside_an_installed_copy(tmp_path, monkeypatch, capfd) -> None:
    """Scripts installed in site-packages (no results/ beside them) write to
    ./fastspline-benchmarks; --results chooses; a failing script's status comes back."""
    from fastspline import cli

    installed = tmp_path / "site" / "benchmarks"
    installed.mkdir(parents=True)
    for path in BENCHMARKS[0].parent.glob("*.py"):
        (installed / path.name).write_text(path.read_text())
    monkeypatch.setattr(cli, "benchmarks_dir", lambda: installed)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert cli.main(["bench", "ops", "--quick", "--only", "rowwise", "--repeats", "1", "--warmup", "0"]) == 0
    assert (work / "fastspline-benchmarks" / "ops-cpu-quick.json").is_file()
    assert cli.main(["bench", "--results", "mine", "ops", "--quick", "--only", "rowwise", "--repeats", "1"]) == 0
    assert (work / "mine" / "ops-cpu-quick.json").is_file()
    assert not (installed / "results").exists()
    assert cli.main(["bench", "ops", "--only", "nothing"]) == 2
    assert "invalid choice: 'nothing'" in capfd.readouterr().err


def test_bench_gpu_dry_run_on_the_emulator(tmp_path, monkeypatch) -> None:
    """bench_gpu.py's own logic end to end, so a lent GPU's minutes are not lost to a
    Python slip: --dry-run runs every section on the CPU at tiny sizes with the CUDA
    backend as cuda@sim (the kernels' code in the SIMT emulator); every checked result
    must agree with the reference and every target line must be there."""
    import json

    import cuda_sim
    from fastspline import backends

    if "cuda@sim" not in backends.available():
        pytest.skip("the emulator backend is not registered (FASTSPLINE_TEST_SIM=0, or no g++ / pybind11)")
    for name in [n for n in os.environ if n.startswith("FASTSPLINE_CUDA_")]:
        monkeypatch.delenv(name)
    monkeypatch.syspath_prepend(str(BENCHMARKS[0].parent))
    import bench_gpu

    module = cuda_sim.load(cuda_sim.build(cuda_sim.build_dir()))
    with cuda_sim.installed(module, checks=cuda_sim.CHECKS):  # self-checks shared with cuda@sim's
        bench_gpu.main(["--dry-run", "--repeats", "1", "--out-dir", str(tmp_path)])
        bench_gpu.main(["--dry-run", "--targets", "--repeats", "1", "--out-dir", str(tmp_path)])
    targets_only = json.loads((tmp_path / "gpu-dry_run-targets.json").read_text())
    assert len(targets_only["targets"]) == 9 and not any("error" in r for r in targets_only["results"])
    assert not any(r["op"].startswith(("hamming_topk", "hamming_total")) for r in targets_only["results"])
    data = json.loads((tmp_path / "gpu-dry_run.json").read_text())
    errors = [r for r in data["results"] if "error" in r]
    assert not errors, errors
    done = {(r["op"], r["implementation"]) for r in data["results"] if "median_s" in r}
    for op, impl in [("pack_signs", "cuda"), ("pack_signs", "cuda columns16"), ("pack_signs", "cuda stream"),
                     ("write", "torch zero_"), ("hamming_cdist", "cuda auto"), ("hamming_cdist", "cuda mma-and wgmma"),
                     ("hamming_cdist", "cuda mma-and wgmma-wide"), ("hamming_cdist", "cuda mma-and wgmma-deep"),
                     ("hamming_cdist", "cuda mma-and wgmma-cluster"), ("hamming_cdist", "cuda mma-and wgmma-cluster4"),
                     ("hamming_cdist", "cuda auto mma.sync"),
                     ("hamming_cdist", "cuda mma-and wide"),
                     ("hamming_topk k=10", "cuda pipelined"), ("hamming_total", "cuda"), ("peak", "register loop")]:
        assert (op, impl) in done, (op, impl)
    assert {"b1 wgmma and", "b1 wgmma and n256"} <= set(data["peaks_bit_pairs_per_s"])
    assert len(data["targets"]) == 9  # 2 cdist sizes (auto, auto without wgmma), 5 pack layouts


# A made-up nvdisasm -gi listing: a loop (0x0010..0x0070) with one per-slice MMA, an ldmatrix,
# a cp.async, an add, a subroutine call and a call to a label, and a per-tile store (line 9, inside `void store_tile(`, called
# for interior tiles from line 11); a branch after the loop does not count.
FAKE_SRC = """\
// 1
// 2
int slice() {  // 3
  mma();       // 4
}              // 5
// 6
// 7
void store_tile(int x) {
  *p = x;      // 9
}              // 10
  store(StorePair<false>(out));
"""
FAKE_SASS = """\
.text.kernel_xyz:
        /*0000*/                   MOV R1, c[0x0][0x28] ;
.L_x_0:
	//## File "/src/csrc/cuda/ops.cu", line 4 inlined at "/src/csrc/cuda/ops.cu", line 3
	//## File "/src/csrc/cuda/ops.cu", line 3
        /*0010*/                   BMMA.168256.AND.POPC R4, R8.ROW, R12.COL, R4 ;
        /*0020*/                   LDSM.16.M88.4 R8, [R2] ;
        /*0030*/                   LDGSTS.E.BYPASS.128 [R3], desc[UR4][R6.64], P0 ;
        /*0040*/                   IADD3 R5, R5, 0x1, RZ ;
        /*0044*/                   CALL.REL.NOINC `($__internal_0_$__cuda_sm20_div_u64) ;
        /*0048*/                   CALL.REL.NOINC `(.L_x_1) ;
	//## File "/src/csrc/cuda/ops.cu", line 9 inlined at "/src/csrc/cuda/ops.cu", line 11
	//## File "/src/csrc/cuda/ops.cu", line 11
        /*0050*/                   STG.E.64 desc[UR4][R10.64], R4 ;
	//## File "/src/csrc/cuda/ops.cu", line 3
        /*0060*/               @P1 BRA `(.L_x_0) ;
        /*0070*/                   BRA `(.L_x_0) ;
        /*0080*/                   EXIT ;
.L_x_1:
        /*0090*/                   BRA `(.L_x_1) ;
//--------------------- .text.other_kernel
"""


def test_sass_report_counts_the_main_loop_by_origin() -> None:
    sys.path.insert(0, str(BENCHMARKS[0].parent))
    try:
        import sass_report
    finally:
        sys.path.pop(0)
    src = FAKE_SRC.split("\n")
    assert list(sass_report.block_lines(src, 8)) == [8, 9, 10]
    tile, interior = sass_report.tile_line_sets(src)
    assert {8, 9, 10} <= tile and 4 not in tile and interior == {11}
    ins = sass_report.parse(FAKE_SASS, "kernel_xyz", "ops.cu")
    assert [x.chain for x in ins[1:3]] == [(4, 3), (4, 3)] and ins[7].chain == (9, 11)
    assert sass_report.main_loop(ins) == (1, 9)  # the outer back edge at 0x70, not 0x90's self loop
    counts = sass_report.classify(ins, tile, interior, set())  # the call to a label is not a subroutine
    assert counts == {"loop_instructions": 9, "slice:calls": 1, "slice:cp.async": 1, "slice:ldsm": 1,
                      "slice:mma": 1, "slice:other": 5, "tile:interior": 1}
    log = ("ptxas info    : Compiling entry function 'kernel_xyz' for 'sm_90'\n"
           "ptxas info    : Function properties for kernel_xyz\n"
           "    8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads\n"
           "ptxas info    : Used 40 registers, used 0 barriers, 384 bytes cmem[0]\n")
    assert sass_report.ptxas_resources(log) == {"kernel_xyz": {"spill_bytes": 4, "registers": 40}}
    assert sass_report.ptxas_report(log) == {("kernel_xyz", "sm_90"): {"spill_stores": 4, "spill_loads": 4, "registers": 40}}


def test_bench_ops_splits_faiss_rows_over_the_threads_it_is_given(monkeypatch) -> None:
    # The row-split peer read the pool's private _max_workers (absent from other executors).
    pytest.importorskip("faiss")
    import numpy as np

    monkeypatch.syspath_prepend(str(BENCHMARKS[0].parent))
    import bench_ops

    class Pool:  # an Executor's map, recording the row blocks
        def map(self, fn, starts, ends):
            self.blocks = list(zip(starts, ends))
            return map(fn, starts, ends)

    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 256, (10, 16), dtype=np.uint8), rng.integers(0, 256, (7, 16), dtype=np.uint8)
    pool = Pool()
    split = bench_ops.faiss_cdist(a, b, pool=pool, threads=3)
    assert pool.blocks == [(0, 3), (3, 6), (6, 10)]
    np.testing.assert_array_equal(split, np.unpackbits(a[:, None] ^ b[None], axis=2).sum(2))


def test_gpu_check_self_checks_name_real_checks_and_switches() -> None:
    """gpu_check.sh's `checks` list (switch:status pairs): each status is a self-check of the
    cuda backend and each switch a FASTSPLINE_CUDA_DISABLE name that turns that kernel off,
    so a check that crashes its process turns off its own kernel; every self-check is there."""
    import re

    cuda = pytest.importorskip("fastspline.backends.cuda", reason="fastspline._cuda not built")
    script = (BENCHMARKS[0].parent / "gpu_check.sh").read_text()
    pairs = [p.split(":") for p in re.search(r'^checks="([^"]*)"', script, re.M).group(1).split()]
    statuses = {name for name in dir(cuda) if name.endswith("_status") and not name.startswith("_")}
    assert {status for _, status in pairs} == statuses
    for switch, status in pairs:
        assert switch in cuda.DISABLE_NAMES, (switch, status)
    wgmma = {cuda._WGMMA_STATUS_NAMES[code]: cuda._wgmma_switches(code) for code in cuda._WGMMA_STAGINGS}
    for switch, status in pairs:
        if status in wgmma:  # the narrowest name that turns it off
            assert switch == wgmma[status][-1], (switch, status)


def test_gpu_check_turns_off_a_kernel_whose_self_check_hangs(tmp_path) -> None:
    """gpu_check.sh's self-check step with a fake python3: the all-in-one process passes two
    checks and hangs; the others then run alone, and the one that hangs alone (a clustered
    wgmma kernel's) turns off its switch for the rest of the run; the two passed are not rerun."""
    import re
    import subprocess

    script = (BENCHMARKS[0].parent / "gpu_check.sh").read_text()
    step = re.search(r"^checks=.*?^export FASTSPLINE_CUDA_DISABLE=\$disable$", script, re.M | re.S).group(0)
    step = step.replace("timeout 120 ", "timeout 2 ").replace("timeout 45 ", "timeout 2 ")
    fake = tmp_path / "python3"
    fake.write_text("#!/usr/bin/env bash\n"
                    "if [[ \"$2\" == *\"dev = torch.device('cuda')\"* ]]; then\n"
                    "  echo 'self-check mma_status: passed'; echo 'self-check mma_async_status: passed'; sleep 30; exit 0\n"
                    "fi\n"
                    "echo \"alone ${FASTSPLINE_CUDA_DISABLE:-}: $(echo \"$2\" | tail -n 1)\" >> \"$(dirname \"$0\")/alone.log\"\n"
                    "if [[ \"$2\" == *wgmma_cluster_status* ]]; then sleep 30; fi\n")
    fake.chmod(0o755)
    run = subprocess.run(["bash", "-c", f"set -uo pipefail; status=0\n{step}\necho \"disable=$FASTSPLINE_CUDA_DISABLE status=$status\""],
                         env={**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}, capture_output=True, text=True,
                         timeout=120)
    assert run.stdout.strip().endswith("disable=cluster status=1"), run.stdout + run.stderr
    assert "!! the cluster kernel crashed or hung its self-check" in run.stdout
    alone = (tmp_path / "alone.log").read_text().splitlines()
    ran = [re.search(r"cuda\.(\w+)\(", line).group(1) for line in alone]
    assert ran[:2] == ["mma_wide_status", "wgmma_status"] and "mma_status" not in ran and "mma_async_status" not in ran
    assert len(ran) == 12 and ran.index("wgmma_cluster4_status") == ran.index("wgmma_cluster_status") + 1
    assert alone[ran.index("wgmma_cluster4_status")].startswith("alone cluster:")  # turned off from then on
