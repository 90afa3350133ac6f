#!/usr/bin/env python
"""Benchmark spline pruning plans on one wide layer.

fastspline: ``pruning.plan(..., policy="spline-layerwise")`` end to end on an MLP
``inputs -> units -> 10`` (BatchNorm, ReLU) with a probe of N inputs: codes,
neighbour lists (``hamming_topk``, no N x N matrix), the lazy greedy, merge
targets and least-squares fits. The greedy alone (``spline_order``) is timed too.

Peer, the paper's way with float activations: the layer's float pre-activations
over the probe, the all-pairs distance ``(N - s_i . s_j) / 2`` of their signs
``s = ±1`` as one float32 matrix product (the same normalised Hamming distance),
``min(d, N - d)``, then the same greedy (closest pair, remove the unit of lower
|gamma|) on the dense matrix with per-row minima (a row is rescanned only when
its nearest unit goes). Both remove the same units (checked before timing).

Each measurement: ``--warmup`` untimed runs, then the median of ``--repeats``.
The machine is shared: read the ratio measured within one run.

    python benchmarks/bench_pruning.py            # 16,384 units, probe 1,024, ratio 0.5
    python benchmarks/bench_pruning.py --quick    # 2,048 units

Results: a table and ``benchmarks/results/pruning-cpu.json`` (``pruning-cpu-quick.json``
with ``--quick``), written atomically.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform

import numpy as np
import torch

import _setup  # noqa: F401  (fastspline: installed, else this checkout)
from _setup import RESULTS_DIR
import fastspline
from fastspline import models, pruning
from fastspline._files import atomic_write_json
from machine import cpu_info
from shared import median_time



def float_peer(model: torch.nn.Module, probe: torch.Tensor, ratio: float) -> list[int]:
    """Removed units, in order, by the dense float-activation greedy."""
    with torch.no_grad():
        model.eval()
        z = model.layers.bn0(model.layers.fc0(probe))  # float pre-activations [N, units]
        signs = torch.where(z > 0, 1.0, -1.0)
        n = z.shape[0]
        d = (n - signs.T @ signs) * 0.5  # float32 [units, units], exact integers
        d = torch.minimum(d, n - d)
        d.fill_diagonal_(float("inf"))
        importance = model.layers.bn0.weight.detach().abs().numpy().astype(np.float64)
    units = d.shape[0]
    alive = np.ones(units, dtype=bool)
    best, arg = torch.min(d, dim=1)
    best, arg = best.numpy().copy(), arg.numpy().copy()
    removed = []
    for _ in range(int(np.floor(ratio * units + 0.5))):
        u = int(np.argmin(best))
        v = int(arg[u])
        victim = u if (importance[u], -u) < (importance[v], -v) else v
        removed.append(victim)
        alive[victim] = False
        d[victim, :] = float("inf")
        d[:, victim] = float("inf")
        best[victim] = np.inf
        for w in np.flatnonzero(alive & (arg == victim)):  # rows whose nearest went: rescan
            row = d[w]
            j = int(torch.argmin(row))
            best[w], arg[w] = float(row[j]), j
        if u != victim:
            row = d[u]
            j = int(torch.argmin(row))
            best[u], arg[u] = float(row[j]), j
    return removed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--units", type=int, default=None)
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--inputs", type=int, default=64)
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()
    units = args.units or (2048 if args.quick else 16384)
    load_start = os.getloadavg()[0]
    if load_start > 0.5:
        print(f"warning: load average {load_start:.2f}: timings will be noisy; compare the ratio of this run")

    torch.manual_seed(0)
    model = models.mlp([args.inputs, units, 10])
    probe = torch.randn(args.samples, args.inputs)
    pruning.recalibrate_bn(model, probe)
    with torch.no_grad():  # as after training with the BN-L1 penalty: gammas differ
        model.layers.bn0.weight.copy_(torch.rand(units) + 0.1)
    model.eval()

    p = pruning.plan(model, probe, args.ratio, policy="spline-layerwise", recalibrate=False)
    ours = [u.index for u in p.layers[0].removed]
    theirs = float_peer(model, probe, args.ratio)
    same = ours == theirs
    if not same:
        raise SystemExit(f"the two greedies disagree: first differences {[(a, b) for a, b in zip(ours, theirs) if a != b][:5]}")

    rc = fastspline.codes(model, probe, progress=False)
    words = rc.unit_major("layers.relu0").contiguous()
    importance = model.layers.bn0.weight.detach().abs().double().numpy()
    wanted = int(np.floor(args.ratio * units + 0.5))

    def greedy_only() -> None:
        steps = pruning.spline_order(words, args.samples, importance, floor=units - wanted)
        for _ in steps:
            pass

    rows = {}
    rows["plan (fastspline, end to end)"], t_plan = median_time(
        lambda: pruning.plan(model, probe, args.ratio, policy="spline-layerwise", recalibrate=False), args.repeats, args.warmup
    )
    rows["greedy only (spline_order)"], t_greedy = median_time(greedy_only, args.repeats, args.warmup)
    rows["float peer (dense matrix + greedy)"], t_peer = median_time(
        lambda: float_peer(model, probe, args.ratio), args.repeats, args.warmup
    )
    ratio = rows["float peer (dense matrix + greedy)"] / rows["plan (fastspline, end to end)"]
    print(f"\nspline-layerwise plan, {units} units, probe {args.samples}, ratio {args.ratio} (median of {args.repeats})")
    print(f"{'what':40s} {'seconds':>10s}")
    for name, seconds in rows.items():
        print(f"{name:40s} {seconds:10.3f}")
    print(f"peer / fastspline plan: {ratio:.1f}x; same removed units: {same}")
    peer_bytes = units * units * 4
    payload = {
        "benchmark": "bench_pruning",
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick,
        "sizes": {"units": units, "samples": args.samples, "inputs": args.inputs, "ratio": args.ratio, "removed": wanted},
        "machine": {**cpu_info(), "torch_threads": torch.get_num_threads()},
        "versions": {"fastspline": fastspline.__version__, "torch": str(torch.__version__), "python": platform.python_version()},
        "build": fastspline.build_info(),
        "seconds": {name: {"median": s, "all": t} for (name, s), t in zip(rows.items(), (t_plan, t_greedy, t_peer))},
        "peer_over_plan": ratio,
        "same_removed_units": same,
        "peer_distance_matrix_bytes": peer_bytes,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "load_average_at_start": load_start,
        "load_average_at_end": os.getloadavg()[0],
    }
    name = "pruning-cpu-quick.json" if args.quick else "pruning-cpu.json"
    atomic_write_json(RESULTS_DIR / name, payload)
    print(f"wrote {RESULTS_DIR / name}")


if __name__ == "__main__":
    main()
