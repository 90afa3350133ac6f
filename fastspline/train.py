"""Training loop of the paper's recipe, with FLOPs accounting, callbacks,
atomic checkpoints and resume.

Recipe (PAPER.md §3): SGD, lr 0.1, momentum 0.9, weight decay 1e-4, batch 128,
lr x0.1 at 50% and 75% of the epochs, cross-entropy; optional network-slimming
L1 penalty on BatchNorm gamma: after ``backward`` every BN weight's gradient
gets ``sparsity * sign(gamma)`` added (as the official ``updateBN``; here for
BatchNorm1d/2d alike).

FLOPs: one training step (forward + loss + backward) is run under
``torch.utils.flop_counter.FlopCounterMode`` the first time each input shape
is seen, and that count is reused for every later batch of the shape (the
model does not change shape while it trains). Counted are the matmul/conv ops
torch's counter knows (BatchNorm, ReLU, pooling, the optimizer are not);
evaluation passes are not training FLOPs and are not counted.

Epochs are numbered from 1: ``history[0]["epoch"] == 1`` is the state after
the first pass over the data.
"""
from __future__ import annotations

import copy
import json
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, TensorDataset
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

from fastspline._files import atomic_torch_save as atomic_save
from fastspline._files import load_torch_archive
from fastspline._modes import restore_modes, set_eval, training_modes

__all__ = [
    "Callback",
    "History",
    "fit",
    "evaluate",
    "count_flops",
    "bn_l1_penalty",
    "seed_everything",
    "atomic_save",
    "load_checkpoint",
    "ResumeError",
]

_CHECKPOINT_FORMAT = "fastspline.train.checkpoint"
_CHECKPOINT_VERSION = 1


class Callback(Protocol):
    """Called after each epoch's evaluation: ``callback(model, epoch, record)``.

    ``record`` is this epoch's history dict; a callback may add JSON-able keys
    to it (e.g. ``"eb_distance"``). Returning True stops training after this
    epoch. A callback with ``state_dict()``/``load_state_dict()`` has its state
    saved in checkpoints and restored on resume.
    """

    def __call__(self, model: nn.Module, epoch: int, record: dict[str, Any]) -> Optional[bool]: ...


@dataclass
class History:
    """Per-epoch records of :func:`fit` (a list of dicts, JSON-able).

    Keys of each record: ``epoch``, ``lr`` (used during the epoch), ``train_loss``,
    ``train_acc`` (running, over the epoch's batches, %), ``test_loss``,
    ``test_acc`` (%, ``None`` without a test set), ``flops`` (this epoch's training
    FLOPs), ``cumulative_flops``, ``seconds`` (wall time of the epoch's training
    and evaluation), plus keys added by callbacks. ``stopped_early``: a callback
    ended training before ``epochs``.
    """

    records: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.records[index]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.records)

    def column(self, key: str) -> list[Any]:
        """``[record.get(key) for record in records]``."""
        return [record.get(key) for record in self.records]

    @property
    def total_flops(self) -> int:
        return self.records[-1]["cumulative_flops"] if self.records else 0


# ---------------------------------------------------------------- helpers


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators (do it before building a model)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed_everything: seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def bn_l1_penalty(model: nn.Module, sparsity: float) -> None:
    """Add ``sparsity * sign(gamma)`` to the gradient of every affine BatchNorm weight
    (the subgradient of ``sparsity * |gamma|_1``; network slimming). Call after backward."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"bn_l1_penalty: model must be an nn.Module, got {type(model).__name__}")
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine and module.weight.grad is not None:
            module.weight.grad.add_(torch.sign(module.weight.detach()), alpha=sparsity)


def _model_device(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def _as_tensors(data: object, name: str, where: str = "fit") -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) of a TensorDataset, an (x, y) pair of tensors, or a map-style dataset of pairs."""
    if isinstance(data, TensorDataset):
        if len(data.tensors) < 2:
            raise ValueError(f"{where}: {name} must hold (x, y) tensors, got {len(data.tensors)} tensor(s)")
        x, y = data.tensors[0], data.tensors[1]
    elif isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        x, y = data
    elif isinstance(data, Dataset) and hasattr(data, "__len__"):
        # A generic dataset is materialised once: the datasets here are small, and
        # indexing whole batches of tensors is much faster than a DataLoader.
        pairs = [data[i] for i in range(len(data))]
        x = torch.stack([torch.as_tensor(p[0]) for p in pairs])
        y = torch.as_tensor([int(p[1]) for p in pairs])
    else:
        raise TypeError(f"{where}: {name} must be a TensorDataset, an (x, y) pair of tensors or a Dataset, got {type(data).__name__}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{where}: {name} has {x.shape[0]} inputs but {y.shape[0]} labels")
    if x.shape[0] == 0:
        raise ValueError(f"{where}: {name} is empty")
    if y.dtype != torch.int64:
        raise TypeError(f"{where}: {name} labels must be int64 class indices, got {y.dtype}")
    return x, y


def _conv_backward_flop(
    grad_out_shape: list[int], x_shape: list[int], w_shape: list[int], _bias: Any, _stride: Any, _padding: Any,
    _dilation: Any, transposed: bool, _output_padding: Any, _groups: int, output_mask: list[bool], out_shape: Any = None,
    **kwargs: Any,
) -> int:
    """A conv's backward: each gradient asked for (input, weight) costs what its forward does.
    (torch's formula counts the weight gradient of a grouped conv as a dense one, ``groups`` x.)"""
    forward = conv_flop_count(x_shape, w_shape, grad_out_shape, transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def _flop_counter() -> FlopCounterMode:
    """torch's counter with the grouped-conv backward counted as :func:`_conv_backward_flop` does."""
    return FlopCounterMode(display=False, custom_mapping={torch.ops.aten.convolution_backward: _conv_backward_flop})


def count_flops(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor | None = None) -> int:
    """FLOPs of one step on a copy of ``model`` (the model itself is untouched).

    Without ``targets``: a forward pass under ``no_grad``. With ``targets`` (int64
    ``[N]``): forward + cross-entropy + backward, as :func:`fit` counts them.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"count_flops: model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"count_flops: inputs must be a tensor, got {type(inputs).__name__}")
    clone = copy.deepcopy(model)
    counter = _flop_counter()
    if targets is None:
        clone.eval()
        with counter, torch.no_grad():
            clone(inputs)
    else:
        clone.train()
        with counter:
            F.cross_entropy(clone(inputs), targets).backward()
    return int(counter.get_total_flops())


@torch.no_grad()
def evaluate(model: nn.Module, data: object, *, batch_size: int = 1024, device: torch.device | str | None = None) -> tuple[float, float]:
    """(mean cross-entropy, accuracy in %) of ``model`` on ``data`` in eval mode
    (the train/eval mode of every submodule is restored, also when forward raises)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"evaluate: model must be an nn.Module, got {type(model).__name__}")
    batch_size = _check_int(batch_size, "batch_size", 1, "evaluate")
    x, y = _as_tensors(data, "data", "evaluate")
    device = _model_device(model) if device is None else torch.device(device)
    modes = training_modes(model)  # each submodule's own mode
    set_eval(model, modes)
    loss_sum, correct = 0.0, 0
    try:
        for start in range(0, x.shape[0], batch_size):
            xb, yb = x[start : start + batch_size].to(device), y[start : start + batch_size].to(device)
            logits = model(xb)
            loss_sum += float(F.cross_entropy(logits, yb, reduction="sum"))
            correct += int((logits.argmax(1) == yb).sum())
    finally:
        restore_modes(modes)
    return loss_sum / x.shape[0], 100.0 * correct / x.shape[0]


class ResumeError(ValueError):
    """A checkpoint that this run cannot resume from (another run's, or damaged)."""


def _plain(settings: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``settings`` as JSON values (tuples as lists, other objects as str), as saved."""
    return None if settings is None else json.loads(json.dumps(dict(settings), default=str))


def _stateful_types(callbacks: Sequence[Any]) -> list[str]:
    return [type(c).__qualname__ for c in callbacks if hasattr(c, "state_dict")]


def _check_same_run(state: dict[str, Any], settings: Mapping[str, Any] | None, callbacks: Sequence[Any], path: Any) -> None:
    """Refuses to resume another run: other settings, or callbacks with state of other types."""
    where = f"fit: cannot resume from {os.fspath(path)!r}"
    saved = state.get("settings")
    if settings is not None and saved is not None:
        current = _plain(settings)
        differ = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
        if differ:
            shown = ", ".join(f"{k} {saved.get(k)!r} there, {current.get(k)!r} now" for k in differ)
            raise ResumeError(f"{where}: it is another run ({shown}); resume with its settings or start a new run")
    types = state.get("callback_types")
    if types is not None and types != _stateful_types(callbacks):
        raise ResumeError(
            f"{where}: its callbacks with state were {types}, this run's are {_stateful_types(callbacks)} "
            "(the same detectors, in the same order, are needed to resume)"
        )


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`fit` (tensors on the CPU; no arbitrary unpickling).

    FileNotFoundError when ``path`` is missing; ValueError on a truncated, corrupt or foreign file.
    """
    payload = load_torch_archive(path, "load_checkpoint", "fastspline training checkpoint")
    if not isinstance(payload, dict) or payload.get("format") != _CHECKPOINT_FORMAT:
        raise ValueError(f"load_checkpoint: {os.fspath(path)!r} is not a fastspline training checkpoint")
    if payload.get("version") != _CHECKPOINT_VERSION:
        raise ValueError(
            f"load_checkpoint: {os.fspath(path)!r} has version {payload.get('version')!r}, expected {_CHECKPOINT_VERSION}"
        )
    return payload


def _check_number(value: object, name: str, low: float, *, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"fit: {name} must be a finite number, got {value!r}")
    if value < low or (strict and value == low):
        raise ValueError(f"fit: {name} must be {'>' if strict else '>='} {low}, got {value}")
    return float(value)


def _check_int(value: object, name: str, low: int, where: str = "fit") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{where}: {name} must be an int, got {type(value).__name__} {value!r}")
    if value < low:
        raise ValueError(f"{where}: {name} must be >= {low}, got {value}")
    return value


# ---------------------------------------------------------------- fit


def _default_milestones(epochs: int) -> list[int]:
    """The recipe's lr milestones: after 50% and 75% of ``epochs`` (rounded down), those
    >= 1 and each once (a repeat would multiply lr by gamma twice at once): 80, 120 of 160;
    [2, 3] of 4, [1, 2] of 3, [1] of 2, none of 1."""
    return sorted({m for m in (epochs // 2, epochs * 3 // 4) if m >= 1})


def fit(
    model: nn.Module,
    train: object,
    test: object | None,
    epochs: int,
    *,
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    milestones: Sequence[int] | None = None,
    gamma: float = 0.1,
    batch_size: int = 128,
    sparsity: float = 0.0,
    callbacks: Sequence[Callable[..., Any]] = (),
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 1,
    resume: bool = False,
    seed: int = 0,
    device: torch.device | str | None = None,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    progress: bool = True,
    eval_batch_size: int = 1024,
    settings: Mapping[str, Any] | None = None,
    resume_stopped: bool = False,
) -> History:
    """Train ``model`` in place with SGD + multistep lr and return its :class:`History`.

    Args:
        model: any classifier ``[N, ...] -> [N, classes]``; trained where it is
            (or moved to ``device``).
        train, test: ``TensorDataset`` of ``(x, y int64)`` (e.g. a :class:`fastspline.data.Split`'s
            halves), an ``(x, y)`` pair, or a map-style dataset; ``test`` may be None.
        epochs: total epochs (a resumed run continues up to this).
        lr, momentum, weight_decay, gamma: SGD and schedule (paper: 0.1, 0.9, 1e-4, 0.1).
        milestones: epochs after which lr is multiplied by ``gamma`` (a milestone
            >= ``epochs`` has no effect); default ``[epochs // 2, epochs * 3 // 4]``
            without 0 and repeats (80, 120 of 160; [1] of 2 epochs, none of 1).
        batch_size: training batch (the last batch of an epoch may be smaller).
        sparsity: ``s`` of the BN-gamma L1 penalty (paper 1e-4; 0 disables it).
        callbacks: called as ``callback(model, epoch, record)`` after each epoch; a True
            return stops training (see :class:`Callback`).
        checkpoint: path of a checkpoint written atomically every ``checkpoint_every``
            epochs and after the last one: model, optimizer, scheduler, shuffling
            generator, torch's global generator (dropout), history, callback states.
        resume: continue from ``checkpoint`` when that file exists (else start fresh).
        seed: seeds the shuffling generator (the batch order); seed the model's
            initialisation yourself (:func:`seed_everything`) before building it.
        device: where to train (default: where the model is).
        augment: ``augment(x_batch, generator) -> x_batch`` applied to each training batch
            (on the CPU, before the move to ``device``).
        progress: a tqdm bar over epochs.
        settings: JSON-like values that define the run (data, seed, probe, ...), saved in
            the checkpoint: resuming from a checkpoint with other settings (or whose
            callbacks with state are of other types) raises ValueError naming them, instead
            of mixing two runs.
        resume_stopped: resuming a run that a callback stopped trains on up to ``epochs``
            (default: the saved history is returned as it is).

    Returns:
        :class:`History`; with ``resume`` it includes the epochs run before.

    Raises:
        TypeError/ValueError on bad arguments, naming the argument.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"fit: model must be an nn.Module, got {type(model).__name__}")
    epochs = _check_int(epochs, "epochs", 1)
    batch_size = _check_int(batch_size, "batch_size", 1)
    eval_batch_size = _check_int(eval_batch_size, "eval_batch_size", 1)
    checkpoint_every = _check_int(checkpoint_every, "checkpoint_every", 1)
    seed = _check_int(seed, "seed", 0)
    lr = _check_number(lr, "lr", 0.0, strict=True)
    momentum = _check_number(momentum, "momentum", 0.0)
    weight_decay = _check_number(weight_decay, "weight_decay", 0.0)
    gamma = _check_number(gamma, "gamma", 0.0, strict=True)
    sparsity = _check_number(sparsity, "sparsity", 0.0)
    if milestones is None:
        milestones = _default_milestones(epochs)
    elif isinstance(milestones, (str, bytes)) or not isinstance(milestones, Sequence):
        raise TypeError(f"fit: milestones must be a sequence of ints, got {type(milestones).__name__}")
    milestones = [_check_int(m, "milestones[]", 1) for m in milestones]
    if isinstance(callbacks, (str, bytes)) or not isinstance(callbacks, Sequence):
        raise TypeError(f"fit: callbacks must be a sequence of callables, got {type(callbacks).__name__}")
    for i, callback in enumerate(callbacks):
        if not callable(callback):
            raise TypeError(f"fit: callbacks[{i}] is not callable: {callback!r}")
    if resume and checkpoint is None:
        raise ValueError("fit: resume=True needs checkpoint= (the file to resume from)")
    if settings is not None and not isinstance(settings, Mapping):
        raise TypeError(f"fit: settings must be a mapping or None, got {type(settings).__name__}")
    if augment is not None and not callable(augment):
        raise TypeError(f"fit: augment must be callable or None, got {type(augment).__name__}")
    train_x, train_y = _as_tensors(train, "train")
    # Checked (and a generic dataset materialised) once, not after every epoch.
    test_tensors = _as_tensors(test, "test") if test is not None else None

    if device is None:
        device = _model_device(model)
    device = torch.device(device)
    model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=gamma)
    generator = torch.Generator().manual_seed(seed)
    history = History()
    flops_by_shape: dict[tuple[int, ...], int] = {}
    start_epoch = 1

    if resume and checkpoint is not None and os.path.exists(checkpoint):
        state = load_checkpoint(checkpoint)
        _check_same_run(state, settings, callbacks, checkpoint)
        # A checkpoint of another model (or a damaged one) must not leave this one, or the callbacks, half loaded.
        backup = copy.deepcopy(model.state_dict())
        callback_backups = [
            copy.deepcopy(c.state_dict()) if hasattr(c, "state_dict") and hasattr(c, "load_state_dict") else None for c in callbacks
        ]
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            generator.set_state(state["generator"])
            history = History([dict(r) for r in state["history"]], bool(state.get("stopped_early", False)))
            flops_by_shape = {tuple(shape): int(flops) for shape, flops in state["flops_by_shape"]}
            saved_states = state.get("callbacks", [])
            for callback, saved in zip(callbacks, saved_states):
                if saved is not None and hasattr(callback, "load_state_dict"):
                    callback.load_state_dict(saved)
            # The global generators (dropout, ...), last: a failed resume leaves them as they were.
            if state.get("rng") is not None:
                torch.set_rng_state(state["rng"])
            if state.get("cuda_rng") is not None and device.type == "cuda":
                torch.cuda.set_rng_state(state["cuda_rng"], device)
            start_epoch = int(state["epoch"]) + 1
        except (KeyError, RuntimeError, TypeError, ValueError) as exc:
            model.load_state_dict(backup)
            for callback, saved in zip(callbacks, callback_backups):
                if saved is not None:
                    callback.load_state_dict(saved)
            raise ResumeError(f"fit: cannot resume from {os.fspath(checkpoint)!r}: {type(exc).__name__}: {exc}") from exc
        if history.stopped_early:
            if not resume_stopped:
                return history
            history.stopped_early = False

    def save(epoch: int) -> None:
        if checkpoint is None:
            return
        atomic_save(
            {
                "format": _CHECKPOINT_FORMAT,
                "version": _CHECKPOINT_VERSION,
                "epoch": epoch,
                "model": model.state_dict(),
                "model_config": model.config() if hasattr(model, "config") else None,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "generator": generator.get_state(),
                "rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                "history": history.records,
                "stopped_early": history.stopped_early,
                "flops_by_shape": [[list(shape), flops] for shape, flops in flops_by_shape.items()],
                "callbacks": [c.state_dict() if hasattr(c, "state_dict") else None for c in callbacks],
                "callback_types": _stateful_types(callbacks),
                "settings": _plain(settings),
            },
            checkpoint,
        )

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, initial=start_epoch - 1, desc="train", unit="epoch")
    cumulative = history.total_flops
    n = train_x.shape[0]
    try:
        for epoch in range(start_epoch, epochs + 1):
            started = time.perf_counter()
            model.train()
            epoch_lr = optimizer.param_groups[0]["lr"]
            order = torch.randperm(n, generator=generator)
            loss_sum, correct, epoch_flops = 0.0, 0, 0
            for start in range(0, n, batch_size):
                index = order[start : start + batch_size]
                xb, yb = train_x[index], train_y[index]
                if augment is not None:
                    xb = augment(xb, generator)
                xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
                optimizer.zero_grad(set_to_none=True)
                shape = tuple(xb.shape)
                if shape not in flops_by_shape:
                    counter = _flop_counter()
                    with counter:
                        logits = model(xb)
                        loss = F.cross_entropy(logits, yb)
                        loss.backward()
                    flops_by_shape[shape] = int(counter.get_total_flops())
                else:
                    logits = model(xb)
                    loss = F.cross_entropy(logits, yb)
                    loss.backward()
                batch_loss = float(loss.detach())
                if not math.isfinite(batch_loss):  # stop before the step spreads NaN/inf into the weights
                    raise FloatingPointError(
                        f"fit: the training loss is {batch_loss} at epoch {epoch}, batch {start // batch_size}: "
                        "training diverged (lower lr?) or the inputs hold NaN/inf"
                    )
                if sparsity:
                    bn_l1_penalty(model, sparsity)
                optimizer.step()
                epoch_flops += flops_by_shape[shape]
                loss_sum += batch_loss * xb.shape[0]
                correct += int((logits.detach().argmax(1) == yb).sum())
            scheduler.step()
            cumulative += epoch_flops
            record: dict[str, Any] = {
                "epoch": epoch,
                "lr": epoch_lr,
                "train_loss": loss_sum / n,
                "train_acc": 100.0 * correct / n,
                "test_loss": None,
                "test_acc": None,
                "flops": epoch_flops,
                "cumulative_flops": cumulative,
            }
            if test_tensors is not None:
                record["test_loss"], record["test_acc"] = evaluate(model, test_tensors, batch_size=eval_batch_size, device=device)
            record["seconds"] = time.perf_counter() - started
            stop = False
            for callback in callbacks:
                stop = bool(callback(model, epoch, record)) or stop
            history.records.append(record)
            history.stopped_early = stop and epoch < epochs
            if bar is not None:
                shown = {"loss": f"{record['train_loss']:.3f}"}
                if record["test_acc"] is not None:
                    shown["test"] = f"{record['test_acc']:.2f}"
                bar.set_postfix(shown)
                bar.update(1)
            if epoch % checkpoint_every == 0 or epoch == epochs or stop:
                save(epoch)
            if stop:
                break
    finally:
        if bar is not None:
            bar.close()
    return history
