"""The early-bird -> prune -> retrain pipeline and the comparison of pruning methods.

One *method* is one way of getting a pruned network from the same seeded run
(PAPER.md §4, §6, §7):

- ``dense``: full dense training, no pruning (the reference: accuracy and training FLOPs);
- ``spline.<policy>.<merge>``: dense training until the spline EB epoch, then
  ``pruning.plan`` + ``pruning.apply`` (merge folded in), BatchNorm re-estimation,
  retraining of the smaller network for the remaining epochs;
- ``mask.slimming.<merge>``: the same from the mask EB epoch (EB tickets);
- ``end.slimming.<merge>``: full dense training, then pruning and a short fine-tune
  (network slimming).

All methods of a seed branch off one dense training run (same initialisation,
same batch order, same split): the dense network is snapshotted at each EB epoch
and at the end, so the methods differ only in when and how they prune.

Accuracy is taken at each stage: ``dense_at_prune`` (the dense network when it is
pruned), ``pruned`` (pruned and merged, BatchNorm statistics as inherited),
``recalibrated`` (after ``pruning.recalibrate_bn`` on the training inputs),
``retrain_1`` (after one retraining epoch) and ``final``.

Training FLOPs (counted as :mod:`fastspline.train` counts them: matmuls and
convolutions of forward + backward, by ``torch.utils.flop_counter``):
dense epochs up to the pruning epoch + the spline probe passes of those epochs
(spline EB only) + what ``plan``/``apply``/``recalibrate_bn`` compute (counted
under the same counter) + the retraining epochs of the smaller network.
``saving`` is the dense run's full training FLOPs divided by that total.
Wall time adds the same parts' seconds (epochs include their test evaluation).

Retraining continues the dense learning-rate schedule: retraining epoch ``k``
after pruning at epoch ``p`` uses the lr that dense epoch ``p + k`` would use
(so pruning after full training fine-tunes at the final lr). By default it
runs for the remaining ``epochs - p`` epochs, or ``finetune_epochs`` after full
training; ``retrain_epochs`` sets a fixed budget for every pruned method.
``retrain_lr`` replaces the first retraining epoch's lr. Retraining has no BN-L1
penalty by default (``retrain_sparsity``), as network slimming fine-tunes.

Run folder (``out``)::

    results.json            config, per-method summary (mean, std, values over seeds), per-run results
    results.md              the table
    seed-<s>/dense.json     the dense run: per-epoch records, EB summaries and epoch x epoch distances
    seed-<s>/<method>.json  one pruned run: plan summary, stages, FLOPs, retraining records
    seed-<s>/<method>.pt    (``save_models``) the final pruned model: config + state_dict
    seed-<s>/eb-<detector>.pt  (``save_models``) the dense model at that EB epoch
    seed-<s>/*.png          plots (fastspline.viz, with matplotlib): eb-heatmap, training-curves,
                            partition (2-D inputs) or canvas, pruning (the first pruned method)

``results["runs"]`` and each run's ``history`` name these files relative to the
run folder, for plotting tools.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import multiprocessing
import os
import platform
import queue as queue_module
import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fastspline import data as datasets
from fastspline import models, pruning, train
from fastspline._files import atomic_torch_save, atomic_write, atomic_write_json
from fastspline.earlybird import MaskEarlyBird, SplineEarlyBird

__all__ = [
    "PipelineConfig",
    "Method",
    "STAGES",
    "MERGES",
    "BUDGETS",
    "methods_for",
    "run_pipeline",
    "compare",
    "run_methods",
    "markdown",
]

RESULTS_FORMAT = "fastspline.pipeline.results"
RESULTS_VERSION = 1
STAGES = ("dense_at_prune", "pruned", "recalibrated", "retrain_1", "final")
MERGES = ("affine", "scale", "none")
BUDGETS = ("channels", "flops")
EARLYBIRDS = ("spline", "mask", "none")
_PRUNE_AT = ("never", "spline", "mask", "end")  # a Method's prune_at: dense, an EB epoch, after full training


def _prune_at(eb: str) -> str:
    """The prune_at of ``--eb eb``'s methods: its EB epoch, or after full training for ``none``."""
    return "end" if eb == "none" else eb

Emit = Callable[[str, Any], None]


@dataclass(frozen=True)
class PipelineConfig:
    """Everything a pipeline run depends on besides the seed (JSON-able with ``dataclasses.asdict``).

    model, data, data_root, width, hidden: as ``fastspline train``.
    ratio: fraction of units to remove (``pruning.plan``'s ``ratio``).
    eb: when to prune: ``"spline"`` or ``"mask"`` EB epoch, or ``"none"`` (after full training).
    policies: pruning policies (``pruning.POLICIES``); a single run uses each, a
        comparison runs each from the ``eb`` epoch.
    merges: merge modes (``"affine"``, ``"scale"``, ``"none"``), each run with every policy.
    pair_rules: removal orders of the spline policies (``pruning.PAIR_RULES``), each run
        with every spline policy and merge; other policies ignore it.
    budget: ``"channels"`` or ``"flops"`` (``pruning.plan``'s ``budget``).
    epochs, batch_size, lr, momentum, weight_decay, milestones, sparsity: dense training recipe.
    retrain_epochs: retraining epochs of every pruned method (None: the remaining budget).
    finetune_epochs: retraining after pruning a fully trained network (None: ``retrain_epochs``
        if set, else ``max(1, epochs // 4)``).
    retrain_sparsity: BN-L1 penalty while retraining (default 0, as network slimming fine-tunes).
    retrain_lr: lr of the first retraining epoch (None: what the dense schedule uses at that
        epoch); later decays follow the dense milestones either way.
    eb_threshold, eb_window, mask_threshold, mask_window: the detectors (``mask``'s ratio is ``ratio``).
    probe_size: training inputs in the probe (EB detection and pruning).
    device, threads: where to run; torch CPU threads per run (None leaves torch's setting).
    save_models: also write the EB snapshots and the pruned models.
    """

    model: str = "vgg-small"
    data: str = "digits"
    data_root: Optional[str] = None
    width: float = 1.0
    hidden: tuple[int, ...] = (256, 256)
    ratio: float = 0.5
    eb: str = "spline"
    policies: tuple[str, ...] = ("spline-layerwise",)
    merges: tuple[str, ...] = ("affine",)
    pair_rules: tuple[str, ...] = ("importance",)
    budget: str = "channels"
    epochs: int = 40
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    milestones: Optional[tuple[int, ...]] = None
    sparsity: float = 1e-4
    retrain_epochs: Optional[int] = None
    finetune_epochs: Optional[int] = None
    retrain_sparsity: float = 0.0
    retrain_lr: Optional[float] = None
    eb_threshold: float = 0.16
    eb_window: int = 3
    mask_threshold: float = 0.1
    mask_window: int = 5
    probe_size: int = 512
    device: str = "cpu"
    threads: Optional[int] = 1
    save_models: bool = False

    def check(self) -> None:
        """Raise ValueError/TypeError naming the first bad field."""
        where = "PipelineConfig"
        if self.model not in models.MODEL_NAMES:
            raise ValueError(f"{where}: model must be one of {', '.join(models.MODEL_NAMES)}, got {self.model!r}")
        if self.data not in datasets.DATASETS:
            raise ValueError(f"{where}: data must be one of {', '.join(datasets.DATASETS)}, got {self.data!r}")
        _check_real(self.ratio, "ratio", where, low=0.0, high=1.0, open_low=True, open_high=True)
        _check_real(self.width, "width", where, low=0.0, open_low=True)
        if isinstance(self.hidden, (str, bytes)) or not isinstance(self.hidden, (tuple, list)) or not self.hidden:
            raise ValueError(f"{where}: hidden must be a non-empty tuple of ints, got {self.hidden!r}")
        for h in self.hidden:
            _check_int(h, "hidden[]", where, 1)
        if self.eb not in EARLYBIRDS:
            raise ValueError(f"{where}: eb must be one of {', '.join(EARLYBIRDS)}, got {self.eb!r}")
        _check_choices(self.policies, pruning.POLICIES, "policies", where)
        _check_choices(self.merges, MERGES, "merges", where)
        _check_choices(self.pair_rules, pruning.PAIR_RULES, "pair_rules", where)
        if set(self.pair_rules) != {"importance"} and not any(p.startswith("spline-") for p in self.policies):
            raise ValueError(
                f"{where}: pair_rules {list(self.pair_rules)} order the spline policies' removals, and policies "
                f"{list(self.policies)} has none"
            )
        if self.budget not in BUDGETS:
            raise ValueError(f"{where}: budget must be one of {', '.join(BUDGETS)}, got {self.budget!r}")
        for name in ("epochs", "batch_size", "eb_window", "probe_size"):
            _check_int(getattr(self, name), name, where, 1)
        _check_int(self.mask_window, "mask_window", where, 2)
        for name in ("retrain_epochs", "finetune_epochs", "threads"):
            if getattr(self, name) is not None:
                _check_int(getattr(self, name), name, where, 1)
        for name in ("eb_threshold", "mask_threshold"):
            _check_real(getattr(self, name), name, where, low=0.0, high=1.0)
        _check_real(self.lr, "lr", where, low=0.0, open_low=True)
        for name in ("momentum", "weight_decay", "sparsity", "retrain_sparsity"):
            _check_real(getattr(self, name), name, where, low=0.0)
        if self.retrain_lr is not None:
            _check_real(self.retrain_lr, "retrain_lr", where, low=0.0, open_low=True)
        if self.milestones is not None:
            if isinstance(self.milestones, (str, bytes)) or not isinstance(self.milestones, (tuple, list)):
                raise TypeError(f"{where}: milestones must be a tuple of ints or None, got {self.milestones!r}")
            for m in self.milestones:
                _check_int(m, "milestones[]", where, 1)
        if self.data in ("cifar10", "cifar100") and self.data_root is None:
            raise ValueError(f"{where}: data {self.data!r} needs data_root (--data-root: the extracted python version)")
        if self.data == "image-folder" and self.data_root is None:
            raise ValueError(f"{where}: data 'image-folder' needs data_root (--data-root: the folder of class folders)")

    @property
    def dense_milestones(self) -> list[int]:
        """The dense run's lr milestones (``fit``'s default: 50% and 75% of the epochs)."""
        if self.milestones is not None:
            return list(self.milestones)
        return train._default_milestones(self.epochs)

    def finetune_budget(self) -> int:
        if self.finetune_epochs is not None:
            return self.finetune_epochs
        if self.retrain_epochs is not None:
            return self.retrain_epochs
        return max(1, self.epochs // 4)


def _check_int(value: object, name: str, where: str, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{where}: {name} must be an int, got {type(value).__name__} {value!r}")
    if value < low:
        raise ValueError(f"{where}: {name} must be >= {low}, got {value}")


def _check_real(
    value: object, name: str, where: str, *, low: float, high: float = math.inf, open_low: bool = False, open_high: bool = False
) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"{where}: {name} must be a finite number, got {value!r}")
    if value < low or (open_low and value == low) or value > high or (open_high and value == high):
        left, right = "(" if open_low else "[", ")" if open_high or high == math.inf else "]"
        raise ValueError(f"{where}: {name} must be in {left}{low:g}, {high:g}{right}, got {value}")


def _check_config(config: object, where: str) -> None:
    if not isinstance(config, PipelineConfig):
        raise TypeError(f"{where}: config must be a PipelineConfig, got {type(config).__name__} {config!r}")


def _check_choices(values: object, allowed: Sequence[str], name: str, where: str) -> None:
    if isinstance(values, (str, bytes)) or not isinstance(values, (tuple, list)) or not values:
        raise ValueError(f"{where}: {name} must be a non-empty tuple of names, got {values!r}")
    for value in values:
        if value not in allowed:
            raise ValueError(f"{where}: {name} must be among {', '.join(allowed)}, got {value!r}")


# ---------------------------------------------------------------- methods


@dataclass(frozen=True)
class Method:
    """One row of a comparison.

    prune_at: ``"never"`` (dense), ``"spline"`` / ``"mask"`` (that EB epoch), ``"end"``
    (after full training). policy, merge, pair_rule: ``pruning.plan``'s (None for dense).
    """

    prune_at: str
    policy: Optional[str] = None
    merge: Optional[str] = None
    pair_rule: str = "importance"

    @property
    def key(self) -> str:
        if self.prune_at == "never":
            return "dense"
        key = f"{self.prune_at}.{self.policy}.{self.merge}"
        return key if self.pair_rule == "importance" else f"{key}.{self.pair_rule}"

    @property
    def label(self) -> str:
        if self.prune_at == "never":
            return "dense (full training)"
        where = {"spline": "spline EB", "mask": "mask EB", "end": "full training"}[self.prune_at]
        text = f"{where} + {self.policy}"
        if self.pair_rule != "importance":
            text += f" ({self.pair_rule} order)"
        if self.merge != "none":
            text += f" + {self.merge} merge"
        if self.prune_at == "mask" and self.policy == "slimming":
            text += " (EB tickets)"
        if self.prune_at == "end" and self.policy == "slimming":
            text += " (network slimming)"
        return text


def methods_for(config: PipelineConfig, compare: bool = False) -> list[Method]:
    """The methods a run executes. Single run: ``config.eb`` x policies x merges.
    Comparison: dense; mask EB + slimming; ``config.eb`` (spline unless given) x policies;
    full training + slimming (each pruned one with every merge)."""
    _check_config(config, "methods_for")
    if not isinstance(compare, bool):
        raise TypeError(f"methods_for: compare must be a bool, got {type(compare).__name__} {compare!r}")
    prune_at = _prune_at(config.eb)
    chosen = [
        Method(prune_at, p, m, r)
        for p in config.policies
        for r in (config.pair_rules if p.startswith("spline-") else ("importance",))
        for m in config.merges
    ]
    if not compare:
        return list(dict.fromkeys(chosen))  # repeated policies or merges run once
    every = [Method("never")]
    every += [Method("mask", "slimming", m) for m in config.merges]
    every += chosen
    every += [Method("end", "slimming", m) for m in config.merges]
    return list(dict.fromkeys(every))


# ---------------------------------------------------------------- one seed


@dataclass
class _Snapshot:
    epoch: int
    state: dict[str, torch.Tensor]


@dataclass
class _Dense:
    model_config: dict[str, Any]
    records: list[dict[str, Any]]
    snapshots: dict[str, _Snapshot]      # "spline", "mask" (EB epochs), "end" (last epoch trained)
    detectors: dict[str, Any]
    detector_seconds: dict[str, dict[int, float]]
    full_flops: int                      # dense training FLOPs over all config.epochs
    full_seconds: float


def _train_dense(config: PipelineConfig, split: datasets.Split, probe: torch.Tensor, seed: int, needed: set[str], stop_early: bool, emit: Emit) -> _Dense:
    """Dense training with the detectors in ``needed``; snapshots the model when each fires.
    Each detector stops stepping once it has fired (its later probe passes would be waste)."""
    train.seed_everything(seed)
    model = models.create(config.model, split.input_shape, split.num_classes, width=config.width, hidden=config.hidden)
    model.to(config.device)
    detectors: dict[str, Any] = {}
    if "spline" in needed:
        detectors["spline"] = SplineEarlyBird(probe, config.eb_threshold, config.eb_window, device=config.device)
    if "mask" in needed:
        detectors["mask"] = MaskEarlyBird(config.ratio, config.mask_threshold, config.mask_window)
    seconds: dict[str, dict[int, float]] = {name: {} for name in detectors}
    snapshots: dict[str, _Snapshot] = {}

    def stepper(name: str, detector: Any) -> Callable[[nn.Module, int, dict[str, Any]], None]:
        def step(model: nn.Module, epoch: int, record: dict[str, Any]) -> None:
            if detector.found:
                return
            started = time.perf_counter()
            detector(model, epoch, record)
            seconds[name][epoch] = time.perf_counter() - started
            if detector.found:
                snapshots[name] = _Snapshot(epoch, copy.deepcopy(model.state_dict()))
                emit("note", f"seed {seed}: {name} EB at epoch {epoch}")

        return step

    def progress(model: nn.Module, epoch: int, record: dict[str, Any]) -> bool:
        emit("step", 1)
        return stop_early and all(d.found for d in detectors.values())

    emit("desc", f"seed {seed} dense")
    history = train.fit(
        model, split.train, split.test, config.epochs,
        lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay, milestones=config.dense_milestones,
        batch_size=config.batch_size, sparsity=config.sparsity, seed=seed, device=config.device, progress=False,
        callbacks=[*(stepper(n, d) for n, d in detectors.items()), progress],
    )
    if len(history) < config.epochs:
        emit("total", len(history) - config.epochs)
    snapshots["end"] = _Snapshot(len(history), copy.deepcopy(model.state_dict()))
    # Every epoch has the same batch shapes, so the epochs not run cost what the last one did.
    full_flops = history.total_flops + (config.epochs - len(history)) * history[-1]["flops"]
    return _Dense(
        model.config(), history.records, snapshots, detectors, seconds, full_flops,
        sum(r["seconds"] for r in history.records),
    )


def _retrain_schedule(config: PipelineConfig, prune_epoch: int) -> tuple[float, list[int]]:
    """(lr, milestones) that continue the dense schedule after ``prune_epoch``
    (``fit``'s decay factor, 0.1, at each dense milestone); ``retrain_lr`` replaces the start."""
    dense = config.dense_milestones
    lr = config.lr * 0.1 ** sum(1 for m in dense if m <= prune_epoch)
    if config.retrain_lr is not None:
        lr = config.retrain_lr
    return lr, [m - prune_epoch for m in dense if m > prune_epoch]


def _forward_flops(model: nn.Module, sample: torch.Tensor) -> int:
    """Inference FLOPs of one input."""
    first = next(model.parameters(), None)
    return train.count_flops(model, sample[:1].to(first.device if first is not None else "cpu"))


def _parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _dense_result(dense: _Dense, model: nn.Module, sample: torch.Tensor) -> dict[str, Any]:
    last = dense.records[-1]
    return {
        "method": "dense",
        "eb_epoch": None,
        "prune_epoch": None,
        "retrain_epochs": 0,
        "accuracy": {stage: (last["test_acc"] if stage == "final" else None) for stage in STAGES},
        "params": _parameters(model),
        "inference_flops": _forward_flops(model, sample),
        "flops": {"dense": dense.full_flops, "probe": 0, "prune": 0, "retrain": 0, "total": dense.full_flops},
        "saving": 1.0,
        "seconds": {"dense": dense.full_seconds, "detection": 0.0, "prune": 0.0, "retrain": 0.0, "total": dense.full_seconds},
    }


def _prune_run(
    config: PipelineConfig, method: Method, split: datasets.Split, probe: torch.Tensor, dense: _Dense, seed: int, emit: Emit
) -> tuple[dict[str, Any], dict[str, Any], nn.Module, pruning.PrunePlan]:
    """Prune the snapshot ``method.prune_at`` (or the end, when that EB never fired), retrain, evaluate.
    Returns (result, detail for the run's JSON, the final pruned model, the plan)."""
    eb_epoch: int | None = None
    snapshot = dense.snapshots["end"]
    if method.prune_at in ("spline", "mask"):
        eb_epoch = dense.detectors[method.prune_at].epoch
        if eb_epoch is not None:
            snapshot = dense.snapshots[method.prune_at]
    prune_epoch = snapshot.epoch
    if prune_epoch < config.epochs and eb_epoch is not None:
        retrain_epochs = config.retrain_epochs or config.epochs - prune_epoch
    else:
        retrain_epochs = config.finetune_budget()
    emit("desc", f"seed {seed} {method.key}")

    model = models.build(dense.model_config)
    model.load_state_dict(snapshot.state)
    model.to(config.device)
    test = split.test
    train_x = split.train.tensors[0]

    started = time.perf_counter()
    counter = FlopCounterMode(display=False)
    with counter:
        plan = pruning.plan(
            model, probe, config.ratio, policy=method.policy, merge=method.merge, recalibrate=False, budget=config.budget,
            seed=seed,  # the random policy draws per seed
            pair_rule=method.pair_rule,
        )
        slim = pruning.apply(plan, model)
    plan_seconds = time.perf_counter() - started
    accuracy = {stage: None for stage in STAGES}
    accuracy["dense_at_prune"] = dense.records[prune_epoch - 1]["test_acc"]
    accuracy["pruned"] = train.evaluate(slim, test)[1]
    started = time.perf_counter()
    recalibration = FlopCounterMode(display=False)
    with recalibration:
        pruning.recalibrate_bn(slim, train_x)
    prune_seconds = plan_seconds + time.perf_counter() - started
    prune_flops = int(counter.get_total_flops()) + int(recalibration.get_total_flops())
    accuracy["recalibrated"] = train.evaluate(slim, test)[1]

    lr, milestones = _retrain_schedule(config, prune_epoch)

    def progress(model: nn.Module, epoch: int, record: dict[str, Any]) -> None:
        emit("step", 1)

    emit("total", retrain_epochs)
    history = train.fit(
        slim, split.train, test, retrain_epochs,
        lr=lr, momentum=config.momentum, weight_decay=config.weight_decay, milestones=milestones,
        batch_size=config.batch_size, sparsity=config.retrain_sparsity, seed=seed, device=config.device,
        progress=False, callbacks=[progress],
    )
    accuracy["retrain_1"] = history[0]["test_acc"]
    accuracy["final"] = history[-1]["test_acc"]

    dense_flops = dense.records[prune_epoch - 1]["cumulative_flops"]
    dense_seconds = sum(r["seconds"] for r in dense.records[:prune_epoch])
    probe_flops, detection_seconds = 0, 0.0
    if method.prune_at in dense.detectors:  # its steps up to the pruning epoch were spent
        detector = dense.detectors[method.prune_at]
        detection_seconds = sum(s for e, s in dense.detector_seconds[method.prune_at].items() if e <= prune_epoch)
        if method.prune_at == "spline":
            probe_flops = (detector.probe_flops or 0) * sum(1 for e in detector.epochs if e <= prune_epoch)
    flops = {
        "dense": dense_flops, "probe": probe_flops, "prune": prune_flops, "retrain": history.total_flops,
    }
    flops["total"] = sum(flops.values())
    seconds = {
        "dense": dense_seconds, "detection": detection_seconds, "prune": prune_seconds,
        "retrain": sum(r["seconds"] for r in history.records),
    }
    seconds["total"] = sum(seconds.values())
    result = {
        "method": method.key,
        "eb_epoch": eb_epoch,
        "prune_epoch": prune_epoch,
        "retrain_epochs": retrain_epochs,
        "accuracy": accuracy,
        "params": _parameters(slim),
        "inference_flops": _forward_flops(slim, train_x),
        "flops": flops,
        "saving": dense.full_flops / flops["total"],
        "seconds": seconds,
        "widths": slim.widths() if isinstance(slim, models.SplineModel) else None,
    }
    detail = {
        "plan": plan.summary(),
        "retrain_lr": lr,
        "retrain_milestones": milestones,
        "model_config": slim.config() if isinstance(slim, models.SplineModel) else None,
        "records": history.records,
    }
    return result, detail, slim, plan


def _matrix(tensor: torch.Tensor) -> list[list[float | None]]:
    return [[None if math.isnan(v) else round(v, 6) for v in row] for row in tensor.tolist()]


def _dense_detail(config: PipelineConfig, dense: _Dense, seed: int) -> dict[str, Any]:
    earlybird: dict[str, Any] = {}
    for name, detector in dense.detectors.items():
        summary = detector.summary()
        summary["history"] = _matrix(detector.history)
        summary["seconds"] = {str(e): s for e, s in dense.detector_seconds[name].items()}
        if name == "spline":
            summary["layer_history"] = {layer: _matrix(m) for layer, m in detector.layer_history.items()}
        earlybird[name] = summary
    return {
        "seed": seed,
        "model_config": dense.model_config,
        "records": dense.records,
        "stopped_at": len(dense.records),
        "full_flops": dense.full_flops,
        "earlybird": earlybird,
    }


def _write_plots(
    config: PipelineConfig, seed: int, methods: Sequence[Method], plans: dict[str, pruning.PrunePlan],
    split: datasets.Split, dense: _Dense, dense_detail: dict[str, Any], folder: Path, emit: Emit,
) -> None:
    """The seed's PNGs (:func:`fastspline.viz.write_run_plots`): EB heatmap, training curves, the
    partition (2-D inputs) or canvas of the dense model where the first method pruning at
    ``config.eb`` (else the first pruned one) prunes, and that method's kept/removed units (its plan
    summary, as in its JSON); for 2-D inputs also the partitions before and after pruning, from
    its plan in ``plans`` (by method key, as :func:`_prune_run` returned them). Skipped without matplotlib."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        emit("note", "plots skipped: matplotlib is not installed (pip install fastspline[viz])")
        return
    from fastspline import viz

    pruned = [m for m in methods if m.prune_at != "never"]
    method = next((m for m in pruned if m.prune_at == _prune_at(config.eb)), pruned[0] if pruned else None)
    snapshot = dense.snapshots["end"]
    if method is not None and method.prune_at in dense.snapshots:
        snapshot = dense.snapshots[method.prune_at]
    model = models.build(dense.model_config)
    model.load_state_dict(snapshot.state)
    model.to(config.device).eval()
    plan: Any = None
    if method is not None:
        plan = plans[method.key]
        if not viz.takes_points(model):
            plan = plan.summary()  # as the run's JSON holds it: no partitions need the merges
    viz.write_run_plots(
        folder, history=dense_detail, model=model, plan=plan, dataset=split.test, seed=seed,
        title=f"dense, epoch {snapshot.epoch}",
    )


def _run_seed(config: PipelineConfig, seed: int, methods: Sequence[Method], out: Path | None, emit: Emit) -> dict[str, Any]:
    """Every method of one seed: one dense run, then each pruned branch. Writes the
    seed's files when ``out`` is given. Returns ``{"dense": dense detail, "runs": {key: result}}``."""
    threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    try:
        split = datasets.load(config.data, root=config.data_root, seed=seed)
        probe = datasets.probe_subset(split.train, config.probe_size, seed=seed)
        needed = {m.prune_at for m in methods} & {"spline", "mask"}
        stop_early = all(m.prune_at in ("spline", "mask") for m in methods)
        dense = _train_dense(config, split, probe, seed, needed, stop_early, emit)
        folder = out / f"seed-{seed}" if out is not None else None
        dense_detail = _dense_detail(config, dense, seed)
        if folder is not None:
            atomic_write_json(folder / "dense.json", _clean(dense_detail))
            if config.save_models:
                for name, snapshot in dense.snapshots.items():
                    if name != "end":
                        atomic_torch_save(
                            {"epoch": snapshot.epoch, "model": snapshot.state, "model_config": dense.model_config},
                            folder / f"eb-{name}.pt",
                        )
        runs: dict[str, Any] = {}
        plans: dict[str, pruning.PrunePlan] = {}
        for method in methods:
            if method.prune_at == "never":
                final = models.build(dense.model_config)
                final.load_state_dict(dense.snapshots["end"].state)
                result = _dense_result(dense, final, split.train.tensors[0])
                result["history"] = f"seed-{seed}/dense.json"
            else:
                result, detail, slim, plan = _prune_run(config, method, split, probe, dense, seed, emit)
                plans[method.key] = plan
                result["history"] = f"seed-{seed}/{method.key}.json"
                if folder is not None:
                    atomic_write_json(folder / f"{method.key}.json", _clean({"seed": seed, "label": method.label, **result, **detail}))
                    if config.save_models:
                        atomic_torch_save(
                            {"model": slim.state_dict(), "model_config": detail["model_config"]}, folder / f"{method.key}.pt"
                        )
            result["seed"] = seed
            runs[method.key] = result
        if folder is not None:
            _write_plots(config, seed, methods, plans, split, dense, dense_detail, folder, emit)
        return {"dense": {"seed": seed, "stopped_at": len(dense.records), "history": f"seed-{seed}/dense.json",
                          "eb": {n: d.epoch for n, d in dense.detectors.items()}}, "runs": runs}
    finally:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------- progress and workers


class _Progress:
    """A tqdm bar over epochs (dense and retraining) whose total grows as runs are planned."""

    def __init__(self, enabled: bool, total: int, desc: str) -> None:
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="epoch", dynamic_ncols=True)

    def __call__(self, kind: str, value: Any) -> None:
        if self.bar is None:
            return
        if kind == "step":
            self.bar.update(value)
        elif kind == "total":
            self.bar.total += value
            self.bar.refresh()
        elif kind == "desc":
            self.bar.set_description(value, refresh=False)
        elif kind == "note":
            self.bar.write(value)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


_worker_queue: Any = None


def _worker_init(events: Any) -> None:
    global _worker_queue
    _worker_queue = events


def _worker_emit(kind: str, value: Any) -> None:
    _worker_queue.put((kind, value))


def _worker_seed(config: PipelineConfig, seed: int, methods: list[Method], out: str | None) -> dict[str, Any]:
    return _run_seed(config, seed, methods, Path(out) if out is not None else None, _worker_emit)


def run_methods(
    config: PipelineConfig,
    methods: Sequence[Method],
    seeds: Sequence[int] = (0,),
    *,
    out: str | os.PathLike | None = None,
    progress: bool = True,
    workers: int = 1,
    title: str = "fastspline pipeline",
    on_seed: Callable[[Path | None, int, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run ``methods`` for each seed (see the module doc) and return the results dict;
    with ``out``, write the run folder (results.json and results.md rewritten after each seed).

    ``workers > 1`` runs seeds in that many processes (spawned: a script calling this
    needs the ``if __name__ == "__main__":`` guard; each process uses ``config.threads``
    torch threads); results are the same as with one worker.
    ``on_seed(folder, seed, payload)`` is called in this process after each seed's files
    are written (``folder`` = the seed folder or None, ``payload`` = ``results["runs"][str(seed)]``):
    the hook for plots.
    """
    _check_config(config, "run_methods")
    config.check()
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence) or not seeds:
        raise ValueError(f"run_methods: seeds must be a non-empty sequence of ints, got {seeds!r}")
    for s in seeds:
        _check_int(s, "seeds[]", "run_methods", 0)
        if s >= 2**32:  # numpy's global seed (train.seed_everything) takes no more
            raise ValueError(f"run_methods: seeds[] must be < 2**32, got {s}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"run_methods: seeds must be distinct, got {list(seeds)}")
    if isinstance(methods, (str, bytes)) or not isinstance(methods, Sequence):
        raise TypeError(f"run_methods: methods must be a sequence of Method (see methods_for), got {type(methods).__name__}")
    if not methods:
        raise ValueError("run_methods: methods is empty")
    for method in methods:
        if not isinstance(method, Method):
            raise TypeError(f"run_methods: methods must hold Method objects (see methods_for), got {type(method).__name__} {method!r}")
        # Checked now, not after the dense training (an unknown prune_at fails in Method.label).
        if method.prune_at not in _PRUNE_AT:
            raise ValueError(f"run_methods: methods[].prune_at must be never, spline, mask or end, got {method!r}")
        if method.prune_at != "never" and (
            method.policy not in pruning.POLICIES or method.merge not in MERGES or method.pair_rule not in pruning.PAIR_RULES
        ):
            raise ValueError(
                f"run_methods: methods[] pruning needs a policy ({', '.join(pruning.POLICIES)}), a merge ({', '.join(MERGES)}) "
                f"and a pair_rule ({', '.join(pruning.PAIR_RULES)}), got {method!r}"
            )
    keys = [m.key for m in methods]
    if len(set(keys)) != len(keys):
        # A repeated key would run the same branch again and overwrite its result.
        raise ValueError(f"run_methods: methods must be distinct, got keys {keys}")
    _check_int(workers, "workers", "run_methods", 1)
    if out is not None and not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"run_methods: out must be a path or None, got {type(out).__name__}")
    folder = Path(out) if out is not None else None
    # The folder is made by the first write (after seed 0's dense run), so a run that
    # fails before it (e.g. on its data) leaves none; a file in its place is refused now.
    if folder is not None and folder.exists() and not folder.is_dir():
        raise ValueError(f"run_methods: out {os.fspath(folder)!r} is a file, not a run folder")
    methods = list(methods)
    started = time.perf_counter()
    results: dict[str, Any] = {
        "format": RESULTS_FORMAT,
        "version": RESULTS_VERSION,
        "title": title,
        "config": dataclasses.asdict(config),
        "seeds": list(seeds),
        "methods": [{"key": m.key, "label": m.label, "prune_at": m.prune_at, "policy": m.policy, "merge": m.merge, "pair_rule": m.pair_rule} for m in methods],
        "machine": _machine(config, workers),
        "run_folder": None if folder is None else str(folder),
        "runs": {},
        "summary": {},
        "seconds": None,
    }
    per_seed: dict[int, dict[str, Any]] = {}

    def finish_seed(seed: int, payload: dict[str, Any]) -> None:
        per_seed[seed] = payload
        done = [s for s in seeds if s in per_seed]
        results["runs"] = {str(s): per_seed[s] for s in done}
        results["summary"] = _summarize(methods, [per_seed[s]["runs"] for s in done])
        results["seconds"] = time.perf_counter() - started
        if folder is not None:
            _write_results(folder, results)
        if on_seed is not None:
            on_seed(None if folder is None else folder / f"seed-{seed}", seed, payload)

    bar = _Progress(progress, config.epochs * len(seeds), title)
    try:
        if workers == 1 or len(seeds) == 1:
            for seed in seeds:
                finish_seed(seed, _run_seed(config, seed, methods, folder, bar))
        else:
            _run_in_workers(config, methods, seeds, folder, workers, bar, finish_seed)
    finally:
        bar.close()
    return results


def _run_in_workers(
    config: PipelineConfig, methods: list[Method], seeds: Sequence[int], folder: Path | None, workers: int,
    bar: _Progress, finish_seed: Callable[[int, dict[str, Any]], None],
) -> None:
    context = multiprocessing.get_context("spawn")  # no forked torch thread pools
    events = context.Queue()
    with ProcessPoolExecutor(min(workers, len(seeds)), mp_context=context, initializer=_worker_init, initargs=(events,)) as pool:
        pending = {pool.submit(_worker_seed, config, seed, methods, None if folder is None else str(folder)): seed for seed in seeds}
        try:
            while pending:
                done, _ = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                _drain(events, bar)
                for future in done:
                    seed = pending.pop(future)
                    finish_seed(seed, future.result())
            _drain(events, bar)
        except BaseException:
            for future in pending:
                future.cancel()
            raise


def _drain(events: Any, bar: _Progress) -> None:
    while True:
        try:
            kind, value = events.get_nowait()
        except queue_module.Empty:
            return
        bar(kind, value)


def _machine(config: PipelineConfig, workers: int) -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "threads_per_run": config.threads if config.threads is not None else torch.get_num_threads(),
        "workers": workers,
        "device": config.device,
        "load_average_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,  # others' jobs slow wall times
    }


def run_pipeline(
    config: PipelineConfig,
    seeds: Sequence[int] = (0,),
    *,
    out: str | os.PathLike | None = None,
    progress: bool = True,
    workers: int = 1,
) -> dict[str, Any]:
    """EB detection (``config.eb``) -> prune (each of ``config.policies`` x ``config.merges``)
    -> retrain -> evaluate, per seed. Dense training stops at the EB epoch; the saving
    is against the dense recipe's full training FLOPs."""
    _check_config(config, "run_pipeline")
    config.check()
    return run_methods(config, methods_for(config), seeds, out=out, progress=progress, workers=workers, title="fastspline run")


def compare(
    config: PipelineConfig,
    seeds: Sequence[int] = (0,),
    *,
    out: str | os.PathLike | None = None,
    progress: bool = True,
    workers: int = 1,
) -> dict[str, Any]:
    """With the same seeds: dense full training; mask EB + slimming (EB tickets);
    ``config.eb`` EB + each of ``config.policies``; full training + slimming
    (each pruned method with every merge of ``config.merges``)."""
    _check_config(config, "compare")
    config.check()
    return run_methods(config, methods_for(config, compare=True), seeds, out=out, progress=progress, workers=workers, title="fastspline compare")


# ---------------------------------------------------------------- summary and table


_METRICS = (
    *(f"accuracy.{s}" for s in STAGES),
    "eb_epoch",
    "prune_epoch",
    "params",
    "inference_flops",
    "flops.total",
    "saving",
    "seconds.total",
)


def _get(result: dict[str, Any], path: str) -> Any:
    value: Any = result
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _stats(values: list[float]) -> dict[str, Any]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else None,
        "n": len(values),
        "values": values,
    }


def _summarize(methods: Sequence[Method], seed_runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per method and metric: mean, sample std (n - 1), n and the per-seed values (seeds
    where the metric is None, e.g. an EB that never fired, are left out)."""
    summary: dict[str, Any] = {}
    for method in methods:
        runs = [r[method.key] for r in seed_runs if method.key in r]
        entry: dict[str, Any] = {"label": method.label}
        for metric in _METRICS:
            values = [float(v) for v in (_get(r, metric) for r in runs) if v is not None]
            entry[metric] = _stats(values) if values else None
        summary[method.key] = entry
    return summary


def _mean_std(stats: dict[str, Any] | None, digits: int = 2, scale: float = 1.0, suffix: str = "") -> str:
    if stats is None:
        return "–"
    text = f"{stats['mean'] / scale:.{digits}f}"
    if stats["std"] is not None:
        text += f" ± {stats['std'] / scale:.{digits}f}"
    return text + suffix


_RESULT_KEYS = ("title", "config", "seeds", "methods", "runs", "summary")
_CONFIG_KEYS = ("model", "data", "ratio", "epochs")


def _check_results(results: object, where: str) -> None:
    """The fields markdown reads, so a wrong dict fails here and not with a KeyError."""
    if not isinstance(results, dict):
        raise TypeError(
            f"{where}: results must be the dict of run_pipeline/compare/run_methods (or results.json), got {type(results).__name__}"
        )
    missing = [k for k in _RESULT_KEYS if k not in results]
    if missing:
        raise ValueError(f"{where}: results lacks {missing}; expected the dict of run_pipeline/compare/run_methods (or results.json)")
    config = results["config"]
    if not isinstance(config, dict) or any(k not in config for k in _CONFIG_KEYS):
        raise ValueError(f"{where}: results['config'] must be a dict with {list(_CONFIG_KEYS)}, got {config!r}")
    for key in ("runs", "summary"):
        if not isinstance(results[key], dict):
            raise ValueError(f"{where}: results[{key!r}] must be a dict, got {type(results[key]).__name__}")
    for key, entry in results["summary"].items():
        if not isinstance(entry, dict) or "label" not in entry:
            raise ValueError(f"{where}: results['summary'][{key!r}] must be a dict with 'label', got {entry!r}")
    if not isinstance(results["methods"], list) or not all(isinstance(m, dict) and "key" in m for m in results["methods"]):
        raise ValueError(f"{where}: results['methods'] must be a list of dicts with 'key', got {results['methods']!r}")


def markdown(results: dict[str, Any]) -> str:
    """The results as a markdown table (mean ± sample std over seeds)."""
    _check_results(results, "markdown")
    config = results["config"]
    seeds = results["runs"].keys() if results["runs"] else results["seeds"]
    n = len(seeds)
    summary = results["summary"]
    totals = [s["flops.total"]["mean"] for s in summary.values() if s.get("flops.total")]
    largest = max(totals) if totals else 0.0
    unit, scale = ("TFLOPs", 1e12) if largest >= 1e12 else ("GFLOPs", 1e9) if largest >= 1e9 else ("MFLOPs", 1e6)
    prune_at = {m["key"]: m["prune_at"] for m in results["methods"]}
    inference = [s["inference_flops"]["mean"] for s in summary.values() if s.get("inference_flops")]
    small = bool(inference) and max(inference) < 1e7  # MLPs: kFLOPs keep the digits
    inference_unit, inference_scale = ("kFLOPs", 1e3) if small else ("MFLOPs", 1e6)
    lines = [
        f"## {results['title']}: {config['model']} on {config['data']}, ratio {config['ratio']:g}, {config['epochs']} epochs",
        "",
        f"Test accuracy (%) at each stage, mean ± std over {n} seed{'s' if n != 1 else ''} "
        f"({', '.join(str(s) for s in seeds)}); training FLOPs include probe passes and pruning; "
        f"saving = dense training FLOPs / the method's.",
        "",
        f"| method | prune epoch | at pruning (dense) | pruned | + BN recal. | 1 retrain epoch | final | params | inference {inference_unit} "
        f"| training {unit} | saving | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, entry in summary.items():
        epochs = entry.get("prune_epoch")
        epoch_text = "–" if epochs is None else ", ".join(str(int(v)) for v in epochs["values"])
        found = entry.get("eb_epoch")
        missed = (epochs["n"] if epochs else 0) - (found["n"] if found else 0)
        if prune_at.get(key) in ("spline", "mask") and missed:
            epoch_text += f" (no EB in {missed}: pruned at the end)"
        params = entry.get("params")
        lines.append(
            "| "
            + " | ".join(
                [
                    entry["label"],
                    epoch_text,
                    *(_mean_std(entry.get(f"accuracy.{s}")) for s in STAGES),
                    "–" if params is None else f"{params['mean'] / 1e3:,.1f} k",
                    _mean_std(entry.get("inference_flops"), 1 if small else 2, inference_scale),
                    _mean_std(entry.get("flops.total"), 3 if scale == 1e12 else 1, scale),
                    _mean_std(entry.get("saving"), 2, 1.0, "×"),
                    _mean_std(entry.get("seconds.total"), 0),
                ]
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


def _clean(value: Any) -> Any:
    """NaN/inf -> None, tuples -> lists, so the JSON is strict."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _write_results(folder: Path, results: dict[str, Any]) -> None:
    atomic_write_json(folder / "results.json", _clean(results))
    text = markdown(results)
    atomic_write(folder / "results.md", lambda f: f.write(text.encode()))
