"""Structured (unit) pruning: spline policies, baselines, merge compensation and
physically smaller models.

``plan(model, probe, ratio, policy=...)`` decides which units of each prunable
layer to remove and, for each removed unit, why and into which kept unit its
contribution is merged; ``apply(plan, model, data)`` returns a smaller dense
model (``model.rebuild``) with the merges folded in and, given data, BatchNorm
statistics re-estimated; ``mask(plan, model)`` returns a same-shaped copy with the
removed units zeroed and the same merges folded in. The input model is never
modified. See docs/pruning.md for the method, what is exact and the limits.

Units. A prunable layer is an activation module whose input comes from a
conv/linear ``producer`` (through a BatchNorm ``norm``) or from a
:class:`~fastspline.models.ChannelSelect` of a BatchNorm output; the units are the
channels (dim 1) of the activation's input. Layers come from
``model.width_layers()`` (every :mod:`fastspline.models` model) or, for other
models, are found as ``conv/linear -> [BatchNorm] -> activation`` chains. The
activation's output must reach exactly one conv/linear ``consumer`` through
channel-wise ops only (pooling, dropout, flatten); one traced forward pass on one
probe input finds the consumer, and whether the consumer's bias or a BatchNorm
after it can absorb a merge offset.

Policies (``POLICIES``):

- ``spline-layerwise`` / ``spline-global`` (PAPER.md §4): node codes
  ``[z_k(x) > 0]`` over probe inputs (x positions) from :func:`fastspline.codes`,
  unit-major; redundancy distance ``min(d, 1 - d)`` of normalised Hamming
  distances (``complement=True``) or ``d``; repeatedly take the closest remaining
  pair of a layer and remove its less important unit (|BN gamma|, else the
  producer filter's L2 norm). Per layer this is a lazy greedy over
  ``hamming_topk`` neighbour lists and a heap (no N x N matrix); the removal
  distances of one layer never decrease, so the global policy is the merge of
  the layers' sequences by normalised distance.
- ``slimming`` (global |gamma|), ``bn-layerwise`` (|gamma| per layer), ``l1``
  (per layer, L1 norm of the producer filter, or of the consumer's weights for
  units without a producer), ``random`` (per layer, seeded).

Budgets: ``"channels"`` removes ``ratio * units`` units (rounded, halves up) (per layer for
layerwise policies, network-wide for global ones); ``"flops"`` removes units in
policy order (layerwise policies: from the layer with the smallest removed
fraction) until the forward FLOPs per input are ``<= (1 - ratio)`` of the dense
ones. No layer goes below ``min_keep`` units (nor below 1).

Merge (every policy): each removed unit ``j`` goes into its nearest kept unit
``i`` by code distance; ``h_j ~ a h_i + b`` is fitted by least squares on the
consumer's input over the probe (the post-activation after any pooling), then
``a * W[:, j]`` is added to ``W[:, i]`` of the consumer and ``b`` times the sum of
``W[:, j]`` over the kernel window goes into the consumer's bias or the running
mean of the BatchNorm after it. ``merge="scale"`` fits ``h_j ~ a h_i``;
``"none"`` drops units as they are.

A BatchNorm without running statistics (``track_running_stats=False``) normalises
by each batch's own, in eval mode too: it is a layer's ``norm`` or an offset target
like any other, the offset needs no compensation there (the batch mean removes it),
and ``apply`` keeps it without statistics in the smaller model.
"""
from __future__ import annotations

import copy
import heapq
import math
import numbers
import operator
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import FlopCounterMode

from fastspline import ops
from fastspline._modes import restore_modes, set_eval, training_modes
from fastspline.codes import ACTIVATIONS, _batches, _inputs_of, explain_dtype
from fastspline.codes import codes as region_codes
from fastspline.models.base import WidthLayer

__all__ = [
    "BUDGETS",
    "MERGES",
    "PAIR_RULES",
    "POLICIES",
    "LayerPlan",
    "PrunePlan",
    "RemovedUnit",
    "apply",
    "mask",
    "plan",
    "recalibrate_bn",
    "spline_order",
]

POLICIES = ("spline-layerwise", "spline-global", "slimming", "bn-layerwise", "l1", "random")
MERGES = ("none", "scale", "affine")
BUDGETS = ("channels", "flops")
PAIR_RULES = ("importance", "merge-error")
_SPLINE = ("spline-layerwise", "spline-global")
_GLOBAL = ("spline-global", "slimming")
_NORMS = (nn.modules.batchnorm._BatchNorm,)
_SENTINEL = 1 << 62


# ---------------------------------------------------------------- the plan


@dataclass
class RemovedUnit:
    """One removed unit of a layer.

    index: the unit (channel) index in the original layer.
    reason: why it was removed, e.g. ``"code distance 0.013 to unit 17"``.
    merged_into: the kept unit its contribution was folded into, or None.
    a, b: the fit ``h_j ~ a h_i + b`` folded into ``merged_into`` (None without merge).
    distance: normalised redundancy code distance to ``merged_into`` (None without merge).
    """

    index: int
    reason: str
    merged_into: int | None = None
    a: float | None = None
    b: float | None = None
    distance: float | None = None


@dataclass
class LayerPlan:
    """What happens to one prunable layer (units = channels of ``name``'s input).

    name: the activation module (the layer name :func:`fastspline.codes` gives).
    norm, producer, select: as :class:`fastspline.models.WidthLayer`.
    consumer: the conv/linear reading the activation's output.
    flat_positions: P when ``consumer`` is a linear layer reading the flattened
        ``[C, P]`` output (unit ``c`` is columns ``c*P .. c*P+P-1``), else None.
    shift: the module that absorbs merge offsets ``b`` (``consumer``'s bias or a
        BatchNorm's running mean after it), or None (then ``b`` is 0).
    width_before: units before pruning; kept: kept unit indices (sorted).
    removed: the removed units, in removal order.
    scores: one score per unit, lower = pruned first (spline: normalised
        redundancy distance; slimming/bn-layerwise: |gamma|; l1: filter L1 norm;
        random: the random key); None where undefined.
    code_bits: bits of one unit's node code (probe inputs x positions), 0 if unused.
    """

    name: str
    norm: str | None
    producer: str | None
    select: str | None
    consumer: str
    flat_positions: int | None
    shift: str | None
    width_before: int
    kept: list[int] = field(default_factory=list)
    removed: list[RemovedUnit] = field(default_factory=list)
    scores: list[float | None] = field(default_factory=list)
    code_bits: int = 0

    @property
    def width_after(self) -> int:
        return len(self.kept)

    @property
    def removed_indices(self) -> list[int]:
        return [unit.index for unit in self.removed]


@dataclass
class PrunePlan:
    """The result of :func:`plan`: per-layer kept/removed units and merges.

    ``to_dict()`` is the whole plan as JSON-able data (``PrunePlan.from_dict``
    reads it back); ``summary()`` a short JSON-able overview.
    """

    policy: str
    ratio: float
    budget: str
    merge: str
    recalibrate: bool
    complement: bool
    min_keep: int
    seed: int
    model: str
    layers: list[LayerPlan]
    flops_before: int
    flops_after: int
    flops_target: int | None = None
    pair_rule: str = "importance"

    def widths_before(self) -> list[int]:
        return [layer.width_before for layer in self.layers]

    def widths_after(self) -> list[int]:
        return [layer.width_after for layer in self.layers]

    @property
    def units_before(self) -> int:
        return sum(self.widths_before())

    @property
    def units_after(self) -> int:
        return sum(self.widths_after())

    def layer(self, name: str) -> LayerPlan:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"PrunePlan: no layer {name!r}; layers are {[l.name for l in self.layers]}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrunePlan:
        fields = dict(data)
        layers = []
        for entry in fields.pop("layers"):
            entry = dict(entry)
            entry["removed"] = [RemovedUnit(**unit) for unit in entry["removed"]]
            layers.append(LayerPlan(**entry))
        return cls(layers=layers, **fields)

    def summary(self) -> dict[str, Any]:
        merged = sum(unit.merged_into is not None for layer in self.layers for unit in layer.removed)
        return {
            "policy": self.policy,
            "ratio": self.ratio,
            "budget": self.budget,
            "merge": self.merge,
            "recalibrate": self.recalibrate,
            "complement": self.complement,
            "min_keep": self.min_keep,
            "pair_rule": self.pair_rule,
            "model": self.model,
            "units_before": self.units_before,
            "units_after": self.units_after,
            "removed_fraction": 1.0 - self.units_after / self.units_before if self.units_before else 0.0,
            "merged_units": merged,
            "flops_before": self.flops_before,
            "flops_after": self.flops_after,
            "flops_target": self.flops_target,
            "flops_ratio": self.flops_before / self.flops_after if self.flops_after else None,
            "widths_before": self.widths_before(),
            "widths_after": self.widths_after(),
            "layers": [
                {"name": l.name, "before": l.width_before, "after": l.width_after, "removed": l.removed_indices}
                for l in self.layers
            ],
        }


# ---------------------------------------------------------------- argument checks


def _check_ratio(ratio: object, where: str) -> float:
    if isinstance(ratio, (bool, np.bool_)) or not isinstance(ratio, numbers.Real) or not 0.0 <= ratio < 1.0:
        raise ValueError(f"{where}: ratio must be a number in [0, 1), got {ratio!r}")
    return float(ratio)


def _check_choice(value: object, name: str, choices: Sequence[str], where: str) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{where}: unknown {name} {value!r}; known: {', '.join(choices)}")
    return value


def _check_int(value: object, name: str, low: int, where: str) -> int:
    if isinstance(value, bool) or not hasattr(type(value), "__index__"):
        raise TypeError(f"{where}: {name} must be an int, got {type(value).__name__} {value!r}")
    value = operator.index(value)
    if value < low:
        raise ValueError(f"{where}: {name} must be >= {low}, got {value}")
    return value


def _check_bool(value: object, name: str, where: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{where}: {name} must be a bool, got {type(value).__name__} {value!r}")
    return value


def _check_model(model: object, where: str) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{where}: model must be an nn.Module, got {type(model).__name__}")
    return model


def _check_plan(p: object, where: str) -> PrunePlan:
    if not isinstance(p, PrunePlan):
        raise TypeError(f"{where}: plan must be a PrunePlan from fastspline.pruning.plan, got {type(p).__name__}")
    return p


def _device_of(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    first = first if first is not None else next(model.buffers(), None)
    return first.device if first is not None else torch.device("cpu")


class _Frozen:
    """Eval mode and no grad while it runs; every module's mode restored and every hook removed after."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.handles: list[Any] = []

    def __enter__(self) -> _Frozen:
        self.modes = training_modes(self.model)
        self.grad = torch.is_grad_enabled()
        torch.set_grad_enabled(False)
        set_eval(self.model, self.modes)
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.remove()
        restore_modes(self.modes)
        torch.set_grad_enabled(self.grad)


# ---------------------------------------------------------------- structure


@dataclass
class _Layer:
    spec: WidthLayer
    width: int
    consumer: str
    flat_positions: int | None
    shift: str | None


_PASS = frozenset(
    {
        "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
        "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d",
        "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d",
        "dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout",
        "flatten", "view", "reshape", "contiguous", "clone",
    }
)  # fmt: skip
_LINEAR = frozenset({"conv1d", "conv2d", "conv3d", "linear"})


class _Tracer(TorchFunctionMode):
    """Follows each prunable layer's activation output to the conv/linear reading it.

    Tensors are matched by identity; every tensor seen is kept alive for the one
    traced forward pass, so ids are not reused.
    """

    def __init__(self, weight_owner: dict[int, str], stat_owner: dict[int, str]) -> None:
        super().__init__()
        self.weight_owner = weight_owner
        self.stat_owner = stat_owner
        self.tracked: dict[int, tuple[int, torch.Tensor, int | None]] = {}  # id -> (layer, tensor, flat P)
        self.outputs: dict[int, tuple[int, torch.Tensor]] = {}  # consumer outputs
        self.consumers: dict[int, list[tuple[str, int | None]]] = defaultdict(list)
        self.other_uses: dict[int, list[str]] = defaultdict(list)
        self.output_uses: dict[int, list[tuple[str, str | None]]] = defaultdict(list)
        self.made_by: dict[int, tuple[str, str, torch.Tensor, int]] = {}  # id(out) -> (kind, module, out, id(input))
        self.uses: Counter[int] = Counter()
        self.keep: list[Any] = []
        self.norm: str | None = None  # the BatchNorm module running now (set by its hooks; it may have no running stats)

    def track(self, layer: int, value: object) -> None:
        if isinstance(value, torch.Tensor):
            self.tracked[id(value)] = (layer, value, None)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if not isinstance(out, torch.Tensor):
            return out  # size(), dim(), ...: metadata only
        name = getattr(func, "__name__", str(func))
        data = [t for t in _tensor_args(args, kwargs) if not isinstance(t, nn.Parameter) and id(t) not in self.stat_owner]
        self.keep.append((args, kwargs, out))
        for t in data:
            self.uses[id(t)] += 1
        if name in _LINEAR and len(data) >= 1 and (name != "linear" or out.dim() == 2):  # units in dim 1
            weight = args[1] if len(args) > 1 else kwargs.get("weight")
            owner = self.weight_owner.get(id(weight))
            if owner is not None:
                self.made_by[id(out)] = ("linear", owner, out, id(data[0]))
        norm = None
        if name == "batch_norm":  # a module's running stats name it (a functional call too), else the BN module running now
            stats = args[1] if len(args) > 1 else kwargs.get("running_mean")
            norm = self.stat_owner.get(id(stats), self.norm)
        if norm is not None and data:
            self.made_by[id(out)] = ("norm", norm, out, id(data[0]))
        for t in data:
            entry = self.tracked.get(id(t))
            if entry is not None and entry[1] is t:
                self._follow(name, args, kwargs, t, entry, out)
            produced = self.outputs.get(id(t))
            if produced is not None and produced[1] is t:
                self.output_uses[produced[0]].append((name, norm))
        return out

    def _follow(self, name: str, args: tuple, kwargs: dict, t: torch.Tensor, entry: tuple, out: torch.Tensor) -> None:
        layer, _, flat = entry
        if name in _LINEAR:
            weight = args[1] if len(args) > 1 else kwargs.get("weight")
            owner = self.weight_owner.get(id(weight))
            if owner is None or not (args and args[0] is t):
                self.other_uses[layer].append(name)
                return
            if name == "linear" and t.dim() != 2:  # acts on the last dim, not on the units (dim 1)
                self.other_uses[layer].append(f"linear on a {t.dim()}-d input")
                return
            self.consumers[layer].append((owner, flat))
            self.outputs[id(out)] = (layer, out)
            return
        if name in _PASS and out.dim() >= 2 and out.shape[0] == t.shape[0] and args and args[0] is t:
            if flat is None and out.dim() >= 2 and out.shape[:2] == t.shape[:2] and (out.dim() > 2 or t.dim() == 2):
                self.tracked[id(out)] = (layer, out, None)  # channels stay in dim 1
                return
            if flat is None and out.dim() == 2 and t.dim() > 2 and out.shape[1] == math.prod(t.shape[1:]):
                self.tracked[id(out)] = (layer, out, math.prod(t.shape[2:]))  # flattened [C, P]
                return
            if flat is not None and out.shape == t.shape:
                self.tracked[id(out)] = (layer, out, flat)
                return
        self.other_uses[layer].append(name)


def _tensor_args(args: tuple, kwargs: dict) -> Iterator[torch.Tensor]:
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            yield value
        elif isinstance(value, (list, tuple)):
            yield from (v for v in value if isinstance(v, torch.Tensor))


def _owners(model: nn.Module) -> tuple[dict[int, str], dict[int, str]]:
    weight_owner, stat_owner = {}, {}
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            weight_owner[id(module.weight)] = name
        if isinstance(module, _NORMS) and module.running_mean is not None:
            stat_owner[id(module.running_mean)] = name
            stat_owner[id(module.running_var)] = name
    return weight_owner, stat_owner


def _structure(model: nn.Module, example: torch.Tensor, where: str) -> list[_Layer]:
    """The prunable layers of ``model``, their consumers and offset targets (one traced forward)."""
    named = dict(model.named_modules())
    weight_owner, stat_owner = _owners(model)
    tracer = _Tracer(weight_owner, stat_owner)
    specs: list[WidthLayer] | None = None
    if callable(getattr(model, "width_layers", None)):
        specs = list(model.width_layers())
    inferred: dict[str, WidthLayer] = {}
    reads: dict[str, list[int]] = {}
    with _Frozen(model) as frozen:
        for name, module in named.items():
            if isinstance(module, _NORMS):
                frozen.handles.append(module.register_forward_pre_hook(lambda m, a, name=name: setattr(tracer, "norm", name)))
                frozen.handles.append(
                    module.register_forward_hook(lambda m, a, out: setattr(tracer, "norm", None), always_call=True)
                )  # cleared when its forward raises too (a model may catch it)
        if specs is None:
            for name, module in named.items():
                if isinstance(module, tuple(ACTIVATIONS)):
                    frozen.handles.append(
                        module.register_forward_pre_hook(
                            lambda m, args, name=name: _infer(tracer, name, m, args, inferred, reads)
                        )
                    )
            with tracer:
                try:
                    model(example)
                except RuntimeError as exc:
                    explain_dtype(exc, model, example, where)
                    raise
            # read by nothing else later in the forward pass either
            specs = [spec for name, spec in inferred.items() if all(tracer.uses[key] == 1 for key in reads[name])]
            if not specs:
                raise ValueError(
                    f"{where}: found no prunable layer in {type(model).__name__}: a prunable layer is an activation "
                    "module whose input is a conv/linear output, directly or through a BatchNorm, read by nothing else; "
                    "use fastspline.integrations.torch_pruning for other graphs"
                )
            tracer = _Tracer(weight_owner, stat_owner)
        for i, spec in enumerate(specs):
            if spec.activation not in named:
                raise ValueError(f"{where}: width layer {i} names activation {spec.activation!r}, not a module of the model")
            frozen.handles.append(named[spec.activation].register_forward_hook(lambda m, a, out, i=i: tracer.track(i, out)))
        with tracer:
            model(example)
    layers = []
    for i, spec in enumerate(specs):
        found = tracer.consumers.get(i, [])
        others = tracer.other_uses.get(i, [])
        if len(found) != 1 or others:
            reads = [c for c, _ in found] + others
            raise ValueError(
                f"{where}: the output of layer {spec.activation!r} is read by {reads or 'nothing'}; pruning needs it to "
                "reach exactly one conv/linear layer through pooling, dropout or flatten only"
            )
        consumer, flat = found[0]
        module = named[consumer]
        if getattr(module, "groups", 1) != 1:
            raise ValueError(
                f"{where}: the output of layer {spec.activation!r} is read by grouped conv {consumer!r} "
                f"(groups={module.groups}); pruning needs a consumer whose every filter reads every unit"
            )
        uses = tracer.output_uses.get(i, [])
        if getattr(module, "bias", None) is not None:
            shift: str | None = consumer
        elif len(uses) == 1 and uses[0][0] == "batch_norm" and uses[0][1] is not None:
            shift = uses[0][1]
        else:
            shift = None
        width = _width_of(named, spec)
        if flat is not None and module.weight.shape[1] != width * flat:
            raise ValueError(f"{where}: {consumer!r} reads {module.weight.shape[1]} features, not {width} x {flat}")
        layers.append(_Layer(spec, width, consumer, flat, shift))
    return layers


def _infer(
    tracer: _Tracer, name: str, module: nn.Module, args: tuple, found: dict[str, WidthLayer], reads: dict[str, list[int]]
) -> None:
    """Activation pre-hook: is its input ``conv/linear -> [BatchNorm]`` read by nothing else so far?
    ``reads[name]``: the tensors that must have exactly one use at the end of the forward pass."""
    if not args or not isinstance(args[0], torch.Tensor):
        return
    x = args[0]
    made = tracer.made_by.get(id(x))
    if made is None or made[2] is not x or tracer.uses[id(x)] != 0:
        return
    own = [] if getattr(module, "inplace", False) else [id(x)]  # in place: later reads see the output
    if made[0] == "linear":
        found[name] = WidthLayer(name, None, made[1])
        reads[name] = own
        return
    source = tracer.made_by.get(made[3])
    if source is not None and source[0] == "linear" and tracer.uses[id(source[2])] == 1:
        found[name] = WidthLayer(name, made[1], source[1])
        reads[name] = [id(source[2]), *own]


def _width_of(named: dict[str, nn.Module], spec: WidthLayer) -> int:
    if spec.select is not None:
        return int(named[spec.select].indices.numel())
    if spec.producer is not None:
        weight = named[spec.producer].weight
        return int(weight.shape[0])
    if spec.norm is not None:
        return int(named[spec.norm].num_features)
    raise ValueError(f"width layer {spec.activation!r} has neither a producer, a norm nor a select")


def _norm_channels(named: dict[str, nn.Module], spec: WidthLayer, units: torch.Tensor | list[int]) -> torch.Tensor:
    """Channels of ``spec.norm`` behind ``units`` (through the select, if any)."""
    units = torch.as_tensor(units, dtype=torch.int64)
    if spec.select is not None:
        return named[spec.select].indices.detach().cpu()[units]
    return units


# ---------------------------------------------------------------- FLOPs


class _Flops:
    """Forward FLOPs per input as a function of the kept widths.

    Each conv/linear module's FLOPs are measured once (``FlopCounterMode``) and
    scale with (kept inputs / inputs) x (kept outputs / outputs) of the layers
    it produces or consumes; everything else is constant.
    """

    def __init__(self, model: nn.Module, example: torch.Tensor, layers: list[_Layer]) -> None:
        counter = FlopCounterMode(display=False)
        with _Frozen(model), counter:
            model(example)  # not example[:1]: a BatchNorm without running stats needs 2 inputs
        n = example.shape[0]
        self.dense = int(counter.get_total_flops()) // n
        per_module = counter.get_flop_counts()
        prefix = type(model).__name__
        self.terms: list[tuple[float, int | None, int | None]] = []  # (flops, out layer, in layer)
        touched = {l.spec.producer for l in layers} | {l.consumer for l in layers}
        for name in touched:
            if name is None:
                continue
            flops = sum(per_module.get(f"{prefix}.{name}", {}).values()) / n
            out_layer = next((i for i, l in enumerate(layers) if l.spec.producer == name), None)
            in_layer = next((i for i, l in enumerate(layers) if l.consumer == name), None)
            self.terms.append((float(flops), out_layer, in_layer))
        self.widths = [l.width for l in layers]

    def __call__(self, kept: Sequence[int]) -> float:
        total = float(self.dense)
        for flops, out_layer, in_layer in self.terms:
            scale = 1.0
            if out_layer is not None:
                scale *= kept[out_layer] / self.widths[out_layer]
            if in_layer is not None:
                scale *= kept[in_layer] / self.widths[in_layer]
            total -= flops * (1.0 - scale)
        return total


# ---------------------------------------------------------------- spline greedy


def _complement(codes: torch.Tensor, n_samples: int, positions: int) -> torch.Tensor:
    """Bitwise complement of unit-major codes with the pad bits kept zero."""
    per_position = (n_samples + 63) // 64
    valid = torch.full((per_position,), -1, dtype=torch.int64)
    if n_samples % 64:
        valid[-1] = (1 << (n_samples % 64)) - 1
    return torch.bitwise_and(torch.bitwise_not(codes), valid.repeat(positions))


def _neighbours(
    rows: torch.Tensor, pool: torch.Tensor, pool_comp: torch.Tensor | None, pool_index: np.ndarray, k: int, exclude: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The nearest pool rows of each row (and of the complements), sorted by
    (distance, index), ``exclude[r]`` (the row's own index) left out.

    Each source gives its ``k + 1`` nearest; merged, an entry is kept only while
    no truncated source can still hold a nearer one (entries sorting after a
    truncated source's last one are dropped), so every list is an exact prefix
    of the row's full sorted list. Returns int64 distances, int64 indices (into
    the original units) and bool mirror flags, ``[len(rows), k or 2k + 2]``;
    missing entries have distance ``_SENTINEL``.
    """
    kk = min(k + 1, pool.shape[0])
    truncated = kk < pool.shape[0]
    parts = []
    bound = np.full(rows.shape[0], np.iinfo(np.int64).max)
    for target, mirrored in ((pool, False), (pool_comp, True)):
        if target is None:
            continue
        d, j = ops.hamming_topk(rows, target, kk)
        d = d.numpy().astype(np.int64)
        j = pool_index[j.numpy()]
        if truncated:  # what this source left out sorts after its last entry
            bound = np.minimum(bound, (d[:, -1] << 32) | j[:, -1])
        d[j == exclude[:, None]] = _SENTINEL
        parts.append((d, j, np.full(d.shape, mirrored)))
    dist = np.concatenate([p[0] for p in parts], axis=1)
    index = np.concatenate([p[1] for p in parts], axis=1)
    mirror = np.concatenate([p[2] for p in parts], axis=1)
    order = np.lexsort((mirror, index, dist), axis=1)
    dist = np.take_along_axis(dist, order, 1)
    index = np.take_along_axis(index, order, 1)
    mirror = np.take_along_axis(mirror, order, 1)
    dist[((dist << 32) | index) > bound[:, None]] = _SENTINEL
    width = (k + 1) * len(parts)
    if dist.shape[1] < width:  # fewer pool rows than k + 1: same width for every call
        pad = width - dist.shape[1]
        dist = np.pad(dist, ((0, 0), (0, pad)), constant_values=_SENTINEL)
        index = np.pad(index, ((0, 0), (0, pad)))
        mirror = np.pad(mirror, ((0, 0), (0, pad)))
    return dist, index, mirror


def spline_order(
    codes: torch.Tensor,
    n_bits: int,
    importance: Sequence[float] | np.ndarray,
    *,
    floor: int = 1,
    complement: bool = True,
    n_samples: int | None = None,
    neighbours: int = 16,
    complement_codes: torch.Tensor | None = None,
) -> Iterator[tuple[int, int, int, bool]]:
    """The spline greedy of one layer: yields ``(removed, partner, distance, mirror)``
    in removal order until ``floor`` units remain.

    Each step takes the closest remaining pair by redundancy distance (Hamming
    ``d``, or ``min(d, n_bits - d)`` with ``complement``; ``mirror`` says the
    second won) and removes its unit of lower ``importance`` (equal: the higher
    index). ``codes``: unit-major int64 ``[n_units, W]`` with zero pad bits;
    ``n_samples``: samples per position block of the codes (for the complement's
    pad bits; default ``n_bits``, one block); ``complement_codes``: the
    complemented codes when the blocks are not uniform (used with ``complement``).

    Each unit keeps a sorted list of its ``neighbours`` nearest units (from
    :func:`fastspline.ops.hamming_topk`, no N x N matrix) and a pointer past the
    removed ones; a heap holds each unit's current nearest pair. A unit whose
    list runs out gets a new list over the remaining units. Distances yielded
    never decrease (the remaining pairs are a subset of the earlier ones).

    Arguments are checked here, when called, not when the steps are first read.
    """
    where = "spline_order"
    if not isinstance(codes, torch.Tensor) or codes.dtype != torch.int64 or codes.dim() != 2:
        shown = f"{codes.dtype} {tuple(codes.shape)}" if isinstance(codes, torch.Tensor) else type(codes).__name__
        raise TypeError(f"{where}: codes must be an int64 tensor [n_units, words], got {shown}")
    if isinstance(n_bits, bool) or not isinstance(n_bits, int) or not 1 <= n_bits <= 64 * codes.shape[1]:
        raise ValueError(f"{where}: n_bits must be an int in [1, 64 * words = {64 * codes.shape[1]}], got {n_bits!r}")
    try:
        importance = np.asarray(importance, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{where}: importance must be a sequence of numbers, one per unit ({exc})") from exc
    if importance.shape != (codes.shape[0],):
        raise ValueError(f"{where}: importance must have shape ({codes.shape[0]},), one value per unit, got {importance.shape}")
    if np.isnan(importance).any():
        raise ValueError(f"{where}: importance holds NaN at units {np.flatnonzero(np.isnan(importance))[:8].tolist()}")
    if isinstance(floor, bool) or not isinstance(floor, int) or floor < 0:
        raise ValueError(f"{where}: floor must be an int >= 0, got {floor!r}")
    if not isinstance(complement, bool):
        raise TypeError(f"{where}: complement must be a bool, got {type(complement).__name__} {complement!r}")
    if n_samples is not None and (isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1 or n_bits % n_samples):
        raise ValueError(f"{where}: n_samples must be None or an int >= 1 dividing n_bits = {n_bits}, got {n_samples!r}")
    if isinstance(neighbours, bool) or not isinstance(neighbours, int) or neighbours < 1:
        raise ValueError(f"{where}: neighbours must be an int >= 1, got {neighbours!r}")
    if complement_codes is not None and (
        not isinstance(complement_codes, torch.Tensor) or complement_codes.dtype != torch.int64 or complement_codes.shape != codes.shape
    ):
        other = complement_codes
        shown = f"{other.dtype} {tuple(other.shape)}" if isinstance(other, torch.Tensor) else type(other).__name__
        raise ValueError(f"{where}: complement_codes must be None or int64 of the codes' shape {tuple(codes.shape)}, got {shown}")
    if complement and complement_codes is None:  # the complement is built from the block layout
        samples = n_bits if n_samples is None else n_samples
        words = (n_bits // samples) * ((samples + 63) // 64)
        if codes.shape[1] != words:
            raise ValueError(
                f"{where}: codes have {codes.shape[1]} words per unit, but n_bits = {n_bits} in blocks of "
                f"n_samples = {samples} take {words}"
            )
    return _spline_steps(codes, n_bits, importance, floor, complement, n_samples, neighbours, complement_codes)


class _NeighbourLists:
    """Each unit's nearest units by code distance (``hamming_topk`` lists of ``neighbours``),
    read lazily as units are removed: :meth:`nearest` skips removed units and recomputes a
    list against the units still alive when it runs out (so no N x N matrix is held)."""

    def __init__(self, codes: torch.Tensor, comp: torch.Tensor | None, neighbours: int) -> None:
        n = codes.shape[0]
        self.codes, self.comp = codes, comp
        self.k = max(1, min(neighbours, n - 1))
        everyone = np.arange(n)
        self.dist, self.index, self.mirror = _neighbours(codes, codes, comp, everyone, self.k, everyone)
        self.complete = np.full(n, self.k >= n - 1)  # the list holds every other unit
        self.pointer = np.zeros(n, dtype=np.int64)
        self.alive = np.ones(n, dtype=bool)

    def nearest(self, u: int) -> tuple[int, int, bool] | None:
        """(distance, unit, mirrored) of u's nearest alive unit, advancing its pointer; None when none is left."""
        dist, index = self.dist, self.index
        width = dist.shape[1]
        while True:
            p = self.pointer[u]
            while p < width and dist[u, p] < _SENTINEL and not self.alive[index[u, p]]:
                p += 1
            self.pointer[u] = p
            if p < width and dist[u, p] < _SENTINEL:
                return int(dist[u, p]), int(index[u, p]), bool(self.mirror[u, p])
            if self.complete[u]:
                return None
            others = np.flatnonzero(self.alive)
            others = others[others != u]
            if others.size == 0:
                return None
            pool = torch.from_numpy(others)
            comp = self.comp[pool] if self.comp is not None else None
            d, j, m = _neighbours(self.codes[u : u + 1], self.codes[pool], comp, others, self.k, np.array([u]))
            dist[u], index[u], self.mirror[u] = d[0], j[0], m[0]
            self.complete[u] = self.k >= others.size
            self.pointer[u] = 0


def _spline_steps(
    codes: torch.Tensor,
    n_bits: int,
    importance: np.ndarray,
    floor: int,
    complement: bool,
    n_samples: int | None,
    neighbours: int,
    complement_codes: torch.Tensor | None,
) -> Iterator[tuple[int, int, int, bool]]:
    """The generator behind :func:`spline_order` (arguments already checked)."""
    n = codes.shape[0]
    if n <= floor:
        return
    codes = codes.contiguous()
    samples = n_bits if n_samples is None else n_samples
    comp = None
    if complement:
        comp = complement_codes if complement_codes is not None else _complement(codes, samples, n_bits // samples)
        comp = comp.contiguous()
    lists = _NeighbourLists(codes, comp, neighbours)
    alive = lists.alive
    heap = [(int(lists.dist[u, 0]), u, int(lists.index[u, 0]), bool(lists.mirror[u, 0])) for u in range(n) if lists.dist[u, 0] < _SENTINEL]
    heapq.heapify(heap)
    left = n
    while left > floor and heap:
        d, u, v, mirrored = heapq.heappop(heap)
        if not alive[u]:
            continue
        if not alive[v]:
            nxt = lists.nearest(u)
            if nxt is not None:
                heapq.heappush(heap, (nxt[0], u, nxt[1], nxt[2]))
            continue
        victim, partner = (u, v) if (importance[u], -u) < (importance[v], -v) else (v, u)
        alive[victim] = False
        left -= 1
        yield victim, partner, d, mirrored
        if partner == u:
            nxt = lists.nearest(u)
            if nxt is not None:
                heapq.heappush(heap, (nxt[0], u, nxt[1], nxt[2]))


# ---------------------------------------------------------------- plan


@dataclass
class _Removal:
    layer: int
    unit: int
    reason: str
    key: float  # the policy's ordering key (global policies compare it across layers)


def _importance(named: dict[str, nn.Module], layer: _Layer) -> np.ndarray:
    """|gamma| of the layer's BatchNorm, else the producer filters' L2 norms."""
    spec = layer.spec
    if spec.norm is not None and getattr(named[spec.norm], "weight", None) is not None:
        gamma = named[spec.norm].weight.detach().abs().cpu().double()
        return gamma[_norm_channels(named, spec, range(layer.width))].numpy()
    if spec.producer is not None:
        return named[spec.producer].weight.detach().flatten(1).norm(dim=1).cpu().double().numpy()
    return np.ones(layer.width)


def _l1(named: dict[str, nn.Module], layer: _Layer) -> np.ndarray:
    if layer.spec.producer is not None:
        return named[layer.spec.producer].weight.detach().abs().flatten(1).sum(1).cpu().double().numpy()
    columns = _consumer_columns(named[layer.consumer].weight.detach(), layer.flat_positions)  # [out, C, ...]
    return columns.abs().transpose(0, 1).flatten(1).sum(1).cpu().double().numpy()


def _consumer_columns(weight: torch.Tensor, flat: int | None) -> torch.Tensor:
    """The consumer's weight as ``[out, C, rest...]`` (a view): unit c's inputs are ``[:, c]``."""
    if flat is None:
        return weight
    return weight.view(weight.shape[0], -1, flat)


def _layer_orders(
    policy: str,
    named: dict[str, nn.Module],
    layers: list[_Layer],
    node: list[tuple[torch.Tensor, int, int] | None],
    floors: list[int],
    complement: bool,
    seed: int,
    neighbours: int,
    pair_scores: list[np.ndarray] | None = None,
) -> tuple[list[Iterator[_Removal]], list[list[float | None]]]:
    """Per layer: the removal sequence (lazy) and the units' scores. ``pair_scores``
    (spline policies): per-unit merge-error scales, selects ``pair_rule="merge-error"``."""
    orders: list[Iterator[_Removal]] = []
    scores: list[list[float | None]] = []
    generator = torch.Generator().manual_seed(seed)
    for i, layer in enumerate(layers):
        if policy in _SPLINE and pair_scores is not None:
            words, n_bits, n_samples = node[i]  # type: ignore[misc]
            steps = _merge_error_order(
                words, n_bits, pair_scores[i], floor=floors[i], complement=complement, n_samples=n_samples, neighbours=neighbours
            )
            orders.append(_merge_error_removals(i, steps, n_bits))
            scores.append([None] * layer.width)
            continue
        if policy in _SPLINE:
            words, n_bits, n_samples = node[i]  # type: ignore[misc]
            importance = _importance(named, layer)
            steps = spline_order(
                words, n_bits, importance, floor=floors[i], complement=complement, n_samples=n_samples, neighbours=neighbours
            )
            orders.append(_spline_removals(i, steps, n_bits))
            scores.append([None] * layer.width)  # filled once the plan is known
            continue
        if policy in ("slimming", "bn-layerwise"):
            values = _importance(named, layer)
            label = "|gamma| {:.4g}"
        elif policy == "l1":
            values = _l1(named, layer)
            label = "filter L1 norm {:.4g}"
        else:
            values = torch.rand(layer.width, generator=generator, dtype=torch.float64).numpy()
            label = f"random (seed {seed}, key {{:.4g}})"
        order = sorted(range(layer.width), key=lambda u: (values[u], u))[: max(layer.width - floors[i], 0)]
        if policy in _GLOBAL:
            removals = [_Removal(i, u, f"{label.format(values[u])} (global order)", float(values[u])) for u in order]
        else:
            removals = [_Removal(i, u, f"{label.format(values[u])}, rank {r} in layer", float(values[u])) for r, u in enumerate(order)]
        orders.append(iter(removals))
        scores.append([float(v) for v in values])
    return orders, scores


def _spline_removals(layer: int, steps: Iterator[tuple[int, int, int, bool]], n_bits: int) -> Iterator[_Removal]:
    for victim, partner, d, mirrored in steps:
        distance = d / n_bits
        kind = "mirror code distance" if mirrored else "code distance"
        yield _Removal(layer, victim, f"{kind} {distance:.4g} to unit {partner}", distance)


def _node_codes(
    model: nn.Module, probe: Any, layers: list[_Layer], batch_size: int, backend: str | None
) -> list[tuple[torch.Tensor, int, int]]:
    """Unit-major node codes per layer: (int64 [C, P * ceil(N/64)], bits N*P, N)."""
    rc = region_codes(model, probe, progress=False, batch_size=batch_size, backend=backend)
    result = []
    for layer in layers:
        name = layer.spec.activation
        if name not in rc:
            raise ValueError(f"plan: codes() did not see layer {name!r}; it saw {rc.names}")
        lc = rc[name]
        if lc.unit_shape[0] != layer.width:
            raise ValueError(f"plan: layer {name!r} has {lc.unit_shape[0]} units in the codes, {layer.width} expected")
        positions = math.prod(lc.unit_shape[1:])
        words = rc.unit_major(name, backend=backend).cpu().contiguous()
        result.append((words, lc.n_samples * positions, lc.n_samples))
    return result


def _nearest_kept(
    words: torch.Tensor, n_bits: int, n_samples: int, removed: list[int], kept: list[int], complement: bool
) -> list[tuple[int, float]]:
    """For each removed unit: (nearest kept unit, normalised redundancy distance)."""
    if not removed:
        return []
    rows, pool = words[removed], words[kept]
    d, j = ops.hamming_topk(rows, pool, 1)
    best_d, best_j = d[:, 0].long(), j[:, 0]
    if complement:
        comp = _complement(pool, n_samples, n_bits // n_samples)
        dc, jc = ops.hamming_topk(rows, comp, 1)
        better = dc[:, 0].long() < best_d
        best_d = torch.where(better, dc[:, 0].long(), best_d)
        best_j = torch.where(better, jc[:, 0], best_j)
    return [(kept[jj], dd / n_bits) for dd, jj in zip(best_d.tolist(), best_j.tolist())]


def _kept_scores(words: torch.Tensor, n_bits: int, n_samples: int, kept: list[int], complement: bool) -> dict[int, float]:
    """Each kept unit's normalised redundancy distance to its nearest other kept unit."""
    if len(kept) < 2:
        return {}
    pool = words[kept]
    d, j = ops.hamming_topk(pool, pool, 2)
    own = torch.arange(len(kept))
    near = torch.where(j[:, 0] == own, d[:, 1], d[:, 0]).long()
    if complement:
        dc, jc = ops.hamming_topk(pool, _complement(pool, n_samples, n_bits // n_samples), 2)
        mirror = torch.where(jc[:, 0] == own, dc[:, 1], dc[:, 0]).long()
        near = torch.minimum(near, mirror)
    return {u: v / n_bits for u, v in zip(kept, near.tolist())}


# ---------------------------------------------------------------- pair rule "merge-error"


def _merge_error_order(
    codes: torch.Tensor,
    n_bits: int,
    spread: np.ndarray,
    *,
    floor: int = 1,
    complement: bool = True,
    n_samples: int | None = None,
    neighbours: int = 16,
) -> Iterator[tuple[int, int, int, bool, float]]:
    """The spline greedy of one layer under ``pair_rule="merge-error"``: yields
    ``(removed, partner, distance, mirror, key)`` until ``floor`` units remain.

    Each step removes the remaining unit ``u`` of smallest ``key = spread[u] * d(u)``,
    ``d(u)`` its redundancy distance (normalised) to its nearest remaining unit
    (``partner``), ties by (spread, index): the expected output error of merging
    ``u`` into ``partner`` (``spread`` = std of ``h_u`` x norm of the consumer's
    weights reading it; the code distance stands in for ``1 - corr^2``). A unit
    with zero spread (constant on the probe, merged exactly into the bias) goes
    first. Keys never decrease (``d(u)`` only grows as units go), so a lazy heap
    over the same neighbour lists as :func:`spline_order` finds each step.
    """
    n = codes.shape[0]
    spread = np.asarray(spread, dtype=np.float64)
    if n <= floor:
        return
    codes = codes.contiguous()
    samples = n_bits if n_samples is None else n_samples
    comp = _complement(codes, samples, n_bits // samples).contiguous() if complement else None
    lists = _NeighbourLists(codes, comp, neighbours)
    alive = lists.alive

    def entry(u: int) -> tuple[float, float, int, int, int, bool] | None:
        """u's heap entry for its nearest alive unit (advancing its pointer), or None."""
        nearest = lists.nearest(u)
        if nearest is None:
            return None
        d, v, mirrored = nearest
        return spread[u] * d / n_bits, spread[u], u, v, d, mirrored

    heap = [e for e in (entry(u) for u in range(n)) if e is not None]
    heapq.heapify(heap)
    left = n
    while left > floor and heap:
        key, _, u, v, d, mirrored = heapq.heappop(heap)
        if not alive[u]:
            continue
        if not alive[v]:  # stale: u's nearest went; its key can only have grown
            nxt = entry(u)
            if nxt is not None:
                heapq.heappush(heap, nxt)
            continue
        alive[u] = False
        left -= 1
        yield u, v, d, mirrored, key


def _unit_spread(model: nn.Module, probe: Any, layers: list[_Layer], batch_size: int) -> list[np.ndarray]:
    """Per layer, each unit's standard deviation over the probe of the consumer's
    input (the post-activation after any pooling; over inputs and positions)."""
    named = dict(model.named_modules())
    sums = [torch.zeros(3, layer.width, dtype=torch.float64) for layer in layers]
    device = _device_of(model)
    batches, _ = _batches(probe, batch_size, None)

    def hook(i: int):
        def accumulate(module: nn.Module, args: tuple) -> None:
            x = args[0].detach()
            x = x.reshape(x.shape[0], layers[i].width, -1).double()  # [N, C, P]
            sums[i][0] += x.sum((0, 2)).cpu()
            sums[i][1] += (x * x).sum((0, 2)).cpu()
            sums[i][2] += x.shape[0] * x.shape[2]

        return accumulate

    with _Frozen(model) as frozen:
        for i, layer in enumerate(layers):
            frozen.handles.append(named[layer.consumer].register_forward_pre_hook(hook(i)))
        for batch in batches:
            x = _inputs_of(batch)
            if x.shape[0]:
                model(x.to(device))
    result = []
    for s in sums:
        count = s[2].clamp_min(1.0)
        mean = s[0] / count
        result.append((s[1] / count - mean * mean).clamp_min(0.0).sqrt().numpy())
    return result


def _merge_error_scores(named: dict[str, nn.Module], layer: _Layer, spread: np.ndarray) -> np.ndarray:
    """std of ``h_u`` x the L2 norm of the consumer's weights reading unit ``u``, over
    the layer's mean (so that ``spline-global`` compares layers on one scale)."""
    columns = _consumer_columns(named[layer.consumer].weight.detach(), layer.flat_positions)  # [out, C, ...]
    scores = spread * columns.transpose(0, 1).flatten(1).norm(dim=1).cpu().double().numpy()
    mean = float(scores.mean()) if scores.size else 0.0
    return scores / mean if mean > 0.0 else scores


def _merge_error_removals(layer: int, steps: Iterator[tuple[int, int, int, bool, float]], n_bits: int) -> Iterator[_Removal]:
    for victim, partner, d, mirrored, key in steps:
        kind = "mirror code distance" if mirrored else "code distance"
        yield _Removal(layer, victim, f"merge error {key:.4g} ({kind} {d / n_bits:.4g} to unit {partner})", key)


def _fit_stats(
    model: nn.Module, probe: Any, layers: list[_Layer], pairs: list[tuple[list[int], list[int]]], batch_size: int
) -> list[torch.Tensor]:
    """Per layer, float64 ``[R, 5]`` sums over the probe of the consumer's input:
    (sum h_i, sum h_j, sum h_i^2, sum h_i h_j, count) for each (removed j, target i)."""
    named = dict(model.named_modules())
    sums = [torch.zeros(len(removed), 5, dtype=torch.float64) for removed, _ in pairs]
    device = _device_of(model)
    batches, _ = _batches(probe, batch_size, None)

    def hook(i: int):
        removed, targets = pairs[i]
        jj, ii = torch.tensor(removed), torch.tensor(targets)

        def accumulate(module: nn.Module, args: tuple) -> None:
            x = args[0].detach()
            x = x.reshape(x.shape[0], layers[i].width, -1).double()  # [N, C, P]
            hj, hi = x[:, jj.to(x.device)], x[:, ii.to(x.device)]
            s = torch.stack(
                [hi.sum((0, 2)), hj.sum((0, 2)), (hi * hi).sum((0, 2)), (hi * hj).sum((0, 2))], dim=1
            ).cpu()
            sums[i][:, :4] += s
            sums[i][:, 4] += hi.shape[0] * hi.shape[2]

        return accumulate

    with _Frozen(model) as frozen:
        for i, layer in enumerate(layers):
            if pairs[i][0]:
                frozen.handles.append(named[layer.consumer].register_forward_pre_hook(hook(i)))
        for batch in batches:
            x = _inputs_of(batch)
            if x.shape[0]:
                model(x.to(device))
    return sums


def _fit(s: torch.Tensor, merge: str, has_shift: bool) -> tuple[float, float]:
    """Least squares ``h_j ~ a h_i + b`` (or ``a h_i``) from the sums of :func:`_fit_stats`."""
    si, sj, sii, sij, n = (float(v) for v in s)
    if merge == "affine" and has_shift and n > 0:
        var = sii - si * si / n
        if var <= 1e-12 * max(sii, 1e-300):
            return 0.0, sj / n  # h_i constant on the probe: only the mean of h_j is kept
        a = (sij - si * sj / n) / var
        return a, (sj - a * si) / n
    if sii <= 0.0:
        return 0.0, 0.0
    return sij / sii, 0.0


def _probe_example(probe: Any) -> torch.Tensor:
    if probe is None:
        raise ValueError("plan: probe is None; give probe inputs (a tensor, an (x, y) pair or a DataLoader)")
    batches, _ = _batches(probe, 2, None)
    for batch in batches:
        x = _inputs_of(batch)
        if x.dim() == 0:
            raise ValueError("plan: probe must have a batch dimension, got a 0-d tensor")
        if x.shape[0]:
            return x[:2]
    raise ValueError(f"plan: probe ({type(probe).__name__}) yielded no inputs")


def plan(
    model: nn.Module,
    probe: Any,
    ratio: float,
    policy: str = "spline-layerwise",
    merge: str = "affine",
    recalibrate: bool = True,
    budget: str = "channels",
    min_keep: int = 1,
    complement: bool = True,
    *,
    seed: int = 0,
    pair_rule: str = "importance",
    neighbours: int = 16,
    batch_size: int = 256,
    backend: str | None = None,
) -> PrunePlan:
    """Decide which units to remove (see the module doc for policies, budgets and merges).

    Args:
        model: a :mod:`fastspline.models` model (or any model whose prunable layers
            can be found, see the module doc); not modified.
        probe: inputs for node codes and merge fits: a tensor, an ``(x, y)`` pair
            or a DataLoader (as :func:`fastspline.codes`). Its first input also
            traces the model's structure and counts FLOPs.
        ratio: in ``[0, 1)``: fraction of units (``budget="channels"``) or of
            forward FLOPs (``budget="flops"``) to remove.
        policy: one of :data:`POLICIES`.
        merge: ``"affine"``, ``"scale"`` or ``"none"``.
        recalibrate: stored in the plan; :func:`apply` re-estimates BatchNorm
            statistics on its ``data`` when True.
        budget: ``"channels"`` or ``"flops"``.
        min_keep: units kept in every layer at least (a layer narrower keeps all).
        complement: redundancy distance ``min(d, 1 - d)`` (a unit and its mirror
            split the data identically) instead of ``d``.
        seed: for ``policy="random"``.
        pair_rule: spline policies: ``"importance"`` (closest pair first, its unit
            of lower |gamma|, else filter norm) or ``"merge-error"`` (the unit of
            smallest std(h_u) x consumer column norm x distance to its nearest
            remaining unit first); see docs/pruning.md.
        neighbours: neighbour-list length of the spline greedy (speed only; the
            result does not depend on it).
        batch_size: rows per forward pass when ``probe`` is a tensor.
        backend: kernel backend for codes and distances (default: by device).

    Returns:
        :class:`PrunePlan`.
    """
    where = "plan"
    model = _check_model(model, where)
    ratio = _check_ratio(ratio, where)
    policy = _check_choice(policy, "policy", POLICIES, where)
    merge = _check_choice(merge, "merge", MERGES, where)
    budget = _check_choice(budget, "budget", BUDGETS, where)
    recalibrate = _check_bool(recalibrate, "recalibrate", where)
    complement = _check_bool(complement, "complement", where)
    min_keep = _check_int(min_keep, "min_keep", 1, where)
    seed = _check_int(seed, "seed", 0, where)
    pair_rule = _check_choice(pair_rule, "pair_rule", PAIR_RULES, where)
    if pair_rule != "importance" and policy not in _SPLINE:
        raise ValueError(f"plan: pair_rule {pair_rule!r} applies to the spline policies only, not {policy!r}")
    neighbours = _check_int(neighbours, "neighbours", 1, where)
    batch_size = _check_int(batch_size, "batch_size", 1, where)
    probe = _whole_inputs(probe)
    if isinstance(probe, Iterator):  # read several times (structure, codes, fits): keep a one-shot iterator's batches
        probe = list(probe)
    example = _probe_example(probe).to(_device_of(model))
    layers = _structure(model, example, where)
    named = dict(model.named_modules())
    if policy in ("slimming", "bn-layerwise"):
        for layer in layers:
            norm = layer.spec.norm
            if norm is None or getattr(named[norm], "weight", None) is None:
                raise ValueError(
                    f"plan: policy {policy!r} ranks units by BatchNorm |gamma|, but layer {layer.spec.activation!r} "
                    f"of {type(model).__name__} has no affine BatchNorm; use 'l1', 'random' or a spline policy"
                )
    flops = _Flops(model, example, layers)
    need_codes = policy in _SPLINE or merge != "none"
    node = _node_codes(model, probe, layers, batch_size, backend) if need_codes else [None] * len(layers)
    floors = [min(min_keep, layer.width) for layer in layers]
    pair_scores = None
    if pair_rule == "merge-error":
        spread = _unit_spread(model, probe, layers, batch_size)
        pair_scores = [_merge_error_scores(named, layer, spread[i]) for i, layer in enumerate(layers)]
    orders, scores = _layer_orders(policy, named, layers, node, floors, complement, seed, neighbours, pair_scores)

    # -- choose the removals
    widths = [layer.width for layer in layers]
    kept_count = list(widths)
    chosen: list[list[_Removal]] = [[] for _ in layers]
    target_flops = None
    if budget == "flops":
        target_flops = (1.0 - ratio) * flops.dense
        sequence = _global_sequence(orders) if policy in _GLOBAL else _interleaved(orders, widths)
        for removal in sequence:
            if flops(kept_count) <= target_flops:
                break
            chosen[removal.layer].append(removal)
            kept_count[removal.layer] -= 1
    elif policy in _GLOBAL:
        wanted = _half_up(ratio * sum(widths))
        for removal, _ in zip(_global_sequence(orders), range(wanted)):
            chosen[removal.layer].append(removal)
    else:
        for i, order in enumerate(orders):
            wanted = min(_half_up(ratio * widths[i]), widths[i] - floors[i])
            for removal, _ in zip(order, range(wanted)):
                chosen[i].append(removal)

    # -- merge targets and fits
    plans: list[LayerPlan] = []
    pairs: list[tuple[list[int], list[int]]] = []
    targets: list[list[tuple[int, float]]] = []
    for i, layer in enumerate(layers):
        removed = [r.unit for r in chosen[i]]
        gone = set(removed)
        kept = [u for u in range(layer.width) if u not in gone]
        if merge != "none" and removed:
            words, n_bits, n_samples = node[i]  # type: ignore[misc]
            near = _nearest_kept(words, n_bits, n_samples, removed, kept, complement)
        else:
            near = []
        targets.append(near)
        pairs.append((removed if near else [], [t for t, _ in near]))
    stats = _fit_stats(model, probe, layers, pairs, batch_size) if merge != "none" else [None] * len(layers)
    for i, layer in enumerate(layers):
        removed_units = []
        for r, removal in enumerate(chosen[i]):
            unit = RemovedUnit(removal.unit, removal.reason)
            if targets[i]:
                target, distance = targets[i][r]
                a, b = _fit(stats[i][r], merge, layer.shift is not None)
                unit.merged_into, unit.a, unit.b, unit.distance = target, a, b, distance
            removed_units.append(unit)
        gone = {u.index for u in removed_units}
        kept = [u for u in range(layer.width) if u not in gone]
        layer_scores = scores[i]
        code_bits = node[i][1] if node[i] is not None else 0
        if policy in _SPLINE:
            words, n_bits, n_samples = node[i]  # type: ignore[misc]
            for removal in chosen[i]:
                layer_scores[removal.unit] = removal.key
            for u, d in _kept_scores(words, n_bits, n_samples, kept, complement).items():
                layer_scores[u] = d if pair_scores is None else float(pair_scores[i][u]) * d
        spec = layer.spec
        plans.append(
            LayerPlan(
                name=spec.activation, norm=spec.norm, producer=spec.producer, select=spec.select,
                consumer=layer.consumer, flat_positions=layer.flat_positions, shift=layer.shift,
                width_before=layer.width, kept=kept, removed=removed_units, scores=layer_scores, code_bits=code_bits,
            )
        )  # fmt: skip
    return PrunePlan(
        policy=policy, ratio=ratio, budget=budget, merge=merge, recalibrate=recalibrate, complement=complement,
        min_keep=min_keep, seed=seed, model=type(model).__name__, layers=plans, pair_rule=pair_rule,
        flops_before=flops.dense, flops_after=round(flops([len(p.kept) for p in plans])),
        flops_target=None if target_flops is None else math.ceil(target_flops),
    )  # fmt: skip


def _half_up(value: float) -> int:
    """``value`` rounded to the nearest int, halves up (``round`` takes halves to even)."""
    return math.floor(value + 0.5)


def _global_sequence(orders: list[Iterator[_Removal]]) -> Iterator[_Removal]:
    """The layers' sequences merged by key (each is non-decreasing), ties to the lower layer."""
    return heapq.merge(*orders, key=lambda r: (r.key, r.layer))


def _interleaved(orders: list[Iterator[_Removal]], widths: list[int]) -> Iterator[_Removal]:
    """Layerwise orders taken from the layer with the smallest removed fraction (lowest index on ties)."""
    removed = [0] * len(orders)
    pending: list[_Removal | None] = [next(order, None) for order in orders]
    while True:
        live = [i for i, r in enumerate(pending) if r is not None]
        if not live:
            return
        i = min(live, key=lambda i: (removed[i] / widths[i], i))
        yield pending[i]  # type: ignore[misc]
        removed[i] += 1
        pending[i] = next(orders[i], None)


# ---------------------------------------------------------------- apply / mask


def _check_matches(p: PrunePlan, model: nn.Module, where: str) -> dict[str, nn.Module]:
    named = dict(model.named_modules())
    for layer in p.layers:
        for role in ("name", "norm", "producer", "select", "consumer", "shift"):
            module = getattr(layer, role)
            if module is not None and module not in named:
                raise ValueError(f"{where}: the plan's {role} {module!r} of layer {layer.name!r} is not a module of the model")
        width = _width_of(named, WidthLayer(layer.name, layer.norm, layer.producer, layer.select))
        if width != layer.width_before:
            raise ValueError(
                f"{where}: layer {layer.name!r} has {width} units but the plan was made for {layer.width_before}"
            )
    return named


@torch.no_grad()
def _fold(named: dict[str, nn.Module], p: PrunePlan) -> None:
    """Fold every merge into the consumers (and their bias / next BatchNorm), in place."""
    for layer in p.layers:
        merges = [u for u in layer.removed if u.merged_into is not None]
        if not merges:
            continue
        consumer = named[layer.consumer]
        columns = _consumer_columns(consumer.weight, layer.flat_positions)  # view [out, C, ...]
        original = columns.clone()
        offset = torch.zeros(columns.shape[0], dtype=torch.float64, device=columns.device)
        for unit in merges:
            j, i = unit.index, unit.merged_into
            columns[:, i] += unit.a * original[:, j]
            if unit.b:
                offset += unit.b * original[:, j].double().reshape(columns.shape[0], -1).sum(1)
        if layer.shift is not None and bool(offset.any()):
            target = named[layer.shift]
            if layer.shift == layer.consumer:
                target.bias += offset.to(target.bias.dtype)
            elif target.running_mean is not None:  # without running stats, the batch mean removes the offset itself
                target.running_mean -= offset.to(target.running_mean.dtype)


@torch.no_grad()
def _zero(named: dict[str, nn.Module], p: PrunePlan) -> None:
    """Zero the removed units: producer rows, BatchNorm channels, consumer inputs."""
    for layer in p.layers:
        removed = layer.removed_indices
        if not removed:
            continue
        units = torch.tensor(removed)
        if layer.producer is not None:
            producer = named[layer.producer]
            producer.weight[units] = 0
            if producer.bias is not None:
                producer.bias[units] = 0
        if layer.norm is not None:
            norm = named[layer.norm]
            channels = _norm_channels(named, WidthLayer(layer.name, layer.norm, layer.producer, layer.select), removed)
            if norm.weight is not None:
                norm.weight[channels] = 0
                norm.bias[channels] = 0
            if norm.running_mean is not None:
                norm.running_mean[channels] = 0
                norm.running_var[channels] = 1
        _consumer_columns(named[layer.consumer].weight, layer.flat_positions)[:, units] = 0


def _merged_copy(p: PrunePlan, model: nn.Module, where: str) -> tuple[nn.Module, dict[str, nn.Module]]:
    copied = copy.deepcopy(model)
    named = _check_matches(p, copied, where)
    _fold(named, p)
    return copied, named


def mask(plan: PrunePlan, model: nn.Module) -> nn.Module:
    """A copy of ``model`` with the plan's merges folded in and its removed units
    zeroed (producer rows, BatchNorm channels, consumer inputs): the same
    function as :func:`apply`'s smaller model, at the original shapes. The input
    model is not modified."""
    p = _check_plan(plan, "mask")
    _check_model(model, "mask")
    copied, named = _merged_copy(p, model, "mask")
    _zero(named, p)
    return copied


def apply(plan: PrunePlan, model: nn.Module, data: Any = None) -> nn.Module:
    """The physically smaller dense model of ``plan`` (``model.rebuild(widths)``),
    with weights and BatchNorm statistics of the kept units copied and the merges
    folded in. When ``plan.recalibrate`` and ``data`` is given (a tensor of inputs,
    an ``(x, y)`` pair, a TensorDataset or a DataLoader), BatchNorm statistics are
    re-estimated on it (:func:`recalibrate_bn`). The input model is not modified;
    the result is on the model's device, each module in its train/eval mode."""
    p = _check_plan(plan, "apply")
    _check_model(model, "apply")
    if not callable(getattr(model, "rebuild", None)):
        raise TypeError(
            f"apply: {type(model).__name__} has no rebuild(widths); use mask(plan, model) for a same-shaped pruned copy, "
            "or fastspline.integrations.torch_pruning for physical pruning of other graphs"
        )
    copied, named = _merged_copy(p, model, "apply")
    state = copied.state_dict()
    out_index: dict[str, torch.Tensor] = {}
    in_index: dict[str, torch.Tensor] = {}
    selects: dict[str, torch.Tensor] = {}
    for layer in p.layers:
        kept = torch.tensor(layer.kept, dtype=torch.int64)
        if layer.select is not None:
            selects[layer.select] = named[layer.select].indices.detach().cpu()[kept]
        elif layer.producer is not None:
            out_index[layer.producer] = kept
            if layer.norm is not None:
                out_index[layer.norm] = kept
        if layer.flat_positions is None:
            in_index[layer.consumer] = kept
        else:
            P = layer.flat_positions
            in_index[layer.consumer] = (kept[:, None] * P + torch.arange(P)).flatten()
    sliced = {}
    for key, value in state.items():
        module, _, leaf = key.rpartition(".")
        if module in selects and leaf == "indices":
            value = selects[module].to(value.device)
        if module in out_index and value.dim() >= 1 and leaf != "num_batches_tracked":
            value = value.index_select(0, out_index[module].to(value.device))
        if module in in_index and leaf == "weight" and value.dim() >= 2:
            value = value.index_select(1, in_index[module].to(value.device))
        sliced[key] = value
    slim = model.rebuild(p.widths_after())
    for name, module in slim.named_modules():
        source = named.get(name)
        if isinstance(module, _NORMS) and isinstance(source, _NORMS) and source.running_mean is None:
            module.track_running_stats = False  # as the model's BatchNorm: batch statistics, no buffers
            module.running_mean = module.running_var = module.num_batches_tracked = None
    reference = next(model.parameters(), None)
    if reference is not None:
        slim.to(device=reference.device, dtype=reference.dtype)
    slim.load_state_dict(sliced)
    grads = {name: param.requires_grad for name, param in model.named_parameters()}
    for name, param in slim.named_parameters():
        param.requires_grad_(grads.get(name, True))
    modes = {name: module.training for name, module in model.named_modules()}
    for name, module in slim.named_modules():
        module.training = modes.get(name, model.training)
    if p.recalibrate:
        if data is None:
            warnings.warn(
                "apply: plan.recalibrate is True but data is None: BatchNorm statistics were not re-estimated",
                stacklevel=2,
            )
        else:
            recalibrate_bn(slim, data)
    return slim


# ---------------------------------------------------------------- BatchNorm re-estimation


def _whole_inputs(data: Any) -> Any:
    """The inputs of a TensorDataset or of an ``(x, y)`` pair of whole tensors; anything else as it is."""
    if isinstance(data, torch.utils.data.TensorDataset):
        return data.tensors[0]
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        if data[0].dim() >= 1 and data[1].dim() >= 1 and data[0].shape[0] == data[1].shape[0] and data[1].dim() == 1:
            return data[0]  # an (x, y) pair of whole tensors
    return data


def _input_batches(data: Any, batch_size: int, where: str) -> Iterator[torch.Tensor]:
    data = _whole_inputs(data)
    try:
        batches, _ = _batches(data, batch_size, None)
    except TypeError as exc:
        raise TypeError(str(exc).replace("codes:", f"{where}:")) from None
    for batch in batches:
        yield _inputs_of(batch)


def recalibrate_bn(model: nn.Module, data: Any, max_batches: int | None = None, *, batch_size: int = 128) -> nn.Module:
    """Re-estimate every BatchNorm's running mean and variance on ``data``, in place.

    Statistics are reset and averaged over the batches (``momentum=None``) with
    BatchNorm layers in train mode, everything else in eval mode, under no_grad;
    each module's mode and momentum are restored. ``data``: a tensor of inputs
    (split into ``batch_size`` rows), an ``(x, y)`` pair, a TensorDataset or a
    DataLoader/iterable of batches. Returns ``model``.
    """
    model = _check_model(model, "recalibrate_bn")
    if max_batches is not None:
        max_batches = _check_int(max_batches, "max_batches", 1, "recalibrate_bn")
    batch_size = _check_int(batch_size, "batch_size", 1, "recalibrate_bn")
    if data is None:
        raise ValueError("recalibrate_bn: data is None; give training inputs (a tensor, an (x, y) pair or a DataLoader)")
    norms = [m for m in model.modules() if isinstance(m, _NORMS) and m.track_running_stats]
    if not norms:
        return model
    device = _device_of(model)
    modes = training_modes(model)
    momenta = [(m, m.momentum) for m in norms]
    saved = [(m, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in norms]
    seen = 0
    try:
        set_eval(model, modes)
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        with torch.no_grad():
            for batch in _input_batches(data, batch_size, "recalibrate_bn"):
                if max_batches is not None and seen >= max_batches:
                    break
                if batch.shape[0] < 2:
                    continue  # train-mode BatchNorm needs two values per channel
                model(batch.to(device))
                seen += 1
        if seen == 0:
            raise ValueError("recalibrate_bn: data yielded no batch of 2 or more inputs")
    except BaseException:
        with torch.no_grad():  # leave the statistics as they were
            for m, mean, var, count in saved:
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)
        raise
    finally:
        for m, momentum in momenta:
            m.momentum = momentum
        restore_modes(modes)
    return model
