#!/usr/bin/env python
"""Time the GPU backends at huge-layer sizes against the torch float trick.

Every result is first checked equal to the reference on a slice. Timing:
CUDA events around each call, median of repeats after warm-up. Reports GB/s
for the bandwidth-bound ops (against the card's copy bandwidth, measured in
the same run with a device-to-device copy) and tera word-pair XOR-popcounts
per second for hamming_cdist. Writes ``gpu-<card>.json`` atomically.

    python benchmarks/bench_gpu.py [--quick] [--out-dir benchmarks/results]
"""
from __future__ import annotations

import argparse
import datetime
import statistics
from collections.abc import Callable
from pathlib import Path

import torch

import fastspline as fs
from fastspline import backends
from fastspline._files import atomic_write_json


def cuda_time(fn: Callable[[], object], repeats: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return times


def float_trick(a_bits: torch.Tensor, b_bits: torch.Tensor, n_bits: int, dtype: torch.dtype) -> torch.Tensor:
    """The torch peer: +-1 matrices (from unpacked bits), one GEMM, d = (n - dot) / 2."""
    sa = a_bits.to(dtype) * 2 - 1
    sb = b_bits.to(dtype) * 2 - 1
    return ((n_bits - sa @ sb.t()) / 2).round().to(torch.int32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out-dir", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    device = torch.device("cuda")
    card = torch.cuda.get_device_name()
    names = [n for n in ("cuda", "triton") if backends.available().get(n) is None]
    rows = 4096 if args.quick else 65536
    n_bits = 1024
    gen = torch.Generator(device=device).manual_seed(0)
    results: list[dict] = []

    def record(op: str, size: str, impl: str, times: list[float], **extra: float) -> None:
        med = statistics.median(times)
        entry = {"op": op, "size": size, "implementation": impl, "median_s": med, "times_s": times, **extra}
        results.append(entry)
        extras = " ".join(f"{k}={v:.3g}" for k, v in extra.items())
        print(f"{op:14s} {size:28s} {impl:28s} {med * 1e3:10.3f} ms  {extras}")

    # Copy bandwidth of this card, the roofline of the bandwidth-bound ops.
    big = torch.empty(1 << 28, dtype=torch.float32, device=device)
    copy = torch.empty_like(big)
    times = cuda_time(lambda: copy.copy_(big), args.repeats)
    copy_gbps = 2 * big.nbytes / statistics.median(times) / 1e9
    record("copy", "1 GiB", "torch copy_", times, gbps=copy_gbps)
    del copy

    # pack_signs of a 1 GiB float32 activation.
    x = big.view(1 << 14, -1).normal_(generator=gen)
    want = fs.pack_signs(x[:64].cpu(), backend="reference")
    for name in names:
        assert torch.equal(fs.pack_signs(x[:64], backend=name).cpu(), want), f"{name} pack_signs differs"
        times = cuda_time(lambda: fs.pack_signs(x, backend=name), args.repeats)
        gbps = (x.nbytes + x.nbytes // 32) / statistics.median(times) / 1e9
        record("pack_signs", "[16384, 16384] f32", name, times, gbps=gbps, fraction_of_copy=gbps / copy_gbps)
    del big, x

    # hamming_cdist rows x rows x 1024 bits, in row blocks of the output.
    a = torch.randint(-(2**63), 2**63 - 1, (rows, n_bits // 64), generator=gen, device=device)
    block = min(rows, 8192)
    out = torch.empty(block, rows, dtype=torch.int32, device=device)
    want = fs.hamming_cdist(a[:64].cpu(), a[:256].cpu(), backend="reference")
    pairs = rows * rows * (n_bits // 64)
    for name in names:
        assert torch.equal(fs.hamming_cdist(a[:64], a[:256], backend=name).cpu(), want), f"{name} cdist differs"

        def run(name: str = name) -> None:
            for lo in range(0, rows, block):
                fs.hamming_cdist(a[lo:lo + block], a, out=out[: min(block, rows - lo)], backend=name)

        times = cuda_time(run, max(1, args.repeats // 2), warmup=1)
        record("hamming_cdist", f"{rows}x{rows}x{n_bits}b", name, times, tera_word_pairs_per_s=pairs / statistics.median(times) / 1e12)
    bits = fs.unpack_bits(a[:block], n_bits)
    for dtype in (torch.float16, torch.bfloat16):
        trick = float_trick(bits[:64], bits[:256], n_bits, dtype)
        assert torch.equal(trick.cpu(), want), "float trick differs"

        def run_trick(dtype: torch.dtype = dtype) -> None:
            all_bits = fs.unpack_bits(a, n_bits)
            for lo in range(0, rows, block):
                out[: min(block, rows - lo)] = float_trick(all_bits[lo:lo + block], all_bits, n_bits, dtype)

        times = cuda_time(run_trick, max(1, args.repeats // 2), warmup=1)
        record("hamming_cdist", f"{rows}x{rows}x{n_bits}b", f"torch float trick {dtype}", times,
               tera_word_pairs_per_s=pairs / statistics.median(times) / 1e12)

    # Bandwidth-bound word ops.
    for name in names:
        for op, fn in (
            ("hamming_total", lambda: fs.hamming_total(a, a.flip(0), backend=name)),
            ("popcount", lambda: fs.popcount(a, backend=name)),
            ("bit_transpose", lambda: fs.bit_transpose(a, n_bits, backend=name)),
        ):
            times = cuda_time(fn, args.repeats)
            record(op, f"{rows}x{n_bits}b", name, times, gbps=a.nbytes * (2 if op == "hamming_total" else 1) / statistics.median(times) / 1e9)

    payload = {
        "benchmark": "bench_gpu", "card": card, "timestamp": datetime.datetime.now().isoformat(timespec="seconds"),
        "torch": torch.__version__, "build_info": fs.build_info(), "copy_gbps": copy_gbps, "results": results,
    }
    path = Path(args.out_dir) / f"gpu-{card.replace(' ', '_')}.json"
    atomic_write_json(path, payload)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
