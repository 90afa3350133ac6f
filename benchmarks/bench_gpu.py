#!/usr/bin/env python
"""Time the GPU backends at huge-layer sizes against the torch float trick.

Every result is first checked equal to the reference on a slice. Timing:
CUDA events around each call, median of repeats after warm-up. Reports GB/s
for the bandwidth-bound ops (against the card's copy bandwidth, measured in
the same run with a device-to-device copy) and tera word-pair XOR-popcounts
per second for hamming_cdist. Writes ``gpu-<card>.json`` atomically.

    python benchmarks/bench_gpu.py [--quick] [--targets] [--out-dir benchmarks/results]

``--targets``: only what the CUDA issue's targets need, at full size (copy bandwidth,
peaks, pack_signs and hamming_cdist on the CUDA backend, no peers), about a minute:
for trying kernel changes on a lent GPU.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch

import _setup  # noqa: F401  (fastspline: installed, else this checkout)
from _setup import RESULTS_DIR
import fastspline as fs
from fastspline import backends
from fastspline._files import atomic_write_json
from shared import median_time

# --dry-run (tests/test_benchmarks.py): the script's logic on the CPU at tiny sizes, the
# CUDA backend being ``cuda@sim`` (the CUDA kernels' code in the SIMT emulator).
DRY_RUN = False


# Bandwidth-bound ops (copy, pack, word ops) are timed as this many back-to-back calls
# per pair of events, as they run inside a network's forward pass: the GPU time per call.
# Timed one call per event pair after an idle GPU (session 10, H200), the auto pack path
# ran 16-40 us slower than the same kernel forced: its extra host work showed as GPU time.
CALLS = 10
# hamming_cdist: the whole size (in 8,192-row blocks) this many times back to back per pair
# of events. Timed once per pair (session 16, H200), 16,384^2 x 8,192 bits measured 0.86 ms
# where Nsight Compute put its two kernel calls at ~0.66 ms; one run per pair puts the first
# call's host work, before any kernel runs, inside the timing (how much of the gap that is
# was not measured).
CDIST_RUNS = 3


def cuda_time(fn: Callable[[], object], repeats: int, warmup: int = 2, calls: int = 1) -> list[float]:
    """Seconds per call of ``fn``: ``repeats`` timings of ``calls`` back-to-back calls each."""
    def run() -> None:
        for _ in range(calls):
            fn()

    if DRY_RUN:  # CPU tensors in the emulator, where only the logic counts: one warm-up call, one timed
        fn()
        return [median_time(fn, 1, 0)[0]] * repeats
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3 / calls)
    return times


@contextlib.contextmanager
def env_set(env: dict[str, str]):
    """The variables of ``env`` set for the block, removed after it."""
    os.environ.update(env)
    try:
        yield
    finally:
        for variable in env:
            os.environ.pop(variable, None)


def float_trick(a_bits: torch.Tensor, b_bits: torch.Tensor, n_bits: int, dtype: torch.dtype) -> torch.Tensor:
    """The torch peer: +-1 matrices (from unpacked bits), one GEMM, d = (n - dot) / 2.
    int8: ``torch._int_mm`` (int8 tensor cores, exact int32 dot; needs > 16 rows)."""
    sa = a_bits.to(dtype) * 2 - 1
    sb = b_bits.to(dtype) * 2 - 1
    if dtype == torch.int8:
        return ((n_bits - torch._int_mm(sa, sb.t().contiguous())) // 2).to(torch.int32)
    return ((n_bits - sa @ sb.t()) / 2).round().to(torch.int32)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    parser.add_argument("--targets", action="store_true",
                        help="only the CUDA targets' measurements (pack_signs, hamming_cdist; no peers, no search or word ops)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out-dir", default=str(RESULTS_DIR))
    parser.add_argument("--dry-run", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    global DRY_RUN
    DRY_RUN = args.dry_run
    device = torch.device("cpu" if DRY_RUN else "cuda")
    card = "dry run" if DRY_RUN else torch.cuda.get_device_name()
    cuda = "cuda@sim" if DRY_RUN else "cuda"  # the CUDA backend's name
    names = [n for n in (cuda, "triton") if backends.available().get(n) is None]
    if args.targets or DRY_RUN:
        names = [n for n in names if n == cuda]
    rows = 512 if DRY_RUN else 4096 if args.quick else 65536
    side = 1 << 8 if DRY_RUN else 1 << 14  # pack_signs: side x side float32 (1 GiB)
    n_bits = 1024
    gen = torch.Generator(device=device).manual_seed(0)
    results: list[dict] = []
    copy_gbps = float("nan")
    peaks: dict[str, float] = {}
    targets: list[dict] = []
    path = Path(args.out_dir) / f"gpu-{card.replace(' ', '_')}{'-targets' if args.targets else ''}.json"

    def save() -> None:
        """Writes what is measured so far (after each section: a crash or timeout keeps it)."""
        checks = getattr(sys.modules.get("fastspline.backends.cuda"), "_checks", {})
        tuned = getattr(sys.modules.get("fastspline.backends.cuda"), "_tuned", {})
        atomic_write_json(path, {
            "benchmark": "bench_gpu", "card": card, "timestamp": datetime.datetime.now().isoformat(timespec="seconds"),
            "torch": torch.__version__, "build_info": fs.build_info(), "copy_gbps": copy_gbps,
            "peaks_bit_pairs_per_s": peaks, "results": results, "targets": targets,
            # Per-device kernel self-checks (None: the kernel passed and is used).
            "self_checks": {f"{kind} on cuda:{index}": why for (kind, index), why in checks.items()},
            # The auto path's timed kernel choices (key: device, op, shape class / layout).
            "timed_choices": {" ".join(map(str, key)): choice for key, choice in tuned.items()},
        })

    def record(op: str, size: str, impl: str, times: list[float], **extra: float) -> None:
        med = statistics.median(times)
        entry = {"op": op, "size": size, "implementation": impl, "median_s": med, "times_s": times, **extra}
        results.append(entry)
        extras = " ".join(f"{k}={v:.3g}" for k, v in extra.items())
        print(f"{op:14s} {size:28s} {impl:28s} {med * 1e3:10.3f} ms  {extras}")

    # Copy bandwidth of this card, the roofline of the bandwidth-bound ops.
    big = torch.empty(side * side, dtype=torch.float32, device=device)
    copy = torch.empty_like(big)
    times = cuda_time(lambda: copy.copy_(big), args.repeats, calls=CALLS)
    copy_gbps = 2 * big.nbytes / statistics.median(times) / 1e9
    record("copy", "1 GiB", "torch copy_", times, gbps=copy_gbps)
    # Write-only bandwidth, the roofline of hamming_cdist's int32 output (writes alone
    # ran faster than half the copy rate on an H200).
    times = cuda_time(lambda: copy.zero_(), args.repeats, calls=CALLS)
    write_gbps = copy.nbytes / statistics.median(times) / 1e9
    record("write", "1 GiB", "torch zero_", times, gbps=write_gbps)
    del copy

    # pack_signs of a 1 GiB float32 activation.
    x = big.view(side, side).normal_(generator=gen)
    pack_impls = [(n, None) for n in names]
    if cuda in names:
        pack_impls += [(cuda, k) for k in ("rows", "columns", "stream", "columns16")]

    def time_pack(label: str, view: torch.Tensor, dim: int, want: torch.Tensor) -> None:
        ok: list[tuple[str, str | None]] = []  # the implementations that take the layout and agree
        for name, kernel in pack_impls:
            if kernel is not None:
                os.environ["FASTSPLINE_CUDA_PACK"] = kernel
            try:
                fs.pack_signs(view, dim, backend=name)  # full size first: Triton tunes on its first call
                got = fs.pack_signs(view[:2], dim, backend=name).cpu()
            except ValueError:
                continue  # this kernel does not take the layout
            except RuntimeError as exc:  # e.g. the kernel failed its self-check
                print(f"pack_signs {label} {name} {kernel}: {exc}")
                results.append({"op": "pack_signs", "size": label, "implementation": f"{name} {kernel}", "error": str(exc)})
                continue
            finally:
                os.environ.pop("FASTSPLINE_CUDA_PACK", None)
            if not torch.equal(got, want):
                print(f"pack_signs {label} {name} {kernel}: DIFFERS from the reference, not timed")
                results.append({"op": "pack_signs", "size": label, "implementation": f"{name} {kernel}", "error": "differs"})
                continue
            ok.append((name, kernel))
        # Two rounds, the second in reverse order, so no implementation is always first.
        times: dict[tuple[str, str | None], list[float]] = {impl: [] for impl in ok}
        for impl in ok + ok[::-1]:
            name, kernel = impl
            if kernel is not None:
                os.environ["FASTSPLINE_CUDA_PACK"] = kernel
            try:
                times[impl] += cuda_time(lambda: fs.pack_signs(view, dim, backend=name), args.repeats, calls=CALLS)
            finally:
                os.environ.pop("FASTSPLINE_CUDA_PACK", None)
        for (name, kernel), t in times.items():
            gbps = (view.nbytes + view.numel() // 8) / statistics.median(t) / 1e9
            impl = (name if kernel is None else f"{name} {kernel}").replace(cuda, "cuda")
            record("pack_signs", label, impl, t, gbps=gbps, fraction_of_copy=gbps / copy_gbps)

    def shape(t: torch.Tensor) -> str:
        return "[" + ", ".join(map(str, t.shape)) + "]"

    time_pack(f"{shape(x)} f32", x, -1, fs.pack_signs(x[:2].cpu(), backend="reference"))
    # A width that is not whole words (an MLP layer of 1,000 units): rows padded to words.
    x1000 = big.view(-1)[: side * side // 1024 * 1000].view(-1, 1000)
    time_pack(f"{shape(x1000)} f32", x1000, -1, fs.pack_signs(x1000[:2].cpu(), backend="reference"))
    del x1000
    xh = x[:, : side // 2].to(torch.bfloat16)
    time_pack(f"{shape(xh)} bf16", xh, -1, fs.pack_signs(xh[:2].cpu(), backend="reference"))
    del xh
    xh = torch.empty(side, side * 2, dtype=torch.bfloat16, device=device).normal_(generator=gen)  # 1 GiB
    time_pack(f"{shape(xh)} bf16", xh, -1, fs.pack_signs(xh[:2].cpu(), backend="reference"))
    del xh
    # Channels of NCHW activations (the packed dim strided, its neighbour contiguous).
    x4 = big.view(-1, min(1024, side * side // 1024), 32, 32)
    time_pack(f"{shape(x4)} f32 dim=1", x4, 1, fs.pack_signs(x4[:2].cpu(), 1, backend="reference"))
    del big, x, x4

    save()
    # Peak rates of this card, measured: XOR+popc on the CUDA cores and b1 MMA on
    # the tensor cores (register-only loops), the compute rooflines of hamming_cdist.
    if cuda in names:
        from fastspline.backends import cuda as cuda_backend

        sink = torch.zeros(1, dtype=torch.int32, device=device)
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        blocks, stream = sms * 8, 0 if DRY_RUN else torch.cuda.current_stream().cuda_stream
        scale = 1 << 10 if DRY_RUN else 1
        probes = [
            (0, "popc", (1 << 14) // scale, blocks * 256 * 8 * 32),  # bit pairs: 8 popc of 32 bits per thread
            (1, "b1 mma xor", (1 << 12) // scale, blocks * 8 * 4 * 16 * 8 * 256),  # 4 m16n8k256 per warp
            (2, "b1 mma and", (1 << 12) // scale, blocks * 8 * 4 * 16 * 8 * 256),
        ]
        # sm_90 cards: 4 m64n128k256 per warpgroup, each group waited for; 4 m64n256k256, one
        # group in flight (the wide wgmma kernel's loop)
        for kind, label, n, status in ((3, "b1 wgmma and", 128, cuda_backend.wgmma_status),
                                       (4, "b1 wgmma and n256", 256, cuda_backend.wgmma_wide_status)):
            if (reason := status(device)) is None:
                probes.append((kind, label, (1 << 12) // scale, blocks * 2 * 4 * 64 * n * 256))
            else:
                print(f"peak {label}: not measured ({reason})")
        for kind, label, iters, per_iter in probes:
            times = cuda_time(lambda: cuda_backend._cuda.peak(kind, iters, blocks, sink.data_ptr(), stream), args.repeats)
            peaks[label] = per_iter * iters / statistics.median(times)
            record("peak", label, "register loop", times, tera_bit_pairs_per_s=peaks[label] / 1e12)
    binary_peak = max(peaks.values(), default=float("nan"))

    # hamming_cdist rows x rows x bits, in row blocks of the output.
    cuda_backend = None
    if cuda in names:
        from fastspline.backends import cuda as cuda_backend

    impls: list[tuple[str, str, dict[str, str]]] = []  # (label, backend, the variables forcing its kernel)
    if cuda in names:
        impls.append(("cuda popc", cuda, {"FASTSPLINE_CUDA_CDIST": "popc"}))
        for m in ("mma-xor", "mma-and"):
            wgmma = ("wgmma", "wgmma-wide", "wgmma-deep", "wgmma-cluster", "wgmma-cluster4") if m == "mma-and" else ()
            for staging in ("sync", "async", "wide") + wgmma:
                impls.append((f"cuda {m} {staging}", cuda,
                              {"FASTSPLINE_CUDA_CDIST": m, "FASTSPLINE_CUDA_MMA_STAGING": staging}))
        impls.append(("cuda auto", cuda, {}))
        # auto without the wgmma kernels (what it chose before they were offered to it)
        impls.append(("cuda auto mma.sync", cuda, {"FASTSPLINE_CUDA_WGMMA_AUTO": "0"}))
    if "triton" in names:
        impls += [(f"triton {m}", "triton", {"FASTSPLINE_TRITON_CDIST": m}) for m in ("popc", "dot")]
        impls.append(("triton auto", "triton", {}))
    for rows_n, k_bits in ((rows, 1024), (rows // 4, 8192)):
        a = torch.randint(-(2**63), 2**63 - 1, (rows_n, k_bits // 64), generator=gen, device=device)
        block = min(rows_n, 8192)
        out = torch.empty(block, rows_n, dtype=torch.int32, device=device)
        want = fs.hamming_cdist(a[:300].cpu(), a[:704].cpu(), backend="reference")
        bit_pairs = rows_n * rows_n * k_bits
        out_bytes = rows_n * rows_n * 4
        size = f"{rows_n}x{rows_n}x{k_bits}b"
        # The roofline: the slower of the binary compute at the best measured rate and
        # writing the int32 output at the measured write bandwidth.
        roof_s = max(bit_pairs / binary_peak, out_bytes / (write_gbps * 1e9))
        best: dict[str, float] = {}
        for label, name, env in impls:
            with env_set(env):
                try:
                    fs.hamming_cdist(a[:block], a, out=out[:block], backend=name)  # full size first (Triton tunes)
                    got = fs.hamming_cdist(a[:300], a[:704], backend=name).cpu()
                except (RuntimeError, ValueError) as exc:  # e.g. a kernel failed its self-check
                    print(f"{label}: {exc}")
                    results.append({"op": "hamming_cdist", "size": size, "implementation": label, "error": str(exc)})
                    continue
                if not torch.equal(got, want):
                    print(f"{label}: hamming_cdist DIFFERS from the reference, not timed")
                    results.append({"op": "hamming_cdist", "size": size, "implementation": label, "error": "differs"})
                    continue

                def run(name: str = name) -> None:
                    for lo in range(0, rows_n, block):
                        fs.hamming_cdist(a[lo:lo + block], a, out=out[: min(block, rows_n - lo)], backend=name)

                times = cuda_time(run, max(2, args.repeats // 2), warmup=1, calls=CDIST_RUNS)
            med = statistics.median(times)
            best[label] = med
            record("hamming_cdist", size, label, times, tera_bit_pairs_per_s=bit_pairs / med / 1e12,
                   fraction_of_binary_peak=bit_pairs / med / binary_peak, fraction_of_roofline=roof_s / med,
                   output_gbps=out_bytes / med / 1e9)
        small = fs.unpack_bits(a[:704], k_bits)
        peers = [(f"torch float trick {d}".replace("torch.", ""), d) for d in (torch.float16, torch.bfloat16)]
        peers.append(("torch int8 _int_mm trick", torch.int8))
        if args.targets:
            peers = []
        for label, dtype in peers:
            try:
                trick = float_trick(small[:300], small, k_bits, dtype)
            except RuntimeError as exc:
                print(f"{label}: {exc}")
                results.append({"op": "hamming_cdist", "size": size, "implementation": label, "error": str(exc)})
                continue
            if not torch.equal(trick.cpu(), want):
                print(f"{label}: differs from the reference (exactness lost), timed anyway")

            def run_trick(dtype: torch.dtype = dtype) -> None:
                all_bits = fs.unpack_bits(a, k_bits)  # the peer unpacks the codes it is given
                for lo in range(0, rows_n, block):
                    out[: min(block, rows_n - lo)] = float_trick(all_bits[lo:lo + block], all_bits, k_bits, dtype)

            times = cuda_time(run_trick, max(2, args.repeats // 2), warmup=1, calls=CDIST_RUNS)
            med = statistics.median(times)
            best[label] = med
            record("hamming_cdist", size, label, times, tera_bit_pairs_per_s=bit_pairs / med / 1e12)
        fastest_peer = min((v for k, v in best.items() if k.startswith("torch")), default=float("nan"))
        for label in [k for k in best if not k.startswith("torch")]:
            ratios = {"vs_best_torch_trick": fastest_peer / best[label]} if fastest_peer == fastest_peer else {}
            cuda_best = [v for k, v in best.items() if k.startswith("cuda")]
            if cuda_best and label.startswith("triton"):
                ratios["vs_best_cuda"] = min(cuda_best) / best[label]
            if not ratios:  # --targets: no peers timed
                continue
            print(f"  {size} {label}: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))
            results.append({"op": "hamming_cdist", "size": size, "implementation": label, "ratios": ratios})
        if cuda in names:
            auto = cuda_backend.cdist_method(rows_n, rows_n, device)
            staging_names = cuda_backend._STAGING_NAMES
            for label, _, env in impls:
                if not label.startswith("cuda auto"):  # cuda auto, cuda auto mma.sync
                    continue
                with env_set(env):
                    staging = staging_names[cuda_backend._auto_staging(a[:block], a, auto)] if auto != "popc" else "-"
                print(f"  {size}: {label}: method = {auto}, tensor-core staging = {staging}")
                results.append({"op": "hamming_cdist", "size": size, "implementation": label,
                                "auto_choice": {"method": auto, "staging": staging}})
            print(f"  timed choices: {cuda_backend._tuned}")
        del a, out

    save()
    # hamming_topk (k = 10) and hamming_radius over queries x database codes of n_bits:
    # the fused kernels (synchronous and pipelined staging), the row-block path, and the torch peer (fp16 trick, then topk /
    # nonzero per block). The radius keeps about 1e-4 of the pairs.
    if cuda in names and not args.targets:
        queries, base = rows // 4, rows
        qa = torch.randint(-(2**63), 2**63 - 1, (queries, n_bits // 64), generator=gen, device=device)
        db = torch.randint(-(2**63), 2**63 - 1, (base, n_bits // 64), generator=gen, device=device)
        size = f"{queries}x{base}x{n_bits}b"
        radius = n_bits // 2 - 60  # ~1e-4 of random pairs (mean 512, std 16 at 1,024 bits)
        search_times: dict[str, float] = {}
        for method in ("fused", "pipelined", "blocks"):
            os.environ["FASTSPLINE_CUDA_SEARCH"] = method
            try:
                small_q, small_db = qa[:200], db[:3000]
                for op, fn, check in (
                    ("hamming_topk k=10", lambda: fs.hamming_topk(qa, db, 10, backend=cuda),
                     lambda: fs.hamming_topk(small_q, small_db, 10, backend=cuda)),
                    (f"hamming_radius r={radius}", lambda: fs.hamming_radius(qa, db, radius, backend=cuda),
                     lambda: fs.hamming_radius(small_q, small_db, radius, backend=cuda)),
                ):
                    try:
                        got = check()
                    except RuntimeError as exc:
                        print(f"{op} {method}: {exc}")
                        continue
                    want = (fs.hamming_topk(small_q.cpu(), small_db.cpu(), 10, backend="reference") if "topk" in op
                            else fs.hamming_radius(small_q.cpu(), small_db.cpu(), radius, backend="reference"))
                    if not all(torch.equal(g.cpu(), w_) for g, w_ in zip(got, want)):
                        print(f"{op} {method}: DIFFERS from the reference, not timed")
                        results.append({"op": op, "size": size, "implementation": f"cuda {method}", "error": "differs"})
                        continue
                    times = cuda_time(fn, 2, warmup=1)
                    search_times[f"{op} {method}"] = statistics.median(times)
                    record(op, size, f"cuda {method}", times)
            finally:
                os.environ.pop("FASTSPLINE_CUDA_SEARCH", None)

        def trick_search(op: str) -> None:
            db_bits = fs.unpack_bits(db, n_bits)
            for lo in range(0, queries, 4096):
                d = float_trick(fs.unpack_bits(qa[lo:lo + 4096], n_bits), db_bits, n_bits, torch.float16)
                if op == "topk":
                    torch.topk(d, 10, dim=1, largest=False)
                else:
                    torch.nonzero(d <= radius)

        for op, label in (("topk", "hamming_topk k=10"), ("radius", f"hamming_radius r={radius}")):
            times = cuda_time(lambda op=op: trick_search(op), 2, warmup=1)
            record(label, size, "torch fp16 trick + topk/nonzero", times)
            for method in ("fused", "pipelined", "blocks"):
                if f"{label} {method}" in search_times:
                    ratio = statistics.median(times) / search_times[f"{label} {method}"]
                    print(f"  {label} cuda {method}: {ratio:.2f}x the torch peer")
                    results.append({"op": label, "size": size, "implementation": f"cuda {method}",
                                    "ratios": {"vs_torch_trick": ratio}})
        del qa, db

    save()
    # Bandwidth-bound word ops on 1 GiB of codes (64 MiB with --quick); bytes moved =
    # read + written, against the copy bandwidth (which also counts both).
    if not args.targets:
        a = torch.randint(-(2**63), 2**63 - 1, (rows * (4 if DRY_RUN else 128), n_bits // 64), generator=gen,
                          device=device)
        b = a.flip(0).contiguous()
        small = a[: rows * 8]
        size = f"{a.shape[0]}x{n_bits}b"
        for name in names:
            for op, fn, moved in (
                ("hamming_total", lambda: fs.hamming_total(a, b, backend=name), 2 * a.nbytes),
                ("hamming", lambda: fs.hamming(a, b, backend=name), 2 * a.nbytes + 8 * a.shape[0]),
                ("popcount", lambda: fs.popcount(a, backend=name), a.nbytes + 8 * a.shape[0]),
                ("bit_transpose", lambda: fs.bit_transpose(a, n_bits, backend=name), 2 * a.nbytes),
                ("unpack_bits", lambda: fs.unpack_bits(small, n_bits, backend=name), small.nbytes + small.shape[0] * n_bits),
            ):
                times = cuda_time(fn, args.repeats, calls=CALLS)
                gbps = moved / statistics.median(times) / 1e9
                record(op, size if op != "unpack_bits" else f"{small.shape[0]}x{n_bits}b", name.replace(cuda, "cuda"),
                       times, gbps=gbps, fraction_of_copy=gbps / copy_gbps)
        del a, b, small

    save()
    # The CUDA issue's targets, from this run's default (auto) choices, and for cdist the
    # same without the wgmma kernels (auto's choice among the mma.sync ones).
    for entry in results:
        if entry.get("implementation") in ("cuda auto", "cuda auto mma.sync") and "fraction_of_roofline" in entry:
            targets.append({"what": f"hamming_cdist {entry['size']} ({entry['implementation']})",
                            "fraction": entry["fraction_of_roofline"], "of": "binary roofline", "target": 0.5})
        if entry.get("op") == "pack_signs" and entry.get("implementation") == "cuda":
            targets.append({"what": f"pack_signs {entry['size']} (cuda auto)", "fraction": entry["fraction_of_copy"],
                            "of": "copy bandwidth", "target": 0.7})
    for t in targets:
        verdict = "met" if t["fraction"] >= t["target"] else "NOT met"
        print(f"target: {t['what']}: {t['fraction']:.1%} of {t['of']} (target {t['target']:.0%}): {verdict}")

    save()
    print(f"wrote {path}")

if __name__ == "__main__":
    main()
