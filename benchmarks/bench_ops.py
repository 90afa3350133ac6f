#!/usr/bin/env python
"""Benchmark fastspline's CPU kernel ops against torch, numpy and faiss-cpu.

Every peer's answer is first checked to equal fastspline's exactly; a peer
that disagrees is reported as a mismatch and not timed (a timing of a wrong
answer says nothing). Each measurement: one checked call, ``--warmup`` more
calls (first calls pay page faults), then the median of ``--repeats`` timed
calls with ``time.perf_counter``. The machine is shared and noisy, so read the
ratios measured within one run rather than absolute times across runs.

Ratio column: peer_time / fastspline_time, i.e. fastspline's speedup over the
peer (for forced-ISA rows: that ISA's time / the default ISA's time).

Run from the repository root:

    python benchmarks/bench_ops.py                       # full run, ~3 minutes on 2 cores
    python benchmarks/bench_ops.py --quick --backend reference   # smoke test, seconds

Results: a table on stdout and JSON at ``benchmarks/results/ops-cpu.json``
(``ops-cpu-quick.json`` with ``--quick``; ``--out`` to choose).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import gc
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch

import _setup  # noqa: F401  (fastspline: installed, else this checkout)
from _setup import RESULTS_DIR
import fastspline
from fastspline import backends
from fastspline._files import atomic_write_json
from machine import cpu_info

SECTIONS = ("cdist", "topk", "radius", "pack_signs", "rowwise", "bit_transpose", "count_regions")
CPU_FLAGS_OF_INTEREST = ("avx2", "avx512f", "avx512_vpopcntdq", "avx512_bf16")
NUMPY_CHUNK_ELEMENTS = 1 << 20  # uint64 words per xor temporary (8 MB): stays near cache

# Implementation labels that the goal lines look up.
FAISS_HAMMINGS = "faiss.hammings (full matrix)"  # one thread: it has no OpenMP loop of its own
# The same with its rows split over --threads Python threads (it releases the GIL): equal cores.
FAISS_HAMMINGS_THREADS = "faiss.hammings, rows over threads, preallocated out"
# The same pair writing into an output allocated once: kernels without the page faults
# of a fresh 64 MB matrix (hamming_cdist's out=).
FASTSPLINE_CDIST_OUT = "fastspline hamming_cdist(out=preallocated)"
FAISS_HAMMINGS_OUT = "faiss.hammings into a preallocated out"
TORCH_MATMUL_FP32 = "torch +-1 matmul fp32 (incl. unpack)"
TORCH_CLONE = "torch.clone (bandwidth reference)"
TORCH_COPY = "torch copy_ into preallocated (no faults)"

GOAL_CDIST_VS_FAISS = 3.0
GOAL_CDIST_VS_TORCH_FP32 = 15.0
GOAL_PACK_FRACTION_OF_CLONE = 0.5


# ---------------------------------------------------------------- sizes


@dataclasses.dataclass(frozen=True)
class Sizes:
    pairwise_rows: int  # N = M for cdist / topk / radius
    n_bits: int  # bits per code of every Hamming op
    topk_k: int
    activation_shape: tuple[int, ...]  # [batch, channels, height, width] for pack_signs
    rowwise_rows: int  # popcount / hamming / hamming_total
    transpose_rows: int  # bit_transpose input [rows, n_bits / 64]
    region_rows: int  # count_regions input rows ...
    region_distinct: int  # ... drawn from this many distinct codes


FULL = Sizes(4096, 1024, 10, (256, 64, 32, 32), 1 << 20, 65536, 1 << 18, 1 << 14)
QUICK = Sizes(256, 1024, 10, (8, 64, 32, 32), 1 << 14, 4096, 1 << 14, 1 << 10)


# ---------------------------------------------------------------- measurements


@dataclasses.dataclass
class Measurement:
    op: str
    size: str
    implementation: str
    is_baseline: bool  # the default fastspline row that ratios in its (op, size) group divide by
    times_s: list[float] = dataclasses.field(default_factory=list)
    matches: bool | None = None  # None: not checked (the baseline, or a bandwidth reference)
    check: str = ""
    bytes_moved: int | None = None
    note: str = ""

    @property
    def median_s(self) -> float | None:
        return statistics.median(self.times_s) if self.times_s else None

    @property
    def gbps(self) -> float | None:
        if self.bytes_moved is None or not self.times_s:
            return None
        return self.bytes_moved / self.median_s / 1e9


CheckResult = tuple[bool, str]


class Bench:
    """Runs, checks and times the calls; keeps every measurement in order."""

    def __init__(self, repeats: int, warmup: int) -> None:
        self.repeats = repeats
        self.warmup = warmup
        self.measurements: list[Measurement] = []

    def run(
        self,
        op: str,
        size: str,
        implementation: str,
        call: Callable[[], Any],
        *,
        check: Callable[[Any], CheckResult] | None = None,
        baseline: bool = False,
        bytes_moved: int | None = None,
        note: str = "",
    ) -> Any:
        """Call once (checked with ``check``), warm up, time; return the first call's result."""
        row = Measurement(op, size, implementation, baseline, bytes_moved=bytes_moved, note=note)
        self.measurements.append(row)
        result = call()
        if check is not None:
            row.matches, row.check = check(result)
            if not row.matches:
                print(f"  MISMATCH {op} {size} {implementation}: {row.check} (not timed)", flush=True)
                return result
        for _ in range(self.warmup):
            call()
        gc.collect()
        for _ in range(self.repeats):
            start = time.perf_counter()
            call()
            row.times_s.append(time.perf_counter() - start)
        median_ms = row.median_s * 1e3
        print(f"  {op:<14} {size:<28} {implementation:<44} {median_ms:10.3f} ms", flush=True)
        return result

    def find(self, op: str, implementation: str, size: str | None = None) -> Measurement | None:
        for row in self.measurements:
            if row.op == op and row.implementation == implementation and size in (None, row.size):
                return row
        return None

    def baseline_of(self, row: Measurement) -> Measurement | None:
        for other in self.measurements:
            if other.is_baseline and other.op == row.op and other.size == row.size:
                return other
        return None

    def ratio(self, row: Measurement) -> float | None:
        """peer_time / fastspline_time: how many times faster the default fastspline row is."""
        base = self.baseline_of(row)
        if base is None or base is row or not base.times_s or not row.times_s:
            return None
        return row.median_s / base.median_s


# ---------------------------------------------------------------- fastspline variants


def fastspline_variants(backend: str) -> list[tuple[str, Callable[[], AbstractContextManager[None]], bool]]:
    """(label, context to run under, is_default) for the chosen backend and each forced CPU ISA."""
    if backend != "cpu":
        return [(f"fastspline ({backend})", contextlib.nullcontext, True)]
    cpu = backends.load("cpu")
    default_isa = cpu.isa()
    variants: list[tuple[str, Callable[[], AbstractContextManager[None]], bool]] = [
        (f"fastspline (cpu, isa={default_isa})", contextlib.nullcontext, True)
    ]
    for isa in cpu.supported_isas():
        if isa != default_isa:
            variants.append((f"fastspline (cpu, forced isa={isa})", lambda isa=isa: cpu.forced_isa(isa), False))
    return variants


# ---------------------------------------------------------------- data and peers


def random_codes(rows: int, n_bits: int, generator: torch.Generator) -> torch.Tensor:
    """Uniform random codes, int64 [rows, n_bits / 64] (n_bits a multiple of 64: no pad bits)."""
    as_bytes = torch.randint(0, 256, (rows, n_bits // 8), dtype=torch.uint8, generator=generator)
    return as_bytes.view(torch.int64)


_BYTE_SHIFTS = torch.arange(8, dtype=torch.uint8)
_BYTE_WEIGHTS = (1 << torch.arange(8)).to(torch.uint8)


def torch_unpack_bits(words: torch.Tensor, n_bits: int) -> torch.Tensor:
    """int64 [..., W] -> uint8 0/1 [..., n_bits]; the little-endian byte view holds bit 8k+j in byte k."""
    as_bytes = words.contiguous().view(torch.uint8)
    bits = (as_bytes.unsqueeze(-1) >> _BYTE_SHIFTS) & 1
    return bits.reshape(*words.shape[:-1], -1)[..., :n_bits]


def torch_pack_bits(bits: torch.Tensor) -> torch.Tensor:
    """bool/0-1 [..., n] -> int64 [..., ceil(n/64)]: a weighted sum per 8 bits, the bytes viewed as words."""
    n = bits.shape[-1]
    as_uint8 = bits.to(torch.uint8)
    if n % 8:
        as_uint8 = torch.nn.functional.pad(as_uint8, (0, -n % 8))
    # uint8 sums (at most 255) move an eighth of the bytes that int64 bits * 2**j would.
    packed = (as_uint8.reshape(*bits.shape[:-1], -1, 8) * _BYTE_WEIGHTS).sum(dim=-1, dtype=torch.uint8)
    if packed.shape[-1] % 8:
        # Pad whole bytes, not bits: a 32-wide pack does not pay for 64.
        packed = torch.nn.functional.pad(packed, (0, -packed.shape[-1] % 8))
    return packed.view(torch.int64)


def torch_pack_signs(x: torch.Tensor, dim: int) -> torch.Tensor:
    return torch_pack_bits(x.movedim(dim, -1) > 0)


def torch_cdist_matmul(a: torch.Tensor, b: torch.Tensor, n_bits: int, dtype: torch.dtype) -> torch.Tensor:
    """The float-GEMM trick, unpacking included: codes -> +-1 matrices, d = (n_bits - A @ B.T) / 2."""
    signs_a = torch_unpack_bits(a, n_bits).to(dtype).mul_(2).sub_(1)
    signs_b = torch_unpack_bits(b, n_bits).to(dtype).mul_(2).sub_(1)
    dot = (signs_a @ signs_b.T).float()  # bf16 cannot hold every n_bits - dot exactly
    # In place: each fresh 64 MB temporary would cost page faults, not arithmetic.
    return dot.mul_(-0.5).add_(n_bits / 2).to(torch.int32)


def numpy_cdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """uint64 [N, W] x uint64 [M, W] -> int32 [N, M]: xor + bitwise_count in row chunks."""
    n, m, w = a.shape[0], b.shape[0], a.shape[1]
    out = np.empty((n, m), dtype=np.int32)
    step = max(1, NUMPY_CHUNK_ELEMENTS // (m * w))
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        xor = np.bitwise_xor(a[lo:hi, None, :], b[None, :, :])
        np.sum(np.bitwise_count(xor), axis=-1, dtype=np.int32, out=out[lo:hi])
    return out


def faiss_cdist(
    a_u8: np.ndarray, b_u8: np.ndarray, out: np.ndarray | None = None, pool: ThreadPoolExecutor | None = None,
    threads: int = 1,
) -> np.ndarray:
    """uint8 [N, nbytes] x uint8 [M, nbytes] -> int32 [N, M] (faiss hamdis_t is int32_t).
    faiss.hammings runs on one thread whatever omp_set_num_threads says; with ``pool``
    (of ``threads`` workers), its rows are split in ``threads`` blocks run on the pool."""
    n = a_u8.shape[0]
    if out is None:
        out = np.empty((n, b_u8.shape[0]), dtype=np.int32)

    def rows(lo: int, hi: int) -> None:
        faiss.hammings(
            faiss.swig_ptr(a_u8[lo:hi]), faiss.swig_ptr(b_u8), hi - lo, b_u8.shape[0], a_u8.shape[1],
            faiss.swig_ptr(out[lo:hi]),
        )

    parts = 1 if pool is None else threads
    bounds = [n * i // parts for i in range(parts + 1)]
    if parts == 1:
        rows(0, n)
    else:
        list(pool.map(rows, bounds[:-1], bounds[1:]))
    return out


# ---------------------------------------------------------------- checks


def same_tensor(expected: torch.Tensor) -> Callable[[Any], CheckResult]:
    def check(got: Any) -> CheckResult:
        got = torch.as_tensor(got)
        if got.shape != expected.shape:
            return False, f"shape {tuple(got.shape)} != {tuple(expected.shape)}"
        if not torch.equal(got.to(expected.dtype), expected):
            differ = int((got.to(expected.dtype) != expected).sum())
            return False, f"{differ} of {expected.numel()} values differ"
        return True, "exact"

    return check


def same_tensors(expected: tuple[torch.Tensor, ...]) -> Callable[[Any], CheckResult]:
    def check(got: Any) -> CheckResult:
        for position, (want, have) in enumerate(zip(expected, got, strict=True)):
            ok, detail = same_tensor(want)(have)
            if not ok:
                return False, f"output {position}: {detail}"
        return True, "exact"

    return check


def topk_check(
    expected: tuple[torch.Tensor, torch.Tensor], a: torch.Tensor, b: torch.Tensor, backend: str
) -> Callable[[Any], CheckResult]:
    """Distances must be equal; indices equal, or another valid choice among equal distances."""
    want_dist, want_index = expected

    def check(got: Any) -> CheckResult:
        dist, index = torch.as_tensor(got[0]), torch.as_tensor(got[1])
        if not torch.equal(dist.to(torch.int32), want_dist):
            return False, f"{int((dist != want_dist).sum())} distances differ"
        if torch.equal(index, want_index):
            return True, "exact"
        # Top-k is not unique under ties: accept other rows of b at the same distances.
        k = index.shape[1]
        true_dist = fastspline.hamming(a[:, None, :].expand(-1, k, -1), b[index], backend=backend)
        sorted_index = index.sort(dim=1).values
        distinct = bool((sorted_index[:, 1:] != sorted_index[:, :-1]).all())
        if not torch.equal(true_dist.to(torch.int32), want_dist) or not distinct:
            return False, "indices do not have the claimed distances"
        rows = int((index != want_index).any(dim=1).sum())
        return True, f"same distances; {rows} rows pick other ties"

    return check


def radius_check(expected: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> Callable[[Any], CheckResult]:
    """faiss range_search (lims, D, I) against fastspline's (i, j, d) sorted by (i, j)."""
    want_i, want_j, want_d = (t.numpy() for t in expected)

    def check(got: Any) -> CheckResult:
        lims, dist, index = got
        rows = np.repeat(np.arange(len(lims) - 1), np.diff(lims.astype(np.int64)))
        order = np.lexsort((index, rows))  # faiss does not sort within a row
        rows, index, dist = rows[order], index[order], dist[order]
        if len(rows) != len(want_i):
            return False, f"{len(rows)} pairs, fastspline has {len(want_i)}"
        exact = (
            np.array_equal(rows, want_i) and np.array_equal(index, want_j) and np.array_equal(dist, want_d)
        )
        return exact, "exact (after sorting faiss pairs)" if exact else "pairs differ"

    return check


def packbits_check(expected: torch.Tensor, dim: int, n: int) -> Callable[[Any], CheckResult]:
    """np.packbits(bitorder='little') bytes == the first ceil(n/8) bytes of each fastspline row."""
    want = expected.numpy().view(np.uint8)[..., : (n + 7) // 8]

    def check(got: Any) -> CheckResult:
        exact = np.array_equal(np.moveaxis(got, dim, -1), want)
        return exact, "exact" if exact else "bytes differ"

    return check


# ---------------------------------------------------------------- sections


def bench_cdist(bench: Bench, sizes: Sizes, backend: str, generator: torch.Generator) -> None:
    n, n_bits = sizes.pairwise_rows, sizes.n_bits
    a = random_codes(n, n_bits, generator)
    b = random_codes(n, n_bits, generator)
    size = f"{n}x{n}x{n_bits}b"
    op = "hamming_cdist"
    expected: torch.Tensor | None = None
    for label, context, is_default in fastspline_variants(backend):
        with context():
            result = bench.run(
                op, size, label, lambda: fastspline.hamming_cdist(a, b, backend=backend),
                check=None if is_default else same_tensor(expected), baseline=is_default,
            )
        if is_default:
            expected = result
    check = same_tensor(expected)
    a_u8, b_u8 = a.numpy().view(np.uint8), b.numpy().view(np.uint8)
    bench.run(op, size, FAISS_HAMMINGS, lambda: faiss_cdist(a_u8, b_u8), check=check)
    out = torch.empty(n, n, dtype=torch.int32)
    bench.run(op, size, FASTSPLINE_CDIST_OUT, lambda: fastspline.hamming_cdist(a, b, out=out, backend=backend), check=check)
    out_np = np.empty((n, n), dtype=np.int32)
    bench.run(op, size, FAISS_HAMMINGS_OUT, lambda: faiss_cdist(a_u8, b_u8, out_np), check=check)
    threads = torch.get_num_threads()  # --threads
    if threads > 1:
        # Into a preallocated out: threads faulting in a fresh 64 MiB result at once took
        # 13-91 ms here (page-fault contention), which would flatter fastspline.
        with ThreadPoolExecutor(threads) as pool:
            bench.run(
                op, size, FAISS_HAMMINGS_THREADS, lambda: faiss_cdist(a_u8, b_u8, out_np, pool=pool, threads=threads), check=check
            )
    bench.run(op, size, TORCH_MATMUL_FP32, lambda: torch_cdist_matmul(a, b, n_bits, torch.float32), check=check)
    bench.run(
        op, size, "torch +-1 matmul bf16 (incl. unpack)",
        lambda: torch_cdist_matmul(a, b, n_bits, torch.bfloat16), check=check,
        note="exact here only because random codes keep |A.B| <= 256; bf16 output rounds larger dots",
    )
    a_u64, b_u64 = a.numpy().view(np.uint64), b.numpy().view(np.uint64)
    bench.run(op, size, "numpy xor+bitwise_count (1 thread)", lambda: numpy_cdist(a_u64, b_u64), check=check)


def bench_topk(bench: Bench, sizes: Sizes, backend: str, generator: torch.Generator) -> None:
    n, n_bits, k = sizes.pairwise_rows, sizes.n_bits, sizes.topk_k
    a = random_codes(n, n_bits, generator)
    b = random_codes(n, n_bits, generator)
    size = f"{n}x{n}x{n_bits}b k={k}"
    op = "hamming_topk"
    expected: tuple[torch.Tensor, torch.Tensor] | None = None
    for label, context, is_default in fastspline_variants(backend):
        with context():
            result = bench.run(
                op, size, label, lambda: fastspline.hamming_topk(a, b, k, backend=backend),
                check=None if is_default else same_tensors(expected), baseline=is_default,
            )
        if is_default:
            expected = result
    index = faiss.IndexBinaryFlat(n_bits)
    index.add(b.numpy().view(np.uint8))
    a_u8 = a.numpy().view(np.uint8)
    bench.run(
        op, size, "faiss IndexBinaryFlat.search", lambda: index.search(a_u8, k),
        check=topk_check(expected, a, b, backend), note="index.add outside the timing",
    )


def bench_radius(bench: Bench, sizes: Sizes, backend: str, generator: torch.Generator) -> None:
    n, n_bits = sizes.pairwise_rows, sizes.n_bits
    a = random_codes(n, n_bits, generator)
    b = random_codes(n, n_bits, generator)
    # Random codes sit at n_bits/2 +- sqrt(n_bits)/2; 3.5 sigma below keeps a few pairs in 10^4.
    r = n_bits // 2 - int(3.5 * math.sqrt(n_bits) / 2)
    size = f"{n}x{n}x{n_bits}b r={r}"
    op = "hamming_radius"
    expected: tuple[torch.Tensor, ...] | None = None
    for label, context, is_default in fastspline_variants(backend):
        with context():
            result = bench.run(
                op, size, label, lambda: fastspline.hamming_radius(a, b, r, backend=backend),
                check=None if is_default else same_tensors(expected), baseline=is_default,
            )
        if is_default:
            expected = result
            print(f"    ({len(result[0])} pairs within r={r})")
    index = faiss.IndexBinaryFlat(n_bits)
    index.add(b.numpy().view(np.uint8))
    a_u8 = a.numpy().view(np.uint8)
    bench.run(
        op, size, "faiss IndexBinaryFlat.range_search",
        lambda: index.range_search(a_u8, r + 1),  # faiss keeps d < radius
        check=radius_check(expected), note="faiss pairs unsorted within a row; index.add outside the timing",
    )


def bench_pack_signs(bench: Bench, sizes: Sizes, backend: str, generator: torch.Generator) -> None:
    x = torch.randn(sizes.activation_shape, generator=generator)
    x_np = x.numpy()
    copy_target = torch.empty_like(x)
    shape = ",".join(str(s) for s in x.shape)
    op = "pack_signs"
    for dim in (-1, 1):
        size = f"[{shape}] f32 dim={dim}"
        n = x.shape[dim]
        out_bytes = x.numel() // n * ((n + 63) // 64) * 8
        moved = x.nbytes + out_bytes  # the float read plus the words written
        expected: torch.Tensor | None = None
        for label, context, is_default in fastspline_variants(backend):
            with context():
                result = bench.run(
                    op, size, label, lambda: fastspline.pack_signs(x, dim=dim, backend=backend),
                    check=None if is_default else same_tensor(expected), baseline=is_default, bytes_moved=moved,
                )
            if is_default:
                expected = result
        bench.run(op, size, TORCH_CLONE, x.clone, bytes_moved=2 * x.nbytes)
        # clone's fresh buffer is mmapped anew each call: page faults, not DRAM, can bound it.
        bench.run(op, size, TORCH_COPY, lambda: copy_target.copy_(x), bytes_moved=2 * x.nbytes)
        bench.run(
            op, size, "torch (x > 0) + weighted-sum pack", lambda: torch_pack_signs(x, dim),
            check=same_tensor(expected), bytes_moved=moved,
        )
        bench.run(
            op, size, "numpy packbits(x > 0) (1 thread)",
            lambda: np.packbits(x_np > 0, axis=dim, bitorder="little"),
            check=packbits_check(expected, dim, n), bytes_moved=moved,
        )


def bench_rowwise(bench: Bench, sizes: Sizes, backend: str, generator: torch.Generator) -> None:
    rows, n_bits = sizes.rowwise_rows, sizes.n_bits
    a = random_codes(rows, n_bits, generator)
    b = random_codes(rows, n_bits, generator)
    a_u64, b_u64 = a.numpy().view(np.uint64), b.numpy().view(np.uint64)
    size = f"{rows}x{n_bits}b"
    numpy_label = "numpy bitwise_count (1 thread)"
    cases: list[tuple[str, Callable[[], torch.Tensor], Callable[[], Any], int]] = [
        (
            "popcount", lambda: fastspline.popcount(a, backend=backend),
            lambda: np.bitwise_count(a_u64).sum(axis=-1, dtype=np.int64), a.nbytes + rows * 8,
        ),
        (
            "hamming", lambda: fastspline.hamming(a, b, backend=backend),
            lambda: np.bitwise_count(np.bitwise_xor(a_u64, b_u64)).sum(axis=-1, dtype=np.int64),
            2 * a.nbytes + rows * 8,
        ),
        (
            "hamming_total", lambda: fastspline.hamming_total(a, b, backend=backend),
            lambda: np.bitwise_count(np.bitwise_xor(a_u64, b_u64)).sum(dtype=np.int64), 2 * a.nbytes,
        ),
    ]
    for op, fastspline_call, numpy_call, moved in cases:
        expected: torch.Tensor | None = None
        for label, context, is_default in fastspline_variants(backend):
            with context():
                result = bench.run(
                    op, size, label, fastspline_call,
                    check=None if is_default else same_tensor(expected), baseline=is_default, bytes_moved=moved,
                )
            if is_default:
                expected = result
        bench.run(op, size, numpy_label, numpy_call, check=same_tensor(expected), bytes_moved=moved)


def bench_bit_transpose(bench: Bench, sizes: Sizes, backend: str, generator: torch.Generator) -> None:
    rows, n_bits = sizes.transpose_rows, sizes.n_bits
    words = random_codes(rows, n_bits, generator)
    size = f"[{rows},{n_bits // 64}] words"
    op = "bit_transpose"
    moved = 2 * words.nbytes  # [rows, n_bits/64] in, [n_bits, rows/64] out: the same bytes
    expected: torch.Tensor | None = None
    for label, context, is_default in fastspline_variants(backend):
        with context():
            result = bench.run(
                op, size, label, lambda: fastspline.bit_transpose(words, n_bits, backend=backend),
                check=None if is_default else same_tensor(expected), baseline=is_default, bytes_moved=moved,
            )
        if is_default:
            expected = result
    bench.run(
        op, size, "torch unpack + .t() + weighted-sum pack",
        lambda: torch_pack_bits(torch_unpack_bits(words, n_bits).t()),
        check=same_tensor(expected), bytes_moved=moved,
    )


def bench_count_regions(bench: Bench, sizes: Sizes, backend: str, generator: torch.Generator) -> None:
    rows, n_bits = sizes.region_rows, sizes.n_bits
    distinct = random_codes(sizes.region_distinct, n_bits, generator)
    codes = distinct[torch.randint(0, sizes.region_distinct, (rows,), generator=generator)]
    size = f"{rows}x{n_bits}b, <={sizes.region_distinct} distinct"
    op = "count_regions"
    expected: tuple[torch.Tensor, ...] | None = None
    for label, context, is_default in fastspline_variants(backend):
        with context():
            result = bench.run(
                op, size, label, lambda: fastspline.count_regions(codes, backend=backend),
                check=None if is_default else same_tensors(expected), baseline=is_default,
            )
        if is_default:
            expected = result
    bench.run(
        op, size, "torch.unique(dim=0)",
        lambda: torch.unique(codes, dim=0, sorted=True, return_inverse=True, return_counts=True),
        check=same_tensors(expected),
    )


SECTION_FUNCTIONS: dict[str, Callable[[Bench, Sizes, str, torch.Generator], None]] = {
    "cdist": bench_cdist,
    "topk": bench_topk,
    "radius": bench_radius,
    "pack_signs": bench_pack_signs,
    "rowwise": bench_rowwise,
    "bit_transpose": bench_bit_transpose,
    "count_regions": bench_count_regions,
}


# ---------------------------------------------------------------- goals, machine, report


def goal_lines(bench: Bench) -> list[dict[str, Any]]:
    """The speedups the project aims for, from the rows of this run."""
    goals: list[dict[str, Any]] = []

    def add(name: str, value: float | None, goal: float | None) -> None:
        met = None if goal is None else value is not None and value >= goal
        goals.append({"name": name, "value": value, "goal": goal, "met": met})

    def fraction(row: Measurement, reference: Measurement | None) -> float | None:
        if reference is None or row.gbps is None or reference.gbps is None:
            return None
        return row.gbps / reference.gbps

    for peer, goal in ((FAISS_HAMMINGS, GOAL_CDIST_VS_FAISS), (TORCH_MATMUL_FP32, GOAL_CDIST_VS_TORCH_FP32)):
        row = bench.find("hamming_cdist", peer)
        if row is not None:
            add(f"hamming_cdist speedup vs {peer}", bench.ratio(row), goal)
    ours = bench.find("hamming_cdist", FASTSPLINE_CDIST_OUT)
    # The goal is against faiss.hammings as shipped (one thread); into preallocated
    # outputs, one thread and equal cores:
    for peer, label in ((FAISS_HAMMINGS_OUT, "faiss.hammings"), (FAISS_HAMMINGS_THREADS, "faiss.hammings, rows over threads (equal cores)")):
        theirs = bench.find("hamming_cdist", peer)
        if ours is not None and theirs is not None and ours.median_s and theirs.median_s:
            add(f"hamming_cdist speedup vs {label}, both into preallocated outputs", theirs.median_s / ours.median_s, None)
    for row in bench.measurements:
        if row.op == "pack_signs" and row.is_baseline:
            clone = bench.find("pack_signs", TORCH_CLONE, row.size)
            add(f"pack_signs {row.size}: GB/s fraction of clone", fraction(row, clone), GOAL_PACK_FRACTION_OF_CLONE)
            copy = bench.find("pack_signs", TORCH_COPY, row.size)
            add(f"pack_signs {row.size}: GB/s fraction of preallocated copy_", fraction(row, copy), None)
    return goals


def format_ms(seconds: float | None) -> str:
    return f"{seconds * 1e3:.3f}" if seconds is not None else "-"


def print_table(bench: Bench) -> None:
    header = f"{'op':<14} {'size':<28} {'implementation':<44} {'median ms':>10} {'GB/s':>7} {'ratio':>8}  check"
    print()
    print(header)
    print("-" * len(header))
    previous: tuple[str, str] | None = None
    for row in bench.measurements:
        if previous is not None and (row.op, row.size) != previous:
            print()
        previous = (row.op, row.size)
        ratio = bench.ratio(row)
        ratio_text = "base" if row.is_baseline else (f"{ratio:.3g}x" if ratio is not None else "-")
        gbps = f"{row.gbps:.1f}" if row.gbps is not None else ""
        check = "" if row.matches is None else row.check if row.matches else f"MISMATCH: {row.check}"
        print(
            f"{row.op:<14} {row.size:<28} {row.implementation:<44} {format_ms(row.median_s):>10} "
            f"{gbps:>7} {ratio_text:>8}  {check}"
        )
    print("\nratio = peer median / fastspline median (fastspline's speedup); forced-ISA rows: that ISA / default")


def print_goals(goals: list[dict[str, Any]]) -> None:
    print()
    for goal in goals:
        value = "n/a" if goal["value"] is None else f"{goal['value']:.2f}"
        if goal["goal"] is None:
            print(f"info: {goal['name']}: {value}")
        else:
            verdict = "MET" if goal["met"] else "NOT MET"
            print(f"goal: {goal['name']}: {value} (goal >= {goal['goal']}) {verdict}")


def measurement_json(bench: Bench, row: Measurement) -> dict[str, Any]:
    return {
        "op": row.op,
        "size": row.size,
        "implementation": row.implementation,
        "baseline": row.is_baseline,
        "median_ms": None if row.median_s is None else row.median_s * 1e3,
        "times_ms": [t * 1e3 for t in row.times_s],
        "ratio_vs_fastspline": bench.ratio(row),
        "matches_fastspline": row.matches,
        "check": row.check,
        "bytes_moved": row.bytes_moved,
        "gbps": row.gbps,
        "note": row.note,
    }


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test of a few seconds")
    parser.add_argument(
        "--backend", choices=backends.names(), default=None,
        help="fastspline backend to benchmark (default: what CPU tensors use, 'cpu' when built)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per measurement (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls after the checked first call")
    parser.add_argument(
        "--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch and faiss threads (default: all)"
    )
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="sections to run")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default: benchmarks/results/ops-cpu.json; ops-cpu-quick.json with --quick)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0 or args.threads < 1:
        parser.error(f"need --repeats >= 1, --warmup >= 0, --threads >= 1; got {args.repeats}, {args.warmup}, {args.threads}")
    if args.out is None:
        args.out = RESULTS_DIR / ("ops-cpu-quick.json" if args.quick else "ops-cpu.json")
    return args


def resolve_backend(requested: str | None) -> str:
    available = backends.available()
    for name, why in available.items():
        print(f"backend {name}: {'available' if why is None else 'unavailable: ' + why}")
    if requested is None:
        return backends.select("cpu")
    if available[requested] is not None:
        sys.exit(f"bench_ops: backend {requested!r} is not available: {available[requested]}")
    return requested


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    backend = resolve_backend(args.backend)
    isa = backends.load("cpu").isa() if backend == "cpu" else None
    sizes = QUICK if args.quick else FULL
    machine = cpu_info(CPU_FLAGS_OF_INTEREST)
    print(
        f"cpu: {machine['model']} ({machine['usable_cpus']} usable), flags {machine['flags']}\n"
        f"threads: torch {torch.get_num_threads()}, faiss {faiss.omp_get_max_threads()} (faiss.hammings: 1, "
        f"or its rows over {torch.get_num_threads()} threads), numpy 1\n"
        f"fastspline backend: {backend}, isa: {isa}; repeats {args.repeats}, warm-up {args.warmup}"
        f"{', QUICK sizes' if args.quick else ''}"
    )
    load_1min = os.getloadavg()[0]
    if load_1min > 0.5:
        # With other work on the cores, threads of a parallel region wait out scheduler slices.
        print(f"warning: load average {load_1min:.2f} before starting: multithreaded timings will be noisy")
    if backend == "reference" and not args.quick:
        print("note: the pure-torch reference backend at full sizes is slow (minutes)")

    bench = Bench(args.repeats, args.warmup)
    generator = torch.Generator().manual_seed(args.seed)
    started = time.perf_counter()
    for section in SECTIONS:
        if section in args.only:
            print(f"[{section}]", flush=True)
            SECTION_FUNCTIONS[section](bench, sizes, backend, generator)
    elapsed = time.perf_counter() - started

    print_table(bench)
    goals = goal_lines(bench)
    print_goals(goals)

    payload = {
        "benchmark": "bench_ops",
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick,
        "sizes": dataclasses.asdict(sizes),
        "machine": machine,
        "load_average_at_start": load_1min,
        "load_average_at_end": os.getloadavg()[0],
        "threads": {"torch": torch.get_num_threads(), "faiss": faiss.omp_get_max_threads(), "numpy": 1},
        "backend": backend,
        "isa": isa,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "faiss": faiss.__version__,
            "fastspline": fastspline.__version__,
        },
        "build_info": fastspline.build_info(),
        "repeats": args.repeats,
        "warmup": args.warmup,
        "elapsed_s": elapsed,
        "measurements": [measurement_json(bench, row) for row in bench.measurements],
        "goals": goals,
    }
    atomic_write_json(args.out, payload)
    print(f"\nwrote {args.out} ({elapsed:.1f} s of benchmarking)")
    mismatches = [row for row in bench.measurements if row.matches is False]
    if mismatches:
        print(f"{len(mismatches)} implementation(s) disagree with fastspline: see MISMATCH rows", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
