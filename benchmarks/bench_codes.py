#!/usr/bin/env python
"""Benchmark ``fastspline.codes()`` against a plain forward pass and the paper's
float-activation method, on the CPU.

Model: a VGG-style CNN (conv 64-64-pool-128-128-pool-256-256-pool, each conv
followed by BatchNorm and ReLU, then a linear layer), random weights, on
``--n`` random 3x32x32 inputs in batches of ``--batch-size``. Three methods:

- ``forward``: the plain forward pass over the data (``no_grad``, eval mode);
- ``codes``: ``fastspline.codes(model, x)``, packed signs of every ReLU input,
  then ``RegionCodes.distance`` against the codes of a perturbed copy of the model;
- ``float``: the official Spline-EB code's way: hooks keep a float copy of
  every ReLU input for every input (a copy: the ReLUs are in place), then the
  distance compares the ``(a > 0)`` masks of two such captures layer by layer.

Both distance methods must count the same differing bits per layer: the
script checks that they do (exactly) and fails otherwise.

Each method runs in a fresh subprocess so that its peak resident memory
(``resource.getrusage(...).ru_maxrss``) is its own; ``setup`` is the peak
after importing torch and building the model and data, before the method runs.
Timings: one warm-up call on the first two batches (it also pays one-time
costs such as the first custom-op call), then the median of ``--repeats``
timed calls. The ``codes`` and ``float`` workers time a plain forward pass
just before each call, so ratios compare runs made under the same machine
load (the machine is shared and noisy). The time goal is judged on the
steadiest measure: ``codes()`` and the forward pass on the same batch, back
to back in alternating order, for every batch of every repeat; the median of
those ratios.

Run from the repository root:

    python benchmarks/bench_codes.py            # full run, about 2 minutes on 2 cores
    python benchmarks/bench_codes.py --quick    # smoke test, seconds

Results: a table on stdout and JSON at ``benchmarks/results/codes-cpu.json``
(``codes-cpu-quick.json`` with ``--quick``; ``--out`` to choose).
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

import _setup  # noqa: F401  (fastspline: installed, else this checkout)
from _setup import RESULTS_DIR
import fastspline
from fastspline._files import atomic_write_json
from machine import cpu_info
from shared import random_bn_vgg_features

METHODS = ("forward", "codes", "float")
GOAL_TIME_RATIO = 1.10  # codes() at most 10% slower than the plain forward pass
GOAL_MEMORY_RATIO = 30.0  # float activations at least 30x the bytes of packed codes
VGG_CFG = (64, 64, "M", 128, 128, "M", 256, 256, "M")


# ---------------------------------------------------------------- model and data


def vgg(seed: int) -> nn.Sequential:
    layers, channels = random_bn_vgg_features(VGG_CFG, seed)
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels * 4 * 4, 10)).eval()


def perturbed(model: nn.Module, scale: float, seed: int) -> nn.Module:
    """A copy with every parameter moved by ``scale`` of its own spread: a 'later epoch'."""
    other = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale * (p.std() if p.numel() > 1 else 1.0))
    return other


# ---------------------------------------------------------------- the three methods


def forward_pass(model: nn.Module, x: torch.Tensor, batch_size: int) -> None:
    model.eval()
    with torch.no_grad():
        for batch in x.split(batch_size):
            model(batch)


def float_capture(model: nn.Module, x: torch.Tensor, batch_size: int) -> dict[str, list[torch.Tensor]]:
    """The official code's way: keep every ReLU input as floats, batch by batch."""
    kept: dict[str, list[torch.Tensor]] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, nn.ReLU):
            # clone: the ReLU is in place and would overwrite the kept tensor.
            hook = lambda m, args, name=name: kept.setdefault(name, []).append(args[0].detach().clone())  # noqa: E731
            handles.append(module.register_forward_pre_hook(hook))
    try:
        forward_pass(model, x, batch_size)
    finally:
        for handle in handles:
            handle.remove()
    return kept


def float_differing_bits(a: dict[str, list[torch.Tensor]], b: dict[str, list[torch.Tensor]]) -> dict[str, list[int]]:
    """Per layer: (differing sign bits, total bits) of two float captures."""
    out = {}
    for name, chunks in a.items():
        differing = sum(int(((ca > 0) != (cb > 0)).sum()) for ca, cb in zip(chunks, b[name]))
        out[name] = [differing, sum(c.numel() for c in chunks)]
    return out


def codes_differing_bits(a: Any, b: Any) -> dict[str, list[int]]:
    return {
        name: [int(fastspline.hamming_total(layer.words, b[name].words)), layer.n_samples * layer.n_units]
        for name, layer in a.items()
    }


def mean_distance(bits: dict[str, list[int]]) -> float:
    return sum(d / n for d, n in bits.values()) / len(bits)


# ---------------------------------------------------------------- worker (one method per process)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def timed_both(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """Wall and process CPU seconds: CPU time is less disturbed by other processes
    on a shared machine (though OpenMP spin-waits count in it)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def worker(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    model = vgg(seed=0)
    later = perturbed(model, scale=0.05, seed=1)
    x = torch.randn(args.n, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    warm = x[: 2 * args.batch_size]
    bs = args.batch_size
    result: dict[str, Any] = {"method": args.worker, "setup_peak_rss_bytes": peak_rss_bytes()}

    if args.worker == "forward":
        result["warmup_s"], _ = timed(lambda: forward_pass(model, warm, bs))
        result["times_s"] = [timed(lambda: forward_pass(model, x, bs))[0] for _ in range(args.repeats)]

    elif args.worker == "codes":
        # fastspline's first op call in a process imports torch._dynamo (torch.library
        # custom ops do): a one-time cost, measured here and kept out of the rest.
        before = peak_rss_bytes()
        result["first_op_call_s"], _ = timed(lambda: fastspline.pack_signs(torch.ones(1, 8), backend=args.backend))
        result["first_op_call_rss_bytes"] = peak_rss_bytes() - before
        result["setup_peak_rss_bytes"] = peak_rss_bytes()
        run = lambda m: fastspline.codes(m, x, batch_size=bs, progress=False, backend=args.backend)  # noqa: E731
        result["warmup_s"], _ = timed(lambda: fastspline.codes(model, warm, batch_size=bs, progress=False, backend=args.backend))
        forward_pass(model, warm, bs)
        times, forward_times, cpu, forward_cpu = [], [], [], []
        for i in range(args.repeats):  # interleaved: the ratio compares runs under the same load
            wall_s, cpu_s, _ = timed_both(lambda: forward_pass(model, x, bs))
            forward_times.append(wall_s), forward_cpu.append(cpu_s)
            wall_s, cpu_s, codes = timed_both(lambda: run(model))
            times.append(wall_s), cpu.append(cpu_s)
            if i < args.repeats - 1:
                del codes  # the next repeat starts from the same memory state
        result["times_s"], result["paired_forward_times_s"] = times, forward_times
        result["cpu_times_s"], result["paired_forward_cpu_times_s"] = cpu, forward_cpu
        # Batch-level pairs: forward(batch) and codes(model, batch) back to back, in
        # alternating order (ABBA cancels drift): load bursts on a shared machine hit both
        # sides of a pair alike, so their median ratio is far steadier than whole passes'.
        batch_ratios = []
        for _ in range(args.repeats):
            for i, batch in enumerate(x.split(bs)):
                fwd_s = code_s = 0.0
                for side in ((0, 1) if i % 2 == 0 else (1, 0)):
                    if side == 0:
                        fwd_s = timed(lambda: forward_pass(model, batch, bs))[0]
                    else:
                        code_s = timed(lambda: fastspline.codes(model, batch, batch_size=bs, progress=False, backend=args.backend))[0]
                batch_ratios.append(code_s / fwd_s)
        result["batch_paired_ratios"] = batch_ratios
        result["later_capture_s"], later_codes = timed(lambda: run(later))
        result["retained_bytes"] = codes.nbytes
        result["layers"] = {name: list(layer.unit_shape) for name, layer in codes.items()}
        result["distance_times_s"] = [timed(lambda: codes.distance(later_codes))[0] for _ in range(args.repeats)]
        result["distance"] = codes.distance(later_codes)
        result["differing_bits"] = codes_differing_bits(codes, later_codes)

    elif args.worker == "float":
        result["warmup_s"], _ = timed(lambda: float_capture(model, warm, bs))
        forward_pass(model, warm, bs)
        times, forward_times, cpu, forward_cpu = [], [], [], []
        for i in range(args.repeats):
            wall_s, cpu_s, _ = timed_both(lambda: forward_pass(model, x, bs))
            forward_times.append(wall_s), forward_cpu.append(cpu_s)
            wall_s, cpu_s, kept = timed_both(lambda: float_capture(model, x, bs))
            times.append(wall_s), cpu.append(cpu_s)
            if i < args.repeats - 1:
                del kept
        result["times_s"], result["paired_forward_times_s"] = times, forward_times
        result["cpu_times_s"], result["paired_forward_cpu_times_s"] = cpu, forward_cpu
        result["later_capture_s"], later_kept = timed(lambda: float_capture(later, x, bs))
        result["retained_bytes"] = sum(c.numel() * c.element_size() for chunks in kept.values() for c in chunks)
        result["distance_times_s"] = [
            timed(lambda: float_differing_bits(kept, later_kept))[0] for _ in range(args.repeats)
        ]
        result["differing_bits"] = float_differing_bits(kept, later_kept)
        result["distance"] = mean_distance(result["differing_bits"])

    result["peak_rss_bytes"] = peak_rss_bytes()
    return result


def run_worker(method: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [
        sys.executable, __file__, "--worker", method, "--n", str(args.n), "--batch-size", str(args.batch_size),
        "--repeats", str(args.repeats), "--threads", str(args.threads),
    ]
    if args.backend:
        command += ["--backend", args.backend]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"bench_codes: the {method} worker failed with status {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- report


def median(values: list[float]) -> float:
    return statistics.median(values)


def paired(result: dict[str, Any]) -> dict[str, float]:
    """Method time / the forward pass timed just before it, in the same process."""
    ratios = [t / f for t, f in zip(result["times_s"], result["paired_forward_times_s"])]
    return {
        "median_s": median(result["times_s"]),
        "paired_forward_median_s": median(result["paired_forward_times_s"]),
        "ratio_of_medians": median(result["times_s"]) / median(result["paired_forward_times_s"]),
        "median_of_paired_ratios": median(ratios),
        "ratio_of_minima": min(result["times_s"]) / min(result["paired_forward_times_s"]),
        "paired_ratios": ratios,
        "cpu_time_median_of_paired_ratios": median(
            [t / f for t, f in zip(result["cpu_times_s"], result["paired_forward_cpu_times_s"])]
        ),
    }


def summarize(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    fwd, cod, flt = results["forward"], results["codes"], results["float"]
    above = {m: r["peak_rss_bytes"] - r["setup_peak_rss_bytes"] for m, r in results.items()}
    summary: dict[str, Any] = {
        "forward_median_s": median(fwd["times_s"]),
        "codes": paired(cod),
        "float": paired(flt),
        "codes_distance_median_s": median(cod["distance_times_s"]),
        "float_distance_median_s": median(flt["distance_times_s"]),
        "codes_retained_bytes": cod["retained_bytes"],
        "float_retained_bytes": flt["retained_bytes"],
        "memory_ratio_float_over_codes": flt["retained_bytes"] / cod["retained_bytes"],
        "peak_rss_bytes": {m: r["peak_rss_bytes"] for m, r in results.items()},
        "peak_rss_above_setup_bytes": above,
        "peak_rss_ratio_float_over_codes": flt["peak_rss_bytes"] / cod["peak_rss_bytes"],
        "peak_above_setup_ratio_float_over_codes": above["float"] / max(above["codes"], 1),
        # What each method's peak adds to the plain forward pass's (whose batch activations both also hold).
        "peak_above_forward_bytes": {m: above[m] - above["forward"] for m in ("codes", "float")},
        "peak_above_forward_ratio_float_over_codes": (above["float"] - above["forward"]) / max(above["codes"] - above["forward"], 1),
        "distances_agree": cod["differing_bits"] == flt["differing_bits"],
    }
    summary["distance_speedup"] = summary["float_distance_median_s"] / summary["codes_distance_median_s"]
    summary["codes"]["median_of_batch_paired_ratios"] = median(cod["batch_paired_ratios"])
    time_ratio = summary["codes"]["median_of_batch_paired_ratios"]
    summary["goals"] = {
        "codes time / forward time (median of batch-paired ratios)": {
            "value": time_ratio, "goal": f"<= {GOAL_TIME_RATIO}", "met": time_ratio <= GOAL_TIME_RATIO,
        },
        "float bytes / codes bytes (retained)": {
            "value": summary["memory_ratio_float_over_codes"], "goal": f">= {GOAL_MEMORY_RATIO}",
            "met": summary["memory_ratio_float_over_codes"] >= GOAL_MEMORY_RATIO,
        },
    }
    return summary


def print_report(results: dict[str, dict[str, Any]], summary: dict[str, Any], args: argparse.Namespace) -> None:
    mb = 1 / 2**20
    fwd, cod, flt = results["forward"], results["codes"], results["float"]
    print(
        f"\nVGG-style CNN {'-'.join(map(str, VGG_CFG))} (BN, ReLU), {args.n} inputs 3x32x32, batch {args.batch_size}, "
        f"{args.threads} threads, median of {args.repeats} repeats"
    )
    header = (
        f"{'method':<34} {'median s':>9} {'fwd s':>7} {'x fwd':>7} {'x fwd min':>9} {'x fwd cpu':>9} "
        f"{'retained MB':>12} {'peak RSS MB':>12} {'above setup':>12}"
    )
    print(header)
    print("-" * len(header))

    def row(label: str, seconds: float, forward_s: float | None, ratio: float | None, ratio_min: float | None,
            ratio_cpu: float | None, kept: int | None, worker_result: dict[str, Any]) -> None:
        above = worker_result["peak_rss_bytes"] - worker_result["setup_peak_rss_bytes"]
        print(
            f"{label:<34} {seconds:>9.3f} {'' if forward_s is None else f'{forward_s:.3f}':>7} "
            f"{'' if ratio is None else f'{ratio:.3f}':>7} {'' if ratio_min is None else f'{ratio_min:.3f}':>9} "
            f"{'' if ratio_cpu is None else f'{ratio_cpu:.3f}':>9} "
            f"{'' if kept is None else f'{kept * mb:.1f}':>12} {worker_result['peak_rss_bytes'] * mb:>12.0f} {above * mb:>12.0f}"
        )

    row("forward (no_grad, eval)", summary["forward_median_s"], None, None, None, None, None, fwd)
    for label, key, result in (("fastspline.codes()", "codes", cod), ("float activations (paper's code)", "float", flt)):
        p = summary[key]
        row(label, p["median_s"], p["paired_forward_median_s"], p["median_of_paired_ratios"], p["ratio_of_minima"],
            p["cpu_time_median_of_paired_ratios"], result["retained_bytes"], result)
    print(
        "fwd s: forward passes timed just before each call in the same process; x fwd: median of the paired "
        "ratios; x fwd min: fastest call / fastest forward; x fwd cpu: as x fwd, in process CPU time. above setup: peak RSS minus the peak after building "
        "model and data (codes: also after fastspline's first op call)."
    )
    ratios = sorted(cod["batch_paired_ratios"])
    print(
        f"codes() / forward on the same batch, back to back ({len(ratios)} pairs): median "
        f"{summary['codes']['median_of_batch_paired_ratios']:.3f}, quartiles {ratios[len(ratios) // 4]:.3f} to "
        f"{ratios[(3 * len(ratios)) // 4]:.3f}"
    )
    print(
        f"\nretained bytes float / codes: {summary['memory_ratio_float_over_codes']:.1f}x; "
        f"peak RSS float / codes: {summary['peak_rss_ratio_float_over_codes']:.1f}x whole process, "
        f"{summary['peak_above_setup_ratio_float_over_codes']:.1f}x above setup, "
        f"{summary['peak_above_forward_ratio_float_over_codes']:.1f}x above the plain forward pass's peak "
        f"({summary['peak_above_forward_bytes']['float'] / 2**20:.0f} vs {summary['peak_above_forward_bytes']['codes'] / 2**20:.0f} MB; "
        "each holds two captures)"
    )
    print(
        f"distance between two captures: codes().distance {summary['codes_distance_median_s'] * 1e3:.2f} ms, "
        f"float masks {summary['float_distance_median_s'] * 1e3:.1f} ms ({summary['distance_speedup']:.0f}x); "
        f"distance {cod['distance']:.6f} vs {flt['distance']:.6f}, differing bits per layer "
        f"{'identical' if summary['distances_agree'] else 'DIFFER'}"
    )
    print(
        f"fastspline's first op call in a process: {cod['first_op_call_s']:.2f} s, "
        f"+{cod['first_op_call_rss_bytes'] * mb:.0f} MB RSS (imports torch._dynamo); warm-up on 2 batches: "
        f"forward {fwd['warmup_s']:.2f} s, codes {cod['warmup_s']:.2f} s, float {flt['warmup_s']:.2f} s"
    )
    print()
    for name, goal in summary["goals"].items():
        print(f"goal: {name}: {goal['value']:.3f} (goal {goal['goal']}) {'MET' if goal['met'] else 'NOT MET'}")


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: 256 inputs, 2 repeats")
    parser.add_argument("--n", type=int, default=None, help="inputs (default 2048; 256 with --quick)")
    parser.add_argument("--batch-size", type=int, default=None, help="batch size (default 256; 64 with --quick)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (default 3; 2 with --quick)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads (default: all)")
    parser.add_argument("--backend", default=None, help="fastspline backend for codes() (default: the CPU's fastest)")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default: benchmarks/results/codes-cpu.json; codes-cpu-quick.json with --quick)")
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.n = args.n or (256 if args.quick else 2048)
    args.batch_size = args.batch_size or (64 if args.quick else 256)
    args.repeats = args.repeats or (2 if args.quick else 3)
    if min(args.n, args.batch_size, args.repeats, args.threads) < 1:
        parser.error("--n, --batch-size, --repeats and --threads must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    start = time.perf_counter()
    results = {}
    for method in METHODS:
        print(f"running {method} ...", flush=True)
        results[method] = run_worker(method, args)
    summary = summarize(results)
    print_report(results, summary, args)
    path = args.out or RESULTS_DIR / ("codes-cpu-quick.json" if args.quick else "codes-cpu.json")
    payload = {
        "benchmark": "codes",
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "machine": {"cpu": cpu_info(), "platform": platform.platform(), "python": platform.python_version()},
        "threads": args.threads,
        "versions": {"torch": torch.__version__, "fastspline": fastspline.__version__},
        "build_info": fastspline.build_info(),
        "backend": args.backend,
        "config": {"model": "VGG-style " + "-".join(map(str, VGG_CFG)) + " BN ReLU, linear",
                   "n": args.n, "input": [3, 32, 32], "batch_size": args.batch_size, "repeats": args.repeats,
                   "quick": args.quick},
        "summary": summary,
        "workers": results,
        "wall_s": time.perf_counter() - start,
    }
    atomic_write_json(path, payload)
    print(f"\nwrote {path} ({payload['wall_s']:.0f} s)")
    if not summary["distances_agree"]:
        print("error: codes().distance and the float masks count different bits", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
