"""The CUDA backend's Python side, run here without a GPU.

``fastspline._cuda`` is replaced by a fake that implements each launcher's contract
(csrc/cuda/ops.h) with numpy on CPU memory, so the glue around the kernels is tested:
splitting columns and merging the per-split top-k candidates, the radius count / scan /
fill over row blocks, the per-device self-checks (cached, warning only on a failed check)
and which kernel each call asks for.
"""
from __future__ import annotations

import contextlib
import ctypes
import logging
import types

import numpy as np
import pytest
import torch

import fastspline as fs
from cases import make_gen, random_words

cuda = pytest.importorskip("fastspline.backends.cuda", reason="fastspline._cuda not built")

NO_KEY = 0x7FFFFFFFFFFFFFFF


def view(ptr: int, count: int, dtype) -> np.ndarray:
    """A numpy view of ``count`` elements at a CPU address (what the fake kernels get)."""
    item = np.dtype(dtype).itemsize
    buf = (ctypes.c_char * max(1, count * item)).from_address(ptr)
    return np.frombuffer(buf, dtype=dtype, count=count)


def distances(a_ptr: int, n: int, b_ptr: int, m: int, w: int) -> np.ndarray:
    a = view(a_ptr, n * w, np.uint64).reshape(n, w)
    b = view(b_ptr, m * w, np.uint64).reshape(m, w)
    x = a[:, None, :] ^ b[None, :, :]
    return np.unpackbits(x.view(np.uint8), axis=-1).reshape(n, m, -1).sum(-1).astype(np.int64)


class FakeKernels:
    """The launchers' contracts (csrc/cuda/ops.h), on CPU memory."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def hamming_topk_mma(self, a, n, b, m, w, k, splits, cand, stream, workspace=0):
        self.calls.append(("topk", n, m, k, splits))
        d = distances(a, n, b, m, w)
        out = view(cand, n * splits * k, np.int64).reshape(n, splits, k)
        col_tiles = -(-m // 128)
        per_split = -(-col_tiles // splits) * 128
        for s in range(splits):
            lo, hi = s * per_split, min(m, (s + 1) * per_split)
            keys = np.full((n, max(k, hi - lo)), NO_KEY, dtype=np.int64)
            if hi > lo:
                keys[:, : hi - lo] = (d[:, lo:hi] << 32) | np.arange(lo, hi)
            out[:, s, :] = np.sort(keys, axis=1)[:, :k]

    def hamming_radius_mma(self, a, n, b, m, w, r, counts, offsets, oi, oj, od, fill, stream, workspace=0):
        self.calls.append(("radius-fill" if fill else "radius-count", n, m, r))
        d = distances(a, n, b, m, w)
        col_tiles = -(-m // 128)
        hit = d <= r
        if not fill:
            c = view(counts, n * col_tiles, np.int32).reshape(n, col_tiles)
            for t in range(col_tiles):
                c[:, t] = hit[:, t * 128 : (t + 1) * 128].sum(1)
            return
        off = view(offsets, n * col_tiles, np.int64).reshape(n, col_tiles)
        total = int(hit.sum())
        i_out, j_out, d_out = view(oi, total, np.int64), view(oj, total, np.int64), view(od, total, np.int32)
        for row in range(n):
            for t in range(col_tiles):
                at = off[row, t]
                for col in range(t * 128, min(m, (t + 1) * 128)):
                    if hit[row, col]:
                        i_out[at], j_out[at], d_out[at] = row, col, d[row, col]
                        at += 1

    def pack_signs(self, *args):
        self.calls.append(("pack", args[-2], args[-1]))


@pytest.fixture
def fake(monkeypatch):
    kernels = FakeKernels()
    monkeypatch.setattr(cuda, "_cuda", kernels)
    monkeypatch.setattr(cuda, "_stream", lambda t: 0)
    monkeypatch.setattr(cuda.torch.cuda, "device", lambda *a, **k: contextlib.nullcontext())
    monkeypatch.setattr(cuda, "_checks", {})
    # wgmma needs an sm_90 card: off here unless a test turns it on.
    monkeypatch.setattr(cuda, "wgmma_status", lambda device: "not an sm_90 card")
    monkeypatch.setattr(cuda, "wgmma_wide_status", lambda device: "not an sm_90 card")
    monkeypatch.setattr(cuda, "wgmma_deep_status", lambda device: "not an sm_90 card")
    monkeypatch.setattr(cuda, "wgmma_cluster_status", lambda device: "not an sm_90 card")
    monkeypatch.setattr(cuda, "wgmma_cluster4_status", lambda device: "not an sm_90 card")
    monkeypatch.setattr(cuda, "_child_status", lambda device, code: "not an sm_90 card")
    return kernels


def sms(monkeypatch, count: int) -> None:
    props = types.SimpleNamespace(multi_processor_count=count)
    monkeypatch.setattr(cuda.torch.cuda, "get_device_properties", lambda device: props)


@pytest.mark.parametrize("sm_count", [1, 3, 132])
@pytest.mark.parametrize("shape", [(1, 1), (5, 130), (129, 700), (300, 257)])
def test_fused_topk_merges_split_candidates(fake, monkeypatch, sm_count, shape):
    sms(monkeypatch, sm_count)
    n, m = shape
    gen = make_gen("dispatch-topk", sm_count, shape)
    a, b = random_words(n, 100, gen), random_words(m, 100, gen)
    b[::4] = b[-1].clone()  # ties across splits
    for k in sorted({1, min(m, 5), min(m, 32)}):
        got = cuda._topk_fused(a, b, k)
        want = fs.hamming_topk(a, b, k, backend="reference")
        assert got[0].dtype == torch.int32 and got[1].dtype == torch.int64
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    (splits,) = {call[4] for call in fake.calls}
    row_tiles, col_tiles = -(-n // 128), -(-m // 128)
    per_range = -(-col_tiles // splits)
    assert splits * per_range >= col_tiles > (splits - 1) * per_range  # no empty column range
    assert splits >= min(col_tiles, -(-2 * sm_count // row_tiles)) // 2  # blocks for the SMs


@pytest.mark.parametrize("splits", [1, 2, 5, 9])
def test_fused_topk_with_forced_splits_including_empty_ranges(fake, monkeypatch, splits):
    sms(monkeypatch, 1)
    gen = make_gen("dispatch-topk-splits", splits)
    a, b = random_words(40, 130, gen), random_words(600, 130, gen)  # 5 column tiles
    b[::7] = b[3].clone()
    for k in (1, 6, 32):
        got = cuda._topk_fused(a, b, k, splits)
        want = fs.hamming_topk(a, b, k, backend="reference")
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_fused_topk_with_no_rows(fake, monkeypatch):
    sms(monkeypatch, 4)
    d, i = cuda._topk_fused(torch.zeros(0, 2, dtype=torch.int64), torch.zeros(3, 2, dtype=torch.int64), 2)
    assert d.shape == (0, 2) and i.shape == (0, 2) and not fake.calls


@pytest.mark.parametrize("block_bytes", [1 << 28, 12 * 3 * 128])  # one row block, or 128-row blocks
@pytest.mark.parametrize("shape", [(1, 1), (7, 300), (300, 129), (260, 260)])
def test_fused_radius_scans_counts_into_sorted_pairs(fake, monkeypatch, block_bytes, shape):
    monkeypatch.setattr(cuda, "_BLOCK_BYTES", block_bytes)
    n, m = shape
    gen = make_gen("dispatch-radius", block_bytes, shape)
    a, b = random_words(n, 70, gen), random_words(m, 70, gen)
    b[: m // 3] = a[0].clone()
    for r in (0, 30, 35, 70):
        got = cuda._radius_fused(a, b, r)
        want = fs.hamming_radius(a, b, r, backend="reference")
        for g, w in zip(got, want, strict=True):
            assert g.dtype == w.dtype and torch.equal(g, w)
    fills = [c for c in fake.calls if c[0] == "radius-fill"]
    counts = [c for c in fake.calls if c[0] == "radius-count"]
    assert fills and len(counts) >= len(fills)
    if block_bytes < 1 << 28 and n > 128:
        assert max(c[1] for c in counts) == 128  # row blocks of 128 rows


def test_self_check_runs_once_and_warns_only_on_a_failed_check(fake, monkeypatch, caplog):
    monkeypatch.setattr(cuda, "_index", lambda device: 0)
    runs = []

    def failing(index):
        runs.append(index)
        return "disagreed"

    with caplog.at_level(logging.WARNING, logger="fastspline"):
        assert cuda._self_check("kernel x", torch.device("cpu"), failing) == "disagreed"
        assert cuda._self_check("kernel x", torch.device("cpu"), failing) == "disagreed"
        assert cuda._self_check("kernel y", torch.device("cpu"), lambda i: cuda._Unsupported("old card")) == "old card"
        assert cuda._self_check("kernel z", torch.device("cpu"), lambda i: None) is None
    assert runs == [0]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "kernel x disabled on cuda:0: disagreed" in warnings[0]


def test_pack_uses_new_kernels_only_after_their_checks(fake, monkeypatch):
    """Auto packing may pick stream (bit 0 of allow) and columns16 (bit 1) only where
    their per-device checks passed; a forced kernel that failed its check raises."""
    x = torch.zeros(2, 64)
    monkeypatch.setattr(cuda, "pack_stream_status", lambda device: None)
    monkeypatch.setattr(cuda, "pack_columns16_status", lambda device: "disagreed")
    cuda.pack_signs(x, 0.0)
    monkeypatch.setattr(cuda, "pack_columns16_status", lambda device: None)
    cuda.pack_signs(x, 0.0)
    monkeypatch.setattr(cuda, "pack_stream_status", lambda device: "disagreed")
    cuda.pack_signs(x, 0.0)
    monkeypatch.setenv("FASTSPLINE_CUDA_PACK", "rows")
    cuda.pack_signs(x, 0.0)
    assert fake.calls == [("pack", 0, 1), ("pack", 0, 3), ("pack", 0, 2), ("pack", cuda.PACK_KERNELS["rows"], 0)]
    monkeypatch.setenv("FASTSPLINE_CUDA_PACK", "stream")
    with pytest.raises(RuntimeError, match="FASTSPLINE_CUDA_PACK=stream: the kernel is unavailable: disagreed"):
        cuda.pack_signs(x, 0.0)
    monkeypatch.setattr(cuda, "pack_columns16_status", lambda device: "too old")
    monkeypatch.setenv("FASTSPLINE_CUDA_PACK", "columns16")
    with pytest.raises(RuntimeError, match="FASTSPLINE_CUDA_PACK=columns16: the kernel is unavailable: too old"):
        cuda.pack_signs(x, 0.0)


def test_search_and_staging_follow_their_checks(fake, monkeypatch):
    monkeypatch.setattr(cuda, "topk_status", lambda device: "disagreed")
    monkeypatch.setattr(cuda, "radius_status", lambda device: None)
    monkeypatch.setattr(cuda, "mma_async_status", lambda device: "too little shared memory")
    monkeypatch.setattr(cuda, "mma_wide_status", lambda device: "too little shared memory")
    dev = torch.device("cuda", 0)
    a = torch.zeros(8, 32, dtype=torch.int64)
    assert cuda.search_method("topk", dev) == "blocks" and cuda.search_method("radius", dev) == "fused"
    assert cuda.mma_staging(dev) == 0 and cuda.staging_candidates(a, a) == [1] and cuda._auto_staging(a, a, "mma-and") == 1
    monkeypatch.setenv("FASTSPLINE_CUDA_SEARCH", "fused")
    with pytest.raises(RuntimeError, match="FASTSPLINE_CUDA_SEARCH=fused: the fused topk kernel is unavailable: disagreed"):
        cuda.search_method("topk", dev)
    for name in ("async", "wide"):
        monkeypatch.setenv("FASTSPLINE_CUDA_MMA_STAGING", name)
        with pytest.raises(RuntimeError, match=f"MMA_STAGING={name}: the pipelined kernel is unavailable: too little"):
            cuda.mma_staging(dev)
    monkeypatch.setattr(cuda, "topk_status", lambda device: None)
    monkeypatch.setattr(cuda, "mma_async_status", lambda device: None)
    monkeypatch.setenv("FASTSPLINE_CUDA_MMA_STAGING", "async")
    assert cuda.mma_staging(dev) == 2
    monkeypatch.delenv("FASTSPLINE_CUDA_MMA_STAGING")
    assert cuda.search_method("topk", dev) == "fused" and cuda.mma_staging(dev) == 0
    assert cuda.staging_candidates(a, a) == [1, 2] and cuda._auto_staging(a, a, "mma-and") == 2
    monkeypatch.setattr(cuda, "mma_wide_status", lambda device: None)
    assert cuda.staging_candidates(a, a) == [1, 2, 3] and cuda._auto_staging(a, a, "mma-and") == 3
    short, odd = torch.zeros(8, 30, dtype=torch.int64), torch.zeros(8, 33, dtype=torch.int64)
    misaligned = torch.zeros(8 * 32 + 1, dtype=torch.int64)[1:].view(8, 32)  # 8 bytes past 16-byte alignment
    assert cuda._auto_staging(short, short, "mma-and") == 1  # under 2,048 bits: synchronous
    assert cuda.staging_candidates(odd, odd) == [1] and cuda.staging_candidates(a, misaligned) == [1]


def test_disabling_mma_turns_off_every_tensor_core_kernel_on_every_call(fake, monkeypatch):
    """Cached passes of the pipelined, top-k and radius checks do not outlive
    FASTSPLINE_CUDA_DISABLE=mma: they all run on the tensor cores."""
    monkeypatch.setattr(cuda, "_index", lambda device: 0)
    for kind in ("binary tensor-core cdist", "pipelined (cp.async) tensor-core cdist",
                 "pipelined wide-tile tensor-core cdist", "fused top-k kernel", "fused radius kernels"):
        cuda._checks[(kind, 0)] = None  # all passed earlier
    dev = torch.device("cuda", 0)
    statuses = (cuda.mma_async_status, cuda.mma_wide_status, cuda.topk_status, cuda.radius_status)
    assert all(status(dev) is None for status in statuses)
    a = torch.zeros(8, 32, dtype=torch.int64)
    assert cuda.staging_candidates(a, a) == [1, 2, 3]
    monkeypatch.setenv("FASTSPLINE_CUDA_DISABLE", "mma")
    for status in (cuda.mma_status, *statuses):
        assert status(dev) == "disabled by FASTSPLINE_CUDA_DISABLE=mma"
    assert cuda.search_method("topk", dev) == "blocks" and cuda.staging_candidates(a, a) == [1]
    monkeypatch.setenv("FASTSPLINE_CUDA_DISABLE", "wide")
    assert cuda.staging_candidates(a, a) == [1, 2]


def test_disable_switch_turns_kernels_off_without_running_their_checks(fake, monkeypatch):
    monkeypatch.setattr(cuda, "_index", lambda device: 0)
    ran = []
    monkeypatch.setenv("FASTSPLINE_CUDA_DISABLE", "stream, fused")
    reason = cuda._self_check("stream pack kernel", torch.device("cpu"), lambda i: ran.append(i), "stream")
    assert reason == "disabled by FASTSPLINE_CUDA_DISABLE=stream, fused" and not ran
    assert cuda._self_check("async", torch.device("cpu"), lambda i: ran.append(i), "async") is None and ran == [0]
    monkeypatch.setenv("FASTSPLINE_CUDA_DISABLE", "stream,warp")
    with pytest.raises(ValueError, match=r"FASTSPLINE_CUDA_DISABLE takes names from \('mma', 'async', 'wide', 'wgmma', 'cluster', 'stream', 'columns16', 'fused'\), got \['warp'\]"):
        cuda._self_check("stream pack kernel", torch.device("cpu"), lambda i: None, "stream")
    monkeypatch.delenv("FASTSPLINE_CUDA_DISABLE")
    x = torch.zeros(2, 64)
    monkeypatch.setenv("FASTSPLINE_CUDA_DISABLE", "stream,columns16")
    cuda.pack_signs(x, 0.0)  # auto: neither the stream nor the columns16 kernel
    assert fake.calls[-1] == ("pack", 0, 0)


# The real status functions (the fake fixture turns the wgmma ones off).
REAL_WGMMA_STATUS = {code: getattr(cuda, name) for code, name in cuda._WGMMA_STATUS_NAMES.items()}
REAL_CHILD_STATUS = cuda._child_status


def test_cluster_switch_turns_off_the_clustered_wgmma_kernels_only(fake, monkeypatch):
    """FASTSPLINE_CUDA_DISABLE=cluster: the clustered wgmma kernels (7, 8) only, so that a
    GPU run can turn them off and keep the other wgmma kernels; wgmma: all five. Their own
    checks and the child's."""
    monkeypatch.setattr(cuda, "_index", lambda device: 0)
    checked = []
    monkeypatch.setattr(cuda, "_compare_cdist", lambda index, method, staging, shapes: checked.append(staging))
    monkeypatch.setattr(cuda, "mma_status", lambda device: None)
    monkeypatch.setattr(cuda, "_child_checks", lambda index: dict.fromkeys(cuda._WGMMA_STAGINGS))
    dev = torch.device("cuda", 0)
    for disable, off in [("cluster", {7, 8}), ("wgmma", {4, 5, 6, 7, 8}), ("mma,cluster", {7, 8}), ("", set())]:
        monkeypatch.setenv("FASTSPLINE_CUDA_DISABLE", disable)
        cuda._checks.clear()
        cuda._child_results.clear()
        checked.clear()
        for reasons in ({code: REAL_WGMMA_STATUS[code](dev) for code in cuda._WGMMA_STAGINGS},
                        {code: REAL_CHILD_STATUS(dev, code) for code in cuda._WGMMA_STAGINGS}):
            assert {code for code, r in reasons.items() if r is not None} == off, (disable, reasons)
            assert all(reasons[code] == f"disabled by FASTSPLINE_CUDA_DISABLE={disable}" for code in off)
        assert sorted(checked) == sorted(set(cuda._WGMMA_STAGINGS) - off)  # a disabled kernel runs no check
    cuda._child_results.clear()

def test_search_takes_the_pipelined_kernels_for_long_aligned_codes(fake, monkeypatch):
    dev = torch.device("cuda", 0)
    for name in ("topk_status", "radius_status", "topk_pipelined_status", "radius_pipelined_status"):
        monkeypatch.setattr(cuda, name, lambda device: None)
    long, short, odd = (torch.zeros(8, w, dtype=torch.int64) for w in (32, 30, 33))
    misaligned = torch.zeros(8 * 32 + 1, dtype=torch.int64)[1:].view(8, 32)
    for op in ("topk", "radius"):
        assert cuda.search_method(op, dev, long, long) == "pipelined"
        assert cuda.search_method(op, dev) == "fused"  # no operands: no layout to judge
        for a in (short, odd, misaligned):
            assert cuda.search_method(op, dev, a, a) == "fused"
    monkeypatch.setattr(cuda, "topk_pipelined_status", lambda device: "disagreed")
    assert cuda.search_method("topk", dev, long, long) == "fused"
    assert cuda.search_method("radius", dev, long, long) == "pipelined"
    monkeypatch.setenv("FASTSPLINE_CUDA_SEARCH", "pipelined")
    with pytest.raises(RuntimeError, match="FASTSPLINE_CUDA_SEARCH=pipelined: the pipelined topk kernel is unavailable: disagreed"):
        cuda.search_method("topk", dev, long, long)
    assert cuda.search_method("radius", dev, short, short) == "pipelined"  # forced: whatever the layout


def test_self_checks_wait_for_the_end_of_a_cuda_graph_capture(fake, monkeypatch):
    """A self-check reads its results on the host (a sync), which a CUDA graph capture
    forbids: while one is captured an unchecked kernel is not used (nor checked, nor its
    absence cached); after it, the check runs as usual."""
    monkeypatch.setattr(cuda, "_index", lambda device: 0)
    monkeypatch.setattr(cuda, "_capturing", lambda: True)
    runs, dev = [], torch.device("cuda", 0)
    reason = cuda._self_check("binary tensor-core cdist", dev, lambda index: runs.append(index))
    assert runs == [] and "CUDA graph" in reason and cuda._checks == {}
    assert cuda.cdist_method(4096, 4096, dev) == "popc"  # no check (compute_capability) ran
    monkeypatch.setattr(cuda, "_capturing", lambda: False)
    assert cuda._self_check("binary tensor-core cdist", dev, lambda index: runs.append(index)) is None
    assert runs == [0] and cuda._checks == {("binary tensor-core cdist", 0): None}


def test_timing_runs_on_the_device_it_times(fake, monkeypatch):
    """_fastest times with CUDA events on the current device's stream, so it makes the
    timed device current (search and pack timings are reached outside any device context)."""
    current = [0]

    @contextlib.contextmanager
    def device(index):
        saved, current[0] = current[0], index
        try:
            yield
        finally:
            current[0] = saved

    monkeypatch.setattr(cuda.torch.cuda, "device", device)
    monkeypatch.setattr(cuda, "_tuned", {})
    seen = []
    monkeypatch.setattr(cuda, "_time_ms", lambda fn, reps=3: seen.append(current[0]) or 1.0)
    assert cuda._fastest((1, "op"), ["x", "y"], lambda: lambda c: None, "x", "op") == "x"
    assert seen == [1, 1]


@pytest.mark.parametrize("l2_mib, want_mib", [(50, 256), (60, 256), (126, 504)])
def test_pack_timing_sample_outgrows_the_l2_cache(monkeypatch, l2_mib, want_mib):
    """The pack timing's sample is 256 MiB or 4x the card's L2, whichever is more: a sample
    that fits in L2 times cache hits (on an H200, 64 MiB picked the slowest kernel)."""
    props = types.SimpleNamespace(L2_cache_size=l2_mib << 20)
    monkeypatch.setattr(cuda.torch.cuda, "get_device_properties", lambda device: props)
    assert cuda._pack_sample_bytes(torch.device("cuda", 0)) == want_mib << 20
    assert cuda._pack_sample_bytes(torch.device("cpu")) == cuda._PACK_SAMPLE_BYTES  # the emulator's tests


def test_wgmma_staging_is_timed_never_static(fake, monkeypatch):
    """The wgmma cdist kernels join the timed candidates of AND calls (never XOR calls)
    where their checks passed: by default once their child-process check passed too
    (FASTSPLINE_CUDA_WGMMA_AUTO=isolated), with =1 on their own check, never with =0;
    untimed calls keep the mma.sync kernels, and forcing one where its check failed raises
    with the reason."""
    for name in ("mma_async_status", "mma_wide_status"):
        monkeypatch.setattr(cuda, name, lambda device: None)
    cleared = {4: None, 5: None, 6: None, 7: None, 8: None}
    monkeypatch.setattr(cuda, "_child_status", lambda device, code: cleared[code])
    dev = torch.device("cuda", 0)
    a = torch.zeros(8, 32, dtype=torch.int64)
    assert cuda.staging_candidates(a, a, "mma-and") == [1, 2, 3]  # both wgmma checks failed
    monkeypatch.setattr(cuda, "wgmma_status", lambda device: None)
    assert cuda.staging_candidates(a, a, "mma-and") == [1, 2, 3, 4]
    assert cuda.staging_candidates(a, a, "mma-and", wgmma=False) == [1, 2, 3]
    cleared[4] = "its self-check in a child process did not finish (signal 4)"
    assert cuda.staging_candidates(a, a, "mma-and") == [1, 2, 3]
    monkeypatch.setenv("FASTSPLINE_CUDA_WGMMA_AUTO", "1")  # this process's check alone
    assert cuda.staging_candidates(a, a, "mma-and") == [1, 2, 3, 4]
    monkeypatch.setenv("FASTSPLINE_CUDA_WGMMA_AUTO", "yes")
    with pytest.raises(ValueError, match=r"FASTSPLINE_CUDA_WGMMA_AUTO must be one of \('isolated', '1', '0'\), got 'yes'"):
        cuda.staging_candidates(a, a, "mma-and")
    monkeypatch.setenv("FASTSPLINE_CUDA_WGMMA_AUTO", "0")
    assert cuda.staging_candidates(a, a, "mma-and") == [1, 2, 3]
    monkeypatch.delenv("FASTSPLINE_CUDA_WGMMA_AUTO")
    cleared[4] = None
    monkeypatch.setattr(cuda, "wgmma_wide_status", lambda device: None)
    assert cuda.staging_candidates(a, a, "mma-and") == [1, 2, 3, 4, 5]
    monkeypatch.setattr(cuda, "wgmma_deep_status", lambda device: None)
    assert cuda.staging_candidates(a, a, "mma-and") == [1, 2, 3, 4, 5, 6]
    monkeypatch.setattr(cuda, "wgmma_cluster_status", lambda device: None)
    assert cuda.staging_candidates(a, a, "mma-and") == [1, 2, 3, 4, 5, 6, 7]
    monkeypatch.setattr(cuda, "wgmma_cluster4_status", lambda device: None)
    assert cuda.staging_candidates(a, a, "mma-and") == [1, 2, 3, 4, 5, 6, 7, 8]
    assert cuda.staging_candidates(a, a, "mma-xor") == [1, 2, 3]
    everything = [1, 2, 3, 4, 5, 6, 7, 8]
    assert cuda._static_staging(32, everything) == 3 and cuda._static_staging(2, everything) == 1
    for name, code, status in (("wgmma", 4, "wgmma_status"), ("wgmma-wide", 5, "wgmma_wide_status"),
                               ("wgmma-deep", 6, "wgmma_deep_status"), ("wgmma-cluster", 7, "wgmma_cluster_status"),
                               ("wgmma-cluster4", 8, "wgmma_cluster4_status")):
        monkeypatch.setenv("FASTSPLINE_CUDA_MMA_STAGING", name)
        assert cuda.mma_staging(dev) == code
        monkeypatch.setattr(cuda, status, lambda device: "disagreed")
        with pytest.raises(RuntimeError,
                           match=f"FASTSPLINE_CUDA_MMA_STAGING={name}: the pipelined kernel is unavailable: disagreed"):
            cuda.mma_staging(dev)


def test_wgmma_runs_in_this_process_only_after_the_child_cleared_it(fake, monkeypatch):
    """By default a wgmma kernel's own (in-process) self-check runs only once its check in
    a child process passed: a kernel that traps fails in the child, never here."""
    for name in ("mma_async_status", "mma_wide_status"):
        monkeypatch.setattr(cuda, name, lambda device: None)
    ran = []
    monkeypatch.setattr(cuda, "wgmma_status", lambda device: ran.append(4))
    monkeypatch.setattr(cuda, "wgmma_wide_status", lambda device: ran.append(5))
    monkeypatch.setattr(cuda, "wgmma_deep_status", lambda device: ran.append(6))
    monkeypatch.setattr(cuda, "wgmma_cluster_status", lambda device: ran.append(7))
    monkeypatch.setattr(cuda, "wgmma_cluster4_status", lambda device: ran.append(8))
    child = {4: "its self-check in a child process did not finish (signal 4)", 5: None, 6: "disagreed", 7: "disagreed",
             8: "disagreed"}
    monkeypatch.setattr(cuda, "_child_status", lambda device, code: child[code])
    a = torch.zeros(8, 32, dtype=torch.int64)
    assert cuda.staging_candidates(a, a, "mma-and") == [1, 2, 3, 5] and ran == [5]


def test_only_calls_large_enough_to_time_start_the_child_check(fake, monkeypatch):
    """Auto calls too small to time (or with FASTSPLINE_CUDA_AUTOTUNE=0) never ask for the
    wgmma kernels, so they never start a child process; a timed call asks."""
    for name in ("mma_async_status", "mma_wide_status", "wgmma_status", "wgmma_wide_status", "wgmma_deep_status",
                 "wgmma_cluster_status", "wgmma_cluster4_status"):
        monkeypatch.setattr(cuda, name, lambda device: None)
    asked = []
    monkeypatch.setattr(cuda, "_child_status", lambda device, code: asked.append(code))
    monkeypatch.setattr(cuda, "tuned_staging", lambda n, m, w, method, device, candidates: candidates[-1])
    a = torch.zeros(8, 32, dtype=torch.int64)
    assert cuda._auto_staging(a, a, "mma-and") == 3 and asked == []
    monkeypatch.setattr(cuda, "_AUTOTUNE_MIN_WORD_PAIRS", 1)
    monkeypatch.setenv("FASTSPLINE_CUDA_AUTOTUNE", "0")
    assert cuda._auto_staging(a, a, "mma-and") == 3 and asked == []
    monkeypatch.delenv("FASTSPLINE_CUDA_AUTOTUNE")
    assert cuda._auto_staging(a, a, "mma-and") == 8 and asked == [4, 5, 6, 7, 8]
    assert cuda._auto_staging(a, a, "mma-xor") == 3 and asked == [4, 5, 6, 7, 8]
