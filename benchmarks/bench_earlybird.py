#!/usr/bin/env python
"""Benchmark spline early-bird detection on digits with the VGG-style model.

(a) Cost of the EB step beside training: the step's own work (everything
    ``codes()`` adds to the probe's forward pass -- hooks, packing, NaN checks --
    plus the window's Hamming distances) as a fraction of one training epoch
    (goal <= 1%); the probe's forward pass is reported separately.
(b) Against the authors' detection (Spline-EB ``detect_eb``: every BatchNorm
    output kept as float32 for the window, distance = mean of
    ``(a > 0) != (b > 0)``), on the same model and probe: time and memory ratios
    (goals >= 5x faster, >= 20x less memory). The time goal is read on the
    detection work beyond the forward pass both share (``detect_eb`` also does
    a forward pass over the probe); the whole step's ratio is reported too.

What a pass with hooks adds to the plain pass is measured in ``--pairs``
back-to-back pairs (hooked pass, plain pass), alternating which runs first:
the median of the differences (both runs of a pair see the same machine load).
The other measurements: ``--warmup`` untimed calls, then the median of
``--repeats`` ``time.perf_counter`` timings. Packing timed alone on captured
activations (no pass around it) is printed as information only: it leaves out
the hooks and the NaN checks. Both detectors are checked to give the same
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
from shared import median_time, paired_extra
from fastspline.codes import codes
from fastspline.earlybird import SplineEarlyBird

WINDOW = 3


def probe_pass(model: nn.Module, probe: torch.Tensor, batch_size: int) -> None:
    """A plain forward pass over the probe (eval mode, no_grad), in batches."""
    model.eval()
    with torch.no_grad():
        for batch in probe.split(batch_size):
            model(batch)


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
        try:
            probe_pass(model, probe, batch_size)
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
    parser.add_argument("--pairs", type=int, default=None, help="(hooked pass, plain pass) pairs (default 21, --quick 4)")
    parser.add_argument("--epoch-repeats", type=int, default=None, help="timed training epochs (default 3, --quick 1)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads (default: all usable)")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default: benchmarks/results/earlybird-cpu.json; earlybird-cpu-quick.json with --quick)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.width is None:
        args.width = 0.25 if args.quick else 1.0
    if args.repeats is None:
        args.repeats = 2 if args.quick else 5
    if args.pairs is None:
        args.pairs = 4 if args.quick else 21
    if args.epoch_repeats is None:
        args.epoch_repeats = 1 if args.quick else 3
    if min(args.repeats, args.pairs, args.epoch_repeats, args.threads, args.probe_size) < 1 or args.warmup < 0:
        parser.error("need --repeats, --pairs, --epoch-repeats, --threads, --probe-size >= 1 and --warmup >= 0")
    if args.out is None:
        args.out = RESULTS_DIR / ("earlybird-cpu-quick.json" if args.quick else "earlybird-cpu.json")
    return args


def training_epochs(model: nn.Module, split: data.Split, epochs: int) -> list[float]:
    """Seconds of each of ``epochs`` steady training epochs (fit's per-epoch ``seconds``, BN-L1 on).
    One more epoch runs first and is dropped: it also counts the FLOPs of each batch shape."""
    history = train.fit(model, split.train, None, epochs + 1, progress=False, sparsity=1e-4)
    return [record["seconds"] for record in history.records[1:]]


def other_setting(data_name: str, model_name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Goal (a) on another of the issue's settings: SplineEarlyBird.step beyond the plain
    probe pass (paired) as a fraction of a training epoch (default model, the same probe size)."""
    split = data.mnist1d() if data_name == "mnist1d" else getattr(data, data_name)(seed=args.seed)
    train.seed_everything(args.seed)
    model = models.create(model_name, split.input_shape, split.num_classes)
    probe = data.probe_subset(split.train, min(args.probe_size, len(split.train)), seed=args.seed)
    epoch_times = training_epochs(model, split, args.epoch_repeats)
    eb = SplineEarlyBird(probe, window=WINDOW, keep_history=False, count_flops=False)
    for epoch in range(1, WINDOW + 1):
        eb.step(model, epoch)
    next_epoch = iter(range(WINDOW + 1, 10**9))

    def plain_forward() -> None:
        probe_pass(model, probe, eb.batch_size)

    forward_s, _ = median_time(plain_forward, args.repeats, args.warmup)
    extra_s, extras = paired_extra(lambda: eb.step(model, next(next_epoch)), plain_forward, args.pairs, args.warmup)
    epoch_s = statistics.median(epoch_times)
    return {
        "data": data_name, "model": model_name, "train_samples": len(split.train), "probe_samples": int(probe.shape[0]),
        "batch_size": eb.batch_size, "coded_layers": len(eb.layer_names), "training_epoch_s": epoch_s, "probe_forward_s": forward_s,
        "eb_step_beyond_forward_s": extra_s, "pairs_s": extras, "fraction_of_epoch": extra_s / epoch_s,
    }


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
    picker = SplineEarlyBird(probe, window=WINDOW, count_flops=False)
    picker.codes_of(model)
    batch_size = picker.batch_size  # SplineEarlyBird's default; the authors' pass uses the same batches
    forward_flops = train.count_flops(model, probe[:1])
    print(
        f"model {args.model} width {args.width:g}: {sum(p.numel() for p in model.parameters()):,} parameters, "
        f"{forward_flops / 1e6:.1f} MFLOPs per image; probe {tuple(probe.shape)}"
    )

    # -- training epochs (the model trains on, so later codes are of a trained net)
    epoch_times = training_epochs(model, split, args.epoch_repeats)
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
        probe_pass(model, probe, batch_size)

    # The library's own step: SplineEarlyBird with the window filled by the previous states.
    eb = SplineEarlyBird(probe, window=WINDOW, keep_history=False, batch_size=batch_size, count_flops=False)
    for epoch, state in enumerate(states[:-1], 1):
        model.load_state_dict(state)
        eb.step(model, epoch)
    model.load_state_dict(states[-1])
    next_epoch = iter(range(WINDOW + 1, 10**9))

    def ours_codes() -> Any:
        return eb.codes_of(model)

    def ours_distances() -> None:
        for prev in previous_codes:
            current.distance(prev, reduce="none")

    def ours_step() -> None:  # codes of the probe + WINDOW distances; the FIFO keeps WINDOW codes
        eb.step(model, next(next_epoch))

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
    in_pass, pair_extras = {}, {}
    for name, fn in [("ours_codes", ours_codes), ("authors_capture", authors_capture),
                     ("ours_step", ours_step), ("authors_step", authors_step)]:
        in_pass[name], pair_extras[name] = paired_extra(fn, plain_forward, args.pairs, args.warmup)
    authors.prevs = list(window_copy)

    # Own work = what a whole EB step adds to the plain probe pass, paired.
    ours_own = in_pass["ours_step"]
    authors_own = in_pass["authors_step"]
    ours_bytes = sum(c.nbytes for c in previous_codes)
    authors_bytes = authors.stored_bytes()

    def ratio(theirs: float, ours: float) -> float | None:
        return theirs / ours if ours > 0 else None

    rows = [
        ("probe forward pass (shared)", t["probe_forward"], t["probe_forward"], None),
        ("EB step beyond the forward pass", ours_own, authors_own, ratio(authors_own, ours_own)),
        ("  ...added to the pass (paired)", in_pass["ours_codes"], in_pass["authors_capture"],
         ratio(in_pass["authors_capture"], in_pass["ours_codes"])),
        (f"  ...{WINDOW} distances (+ FIFO copy)", t["ours_distances"], t["authors_detection_only"],
         ratio(t["authors_detection_only"], t["ours_distances"])),
        ("  (info: packing / copies alone)", t["ours_pack_direct"], t["authors_copies_direct"],
         ratio(t["authors_copies_direct"], t["ours_pack_direct"])),
        ("whole EB step", t["ours_step"], t["authors_step"], t["authors_step"] / t["ours_step"]),
    ]
    print()
    header = f"{'measurement':<38} {'fastspline ms':>14} {'authors ms':>12} {'ratio':>8}"
    print(header)
    print("-" * len(header))
    for label, ours, theirs, r in rows:
        print(f"{label:<38} {ours * 1e3:>14.2f} {theirs * 1e3:>12.2f} {'' if r is None else f'{r:.1f}x':>8}")
    print(f"{'window storage (bytes)':<38} {ours_bytes:>14,} {authors_bytes:>12,} {authors_bytes / ours_bytes:>7.1f}x")
    print(f"ratio = authors / fastspline; 'beyond' / 'added to' the pass: medians over {args.pairs} (step, plain pass) pairs")

    fraction = ours_own / epoch_s
    speedup = ratio(authors_own, ours_own)
    goals = [
        {"name": "EB step's own work (SplineEarlyBird.step - plain probe pass, paired) / training epoch",
         "value": fraction, "goal": "<= 0.01", "met": fraction <= 0.01},
        {"name": "packing alone, timed on captured activations, + distances / training epoch",
         "value": (t["ours_pack_direct"] + t["ours_distances"]) / epoch_s, "goal": None, "met": None},
        {"name": "probe forward / training epoch (reported separately)", "value": t["probe_forward"] / epoch_s, "goal": None, "met": None},
        {"name": "EB step beyond the forward pass (paired): authors / fastspline time", "value": speedup,
         "goal": ">= 5", "met": speedup is not None and speedup >= 5},
        {"name": "whole EB step (forward included): authors / fastspline time", "value": t["authors_step"] / t["ours_step"], "goal": None, "met": None},
        {"name": "window memory: authors / fastspline bytes", "value": authors_bytes / ours_bytes, "goal": ">= 20", "met": authors_bytes / ours_bytes >= 20},
    ]
    others = []
    for data_name, model_name in [("mnist1d", "cnn1d"), ("toy_x", "mlp")]:
        try:
            other = other_setting(data_name, model_name, args)
        except ImportError as exc:  # mnist1d needs the [data] extra
            print(f"\n{data_name} / {model_name}: skipped ({exc})")
            continue
        others.append(other)
        goals.append({
            "name": f"{data_name} / {model_name} (train {other['train_samples']:,}, probe {other['probe_samples']}): "
                    f"EB step's own work / training epoch ({other['eb_step_beyond_forward_s'] * 1e3:.2f} ms of "
                    f"{other['training_epoch_s'] * 1e3:.0f} ms; probe pass {other['probe_forward_s'] * 1e3:.2f} ms)",
            "value": other["fraction_of_epoch"], "goal": None, "met": None,
        })

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
        "pairs": args.pairs,
        "warmup": args.warmup,
        "training_epoch_s": {"median": epoch_s, "all": epoch_times},
        "median_s": t,
        "times_s": all_times,
        "added_to_pass_s": {"median": in_pass, "pairs": pair_extras},
        "derived_s": {"ours_own_work": ours_own, "authors_own_work": authors_own},
        "window_bytes": {"fastspline": ours_bytes, "authors": authors_bytes},
        "distances": {"fastspline": ours_d, "authors": theirs_d},
        "other_settings": others,
        "goals": goals,
    }
    atomic_write_json(args.out, payload)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
