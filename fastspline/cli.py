"""The ``fastspline`` command line (also ``python -m fastspline.cli``).

Subcommands are registered in :data:`COMMANDS` (name -> function adding its
parser); each parser sets ``func`` (runs it, returns an exit status) and may set
``check`` (``check(parser, args)``, validates, calls ``parser.error``). Argument groups (:func:`add_data_arguments`,
:func:`add_model_arguments`, :func:`add_training_arguments`,
:func:`add_earlybird_arguments`) are shared, so ``run`` takes ``train``'s model,
data and training flags.

``fastspline train --model vgg11 --data digits --epochs 40 --eb spline mask``
trains with the paper's recipe, prints one line per epoch (loss, accuracy,
EB distances, training FLOPs), reports the epoch at which each EB detector (and
each ``--eb-threshold``) fires, and writes a run folder (``--out``):
``history.json`` (arguments, per-epoch records, EB summaries and distance
matrices), ``checkpoint.pt`` (latest state, for ``--resume``) and
``eb-<detector>.pt`` (the model at the EB epoch, with its config).

``fastspline run --model vgg-small --data digits --ratio 0.5 --eb spline [--compare] [--seeds 5]``
runs early bird -> prune -> retrain (:mod:`fastspline.pipeline`) and prints the
table of accuracies at each stage, parameters, FLOPs and the saving against dense
training; ``fastspline demo`` is that comparison on digits, sized for a few minutes.

``fastspline bench ops --quick`` runs a benchmark script (benchmarks/bench_*.py: kernel
ops on the CPU or a GPU, codes(), early bird, pruning, distributed) and leaves its JSON.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fastspline._files import atomic_write

__all__ = ["main", "build_parser", "COMMANDS", "write_json"]


# ---------------------------------------------------------------- shared argument groups


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    from fastspline.data import DATASETS

    group = parser.add_argument_group("data")
    group.add_argument("--data", required=True, choices=DATASETS,
                       help="dataset (shipped with packages; CIFAR and image-folder from --data-root)")
    group.add_argument("--data-root", default=None,
                       help="folder holding the extracted CIFAR python version, or the class folders of image-folder "
                            "(<root>/<class>/<image>, or <root>/train and <root>/val; read at 32 x 32 RGB)")
    group.add_argument("--seed", type=int, default=0, help="seed of the model's initialisation, the batch order and the split")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    from fastspline.models import MODEL_NAMES

    group = parser.add_argument_group("model")
    group.add_argument("--model", required=True, choices=MODEL_NAMES, help="architecture")
    group.add_argument("--width", type=float, default=1.0, help="multiplier of every prunable width (default 1.0)")
    group.add_argument("--hidden", type=int, nargs="+", default=None, help="hidden sizes of --model mlp (default 256 256)")


def add_training_arguments(parser: argparse.ArgumentParser, threads: str = "torch's choice") -> None:
    group = parser.add_argument_group("training (paper recipe by default)")
    group.add_argument("--epochs", type=int, default=40)
    group.add_argument("--batch-size", type=int, default=128)
    group.add_argument("--lr", type=float, default=0.1)
    group.add_argument("--momentum", type=float, default=0.9)
    group.add_argument("--weight-decay", type=float, default=1e-4)
    group.add_argument("--milestones", type=int, nargs="*", default=None, help="lr x0.1 after these epochs (default 50%% and 75%%)")
    group.add_argument("--sparsity", type=float, default=1e-4, help="BN-gamma L1 penalty s (network slimming; 0 disables)")
    group.add_argument("--device", default="cpu")
    group.add_argument("--threads", type=int, default=None, help=f"torch CPU threads (default: {threads})")


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
    """Write JSON atomically (see :func:`fastspline._files.atomic_write`); NaN/inf become null."""
    # Serialised first: a payload that is not JSON raises before any file is touched.
    text = json.dumps(_finite(payload), indent=1, allow_nan=False) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


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
        description="Train with the paper's recipe (SGD 0.1, momentum 0.9, wd 1e-4, lr x0.1 at 50%/75%, "
        "BN-L1 1e-4) and report the spline / mask early-bird epochs.",
    )
    add_model_arguments(parser)
    add_data_arguments(parser)
    add_training_arguments(parser)
    add_earlybird_arguments(parser)
    parser.add_argument("--out", default=None, help="run folder (default runs/<model>-<data>-s<seed>)")
    parser.add_argument(
        "--resume", action="store_true",
        help="continue from <out>/checkpoint.pt if it exists, with that run's settings (--epochs may grow; "
        "the lr milestones stay the first run's; without --stop-at-eb a run stopped at its EB trains on)",
    )
    parser.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    parser.set_defaults(func=run_train, check=_check_train_args)


def _check_train_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.epochs < 1:
        parser.error(f"--epochs must be >= 1, got {args.epochs}")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    if not args.width > 0:
        parser.error(f"--width must be > 0, got {args.width}")
    if not math.isfinite(args.width):
        parser.error(f"--width must be finite, got {args.width}")
    _check_hidden(parser, args)
    if any(h < 1 for h in args.hidden):
        parser.error(f"--hidden sizes must be >= 1, got {args.hidden}")
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
    if args.seed < 0:
        parser.error(f"--seed must be >= 0, got {args.seed}")
    if not args.lr > 0 or not math.isfinite(args.lr):
        parser.error(f"--lr must be a finite number > 0, got {args.lr}")
    for name in ("momentum", "weight_decay", "sparsity"):
        value = getattr(args, name)
        if not value >= 0 or not math.isfinite(value):
            parser.error(f"--{name.replace('_', '-')} must be a finite number >= 0, got {value}")
    if any(m < 1 for m in args.milestones or ()):
        parser.error(f"--milestones must be >= 1, got {args.milestones}")
    if args.history_depth is not None and args.history_depth < args.eb_window:
        parser.error(f"--history-depth must be >= --eb-window ({args.eb_window}), got {args.history_depth}")
    _check_device(parser, args.device)
    _check_data_root(parser, args)
    _check_out_folder(parser, "--out", args.out)


def _check_hidden(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--hidden is the mlp's; given with another model it would be ignored."""
    if args.hidden is not None and args.model != "mlp":
        parser.error(f"--hidden sets the hidden sizes of --model mlp; --model {args.model} has none (use --width)")
    if args.hidden is None:
        args.hidden = [256, 256]


def _check_device(parser: argparse.ArgumentParser, name: str) -> None:
    import torch

    try:
        device = torch.device(name)
    except RuntimeError:
        parser.error(f"--device {name!r} is not a torch device (e.g. cpu, cuda, cuda:1)")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {name!r}: CUDA is not available here")


def _check_data_root(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.data in ("cifar10", "cifar100") and args.data_root is None:
        parser.error(
            f"--data {args.data} needs --data-root (the folder holding the extracted CIFAR python version; nothing is downloaded)"
        )
    if args.data == "image-folder" and args.data_root is None:
        parser.error("--data image-folder needs --data-root (the folder of class folders; nothing is downloaded)")
    if args.data_root is not None and not Path(args.data_root).is_dir():
        parser.error(f"--data-root {args.data_root!r} is not a folder")


def _check_out_folder(parser: argparse.ArgumentParser, flag: str, value: str | None) -> None:
    """The folder (made later if missing) must not be, or sit under, a file."""
    if value is None:
        return
    path = Path(value)
    for folder in (path, *path.parents):
        if folder.exists():
            if not folder.is_dir():
                parser.error(f"{flag} {value!r}: {str(folder)!r} is a file, not a folder")
            return


# train's arguments that a resumed run must share with the run it continues (--epochs may
# grow; --device, --threads, --out, --quiet and --stop-at-eb may change).
_RUN_SETTINGS = (
    "model", "width", "hidden", "data", "seed", "batch_size", "lr", "momentum", "weight_decay", "milestones",
    "sparsity", "eb", "eb_threshold", "eb_window", "probe", "probe_size", "canvas_size", "history_depth",
    "mask_ratio", "mask_threshold", "mask_window",
)


def _run_settings(args: argparse.Namespace) -> dict[str, Any]:
    settings = {name: getattr(args, name) for name in _RUN_SETTINGS}
    if args.model != "mlp":
        del settings["hidden"]  # only the mlp reads it
    return settings


def run_train(args: argparse.Namespace) -> int:
    import torch

    from fastspline import data as datasets
    from fastspline import models, train
    from fastspline.earlybird import MaskEarlyBird, SplineEarlyBird

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    out = Path(args.out or f"runs/{args.model}-{args.data}-s{args.seed}")
    split = datasets.load(args.data, root=args.data_root, seed=args.seed)
    train.seed_everything(args.seed)
    model = models.create(args.model, split.input_shape, split.num_classes, width=args.width, hidden=args.hidden)
    model.to(args.device)
    out.mkdir(parents=True, exist_ok=True)  # only now: a run that cannot start leaves no empty folder

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
        first = next((d for d in detectors if d.name == args.eb[0]), None)  # the first given, not the first built
        return bool(args.stop_at_eb and first is not None and first.found)

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
    ran: list[int] = []
    try:
        history = train.fit(
            model, split.train, split.test, args.epochs,
            lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay, milestones=args.milestones,
            batch_size=args.batch_size, sparsity=args.sparsity,
            callbacks=[*detectors, save_at_eb, report, lambda model, epoch, record: ran.append(epoch)],
            checkpoint=out / "checkpoint.pt", resume=args.resume, seed=args.seed, device=args.device, progress=False,
            settings=_run_settings(args), resume_stopped=not args.stop_at_eb,
        )
    except train.ResumeError as exc:
        raise SystemExit(f"fastspline train: --resume: {exc}") from exc
    elapsed = time.perf_counter() - started
    if args.resume and not ran:
        why = "it stopped at its early bird (drop --stop-at-eb to train on)" if history.stopped_early else "it is complete"
        print(f"fastspline train: nothing to train in {out}: {why}; at epoch {len(history.records)} of {args.epochs}", flush=True)

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


# ---------------------------------------------------------------- run and demo (EB -> prune -> retrain)


def add_pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    """Pruning, early-bird, retraining and run flags of ``run``."""
    group = parser.add_argument_group("pruning")
    group.add_argument("--ratio", type=float, default=0.5, help="fraction of units removed (default 0.5)")
    group.add_argument(
        "--policy", nargs="+", default=None, metavar="POLICY",
        help="pruning policies, each run (default spline-layerwise; with --compare every policy)",
    )
    group.add_argument("--merge", nargs="+", default=["affine"], choices=("affine", "scale", "none"), help="merge modes, each run (default affine)")
    group.add_argument("--budget", choices=("channels", "flops"), default="channels", help="what --ratio counts (default channels)")
    group.add_argument(
        "--pair-rule", nargs="+", default=["importance"], choices=("importance", "merge-error"),
        help="removal order of the spline policies, each run (default importance; see docs/pruning.md)",
    )
    group = parser.add_argument_group("early bird and retraining")
    group.add_argument("--eb", choices=("spline", "mask", "none"), default="spline", help="prune at this EB epoch; none: after full training")
    group.add_argument("--eb-threshold", type=float, default=0.16, help="spline EB threshold (default 0.16)")
    group.add_argument("--eb-window", type=int, default=3, help="spline EB window (default 3)")
    group.add_argument("--mask-threshold", type=float, default=0.1, help="mask EB threshold (default 0.1; its ratio is --ratio)")
    group.add_argument("--mask-window", type=int, default=5, help="mask EB FIFO length (default 5)")
    group.add_argument("--probe-size", type=int, default=512, help="training inputs in the probe of EB and pruning (default 512)")
    group.add_argument("--retrain-epochs", type=int, default=None, help="retraining epochs of every pruned method (default: the remaining epochs)")
    group.add_argument(
        "--finetune-epochs", type=int, default=None,
        help="retraining after pruning a fully trained network (default --retrain-epochs, else epochs/4)",
    )
    group.add_argument("--retrain-sparsity", type=float, default=0.0, help="BN-L1 penalty while retraining (default 0)")
    group.add_argument(
        "--retrain-lr", type=float, default=None,
        help="lr of the first retraining epoch (default: the dense schedule's lr at that epoch; later decays as dense)",
    )
    group = parser.add_argument_group("runs")
    group.add_argument("--compare", action="store_true", help="also dense, mask EB + slimming, full training + slimming, every policy")
    group.add_argument("--seeds", type=int, default=1, help="number of seeds, from --seed on (default 1)")
    group.add_argument("--workers", type=int, default=1, help="processes running seeds in parallel (default 1)")
    group.add_argument("--out", default=None, help="run folder")
    group.add_argument("--save-models", action="store_true", help="also write the EB snapshots and the pruned models")
    group.add_argument("--quiet", action="store_true", help="no progress bar")


def add_run_command(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "run",
        help="early bird -> prune -> retrain, optionally compared with other methods",
        description="Dense training with EB detection; at the EB epoch plan, merge and slim; BN re-estimation; "
        "retraining for the remaining epochs; test accuracy after pruning, after BN re-estimation, after one "
        "retraining epoch and at the end; training FLOPs (probe passes and pruning included) against dense training. "
        "--compare adds dense training, mask EB + slimming, full training + slimming and every policy, on the same seeds. "
        "Each run uses --threads torch threads (default 1 here); --workers runs seeds in parallel processes.",
    )
    add_model_arguments(parser)
    add_data_arguments(parser)
    add_training_arguments(parser, threads="1, each run")
    add_pipeline_arguments(parser)
    parser.set_defaults(threads=1, func=run_pipeline_command, check=_check_pipeline_args)


def add_demo_command(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="the method comparison on the embedded digits data (a few minutes on 2 cores)",
        description="fastspline run --compare on scikit-learn's digits: VGG-style CNN (vgg-small), ratio 0.5, "
        "40 epochs, every pruning policy, 4 seeds in 2 processes; prints the table and writes runs/demo.",
    )
    parser.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    parser.add_argument("--seeds", type=int, default=4, help="seeds 0..N-1 (default 4)")
    parser.add_argument("--workers", type=int, default=2, help="processes (default 2, one per core)")
    parser.add_argument("--epochs", type=int, default=40, help="training epochs (default 40)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_demo_command, check=_check_demo_args)


def _check_pipeline_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    from fastspline import pruning

    for name in ("seeds", "workers"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    _check_hidden(parser, args)
    for policy in args.policy or ():
        if policy not in pruning.POLICIES:
            parser.error(f"--policy must be among {', '.join(pruning.POLICIES)}, got {policy!r}")
    if args.seed < 0:
        parser.error(f"--seed must be >= 0, got {args.seed}")
    _check_device(parser, args.device)
    _check_data_root(parser, args)
    _check_out_folder(parser, "--out", args.out)
    try:
        _pipeline_config(args).check()
    except (TypeError, ValueError) as exc:  # the config names the field; say it as the flag
        message = str(exc).removeprefix("PipelineConfig: ")
        field = message.split(" ", 1)[0]
        flag = {"policies": "policy", "merges": "merge", "pair_rules": "pair_rule"}.get(field, field).replace("_", "-").removesuffix("[]")
        parser.error(f"--{flag}{message[len(field):]}")


def _check_demo_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for name in ("seeds", "workers", "epochs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    _check_out_folder(parser, "--out", args.out)


def _pipeline_config(args: argparse.Namespace) -> Any:
    from fastspline import pipeline, pruning

    policies = args.policy or (pruning.POLICIES if args.compare else ("spline-layerwise",))
    return pipeline.PipelineConfig(
        model=args.model, data=args.data, data_root=args.data_root, width=args.width, hidden=tuple(args.hidden),
        ratio=args.ratio, eb=args.eb, policies=tuple(dict.fromkeys(policies)), merges=tuple(dict.fromkeys(args.merge)),
        pair_rules=tuple(dict.fromkeys(args.pair_rule)), budget=args.budget, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, momentum=args.momentum,
        weight_decay=args.weight_decay, milestones=None if args.milestones is None else tuple(args.milestones),
        sparsity=args.sparsity, retrain_epochs=args.retrain_epochs, finetune_epochs=args.finetune_epochs,
        retrain_sparsity=args.retrain_sparsity, retrain_lr=args.retrain_lr, eb_threshold=args.eb_threshold, eb_window=args.eb_window,
        mask_threshold=args.mask_threshold, mask_window=args.mask_window, probe_size=args.probe_size,
        device=args.device, threads=args.threads, save_models=args.save_models,
    )


def _print_results(results: dict[str, Any], out: Path) -> None:
    from fastspline import pipeline

    print()
    print(pipeline.markdown(results))
    print(f"{len(results['runs'])} seed(s) in {results['seconds']:.0f}s; wrote {out / 'results.json'} and {out / 'results.md'}")


def run_pipeline_command(args: argparse.Namespace) -> int:
    from fastspline import pipeline

    config = _pipeline_config(args)
    kind = "compare" if args.compare else "run"
    out = Path(args.out or f"runs/{kind}-{config.model}-{config.data}-p{config.ratio:g}")
    seeds = list(range(args.seed, args.seed + args.seeds))
    methods = pipeline.methods_for(config, compare=args.compare)
    print(
        f"fastspline {kind}: {config.model} on {config.data}, ratio {config.ratio:g}, {config.epochs} epochs, "
        f"{len(methods)} method(s) x {len(seeds)} seed(s), {args.workers} worker(s); run folder {out}",
        flush=True,
    )
    results = pipeline.run_methods(
        config, methods, seeds, out=out, progress=not args.quiet, workers=args.workers, title=f"fastspline {kind}"
    )
    _print_results(results, out)
    return 0


def run_demo_command(args: argparse.Namespace) -> int:
    from fastspline import pipeline, pruning

    config = pipeline.PipelineConfig(
        model="vgg-small", data="digits", ratio=0.5, eb="spline", policies=pruning.POLICIES, epochs=args.epochs, threads=1,
    )
    out = Path(args.out)
    seeds = list(range(args.seeds))
    methods = pipeline.methods_for(config, compare=True)
    print(
        f"fastspline demo: EB -> prune -> retrain on digits (vgg-small, ratio 0.5, {config.epochs} epochs), "
        f"{len(methods)} methods x {len(seeds)} seeds, {args.workers} worker(s); run folder {out}",
        flush=True,
    )
    results = pipeline.run_methods(config, methods, seeds, out=out, progress=not args.quiet, workers=args.workers, title="fastspline demo")
    _print_results(results, out)
    return 0


# ---------------------------------------------------------------- plot


def add_plot_command(subparsers: Any) -> None:
    from fastspline.data import DATASETS

    parser = subparsers.add_parser(
        "plot",
        help="PNG plots of a run folder or a saved model",
        description="Plots of a run folder (`fastspline train`, `fastspline run`) or of a model file (.pt with "
        "'model' and 'model_config'): the 2-D partition, the canvas of a CNN, the early-bird heatmap and "
        "training curves, the pruning report. PNGs go to --out-dir (default: the run folder).",
    )
    kinds = parser.add_subparsers(dest="plot", metavar="kind")
    kinds.required = True

    def kind(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = kinds.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("source", help="run folder, or a model file (.pt) for partition/canvas, or a history.json for eb")
        sub.add_argument("--out-dir", default=None, help="folder of the PNGs (default: the run folder / the file's folder)")
        sub.add_argument("--seed", type=int, default=None, help="seed folder of a `fastspline run` folder (default: its first seed)")
        sub.set_defaults(func=run_plot, check=_check_plot_args)
        return sub

    for name, help_text in (
        ("partition", "2-D input-space partition: regions by code, unit zero sets, decision boundary (partition.png)"),
        ("canvas", "canvas view of a CNN: channel zero sets over a*img0 + b*img1 and decision regions (canvas.png)"),
    ):
        sub = kind(name, help_text)
        sub.add_argument("--checkpoint", default=None, help="model file inside the run folder (default checkpoint.pt, else eb-spline.pt, ...)")
        if name == "partition":
            sub.add_argument("--bounds", type=float, nargs="+", default=[5.0], help="r for [-r, r]^2, or xmin xmax ymin ymax (default 5)")
            sub.add_argument("--resolution", type=int, default=512, help="grid points per side (default 512)")
            sub.add_argument("--points", action="store_true", help="scatter the run's test points")
        else:
            sub.add_argument("--size", type=int, default=100, help="canvas points per side (default 100)")
            sub.add_argument("--layers", nargs="+", default=None, help="layer names or indices to draw (default every layer)")
            sub.add_argument("--channels", type=int, default=4, help="channels drawn per layer (default 4)")
            sub.add_argument("--data", default=None, choices=DATASETS, help="dataset of the canvas images (default the run's)")
    kind("eb", "early-bird heatmap (eb-heatmap.png) and accuracy / distance / FLOPs curves (training-curves.png)")
    sub = kind("pruning", "kept vs removed units per layer of a `fastspline run` method (pruning.png); with --save-models "
               "files of a 2-D model, its partition at pruning and after retraining")
    sub.add_argument("--method", default=None, help="method key, e.g. spline.spline-layerwise.affine (default: the first pruning at the run's --eb)")


def _check_plot_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not Path(args.source).exists():
        parser.error(f"source {args.source!r} does not exist")
    _check_out_folder(parser, "--out-dir", args.out_dir)
    if args.plot == "partition":
        if len(args.bounds) not in (1, 4):
            parser.error(f"--bounds takes 1 or 4 numbers, got {len(args.bounds)}")
        if not 2 <= args.resolution <= 8192:
            parser.error(f"--resolution must be in [2, 8192], got {args.resolution}")
    if args.plot == "canvas" and (not 2 <= args.size <= 2048 or args.channels < 1):
        parser.error(f"--size must be in [2, 2048] and --channels >= 1, got {args.size}, {args.channels}")


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object of a run folder; a damaged file ends the command with its name, not a traceback."""
    if not path.is_file():
        raise SystemExit(f"fastspline plot: no {path}")
    from fastspline._files import read_json_object

    try:
        return read_json_object(path, "fastspline plot")
    except ValueError as exc:
        raise SystemExit(str(exc)) from exc


def _load_model(path: Path) -> Any:
    from fastspline import viz

    try:
        return viz.load_model(path)
    except ValueError as exc:  # not a model file: say so without a traceback
        raise SystemExit(f"fastspline plot: {exc}") from exc


def _plot_run(source: Path, seed: int | None) -> tuple[Path, Path | None, dict[str, Any] | None, dict[str, Any] | None]:
    """(folder the files are in, seed folder of a pipeline run or None, history payload or None,
    data settings {"data", "data_root", "seed"} or None) of a `plot` source."""
    folder = source if source.is_dir() else source.parent
    if (folder / "results.json").is_file():  # a `fastspline run` folder: one seed's dense run
        results = _read_json(folder / "results.json")
        seeds = results.get("seeds") or [0]
        chosen = seeds[0] if seed is None else seed
        if chosen not in seeds:
            raise SystemExit(f"fastspline plot: the run has seeds {seeds}, not {chosen}")
        seed_folder = folder / f"seed-{chosen}"
        history = _read_json(seed_folder / "dense.json") if (seed_folder / "dense.json").is_file() else None
        config = results.get("config", {})
        return folder, seed_folder, history, {"data": config.get("data"), "data_root": config.get("data_root"), "seed": chosen}
    history_path = source if source.is_file() and source.suffix == ".json" else folder / "history.json"
    if not history_path.is_file():
        return folder, None, None, None
    history = _read_json(history_path)
    run_args = history.get("args", {})
    return folder, None, history, {"data": run_args.get("data"), "data_root": run_args.get("data_root"), "seed": run_args.get("seed", 0)}


def _plot_model_path(source: Path, folder: Path, seed_folder: Path | None, checkpoint: str | None) -> Path:
    if source.is_file():
        return source
    places = [p for p in (seed_folder, folder) if p is not None]
    names = [checkpoint] if checkpoint else ["checkpoint.pt", "eb-spline.pt", "eb-mask.pt"]
    for place in places:
        for name in names:
            if (place / name).is_file():
                return place / name
    raise SystemExit(
        f"fastspline plot: no model file ({', '.join(names)}) in {', '.join(str(p) for p in places)}; "
        "pass a model file, or --checkpoint (`fastspline run` writes models with --save-models)"
    )


def _plot_pruning(source: Path, folder: Path, seed_folder: Path | None, method: str | None, out: Path) -> Path:
    """pruning.png of one method of a `fastspline run` folder (or of its seed-<s>/<method>.json)."""
    from fastspline import viz

    if source.is_file() and source.suffix == ".json":
        method_file = source
    elif seed_folder is not None:
        results = _read_json(folder / "results.json")
        pruned = [m for m in results.get("methods", []) if m.get("prune_at") != "never"]
        from fastspline.pipeline import _prune_at

        eb = _prune_at(results.get("config", {}).get("eb"))
        keys = [m["key"] for m in sorted(pruned, key=lambda m: m.get("prune_at") != eb)]  # the run's EB first
        if method is None and not keys:
            raise SystemExit(f"fastspline plot pruning: {folder} has no pruned method")
        key = method or keys[0]
        if key not in keys:
            raise SystemExit(f"fastspline plot pruning: --method must be one of {', '.join(keys)}, got {key!r}")
        method_file = seed_folder / f"{key}.json"
    else:
        raise SystemExit(f"fastspline plot pruning: {source} is not a `fastspline run` folder or a method JSON file")
    detail = _read_json(method_file)
    if not isinstance(detail.get("plan"), dict):
        raise SystemExit(f"fastspline plot pruning: {method_file} has no 'plan'")
    key = method_file.stem
    before = method_file.parent / f"eb-{key.split('.')[0]}.pt"
    after = method_file.parent / f"{key}.pt"
    model = pruned = None
    if before.is_file() and after.is_file():  # written by `fastspline run --save-models`
        model, pruned = _load_model(before), _load_model(after)
    path = out / "pruning.png"
    viz.pruning_report(detail["plan"], model, pruned=pruned, pruned_label="after pruning and retraining", title=detail.get("label"), path=path)
    return path


def run_plot(args: argparse.Namespace) -> int:
    from fastspline import viz

    source = Path(args.source)
    folder, seed_folder, history, data_settings = _plot_run(source, args.seed)
    out = Path(args.out_dir) if args.out_dir else seed_folder or folder
    written: list[Path] = []
    if args.plot == "pruning":
        written = [_plot_pruning(source, folder, seed_folder, args.method, out)]
    elif args.plot == "eb":
        if history is None:
            raise SystemExit(f"fastspline plot eb: no history.json (or seed-*/dense.json) for {source}")
        written = viz.write_run_plots(out, history=history)
    else:
        model = _load_model(_plot_model_path(source, folder, seed_folder, args.checkpoint))
        try:  # a model that does not fit the plot or the data, a bad --layers: say so without a traceback
            written = _plot_model(args, model, data_settings, out)
        except ValueError as exc:
            raise SystemExit(f"fastspline plot {args.plot}: {exc}") from exc
    for path in written:
        print(f"wrote {path}")
    return 0


def _plot_model(args: argparse.Namespace, model: Any, data_settings: dict[str, Any] | None, out: Path) -> list[Path]:
    """partition.png or canvas.png of ``model``."""
    from fastspline import data as datasets
    from fastspline import viz

    name = getattr(args, "data", None) or (data_settings or {}).get("data")
    split = None
    if name is not None and (args.plot == "canvas" or args.points):
        settings = data_settings or {}
        split = datasets.load(name, root=settings.get("data_root"), seed=settings.get("seed") or 0)
    if args.plot == "partition":
        bounds = args.bounds[0] if len(args.bounds) == 1 else args.bounds
        points = split.test if split is not None else None
        viz.partition_2d(model, bounds, args.resolution, data=points, path=out / "partition.png")
        return [out / "partition.png"]
    if split is None:
        raise SystemExit("fastspline plot canvas: the canvas images come from a dataset; pass --data NAME")
    seed = (data_settings or {}).get("seed") or 0
    img0, img1, labels = viz.labelled_canvas_pair(split.test, seed)
    layers = None if args.layers is None else [int(v) if v.lstrip("-").isdigit() else v for v in args.layers]
    viz.canvas_contours(model, img0, img1, layers, n=args.size, channels=args.channels, labels=labels, path=out / "canvas.png")
    return [out / "canvas.png"]


# ---------------------------------------------------------------- entry point

# ---------------------------------------------------------------- bench

BENCHMARKS = {
    "ops": "kernel ops on the CPU (every ISA) vs torch, numpy and faiss-cpu",
    "gpu": "CUDA and Triton kernels on a GPU vs the torch float trick, against the card's peaks",
    "codes": "codes() vs a plain forward pass and the float-activation method",
    "earlybird": "the early-bird step vs the authors' float-activation detection",
    "pruning": "spline pruning plans of a 16,384-unit layer vs the paper's float-activation way",
    "distributed": "codes() + distances over 1 and 2 ranks (gloo)",
}


def add_bench_command(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="run a benchmark: kernel ops (CPU, GPU), codes(), early bird, pruning, distributed",
        description="Runs the benchmark script benchmarks/bench_NAME.py with this Python. Everything after NAME "
        "goes to the script (`fastspline bench ops --help` lists its options; most take --quick). It prints a "
        "table with ratios against the peers and writes JSON to --results (default: benchmarks/results of a "
        "source checkout, else ./fastspline-benchmarks). Benchmarks: "
        + "; ".join(f"{name}: {text}" for name, text in BENCHMARKS.items()) + ".",
    )
    parser.add_argument("--results", default=None, help="folder for the JSON results")
    parser.add_argument("name", choices=list(BENCHMARKS), help="which benchmark")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the script's own arguments, e.g. --quick")
    parser.set_defaults(func=run_bench, check=_check_bench_args)


def _check_bench_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    _check_out_folder(parser, "--results", args.results)


def benchmarks_dir() -> Path:
    """The bench_*.py scripts: installed as fastspline.benchmarks, or in this checkout."""
    import importlib.util

    spec = importlib.util.find_spec("fastspline.benchmarks")
    for folder in [*(spec.submodule_search_locations or [] if spec else []), Path(__file__).resolve().parents[1] / "benchmarks"]:
        if (Path(folder) / "bench_ops.py").is_file():
            return Path(folder)
    raise SystemExit("fastspline bench: the benchmark scripts are not installed with this fastspline (reinstall it)")


def run_bench(args: argparse.Namespace) -> int:
    import subprocess

    folder = benchmarks_dir()
    env = dict(os.environ)
    results = args.results
    if results is None and not (folder / "results").is_dir():  # an installed copy: not into site-packages
        results = "fastspline-benchmarks"
    if results is not None:
        env["FASTSPLINE_BENCH_RESULTS"] = str(Path(results).resolve())
    script = folder / f"bench_{args.name}.py"
    return subprocess.run([sys.executable, str(script), *args.args], env=env, check=False).returncode


COMMANDS: dict[str, Callable[[Any], None]] = {"train": add_train_command}
COMMANDS.update(run=add_run_command, demo=add_demo_command)
COMMANDS.update(plot=add_plot_command, bench=add_bench_command)


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
    try:
        return int(args.func(args) or 0)
    except ValueError as exc:
        from fastspline.models import InputShapeError

        if not isinstance(exc, InputShapeError):
            raise
        # A model that cannot take the data's inputs: one line, not a traceback.
        raise SystemExit(f"fastspline: --model {args.model} does not fit --data {args.data}: {exc}") from exc


if __name__ == "__main__":
    sys.exit(main())
