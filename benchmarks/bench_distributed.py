#!/usr/bin/env python
"""Benchmark ``fastspline.distributed`` on the CPU: ``codes()`` over a probe and the
distances that follow it, on 1 process against 2 gloo ranks on this machine.

Workload: a VGG-style CNN (conv 32-32-pool-64-64-pool-128-128-pool, each conv followed
by BatchNorm and ReLU, then linear 2048 -> 256 -> ReLU -> 10), random weights, on
``--n`` random 3x32x32 inputs in batches of ``--batch-size``. One timed repetition is

- ``codes``: the probe's codes (each rank its contiguous shard, ``distributed.shard``);
- ``distances``: the partition distance to the codes of a perturbed copy of the model
  (kept from before, as an early-bird step compares with an earlier epoch), and the
  unit-major ``hamming_cdist`` of every layer (per channel for conv layers, per unit for
  the linear one): per-shard int32 matrices summed by one ``all_reduce``
  (``ShardedRegionCodes.unit_cdists``).

Configurations, each in freshly spawned processes:

- ``1 process x 2 threads``: plain ``fastspline.codes`` and ``fastspline.hamming_cdist``,
  no process group: what one process on this machine does;
- ``1 rank x 1 thread``: the distributed code path on a world of one;
- ``2 ranks x 1 thread``: two gloo ranks on localhost.

Each repetition starts after a barrier; a repetition's time is the slowest rank's.
One warm-up repetition, then the median of ``--repeats``. The machine is shared, so the
configurations run in ``--rounds`` alternating passes and each keeps its least disturbed
pass (lowest median); every pass and the 1-minute load average before it are in the JSON.
The distributed results are checked to equal the single-process ones exactly (the
script exits 1 otherwise).

    python benchmarks/bench_distributed.py            # about a minute on 2 cores (3 rounds)
    python benchmarks/bench_distributed.py --quick    # smoke test

Results: a table on stdout and JSON at ``benchmarks/results/distributed-cpu.json``
(``distributed-cpu-quick.json`` with ``--quick``; ``--out`` to choose).
"""
from __future__ import annotations

import argparse
import copy
import datetime
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import _setup  # noqa: F401  (fastspline: installed, else this checkout)
from _setup import RESULTS_DIR
import fastspline
from fastspline import distributed
from fastspline._files import atomic_write_json
from machine import cpu_info
from shared import random_bn_vgg_features

VGG_CFG = (32, 32, "M", 64, 64, "M", 128, 128, "M")
CONFIGS = (("1 process x 2 threads", 1, 2, False), ("1 rank x 1 thread", 1, 1, True), ("2 ranks x 1 thread", 2, 1, True))


def model_of(seed: int) -> nn.Sequential:
    layers, channels = random_bn_vgg_features(VGG_CFG, seed)
    head = [nn.Flatten(), nn.Linear(channels * 4 * 4, 256), nn.ReLU(inplace=True), nn.Linear(256, 10)]
    return nn.Sequential(*layers, *head).eval()


def perturbed(model: nn.Module, scale: float, seed: int) -> nn.Module:
    """A copy with every parameter moved by ``scale`` of its own spread: a 'later epoch'."""
    other = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale * (p.std() if p.numel() > 1 else 1.0))
    return other


def probe_of(n: int) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(2))


# ---------------------------------------------------------------- one repetition


def one_pass(model: nn.Module, probe: torch.Tensor, previous: Any, batch_size: int, use_dist: bool) -> tuple[float, float, dict[str, Any]]:
    """(codes seconds, distances seconds, results) of one repetition."""
    start = time.perf_counter()
    if use_dist:
        rc = distributed.codes(model, probe, batch_size=batch_size)
    else:
        rc = fastspline.codes(model, probe, batch_size=batch_size, progress=False)
    coded = time.perf_counter()
    results: dict[str, Any] = {"distance": rc.distance(previous)}
    if use_dist:
        results["cdist"] = rc.unit_cdists()  # every layer, one all_reduce
    else:
        results["cdist"] = {name: fastspline.hamming_cdist(rc.unit_major(name)) for name in rc.names}
    return coded - start, time.perf_counter() - coded, results


def worker(rank: int, world: int, port: int, threads: int, use_dist: bool, args: argparse.Namespace, out: str) -> None:
    torch.set_num_threads(threads)
    if use_dist:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
        dist.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world, timeout=timedelta(seconds=120)
        )
    sync = dist.barrier if use_dist else (lambda: None)
    model = model_of(0)
    later = perturbed(model, 0.05, 1)
    probe = probe_of(args.n)
    mine = distributed.shard(probe) if use_dist else probe
    previous = distributed.codes(later, mine, batch_size=args.batch_size) if use_dist else fastspline.codes(
        later, mine, batch_size=args.batch_size, progress=False
    )
    times = []
    results: dict[str, Any] = {}
    for _ in range(1 + args.repeats):  # the first is the warm-up
        sync()
        codes_s, distances_s, results = one_pass(model, mine, previous, args.batch_size, use_dist)
        times.append((codes_s, distances_s))
    if use_dist:
        dist.destroy_process_group()
    payload = {"times": times[1:], "warmup": times[0], "samples": int(mine.shape[0])}
    if rank == 0:
        payload["results"] = results
    torch.save(payload, os.path.join(out, f"rank{rank}.pt"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_config(world: int, threads: int, use_dist: bool, args: argparse.Namespace) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as out:
        context = mp.start_processes(
            worker, args=(world, free_port(), threads, use_dist, args, out), nprocs=world, join=False, start_method="spawn"
        )
        deadline = time.monotonic() + args.timeout
        while not context.join(timeout=5):
            if time.monotonic() > deadline:
                for process in context.processes:
                    if process.is_alive():
                        process.kill()
                raise SystemExit(f"bench_distributed: {world} rank(s) did not finish in {args.timeout} s")
        return [torch.load(os.path.join(out, f"rank{r}.pt"), weights_only=False) for r in range(world)]


# ---------------------------------------------------------------- report


def same_results(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a["distance"] == b["distance"] and a["cdist"].keys() == b["cdist"].keys() and all(
        torch.equal(a["cdist"][k], b["cdist"][k]) for k in a["cdist"]
    )


def _exact(equal: bool | str) -> str:
    return "(ref)" if equal == "reference" else "yes" if equal else "MISMATCH"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1024, help="probe inputs (default 1024)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="passes over all configurations; each keeps its best")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per configuration before it is killed")
    parser.add_argument("--quick", action="store_true", help="a smoke test: 64 inputs, 2 repeats")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default: benchmarks/results/distributed-cpu.json; distributed-cpu-quick.json with --quick)")
    args = parser.parse_args()
    if args.quick:
        args.n, args.repeats, args.batch_size, args.rounds = 64, 2, 32, 1
    out = args.out or RESULTS_DIR / ("distributed-cpu-quick.json" if args.quick else "distributed-cpu.json")

    load_start = os.getloadavg()[0]
    rows: dict[str, dict[str, Any]] = {}
    reference = None
    ok = True
    for round_index in range(args.rounds):
        for label, world, threads, use_dist in CONFIGS:
            load = os.getloadavg()[0]
            ranks = run_config(world, threads, use_dist, args)
            per_repeat = [  # the slowest rank of each repetition
                (max(r["times"][i][0] for r in ranks), max(r["times"][i][1] for r in ranks)) for i in range(args.repeats)
            ]
            measured = {
                "round": round_index,
                "load_average_before": load,
                "codes_s": statistics.median(c for c, _ in per_repeat),
                "distances_s": statistics.median(d for _, d in per_repeat),
                "total_s": statistics.median(c + d for c, d in per_repeat),
                "repeats_s": per_repeat,
            }
            equal: bool | str = "reference"
            if not use_dist:  # the single-process configuration is the oracle
                reference = reference or ranks[0]["results"]
            else:
                assert reference is not None
                equal = same_results(ranks[0]["results"], reference) and rows.get(label, {}).get("equal_to_single_process", True)
                ok &= bool(equal)
            row = rows.setdefault(
                label,
                {"ranks": world, "threads_per_rank": threads, "process_group": "gloo" if use_dist else None,
                 "samples_per_rank": [r["samples"] for r in ranks], "rounds": []},
            )
            row["rounds"].append(measured)
            row["equal_to_single_process"] = equal
            # The round least disturbed by other work on this shared machine counts.
            best = min(row["rounds"], key=lambda m: m["total_s"])
            row.update(codes_s=best["codes_s"], distances_s=best["distances_s"], total_s=best["total_s"], best_round=best["round"])
            print(
                f"  round {round_index + 1}/{args.rounds}, {label}: codes {measured['codes_s'] * 1e3:.1f} ms, "
                f"distances {measured['distances_s'] * 1e3:.1f} ms (load {load:.2f})",
                flush=True,
            )
    load_end = os.getloadavg()[0]

    threaded, base, two = (rows[label] for label, *_ in CONFIGS)
    scaling = {
        "2_ranks_vs_1_rank_total": base["total_s"] / two["total_s"],
        "2_ranks_vs_1_rank_codes": base["codes_s"] / two["codes_s"],
        "2_ranks_vs_1_rank_distances": base["distances_s"] / two["distances_s"],
        "2_ranks_vs_1_process_2_threads_total": threaded["total_s"] / two["total_s"],
    }
    assert reference is not None
    cdist_shapes = {name: list(m.shape) for name, m in reference["cdist"].items()}
    print()
    print(f"{'configuration':<24}{'codes ms':>10}{'distances ms':>14}{'total ms':>10}{'speedup':>9}  exact")
    for label, row in rows.items():
        speedup = base["total_s"] / row["total_s"]
        print(
            f"{label:<24}{row['codes_s'] * 1e3:>10.1f}{row['distances_s'] * 1e3:>14.1f}{row['total_s'] * 1e3:>10.1f}"
            f"{speedup:>8.2f}x  {_exact(row['equal_to_single_process'])}"
        )
    print(f"(speedup: against 1 rank x 1 thread; load average {load_start:.2f} at start, {load_end:.2f} at end)")

    atomic_write_json(
        out,
        {
            "benchmark": "distributed",
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "workload": {
                "model": {"cfg": list(VGG_CFG), "head": [2048, 256, 10], "input": [3, 32, 32]},
                "probe_samples": args.n,
                "batch_size": args.batch_size,
                "repeats": args.repeats,
                "rounds": args.rounds,
                "cdist_shapes": cdist_shapes,
            },
            "configs": rows,
            "scaling": scaling,
            "load_average_at_start": load_start,
            "load_average_at_end": load_end,
            "machine": {"cpu": cpu_info(), "platform": platform.platform(), "python": platform.python_version()},
            "versions": {"torch": torch.__version__, "fastspline": fastspline.__version__},
            "build_info": fastspline.build_info(),
        },
    )
    print(f"wrote {out}")
    if not ok:
        print("bench_distributed: distributed results differ from the single-process ones", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
