"""The CUDA kernels' own code, run here without a GPU in the SIMT emulator.

tests/cuda_sim.py compiles csrc/cuda/ops.cu for the CPU against csrc/cuda/sim/cuda_sim.h
(one fiber per CUDA thread; barriers, warp shuffles and ballots, b1 mma.sync, ldmatrix
and cp.async emulated from the PTX ISA's definitions) as ``_cuda_sim``, with the same
bindings as ``fastspline._cuda``. Swapped in for ``_cuda``, it lets the cuda backend's
Python side (fastspline/backends/cuda.py, self-checks included) drive the real kernels
on CPU tensors, bit-exact against the reference: every pack kernel, the CUDA-core and both
tensor-core cdist kernels, fused top-k and radius, each forced (the word ops, with auto
kernels, run in the shared op matrix as ``cuda@sim``). Thread orders and the
timing of cp.async copies vary, and planted bugs (a missing barrier, a short cp.async
wait, a per-lane branch around a warp collective) must be caught, so a pass means
something. What this cannot show: speed, and hardware behaviour the PTX ISA leaves out.
"""
from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

import cuda_sim
import fastspline as fs
from cases import make_gen, pack_kernel_views

pytestmark = pytest.mark.skipif(cuda_sim.can_build() is not None, reason=f"{cuda_sim.can_build()}")
cuda = pytest.importorskip("fastspline.backends.cuda", reason="fastspline._cuda not built")

CPU = torch.device("cpu")
# Planted bugs (ops.cu text -> replacement) the emulator must catch.
MUTANTS = {
    "short cp.async wait": ("cp_async_wait<kAhead - 1>();", "cp_async_wait<kAhead>();"),
    # the ring refilling, one slice too early, the stage of a slice whose wgmma may still be in
    # flight (both wide wgmma kernels)
    "wgmma slice reloaded in flight": ("kAhead = kRing - 1 - Math::kDepth +", "kAhead = kRing - Math::kDepth +"),
    # the swizzle is of shared-address bits: a ring not 1 KiB aligned is read wrongly
    "wgmma ring not aligned to 1 KiB": ("reinterpret_cast<unsigned*>(align_1k(dyn_smem)), tiles, math,",
                                        "reinterpret_cast<unsigned*>(dyn_smem), tiles, math,"),
    # a descriptor per warp, not per warpgroup (each warp's 16 rows)
    "wgmma descriptors per warp": ("a_off((unsigned)(threadIdx.x / 128) * 64 * kAsyncWords * 8)",
                                   "a_off((unsigned)(threadIdx.x / 32) * 16 * kAsyncWords * 8)"),
    "no barrier before a slice is read": ("__syncthreads();  // entry g is in", ";  // entry g is in"),
    "cp.async loads stuck on a block's first tile": ("if (++lt < count) start_tile();", "++lt;"),
    "no barrier after the top-k lists start": ("__syncthreads();  // lists are read by other warps",
                                               ";  // lists are read by other warps"),
    "per-lane branch around warp collectives": ("if (__ballot_sync(kFull, key < kth) == 0) continue;",
                                                "if (key >= kth) continue;"),
    # the clustered kernel: a stage refilled without waiting until both CTAs released it,
    # released in one CTA only (the other's refills wait forever), a full barrier expecting
    # one 16 KB copy less than lands in it
    "cluster stage refilled before its release": ("if (refill) mbar_wait(empty0 + 8 * lstage, lphase ^ 1);",
                                                  "if (false) mbar_wait(empty0 + 8 * lstage, lphase ^ 1);"),
    "cluster stage released in one CTA only": ("mbar_arrive(empty0 + 8 * stage, r);", "mbar_arrive(empty0 + 8 * stage, 0);"),
    "cluster expects too few bytes": ("mbar_expect(full, kStage);", "mbar_expect(full, kStage - kPanelBytes);"),
}


SANITIZE = os.environ.get("FASTSPLINE_SIM_SANITIZE") == "1"  # tests/sanitize.sh: ASan + UBSan build


@pytest.fixture(scope="session")
def sim_builds() -> dict[str, Path]:
    """The emulator module and its mutants, compiled two at a time (~7 s a mutant, sharing
    one bindings object; under FASTSPLINE_SIM_SANITIZE=1 the sanitized module alone), in
    cuda_sim.build_dir()."""
    root = cuda_sim.build_dir()
    jobs = {"base": None} if SANITIZE else {"base": None, **MUTANTS}
    with ThreadPoolExecutor(2) as pool:
        futures = {name: pool.submit(cuda_sim.build, root, SANITIZE, mutation) for name, mutation in jobs.items()}
        return {name: future.result() for name, future in futures.items()}


def _clear_env(monkeypatch) -> None:
    for name in ("FASTSPLINE_CUDA_CDIST", "FASTSPLINE_CUDA_MMA_STAGING", "FASTSPLINE_CUDA_PACK",
                 "FASTSPLINE_CUDA_SEARCH", "FASTSPLINE_CUDA_DISABLE", "FASTSPLINE_SIM_SCHEDULE",
                 "FASTSPLINE_SIM_CP_ASYNC", "FASTSPLINE_SIM_SMS", "FASTSPLINE_CUDA_WGMMA_AUTO",
                 "FASTSPLINE_SIM_SMEM_BASE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def sim(monkeypatch, sim_builds):
    """The cuda backend over the emulator, on CPU memory, for one test."""
    _clear_env(monkeypatch)
    with cuda_sim.installed(cuda_sim.load(sim_builds["base"])) as module:
        yield module


def passed(*kinds: str) -> None:
    """Mark self-checks as passed (they are tested once, above all else, by
    test_self_checks_pass_in_the_emulator)."""
    for kind in kinds:
        cuda._checks[(kind, 0)] = None


def same(got, want) -> None:
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape
        assert torch.equal(g, w)


SCHEDULES = [("forward", "late"), ("reverse", "early"), ("random:11", "late"), ("stall:5", "early")]


@pytest.mark.parametrize("schedule, copies", SCHEDULES)
def test_self_checks_pass_in_the_emulator(sim, monkeypatch, schedule, copies):
    """The per-device self-checks a GPU runs before auto uses a kernel, run here on the
    kernels' code under four thread orders. The fused top-k / radius checks (most of the
    time) run under two; test_fused_search and test_pipelined_fused_search run those kernels
    under the others."""
    monkeypatch.setenv("FASTSPLINE_SIM_SCHEDULE", schedule)
    monkeypatch.setenv("FASTSPLINE_SIM_CP_ASYNC", copies)
    statuses = [cuda.mma_status, cuda.mma_async_status, cuda.mma_wide_status, cuda.pack_stream_status,
                cuda.pack_columns16_status, cuda.wgmma_status, cuda.wgmma_wide_status, cuda.wgmma_deep_status,
                cuda.wgmma_cluster_status, cuda.wgmma_cluster4_status]
    if schedule in ("forward", "random:11"):
        statuses += [cuda.topk_status, cuda.radius_status, cuda.topk_pipelined_status, cuda.radius_pipelined_status]
    for status in statuses:
        assert status(CPU) is None, status.__name__


@pytest.mark.parametrize("env, value", [("FASTSPLINE_CUDA_MMA_STAGING", "async"), ("FASTSPLINE_CUDA_CDIST", "mma")])
def test_fused_search_checks_ignore_the_cdist_switches(sim, monkeypatch, env, value):
    """The fused top-k / radius self-checks compare with the row-block path on the popc
    kernel: a forced cdist staging (whose cp.async kernel refuses their odd word counts)
    or a bad cdist switch must not turn the fused kernels off for good on the device."""
    passed("binary tensor-core cdist", "pipelined (cp.async) tensor-core cdist")
    monkeypatch.setenv(env, value)
    # the first case of each check (3 words: odd, which the cp.async kernel refuses) shows it;
    # every case runs in test_self_checks_pass_in_the_emulator
    assert cuda._TOPK_CASES[0][2] % 2 == 1 and cuda._RADIUS_CASES[0][2] % 2 == 1
    monkeypatch.setattr(cuda, "_TOPK_CASES", cuda._TOPK_CASES[:1])
    monkeypatch.setattr(cuda, "_RADIUS_CASES", cuda._RADIUS_CASES[:1])
    assert cuda.topk_status(CPU) is None and cuda.radius_status(CPU) is None


def words_pair(n: int, m: int, w: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.randint(-(2**63), 2**63 - 1, (n, w), generator=gen, dtype=torch.int64)
    b = torch.randint(-(2**63), 2**63 - 1, (m, w), generator=gen, dtype=torch.int64)
    a[: n // 3] = -1  # all-ones rows: the largest distances and popcounts
    b[: m // 4] = 0
    return a, b


@pytest.mark.parametrize("method, staging", [("popc", "auto"), ("mma-xor", "sync"), ("mma-and", "sync"),
                                             ("mma-xor", "async"), ("mma-and", "async"),
                                             ("mma-xor", "wide"), ("mma-and", "wide"), ("mma-and", "wgmma"),
                                             ("mma-and", "wgmma-wide"), ("mma-and", "wgmma-deep"),
                                             ("mma-and", "wgmma-cluster"), ("mma-and", "wgmma-cluster4")])
@pytest.mark.parametrize("n, m, w", [(1, 1, 2), (127, 129, 4), (130, 260, 18), (40, 300, 34), (129, 70, 66),
                                     (300, 140, 36), (270, 131, 34)])
def test_cdist_kernels(sim, monkeypatch, method, staging, n, m, w):
    """Each cdist kernel forced: ragged tiles (wide ones: 256 x 128, wide wgmma 128 x 256), one to five K
    slices, a given out, a row block of a (as top-k and radius take it). Whole tiles
    inside take the unchecked 8-byte stores when rows of out are 8-byte aligned (m even),
    the checked ones when they are not (m odd)."""
    monkeypatch.setenv("FASTSPLINE_CUDA_CDIST", method)
    monkeypatch.setenv("FASTSPLINE_CUDA_MMA_STAGING", staging)
    a, b = words_pair(n, m, w, make_gen("sim-cdist", method, staging, n, m, w))
    want = fs.hamming_cdist(a, b, backend="reference")
    same(cuda.hamming_cdist(a, b), want)
    out = torch.full((n, m), -7, dtype=torch.int32)
    cuda.hamming_cdist(a, b, out)
    same(out, want)
    same(cuda.hamming_cdist(a[n // 2 :], b), want[n // 2 :])


@pytest.mark.parametrize("staging", ["async", "wide", "wgmma", "wgmma-wide", "wgmma-deep", "wgmma-cluster",
                                     "wgmma-cluster4"])
def test_async_kernels_refuse_odd_word_counts(sim, monkeypatch, staging):
    monkeypatch.setenv("FASTSPLINE_CUDA_CDIST", "mma-and")
    monkeypatch.setenv("FASTSPLINE_CUDA_MMA_STAGING", staging)
    a = torch.zeros(130, 3, dtype=torch.int64)
    with pytest.raises(ValueError, match="needs an even word count"):
        cuda.hamming_cdist(a, a)


def test_autotune_times_each_staging_once_and_keeps_the_fastest(sim, monkeypatch):
    """Auto staging on a large call: every candidate runs (real kernels) and is timed
    once per shape class; the fastest is kept, results stay bit-exact; off with
    FASTSPLINE_CUDA_AUTOTUNE=0 (the static rule: wide tiles from 2,048 bits)."""
    passed("binary tensor-core cdist", "pipelined (cp.async) tensor-core cdist", "pipelined wide-tile tensor-core cdist",
           *(cuda._WGMMA_KINDS.values()))
    monkeypatch.setattr(cuda, "_AUTOTUNE_MIN_WORD_PAIRS", 1)
    monkeypatch.setattr(cuda, "_AUTOTUNE_ROWS", 200)  # the timed sample: 200 x 200 rows
    fake_ms, timed, real = {1: 3.0, 2: 1.0, 3: 2.0, 4: 1.5, 5: 1.2, 6: 1.3, 7: 1.1, 8: 1.05}, [], cuda._cdist

    def fake_time(fn, reps=3):
        seen = []
        monkeypatch.setattr(cuda, "_cdist", lambda *args: seen.append((args[0].shape, args[4])) or real(*args))
        fn()
        monkeypatch.setattr(cuda, "_cdist", real)
        (shape, staging), = seen
        timed.append((tuple(shape), staging))
        return fake_ms[staging]

    monkeypatch.setattr(cuda, "_time_ms", fake_time)
    a, b = words_pair(300, 260, 34, make_gen("sim-autotune"))
    want = fs.hamming_cdist(a, b, backend="reference")
    same(cuda.hamming_cdist(a, b), want)
    assert timed == [((200, 34), code) for code in range(1, 9)]
    assert list(cuda._tuned.values()) == ["async"] and cuda._auto_staging(a, b, "mma-and") == 2
    same(cuda.hamming_cdist(a[:250], b), want[:250])  # same shape class: no new timing
    assert len(timed) == 8
    monkeypatch.setenv("FASTSPLINE_CUDA_AUTOTUNE", "0")
    assert cuda._auto_staging(a, b, "mma-and") == 3
    monkeypatch.setenv("FASTSPLINE_CUDA_AUTOTUNE", "yes")
    with pytest.raises(ValueError, match=r"FASTSPLINE_CUDA_AUTOTUNE must be one of \('0', '1'\), got 'yes'"):
        cuda.hamming_cdist(a, b)


def test_autotune_chooses_between_the_fused_search_kernels(sim, monkeypatch):
    """Large auto top-k / radius calls time the pipelined and synchronous fused kernels
    (real kernels on the sample) and keep the faster, here against the static rule."""
    passed("binary tensor-core cdist", "pipelined (cp.async) tensor-core cdist", "fused top-k kernel",
           "fused radius kernels", "pipelined fused top-k kernel", "pipelined fused radius kernels")
    monkeypatch.setattr(cuda, "_AUTOTUNE_MIN_WORD_PAIRS", 1)
    monkeypatch.setattr(cuda, "_AUTOTUNE_ROWS", 130)
    runs = []

    def fake_time(fn, reps=3):  # candidates in order: pipelined, fused
        fn()
        runs.append(len(runs))
        return 5.0 if len(runs) % 2 else 1.0

    monkeypatch.setattr(cuda, "_time_ms", fake_time)
    a, b = words_pair(200, 300, 34, make_gen("sim-autotune-search"))
    b[::3] = b[1].clone()
    assert cuda.search_method("topk", CPU, a, b) == "fused" and cuda.search_method("radius", CPU, a, b) == "fused"
    assert len(runs) == 4 and sorted(cuda._tuned.values()) == ["fused", "fused"]
    same(cuda.hamming_topk(a, b, 9), fs.hamming_topk(a, b, 9, backend="reference"))
    same(cuda.hamming_radius(a, b, 32 * 34), fs.hamming_radius(a, b, 32 * 34, backend="reference"))
    assert len(runs) == 4  # timed once per op and shape class
    monkeypatch.setenv("FASTSPLINE_CUDA_AUTOTUNE", "0")
    assert cuda.search_method("topk", CPU, a, b) == "pipelined"  # untimed: the static rule


def test_autotune_chooses_the_pack_kernel_per_layout(sim, monkeypatch):
    """Large auto packs time every kernel that takes the layout (on a slice of the input
    along its first dim) once per layout and keep the fastest: NCHW channels try
    columns16, columns and rows (stream refuses the layout); results stay bit-exact."""
    passed("stream pack kernel", "columns16 pack kernel")
    monkeypatch.setattr(cuda, "_PACK_TIME_BYTES", 1)
    monkeypatch.setattr(cuda, "_PACK_SAMPLE_BYTES", 16384)  # 2 of the 6 batch rows
    fake_ms, tried, used, real = {2: 1.0, 4: 2.0, 1: 3.0, 3: 0.5}, [], [], cuda._pack

    def spy(x, threshold, kernel, allow=3):
        used.append((x.shape[0], kernel))
        return real(x, threshold, kernel, allow)

    def fake_time(fn, reps=3):
        before = len(used)
        fn()  # raises ValueError for a kernel that refuses the layout
        tried.append(used[before][1])
        return fake_ms[used[before][1]]

    monkeypatch.setattr(cuda, "_pack", spy)
    monkeypatch.setattr(cuda, "_time_ms", fake_time)
    x = torch.randn(6, 64, 4, 8, generator=make_gen("sim-autotune-pack")).movedim(1, -1)  # NCHW channels last
    want = fs.pack_signs(x, -1, 0.25, backend="reference")
    same(cuda.pack_signs(x, 0.25), want)
    assert tried == [4, 2, 1]  # columns16, columns, rows; stream does not take it
    assert used[0][0] == 2 and used[-1] == (6, 2)  # timed on 2 of 6 batch rows; the call: columns
    same(cuda.pack_signs(x[3:], 0.25), want[3:])  # same layout: no new timing
    assert len(tried) == 3 and used[-1] == (3, 2)
    monkeypatch.setenv("FASTSPLINE_CUDA_AUTOTUNE", "0")
    same(cuda.pack_signs(x, 0.25), want)
    assert used[-1] == (6, 0)  # untimed: auto's own rule


def test_autotuned_pack_kernel_takes_the_whole_input(sim, monkeypatch):
    """The timed pack kernel must take the whole input, not only the sample it was timed on
    (nor only an input of another first-dim size with the same key): a one-row sample
    drops the first dim's stride from the stream kernel's row-stride rule, and a 2-D
    sample of 8 rows makes whole columns16 vectors that 9 rows do not. The timings below
    favour the kernel the sample alone takes."""
    passed("stream pack kernel", "columns16 pack kernel")
    monkeypatch.setattr(cuda, "_PACK_TIME_BYTES", 1)
    fake_ms, real = {3: 0.5, 4: 1.0, 2: 2.0, 1: 3.0}, cuda._pack

    def fake_time(fn, reps=3):
        kernels = []
        monkeypatch.setattr(cuda, "_pack", lambda x, t, k, allow=3: kernels.append(k) or real(x, t, k, allow))
        try:
            fn()
        finally:
            monkeypatch.setattr(cuda, "_pack", real)
        return fake_ms[kernels[0]]

    monkeypatch.setattr(cuda, "_time_ms", fake_time)
    big = torch.randn(3, 6, 64, generator=make_gen("sim-pack-sample"))
    x = big[:, :4]  # rows 64 apart within a batch, 384 across: no one row stride, so not stream
    monkeypatch.setattr(cuda, "_PACK_SAMPLE_BYTES", x.numel() * 4 // 3)  # a one-row sample
    same(cuda.pack_signs(x, 0.0), fs.pack_signs(x, -1, 0.0, backend="reference"))
    cuda._tuned.clear()
    same(cuda.pack_signs(big[:1, :4], 0.0), fs.pack_signs(big[:1, :4], -1, 0.0, backend="reference"))  # stream
    same(cuda.pack_signs(x, 0.0), fs.pack_signs(x, -1, 0.0, backend="reference"))  # same strides and shape[1:]
    y = torch.randn(200, 16, generator=make_gen("sim-pack-sample-2d")).half()
    x = y[:, :9].t()  # [9, 200] at strides (1, 16): 9 rows, not whole 8-row vectors
    monkeypatch.setattr(cuda, "_PACK_SAMPLE_BYTES", x.numel() * 2 * 8 // 9)  # an 8-row sample
    same(cuda.pack_signs(x, 0.0), fs.pack_signs(x, -1, 0.0, backend="reference"))


@pytest.mark.parametrize("kernel", ["rows", "columns", "stream", "columns16"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_pack_kernels(sim, monkeypatch, kernel, dtype):
    """Each pack kernel forced, on the layouts it takes (the others must refuse)."""
    monkeypatch.setenv("FASTSPLINE_CUDA_PACK", kernel)
    gen = make_gen("sim-pack", kernel, dtype)
    x = torch.randn(3, 6, 5, 136, generator=gen).to(dtype)
    x[0, 0, 0, :7] = float("nan")
    x[1, 1, 1, :9] = 0.0
    x[2, 2, 2, :5] = 0.25  # at the threshold: not above it
    x[2, 3, 1, :4] = float("-inf")
    cases = pack_kernel_views(x, 128)
    ran = 0
    for view, dim in cases:
        want = fs.pack_signs(view, dim, 0.25, backend="reference")
        moved = view.movedim(dim, -1)
        try:
            got = cuda.pack_signs(moved, 0.25)
        except ValueError as exc:
            assert "does not apply to this input" in str(exc)
            continue
        same(got, want)
        ran += 1
    # stream: rows of whole 16-byte vectors (136 and 128 elements), aligned, one row stride;
    # columns16: as columns (the row run of 136 and every stride are whole vectors).
    assert ran == {"columns": 5, "columns16": 5, "stream": 5}.get(kernel, len(cases))


@pytest.mark.parametrize("shape", [(1,) * 9 + (0,), (2,) * 10 + (0,), (2, 1, 1, 1, 1, 1, 1, 1, 1, 0, 5),
                                   (2,) * 10 + (3,)])
def test_pack_more_than_nine_dims(sim, shape):
    """Inputs of more than 9 dims are merged to [rows, n] for the kernel; an empty packed
    dim gives an empty result (reshape(-1, 0) of an empty input is ambiguous and raised)."""
    x = torch.randn(shape, generator=make_gen("sim-pack-dims", shape))
    same(cuda.pack_signs(x, 0.0), fs.pack_signs(x, -1, 0.0, backend="reference"))


@pytest.mark.parametrize("schedule", ["forward", "reverse", "random:3"])
@pytest.mark.parametrize("n, m, w", [(1, 300, 2), (130, 517, 1), (129, 260, 17)])
def test_fused_search(sim, monkeypatch, schedule, n, m, w):
    """Fused top-k (k <= 32, column splits) and radius, forced, with ties, a run of
    distance-0 rows, radius 0 and past every distance."""
    monkeypatch.setenv("FASTSPLINE_CUDA_SEARCH", "fused")
    monkeypatch.setenv("FASTSPLINE_SIM_SCHEDULE", schedule)
    passed("binary tensor-core cdist", "fused top-k kernel", "fused radius kernels")
    gen = make_gen("sim-search", schedule, n, m, w)
    a, b = words_pair(n, m, w, gen)
    b[::3] = b[1].clone()
    b[m // 2 : m // 2 + 40] = a[0].clone()
    for k in sorted({1, 7, min(m, 32)}):
        same(cuda.hamming_topk(a, b, k), fs.hamming_topk(a, b, k, backend="reference"))
    same(cuda._topk_fused(a, b, 5, splits=3), fs.hamming_topk(a, b, 5, backend="reference"))
    for r in (0, 32 * w, 64 * w):
        same(cuda.hamming_radius(a, b, r), fs.hamming_radius(a, b, r, backend="reference"))


@pytest.mark.parametrize("sms", [1, 3])
@pytest.mark.parametrize("n, m, w", [(1, 300, 2), (130, 517, 34), (300, 260, 18)])
def test_pipelined_fused_search(sim, monkeypatch, sms, n, m, w):
    """The pipelined fused top-k (a tile stream per column range) and radius (persistent
    over all tiles: one SM, one block takes them all), forced, as test_fused_search."""
    monkeypatch.setenv("FASTSPLINE_CUDA_SEARCH", "pipelined")
    monkeypatch.setenv("FASTSPLINE_SIM_SMS", str(sms))
    passed("binary tensor-core cdist", "pipelined (cp.async) tensor-core cdist", "fused top-k kernel",
           "fused radius kernels", "pipelined fused top-k kernel", "pipelined fused radius kernels")
    a, b = words_pair(n, m, w, make_gen("sim-search-pipelined", sms, n, m, w))
    b[::3] = b[1].clone()
    b[m // 2 : m // 2 + 40] = a[0].clone()
    for k in sorted({1, 7, min(m, 32)}):
        same(cuda.hamming_topk(a, b, k), fs.hamming_topk(a, b, k, backend="reference"))
    same(cuda._topk_fused(a, b, 5, splits=3, pipelined=True), fs.hamming_topk(a, b, 5, backend="reference"))
    for r in (0, 32 * w, 64 * w):
        same(cuda.hamming_radius(a, b, r), fs.hamming_radius(a, b, r, backend="reference"))


@pytest.mark.skipif(SANITIZE, reason="mutants are built without sanitizers")
@pytest.mark.parametrize("mutant", list(MUTANTS))
def test_emulator_catches_planted_bugs(monkeypatch, sim_builds, mutant):
    """Each planted bug gives wrong results (or stops the emulator) under the default
    thread order: the tests above can fail."""
    _clear_env(monkeypatch)
    with cuda_sim.installed(cuda_sim.load(sim_builds[mutant])):
        mutant_fails(mutant, monkeypatch)


def mutant_fails(mutant: str, monkeypatch) -> None:
    passed("binary tensor-core cdist")
    if mutant == "wgmma slice reloaded in flight":  # copies land at issue: the stage changes under the wgmma
        monkeypatch.setenv("FASTSPLINE_SIM_CP_ASYNC", "early")
        for status in (cuda.wgmma_wide_status, cuda.wgmma_deep_status):
            with pytest.raises(RuntimeError, match="sim: .*shared-memory operands changed before its wait"):
                status(CPU)
        return
    if mutant.startswith("cluster"):
        if mutant == "cluster stage released in one CTA only":
            for status in (cuda.wgmma_cluster_status, cuda.wgmma_cluster4_status):
                with pytest.raises(RuntimeError, match="sim: deadlock: .* waits for the phase of parity . of the mbarrier"):
                    status(CPU)
            return
        # refills land at issue and warps lag one another: a refill under a wgmma in flight
        # is seen at its wait, or its operands are wrong
        monkeypatch.setenv("FASTSPLINE_SIM_CP_ASYNC", "early")
        monkeypatch.setenv("FASTSPLINE_SIM_SCHEDULE", "stall:3")
        try:
            reason = cuda.wgmma_cluster_status(CPU)
        except RuntimeError as exc:
            assert re.search("operands changed before its wait|more bytes than expected", str(exc)), exc
            return
        assert reason is not None and "disagreed" in reason, reason
        return
    if mutant == "wgmma descriptors per warp":
        with pytest.raises(RuntimeError, match="sim: .*wgmma descriptors differ within a warpgroup"):
            cuda.wgmma_status(CPU)
        return
    if mutant == "wgmma ring not aligned to 1 KiB":  # the emulator's shared memory starts at address 528
        for status in (cuda.wgmma_status, cuda.wgmma_wide_status):
            try:  # swizzled pieces land elsewhere: wrong distances, or below the ring's start
                reason = status(CPU)
            except RuntimeError as exc:
                assert "wgmma operand at shared address" in str(exc), exc
                continue
            assert reason is not None and "disagreed" in reason, reason
        return
    if "cp.async" in mutant or "slice" in mutant:
        reason = cuda.mma_async_status(CPU)
        assert reason is not None and "disagreed" in reason
        return
    a, b = words_pair(200, 600, 3, make_gen("sim-mutant", mutant))
    if "per-lane" in mutant:
        with pytest.raises(RuntimeError, match="sim: .*(different collectives|deadlock)"):
            cuda._topk_fused(a, b, 5)
    else:  # seven column ranges over five tiles: in the two empty ones, nothing but that barrier
        # orders the lists' start values before they are written out
        got, want = cuda._topk_fused(a, b, 12, splits=7), fs.hamming_topk(a, b, 12, backend="reference")
        assert not (torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]))


@pytest.mark.parametrize("sms", [1, 7])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_pack_grid_stride_over_sm_counts(sim, monkeypatch, sms, dtype):
    """The stream and rows kernels size their grids from the SM count and stride over
    the rest: one SM (every block loops) and seven (a ragged last step)."""
    monkeypatch.setenv("FASTSPLINE_SIM_SMS", str(sms))
    x = torch.randn(97, 1000, generator=make_gen("sim-grid", sms, dtype)).to(dtype)
    want = fs.pack_signs(x, -1, 0.0, backend="reference")
    for kernel in ("stream", "rows"):
        monkeypatch.setenv("FASTSPLINE_CUDA_PACK", kernel)
        passed("stream pack kernel")
        same(cuda.pack_signs(x, 0.0), want)


@pytest.mark.parametrize("sms", [1, 3])
@pytest.mark.parametrize("staging", ["async", "wide", "wgmma", "wgmma-wide", "wgmma-deep", "wgmma-cluster",
                                     "wgmma-cluster4"])
def test_pipelined_cdist_streams_tiles_over_sm_counts(sim, monkeypatch, sms, staging):
    """The pipelined kernels are persistent: each block runs its tiles' K slices as one
    stream (the ring crosses tile boundaries). One SM: one block takes every tile;
    three: ragged shares."""
    monkeypatch.setenv("FASTSPLINE_SIM_SMS", str(sms))
    monkeypatch.setenv("FASTSPLINE_CUDA_MMA_STAGING", staging)
    passed("binary tensor-core cdist", "pipelined (cp.async) tensor-core cdist", "pipelined wide-tile tensor-core cdist",
           *(cuda._WGMMA_KINDS.values()))
    for method in ("mma-and",) if staging.startswith("wgmma") else ("mma-and", "mma-xor"):
        monkeypatch.setenv("FASTSPLINE_CUDA_CDIST", method)
        for n, m, w in ((300, 270, 34), (520, 130, 2)):
            a, b = words_pair(n, m, w, make_gen("sim-persistent", sms, staging, method, n, m, w))
            same(cuda.hamming_cdist(a, b), fs.hamming_cdist(a, b, backend="reference"))


@pytest.mark.parametrize("base", [0, 16, 1008])
def test_wgmma_kernels_at_other_shared_memory_bases(sim, monkeypatch, base):
    """The wgmma swizzle is of shared-address bits, so the kernels align their ring to 1 KiB
    (align_1k) wherever the dynamic shared memory starts (the emulator's default: 528)."""
    monkeypatch.setenv("FASTSPLINE_SIM_SMEM_BASE", str(base))
    monkeypatch.setenv("FASTSPLINE_CUDA_CDIST", "mma-and")
    passed("binary tensor-core cdist", *(cuda._WGMMA_KINDS.values()))
    a, b = words_pair(200, 300, 34, make_gen("sim-wgmma-base", base))
    want = fs.hamming_cdist(a, b, backend="reference")
    for staging in ("wgmma", "wgmma-wide", "wgmma-deep", "wgmma-cluster", "wgmma-cluster4"):
        monkeypatch.setenv("FASTSPLINE_CUDA_MMA_STAGING", staging)
        same(cuda.hamming_cdist(a, b), want)


@pytest.mark.parametrize("staging", ["wgmma", "wgmma-wide", "wgmma-deep", "wgmma-cluster", "wgmma-cluster4"])
def test_wgmma_kernels_count_and_only(sim, monkeypatch, staging):
    """wgmma has no b1 XOR: forcing it with the XOR kernel is refused by name, and auto
    never offers it to XOR calls; untimed auto calls keep the mma.sync kernels."""
    passed("binary tensor-core cdist", *(cuda._WGMMA_KINDS.values()))
    monkeypatch.setenv("FASTSPLINE_CUDA_CDIST", "mma-xor")
    monkeypatch.setenv("FASTSPLINE_CUDA_MMA_STAGING", staging)
    a = torch.zeros(130, 34, dtype=torch.int64)
    with pytest.raises(ValueError, match="the wgmma kernels count AND only"):
        cuda.hamming_cdist(a, a)
    code = cuda.MMA_STAGINGS[staging]
    assert code not in cuda.staging_candidates(a, a, "mma-and", wgmma=False)  # a call too small to time
    assert code in cuda.staging_candidates(a, a, "mma-and") and code not in cuda.staging_candidates(a, a, "mma-xor")
    monkeypatch.setenv("FASTSPLINE_CUDA_WGMMA_AUTO", "0")
    assert code not in cuda.staging_candidates(a, a, "mma-and")
    assert cuda._static_staging(34, cuda.staging_candidates(a, a, "mma-and")) not in cuda._WGMMA_STAGINGS
