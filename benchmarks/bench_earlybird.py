#!/usr/bin/env python
"""Benchmark spline early-bird detection on digits with the VGG-style model.

(a) Cost of the EB step beside training: the step's own work (packing the
    signs in the hooks + the window's Hamming distances, i.e. everything beyond
    the probe's forward pass) as a fraction of one training epoch (goal <= 1%);
    the probe's forward pass is reported separately.
(b) Against the authors' detection (Spline-EB ``detect_eb``: every BatchNorm
    output kept as float32 for the window, distance = mean of
    ``(a > 0) != (b > 0)``), on the same model and probe: time and memory ratios
    (goals >= 5x faster, >= 20x less memory). The time goal is read on the
    detection work beyond the forward pass both share (``detect_eb`` also does
    a forward pass over the probe); the whole step's ratio is reported too.

Each measurement: ``--warmup`` untimed calls, then the median of ``--repeats``
``time.perf_counter`` timings. The machine is shared and noisy: read the
ratios measured within one run. Both detectors are checked to give the same
distances (exactly, as fractions of differing bits) before timing.

Run from the repository root:

    python benchmarks/bench_earlybird.py            # vgg11 width 1.0, ~1-2 minutes on 2 cores
    python benchmarks/bench_earlybird.py --quick    # width 0.25, seconds

Results: a table and ``benchmarks/results/earlybird-cpu.json`` (``earlybird-cpu-quick.json``
with ``--quick``), written atomically.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import os
import platform
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

import _setup  # noqa: F401  (fastspline: installed, else this checkout)
from _setup import RESULTS_DIR
import fastspline
from fastspline import data, models, ops, train
from fastspline._files import atomic_write_json
from machine import cpu_info
from shared import median_time
from fastspline.codes import codes

WINDOW = 3


# ---------------------------------------------------------------- the authors' detection


class AuthorsDetection:
    """Spline-EB's ``detect_eb`` (ConvNet/experiments.py + vis_util.getDiff), CPU edition:
    BN outputs stored as float32 copies (the official ``.cpu()`` is a device-to-host copy;
    on the CPU it must be an explicit copy, else the in-place ReLU overwrites it)."""

    def __init__(self, window: int = WINDOW) -> None:
        self.window = window
        self.prevs: list[dict[str, list[torch.Tensor]]] = []

    @staticmethod
    def activations(model: nn.Module, probe: torch.Tensor, batch_size: int) -> dict[str, list[torch.Tensor]]:
        store: dict[str, list[torch.Tensor]] = defaultdict(list)
        hooks = []
        for name, module in model.named_modules():
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                hooks.append(
                    module.register_forward_hook(lambda m, i, out, name=name: store[name].append(out.detach().to("cpu", copy=True)))
                )
        model.eval()
        try:
            with torch.no_grad():
                for batch in probe.split(batch_size):
                    model(batch)
        finally:
            for hook in hooks:
                hook.remove()
        return store

    @staticmethod
    def get_diff(acti: torch.Tensor, prev_acti: torch.Tensor) -> torch.Tensor:
        acti1 = (acti > 0).type(torch.FloatTensor)
        acti2 = (prev_acti > 0).type(torch.FloatTensor)
        diff = torch.abs(acti1 - acti2)
        return torch.sum(diff) / torch.numel(diff)

    def distances(self, current: dict[str, list[torch.Tensor]]) -> list[float]:
        result = []
        for previous in self.prevs:
            total = 0.0
            for key in current:
                # The official code holds the canvas in one batch; cat keeps that meaning per layer.
                total += float(self.get_diff(torch.cat(current[key]), torch.cat(previous[key])))
            result.append(total / len(current))
        return result

    def push(self, current: dict[str, list[torch.Tensor]]) -> None:
        if len(self.prevs) == self.window:
            self.prevs = self.prevs[1:]
        self.prevs.append(copy.deepcopy(current))

    def step(self, model: nn.Module, probe: torch.Tensor, batch_size: int) -> list[float]:
        current = self.activations(model, probe, batch_size)
        result = self.distances(current)
        self.push(current)
        return result

    def stored_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for prev in self.prevs for acts in prev.values() for t in acts)


# ---------------------------------------------------------------- helpers


def perturb(model: nn.Module, generator: torch.Generator, scale: float = 0.05) -> None:
    """Nudge the weights, so successive 'epochs' have different (but close) codes."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * scale * p.std().clamp_min(1e-3))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="width 0.25, fewer repeats: a smoke test")
    parser.add_argument("--model", default="vgg11", choices=[n for n in models.MODEL_NAMES if n.startswith("vgg")])
    parser.add_argument("--width", type=float, default=None, help="width multiplier (default 1.0, --quick 0.25)")
    parser.add_argument("--probe-size", type=int, default=512, help="training images in the probe (PAPER.md §6: 512)")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per measurement (default 5, --quick 2)")
    parser.add_argument("--epoch-repeats", type=int, default=None, help="timed training epochs (default 3, --quick 1)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads (default: all usable)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.width is None:
        args.width = 0.25 if args.quick else 1.0
    if args.repeats is None:
        args.repeats = 2 if args.quick else 5
    if args.epoch_repeats is None:
        args.epoch_repeats = 1 if args.quick else 3
    if args.repeats < 1 or args.epoch_repeats < 1 or args.warmup < 0 or args.threads < 1 or args.probe_size < 1:
        parser.error("need --repeats, --epoch-repeats, --threads, --probe-size >= 1 and --warmup >= 0")
    if args.out is None:
        args.out = RESULTS_DIR / ("earlybird-cpu-quick.json" if args.quick else "earlybird-cpu.json")
    return args


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]
    print(f"cpu: {cpu_info()['model']}, torch threads {torch.get_num_threads()}, load average {load_start:.2f}")
    if load_start > 0.5:
        print(f"warning: load average {load_start:.2f}: timings will be noisy; compare the ratios of this run")

    split = data.digits(seed=args.seed)
    train.seed_everything(args.seed)
    model = models.create(args.model, split.input_shape, split.num_classes, width=args.width)
    probe = data.probe_subset(split.train, args.probe_size, seed=args.seed)
    batch_size = 256  # codes()' default; the authors' pass uses the same batches
    forward_flops = train.count_flops(model, probe[:1])
    print(
        f"model {args.model} width {args.width:g}: {sum(p.numel() for p in model.parameters()):,} parameters, "
        f"{forward_flops / 1e6:.1f} MFLOPs per image; probe {tuple(probe.shape)}"
    )

    # -- one training epoch (the model trains on, so later codes are of a trained net)
    epoch_times = []
    for _ in range(args.epoch_repeats):
        started = time.perf_counter()
        train.fit(model, split.train, None, 1, progress=False, sparsity=1e-4)
        epoch_times.append(time.perf_counter() - started)
    epoch_s = statistics.median(epoch_times)
    print(f"training epoch: {epoch_s * 1e3:.0f} ms (median of {len(epoch_times)})")

    # -- window of states: WINDOW previous 'epochs' and the current one
    generator = torch.Generator().manual_seed(args.seed)
    states = []
    for _ in range(WINDOW + 1):
        perturb(model, generator)
        states.append(copy.deepcopy(model.state_dict()))
    previous_codes, authors = [], AuthorsDetection(WINDOW)
    for state in states[:-1]:
        model.load_state_dict(state)
        previous_codes.append(codes(model, probe, progress=False, batch_size=batch_size))
        authors.push(authors.activations(model, probe, batch_size))
    model.load_state_dict(states[-1])

    # -- correctness: the same distances from both
    current = codes(model, probe, progress=False, batch_size=batch_size)
    ours_d = [current.distance(prev) for prev in previous_codes]
    theirs_d = authors.distances(authors.activations(model, probe, batch_size))
    for a, b in zip(ours_d, theirs_d):
        if abs(a - b) > 1e-6:
            print(f"MISMATCH: fastspline distances {ours_d} vs the authors' {theirs_d}", file=sys.stderr)
            return 1
    print(f"distances to the window: {[round(d, 4) for d in ours_d]} (both methods agree)")

    # -- timings
    def plain_forward() -> None:
        model.eval()
        with torch.no_grad():
            for batch in probe.split(batch_size):
                model(batch)

    def ours_codes() -> Any:
        return codes(model, probe, progress=False, batch_size=batch_size)

    def ours_distances() -> None:
        for prev in previous_codes:
            current.distance(prev, reduce="none")

    def ours_step() -> None:
        fresh = ours_codes()
        for prev in previous_codes:
            fresh.distance(prev, reduce="none")

    # The authors' step mutates its FIFO: each timed call works on a copy of the window.
    window_copy = list(authors.prevs)

    def authors_step() -> None:
        authors.prevs = list(window_copy)
        authors.step(model, probe, batch_size)

    captured = authors.activations(model, probe, batch_size)

    def authors_detection_only() -> None:  # everything of the step but the forward pass with its copies
        authors.prevs = list(window_copy)
        authors.distances(captured)
        authors.push(captured)

    def authors_capture() -> None:
        authors.activations(model, probe, batch_size)

    flat = {name: torch.cat(acts).reshape(probe.shape[0], -1) for name, acts in captured.items()}

    def ours_pack_direct() -> None:  # packing the same activations, outside the forward pass
        for acts in flat.values():
            ops.pack_signs(acts)

    def authors_copies_direct() -> None:  # the float copies the authors' hooks make
        for acts in captured.values():
            for a in acts:
                a.to("cpu", copy=True)

    t: dict[str, float] = {}
    all_times: dict[str, list[float]] = {}
    for name, fn in [
        ("probe_forward", plain_forward),
        ("ours_codes", ours_codes),
        ("ours_distances", ours_distances),
        ("ours_step", ours_step),
        ("ours_pack_direct", ours_pack_direct),
        ("authors_copies_direct", authors_copies_direct),
        ("authors_capture", authors_capture),
        ("authors_detection_only", authors_detection_only),
        ("authors_step", authors_step),
    ]:
        t[name], all_times[name] = median_time(fn, args.repeats, args.warmup)
    authors.prevs = list(window_copy)

    # Own work = in-pass work (timed directly on the captured activations: subtracting two
    # noisy medians of the whole pass is not reliable on a shared machine) + the comparisons.
    ours_own = t["ours_pack_direct"] + t["ours_distances"]
    authors_own = t["authors_copies_direct"] + t["authors_detection_only"]
    # The same read as (pass with hooks - plain pass): includes hook overhead, noisy.
    ours_own_subtracted = t["ours_codes"] - t["probe_forward"] + t["ours_distances"]
    authors_own_subtracted = t["authors_capture"] - t["probe_forward"] + t["authors_detection_only"]
    ours_bytes = sum(c.nbytes for c in previous_codes)
    authors_bytes = authors.stored_bytes()

    rows = [
        ("probe forward pass (shared)", t["probe_forward"], t["probe_forward"], None),
        ("detection beyond the forward pass", ours_own, authors_own, authors_own / ours_own if ours_own else None),
        ("  ...in the pass: packing / float copies", t["ours_pack_direct"], t["authors_copies_direct"],
         t["authors_copies_direct"] / t["ours_pack_direct"] if t["ours_pack_direct"] else None),
        (f"  ...{WINDOW} distances (+ FIFO copy)", t["ours_distances"], t["authors_detection_only"],
         t["authors_detection_only"] / t["ours_distances"] if t["ours_distances"] else None),
        ("whole EB step", t["ours_step"], t["authors_step"], t["authors_step"] / t["ours_step"]),
    ]
    print()
    header = f"{'measurement':<38} {'fastspline ms':>14} {'authors ms':>12} {'ratio':>8}"
    print(header)
    print("-" * len(header))
    for label, ours, theirs, ratio in rows:
        print(f"{label:<38} {ours * 1e3:>14.2f} {theirs * 1e3:>12.2f} {'' if ratio is None else f'{ratio:.1f}x':>8}")
    print(f"{'window storage (bytes)':<38} {ours_bytes:>14,} {authors_bytes:>12,} {authors_bytes / ours_bytes:>7.1f}x")
    print("ratio = authors / fastspline")

    fraction = ours_own / epoch_s
    goals = [
        {"name": "EB step's own work / training epoch", "value": fraction, "goal": "<= 0.01", "met": fraction <= 0.01},
        {"name": "same, read as (coded pass - plain pass) + distances (noisy)", "value": ours_own_subtracted / epoch_s,
         "goal": None, "met": None},
        {"name": "probe forward / training epoch (reported separately)", "value": t["probe_forward"] / epoch_s, "goal": None, "met": None},
        {"name": "detection beyond the forward pass: authors / fastspline time", "value": authors_own / ours_own if ours_own else None,
         "goal": ">= 5", "met": bool(ours_own and authors_own / ours_own >= 5)},
        {"name": "detection beyond the forward pass, read by subtraction (noisy): authors / fastspline time",
         "value": authors_own_subtracted / ours_own_subtracted if ours_own_subtracted > 0 else None, "goal": None, "met": None},
        {"name": "whole EB step (forward included): authors / fastspline time", "value": t["authors_step"] / t["ours_step"], "goal": None, "met": None},
        {"name": "window memory: authors / fastspline bytes", "value": authors_bytes / ours_bytes, "goal": ">= 20", "met": authors_bytes / ours_bytes >= 20},
    ]
    print()
    for goal in goals:
        value = "n/a" if goal["value"] is None else f"{goal['value']:.4g}"
        verdict = "" if goal["goal"] is None else f" (goal {goal['goal']}) {'MET' if goal['met'] else 'NOT MET'}"
        print(f"{'goal' if goal['goal'] else 'info'}: {goal['name']}: {value}{verdict}")

    payload = {
        "benchmark": "bench_earlybird",
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": {"cpu": cpu_info()["model"], "usable_cpus": len(os.sched_getaffinity(0)), "torch_threads": torch.get_num_threads()},
        "load_average_at_start": load_start,
        "load_average_at_end": os.getloadavg()[0],
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "fastspline": fastspline.__version__},
        "build_info": fastspline.build_info(),
        "setting": {
            "data": "digits", "train_samples": len(split.train), "model": args.model, "width": args.width,
            "parameters": sum(p.numel() for p in model.parameters()), "forward_flops_per_image": forward_flops,
            "probe_samples": int(probe.shape[0]), "window": WINDOW, "batch_size": batch_size,
            "coded_layers": current.names, "bits_per_probe_input": current.n_units,
        },
        "repeats": args.repeats,
        "warmup": args.warmup,
        "training_epoch_s": {"median": epoch_s, "all": epoch_times},
        "median_s": t,
        "times_s": all_times,
        "derived_s": {
            "ours_own_work": ours_own, "authors_own_work": authors_own,
            "ours_own_work_subtracted": ours_own_subtracted, "authors_own_work_subtracted": authors_own_subtracted,
        },
        "window_bytes": {"fastspline": ours_bytes, "authors": authors_bytes},
        "distances": {"fastspline": ours_d, "authors": theirs_d},
        "goals": goals,
    }
    atomic_write_json(args.out, payload)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
