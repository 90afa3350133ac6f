"""The ``fastspline`` command line (also ``python -m fastspline.cli``).

Subcommands are registered in :data:`COMMANDS` (name -> function adding its
parser); each parser sets ``func`` (runs it, returns an exit status) and may set
``check`` (``check(parser, args)``, validates, calls ``parser.error``). Argument groups (:func:`add_data_arguments`,
:func:`add_model_arguments`, :func:`add_training_arguments`,
:func:`add_earlybird_arguments`) are shared so later commands (``prune``,
``pipeline``, ``bench``) take the same flags.

``fastspline train --model vgg11 --data digits --epochs 40 --eb spline mask``
trains with the paper's recipe, prints one line per epoch (loss, accuracy,
EB distances, training FLOPs), reports the epoch at which each EB detector (and
each ``--eb-threshold``) fires, and writes a run folder (``--out``):
``history.json`` (arguments, per-epoch records, EB summaries and distance
matrices), ``checkpoint.pt`` (latest state, for ``--resume``) and
``eb-<detector>.pt`` (the model at the EB epoch, with its config).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["main", "build_parser", "COMMANDS", "write_json"]


# ---------------------------------------------------------------- shared argument groups


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    from fastspline.data import DATASETS

    group = parser.add_argument_group("data")
    group.add_argument("--data", required=True, choices=DATASETS, help="dataset (shipped with packages; CIFAR from --data-root)")
    group.add_argument("--data-root", default=None, help="folder holding the extracted CIFAR python version")
    group.add_argument("--seed", type=int, default=0, help="seed of the model's initialisation, the batch order and the split")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    from fastspline.models import MODEL_NAMES

    group = parser.add_argument_group("model")
    group.add_argument("--model", required=True, choices=MODEL_NAMES, help="architecture")
    group.add_argument("--width", type=float, default=1.0, help="multiplier of every prunable width (default 1.0)")
    group.add_argument("--hidden", type=int, nargs="+", default=[256, 256], help="hidden sizes of --model mlp")


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("training (paper recipe by default)")
    group.add_argument("--epochs", type=int, default=40)
    group.add_argument("--batch-size", type=int, default=128)
    group.add_argument("--lr", type=float, default=0.1)
    group.add_argument("--momentum", type=float, default=0.9)
    group.add_argument("--weight-decay", type=float, default=1e-4)
    group.add_argument("--milestones", type=int, nargs="*", default=None, help="lr x0.1 after these epochs (default 50%% and 75%%)")
    group.add_argument("--sparsity", type=float, default=1e-4, help="BN-gamma L1 penalty s (network slimming; 0 disables)")
    group.add_argument("--device", default="cpu")
    group.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")


def add_earlybird_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("early-bird detection")
    group.add_argument(
        "--eb", nargs="+", choices=("spline", "mask", "none"), default=["spline"],
        help="detectors to run on the same training (default spline)",
    )
    group.add_argument(
        "--eb-threshold", type=float, nargs="+", default=[0.16],
        help="spline thresholds; the first decides, every one is reported (default 0.16)",
    )
    group.add_argument("--eb-window", type=int, default=3, help="spline window (default 3)")
    group.add_argument("--probe", choices=("train", "canvas"), default="train", help="spline probe: training subset or canvas")
    group.add_argument("--probe-size", type=int, default=512, help="training inputs in the probe (default 512)")
    group.add_argument("--canvas-size", type=int, default=32, help="canvas grid side n (n*n inputs, default 32)")
    group.add_argument("--history-depth", type=int, default=None, help="epochs each epoch is compared with for the heatmap")
    group.add_argument("--mask-ratio", type=float, default=0.5, help="mask EB pruning ratio p (default 0.5)")
    group.add_argument("--mask-threshold", type=float, default=0.1, help="mask EB threshold (default 0.1)")
    group.add_argument("--mask-window", type=int, default=5, help="mask EB FIFO length (default 5)")
    group.add_argument("--stop-at-eb", action="store_true", help="stop training when the first detector given fires")


# ---------------------------------------------------------------- helpers


def write_json(path: str | os.PathLike, payload: Any) -> None:
    """Write JSON atomically (temp file beside ``path`` + ``os.replace``); NaN/inf become null."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        _usual_mode(temp)
        with os.fdopen(fd, "w") as f:
            json.dump(_finite(payload), f, indent=1, allow_nan=False)
            f.write("\n")
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)


def _usual_mode(path: str) -> None:
    umask = os.umask(0)  # mkstemp makes 0600; use open()'s 0666 minus umask
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _matrix(tensor: Any) -> list[list[float | None]]:
    return [[None if math.isnan(v) else round(v, 6) for v in row] for row in tensor.tolist()]


def _format_flops(flops: float) -> str:
    return f"{flops / 1e12:.3f} TFLOPs" if flops >= 1e12 else f"{flops / 1e9:.2f} GFLOPs"


# ---------------------------------------------------------------- train


def add_train_command(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a model with early-bird detection",
        description="Train with the paper's recipe (SGD 0.1, momentum 0.9, wd 1e-4, lr x0.1 at 50%%/75%%, "
        "BN-L1 1e-4) and report the spline / mask early-bird epochs.",
    )
    add_model_arguments(parser)
    add_data_arguments(parser)
    add_training_arguments(parser)
    add_earlybird_arguments(parser)
    parser.add_argument("--out", default=None, help="run folder (default runs/<model>-<data>-s<seed>)")
    parser.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt if it exists")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    parser.set_defaults(func=run_train, check=_check_train_args)


def _check_train_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.epochs < 1:
        parser.error(f"--epochs must be >= 1, got {args.epochs}")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    if not args.width > 0:
        parser.error(f"--width must be > 0, got {args.width}")
    if "none" in args.eb and len(args.eb) > 1:
        parser.error("--eb none cannot be combined with other detectors")
    for t in args.eb_threshold:
        if not 0 <= t <= 1:
            parser.error(f"--eb-threshold values must be in [0, 1], got {t}")
    if args.eb_window < 1 or args.mask_window < 2:
        parser.error(f"--eb-window must be >= 1 and --mask-window >= 2, got {args.eb_window}, {args.mask_window}")
    if not 0 <= args.mask_ratio < 1:
        parser.error(f"--mask-ratio must be in [0, 1), got {args.mask_ratio}")
    if args.probe_size < 1 or args.canvas_size < 2:
        parser.error(f"--probe-size must be >= 1 and --canvas-size >= 2, got {args.probe_size}, {args.canvas_size}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")


def run_train(args: argparse.Namespace) -> int:
    import torch

    from fastspline import data as datasets
    from fastspline import models, train
    from fastspline.earlybird import MaskEarlyBird, SplineEarlyBird

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    out = Path(args.out or f"runs/{args.model}-{args.data}-s{args.seed}")
    out.mkdir(parents=True, exist_ok=True)
    split = datasets.load(args.data, root=args.data_root, seed=args.seed)
    train.seed_everything(args.seed)
    model = models.create(args.model, split.input_shape, split.num_classes, width=args.width, hidden=args.hidden)
    model.to(args.device)

    detectors: list[Any] = []
    if "spline" in args.eb:
        if args.probe == "train":
            probe = datasets.probe_subset(split.train, args.probe_size, seed=args.seed)
        else:
            img0, img1 = datasets.canvas_pair(split.test, seed=args.seed)
            probe = datasets.canvas(img0, img1, args.canvas_size)
        detectors.append(
            SplineEarlyBird(
                probe, args.eb_threshold[0], args.eb_window, report_thresholds=args.eb_threshold[1:],
                history_depth=args.history_depth, device=args.device,
            )
        )
    if "mask" in args.eb:
        detectors.append(MaskEarlyBird(args.mask_ratio, args.mask_threshold, args.mask_window))

    def save_at_eb(model: torch.nn.Module, epoch: int, record: dict[str, Any]) -> bool:
        for detector in detectors:
            if detector.epoch == epoch:
                train.atomic_save(
                    {"epoch": epoch, "detector": detector.name, "model": model.state_dict(), "model_config": model.config()},
                    out / f"eb-{detector.name}.pt",
                )
        return bool(args.stop_at_eb and detectors and detectors[0].found)

    spline = next((d for d in detectors if d.name == "spline"), None)

    def report(model: torch.nn.Module, epoch: int, record: dict[str, Any]) -> None:
        probe_passes = len(spline.epochs) if spline is not None else 0
        record["probe_flops"] = (spline.probe_flops or 0) * probe_passes if spline is not None else 0
        if args.quiet:
            return
        parts = [
            f"epoch {epoch:3d}/{args.epochs}",
            f"loss {record['train_loss']:.4f}",
            f"train {record['train_acc']:6.2f}%",
        ]
        if record["test_acc"] is not None:
            parts.append(f"test {record['test_acc']:6.2f}%")
        for detector in detectors:
            d = record.get(f"{detector.name}_distance")
            parts.append(f"d_{detector.name} {'  -   ' if d is None else f'{d:.4f}'}")
        flops = _format_flops(record["cumulative_flops"])
        if record["probe_flops"]:
            flops += f" (+probe {_format_flops(record['probe_flops'])})"
        parts += [flops, f"{record['seconds']:.1f}s"]
        print("  ".join(parts), flush=True)
        for detector in detectors:
            for threshold, fired in detector.fired.items():
                if fired == epoch:
                    print(f"  -> {detector.name} EB found at epoch {epoch} (threshold {threshold:g})", flush=True)

    print(
        f"fastspline train: {args.model} (width {args.width:g}, {sum(p.numel() for p in model.parameters()):,} parameters) "
        f"on {split!r}; EB: {', '.join(args.eb)}; run folder {out}",
        flush=True,
    )
    started = time.perf_counter()
    history = train.fit(
        model, split.train, split.test, args.epochs,
        lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay, milestones=args.milestones,
        batch_size=args.batch_size, sparsity=args.sparsity, callbacks=[*detectors, save_at_eb, report],
        checkpoint=out / "checkpoint.pt", resume=args.resume, seed=args.seed, device=args.device, progress=False,
    )
    elapsed = time.perf_counter() - started

    results: dict[str, Any] = {}
    for detector in detectors:
        summary = detector.summary()
        eb_epoch = detector.epoch
        if eb_epoch is not None:
            at_eb = history[eb_epoch - 1]
            summary["cumulative_flops_at_eb"] = at_eb["cumulative_flops"]
            summary["test_acc_at_eb"] = at_eb["test_acc"]
        summary["history"] = _matrix(detector.history)
        if detector.name == "spline":
            summary["layer_history"] = {name: _matrix(m) for name, m in detector.layer_history.items()}
        results[detector.name] = summary
    final = history[-1]
    write_json(
        out / "history.json",
        {
            "command": "train",
            "argv": sys.argv,
            "args": {k: v for k, v in vars(args).items() if k not in ("func", "check")},
            "data": {"name": split.name, "train": len(split.train), "test": len(split.test), "input_shape": split.input_shape,
                     "num_classes": split.num_classes, "mean": split.mean, "std": split.std},
            "model_config": model.config(),
            "parameters": sum(p.numel() for p in model.parameters()),
            "records": history.records,
            "stopped_early": history.stopped_early,
            "earlybird": results,
            "seconds": elapsed,
        },
    )

    print(
        f"done: {len(history)} epochs, test accuracy {final['test_acc']:.2f}%, "
        f"{_format_flops(final['cumulative_flops'])} of training, {elapsed:.0f}s"
    )
    for detector in detectors:
        fired = ", ".join(f"{t:g} -> {'never' if e is None else f'epoch {e}'}" for t, e in detector.fired.items())
        extra = f" (p = {detector.ratio:g})" if detector.name == "mask" else ""
        print(f"{detector.name} EB{extra}: {fired}")
    print(f"wrote {out / 'history.json'}")
    return 0


# ---------------------------------------------------------------- entry point

COMMANDS: dict[str, Callable[[Any], None]] = {"train": add_train_command}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastspline", description="Spline early-bird detection and pruning of ReLU networks."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="command")
    subparsers.required = True
    for add_command in COMMANDS.values():
        add_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the subcommand, return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check = getattr(args, "check", None)
    if check is not None:  # a command's own validation, reported as a usage error
        check(parser, args)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
