"""Region codes of every piecewise-linear layer of a network: ``fastspline.codes``.

For each input, the on/off pattern of a layer's units (the sign of each
unit's pre-activation) names the linear region of the network the input
falls in. :func:`codes` streams data through a model, packs those signs on
the fly with :func:`fastspline.ops.pack_signs` (only packed words are kept,
never float activations: 32x less memory than float32 activations) and
returns a :class:`RegionCodes`.

Layers are found three ways:

- activation modules (``nn.ReLU``, ``ReLU6``, ``LeakyReLU``, ``PReLU``,
  ``Hardtanh`` and classes given to :func:`register_activation`): the code is
  the sign of the module's *input*; a module instance called twice in one
  forward (one ``nn.ReLU`` reused in a block) is one layer per call, the
  second named ``"<name>#1"``;
- functional calls in ``forward`` (``torch.relu``, ``F.relu``, ``x.relu()``,
  their in-place forms, ``F.leaky_relu``, ``F.relu6``, ``F.hardtanh``,
  ``F.prelu``) are intercepted with a ``TorchFunctionMode`` while the model
  runs, so networks like ResNets that never build an ``nn.ReLU`` are covered
  whatever their control flow; such a layer is named
  ``"<module path>:relu[k]"`` (the k-th functional call inside that module's
  own forward; ``":relu[k]"`` for the top-level module). Only calls on
  batched tensors (first dim = the batch; never the model's parameters or
  buffers, nor tensors computed in forward from them only) count. The interception is
  installed for the first batch only and kept when it found a call, so
  models without functional calls pay nothing for it afterwards
  (``functional=False`` skips it; :class:`~fastspline.earlybird.SplineEarlyBird`
  does so after its first step when it found none);
- ``layers=``: module names or modules whose *outputs* are the
  pre-activations (e.g. the BatchNorm layers, as the paper's code does).

Bit layout: that of :mod:`fastspline.ops`. A layer's sample-major words are
int64 ``[N, ceil(n_units/64)]``; unit ``u`` is element ``u`` of the
activation flattened in C order (for a conv layer ``(c, h, w)`` ->
``(c*H + h)*W + w``).
"""
from __future__ import annotations

import contextlib
import math
import operator
import os
import sys
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as _torch_module
from torch.overrides import TorchFunctionMode

from fastspline import ops
from fastspline._files import atomic_torch_save, load_torch_archive
from fastspline._modes import restore_modes, set_eval, training_modes

__all__ = ["LayerCodes", "RegionCodes", "codes", "register_activation", "ACTIVATIONS"]

ACTIVATIONS: list[type[nn.Module]] = [nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.Hardtanh]

# Functional calls whose output has the sign code of their input whatever their arguments
# (see _keeps_sign): packed from the output with where="pre" too.
_SIGN_KEEPING_CALLS = frozenset(
    {
        torch.relu,
        torch.relu_,
        torch.nn.functional.relu,
        torch.nn.functional.relu_,
        torch.Tensor.relu,
        torch.Tensor.relu_,
        torch.nn.functional.relu6,
    }
)

_FUNCTIONAL = _SIGN_KEEPING_CALLS | {
    torch.nn.functional.leaky_relu,
    torch.nn.functional.leaky_relu_,
    torch.nn.functional.hardtanh,
    torch.nn.functional.hardtanh_,
    torch.nn.functional.prelu,
    torch.prelu,
}

# Tensor methods that write into their first argument (``h += z``).
_INPLACE_DUNDERS = frozenset(
    f"__i{op}__" for op in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "and", "or", "xor", "lshift", "rshift", "matmul")
)

_FILE_FORMAT = "fastspline.RegionCodes"
_FILE_VERSION = 1


def register_activation(cls: type[nn.Module]) -> type[nn.Module]:
    """Treat ``cls`` as a piecewise-linear activation (its input's sign is a code).

    Usable as a class decorator; returns ``cls``.
    """
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"register_activation: cls must be an nn.Module subclass, got {cls!r}")
    if cls not in ACTIVATIONS:
        ACTIVATIONS.append(cls)
    return cls


# ---------------------------------------------------------------- containers


@dataclass(eq=False)
class LayerCodes:
    """Packed codes of one layer.

    words: int64 ``[N, ceil(n_units/64)]`` sample-major codes (bit layout of
    :mod:`fastspline.ops`); unit ``u`` of the flattened ``unit_shape`` is bit ``u``.
    n_units: ``prod(unit_shape)``.
    unit_shape: the activation's shape without the batch dim, e.g. ``(C, H, W)``.
    """

    words: torch.Tensor
    n_units: int
    unit_shape: tuple[int, ...]

    def __post_init__(self) -> None:
        try:  # operator.index: ints and numpy/torch integers, not "3" or 3.7
            self.unit_shape = tuple(operator.index(s) for s in self.unit_shape)
            self.n_units = operator.index(self.n_units)
        except TypeError:
            raise TypeError(
                f"LayerCodes: n_units and unit_shape must be integers, got {self.n_units!r} and {self.unit_shape!r}"
            ) from None
        if any(s < 0 for s in self.unit_shape):
            raise ValueError(f"LayerCodes: unit_shape must be non-negative, got {self.unit_shape}")
        if self.n_units != math.prod(self.unit_shape):
            raise ValueError(f"LayerCodes: n_units={self.n_units} but unit_shape {self.unit_shape} has {math.prod(self.unit_shape)}")
        w = self.words
        if not isinstance(w, torch.Tensor) or w.dtype != torch.int64 or w.dim() != 2:
            got = f"{w.dtype} {tuple(w.shape)}" if isinstance(w, torch.Tensor) else type(w).__name__
            raise ValueError(f"LayerCodes: words must be int64 [N, W], got {got}")
        if w.shape[1] != (self.n_units + 63) // 64:
            raise ValueError(
                f"LayerCodes: {self.n_units} units need {(self.n_units + 63) // 64} words per code, "
                f"words has shape {tuple(w.shape)}"
            )

    @property
    def n_samples(self) -> int:
        return self.words.shape[0]

    @classmethod
    def _of(cls, words: torch.Tensor, unit_shape: tuple[int, ...]) -> LayerCodes:
        """codes()' own results, made without the checks (its words are int64 [N, ceil(units/64)]
        by construction): ~5 us less per layer in the per-epoch early-bird step."""
        layer = cls.__new__(cls)
        layer.words, layer.n_units, layer.unit_shape = words, math.prod(unit_shape), unit_shape
        return layer


def _check_others(others: object) -> Sequence[RegionCodes]:
    """``others`` of :meth:`RegionCodes.distances`, checked."""
    if isinstance(others, RegionCodes) or not isinstance(others, Sequence):
        raise TypeError(f"distances: others must be a sequence of RegionCodes, got {type(others).__name__}")
    for i, other in enumerate(others):
        if not isinstance(other, RegionCodes):
            raise TypeError(f"distances: others[{i}] must be RegionCodes, got {type(other).__name__}")
    return others


class RegionCodes:
    """Codes of several layers over the same N inputs, in forward order.

    ``codes[name]`` is a :class:`LayerCodes`; ``codes.names`` the layer names.
    ``meta`` holds how they were made (``where``, ``n_samples``, the model's class, versions).
    """

    def __init__(self, layers: dict[str, LayerCodes], meta: dict[str, Any] | None = None) -> None:
        for name, layer in layers.items():
            if not isinstance(layer, LayerCodes):
                raise TypeError(f"RegionCodes: layer {name!r} must be LayerCodes, got {type(layer).__name__}")
        counts = {layer.n_samples for layer in layers.values()}
        if len(counts) > 1:
            raise ValueError(f"RegionCodes: every layer must have the same number of samples, got {sorted(counts)}")
        self._layers = dict(layers)
        self.meta: dict[str, Any] = dict(meta or {})

    # -- mapping
    @property
    def names(self) -> list[str]:
        return list(self._layers)

    def __getitem__(self, name: str) -> LayerCodes:
        if name not in self._layers:
            raise KeyError(f"RegionCodes: no layer {name!r}; layers are {self.names}")
        return self._layers[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._layers)

    def __len__(self) -> int:
        return len(self._layers)

    def __contains__(self, name: object) -> bool:
        return name in self._layers

    def items(self) -> Iterable[tuple[str, LayerCodes]]:
        return self._layers.items()

    @property
    def n_samples(self) -> int:
        return next(iter(self._layers.values())).n_samples if self._layers else 0

    @property
    def n_units(self) -> int:
        """Units of all layers together (bits of a whole-network code)."""
        return sum(layer.n_units for layer in self._layers.values())

    @property
    def nbytes(self) -> int:
        """Bytes held by the packed words of all layers."""
        return sum(layer.words.numel() * layer.words.element_size() for layer in self._layers.values())

    def __repr__(self) -> str:
        shapes = ", ".join(f"{name!r}: {tuple(layer.unit_shape)}" for name, layer in self._layers.items())
        return f"RegionCodes(n_samples={self.n_samples}, layers={{{shapes}}}, nbytes={self.nbytes})"

    def to(self, device: torch.device | str) -> RegionCodes:
        """A copy with every layer's words on ``device``."""
        return RegionCodes(
            {n: LayerCodes(l.words.to(device), l.n_units, l.unit_shape) for n, l in self._layers.items()}, self.meta
        )

    # -- views
    def unit_major(self, name: str, per_channel: bool = True, *, backend: str | None = None) -> torch.Tensor:
        """Node codes of layer ``name``: one row per unit over the samples.

        ``per_channel=False``: int64 ``[n_units, ceil(N/64)]``, one row per unit
        (neuron, or (channel, h, w) position). ``per_channel=True`` on a layer with
        spatial dims ``(C, *S)``: int64 ``[C, P * ceil(N/64)]``, channel ``c``'s code
        over samples x positions (P = prod(S)), ordered by position then sample,
        with zero pad bits after each position's N samples (so Hamming distances
        count real bits only); its code length is ``N * P`` bits. On a layer
        without spatial dims both forms are the same.
        """
        layer = self[name]
        units = ops.bit_transpose(layer.words, layer.n_units, backend=backend)  # [n_units, ceil(N/64)]
        if not per_channel or len(layer.unit_shape) < 2:
            return units
        # Unit u = c * P + p, so channel c's rows are contiguous: a view, no copy.
        # Sizes spelled out: -1 is ambiguous for a layer of 0 channels.
        return units.reshape(layer.unit_shape[0], math.prod(layer.unit_shape[1:]) * units.shape[1])

    def concatenated(self) -> torch.Tensor:
        """Words of all layers side by side: int64 ``[N, sum of W]`` (whole-network codes;
        each layer's pad bits stay zero, so rows compare as the concatenated bit codes do)."""
        if not self._layers:
            raise ValueError("RegionCodes: no layers")
        return torch.cat([layer.words for layer in self._layers.values()], dim=1)

    def region_ids(self, *, backend: str | None = None) -> torch.Tensor:
        """int64 ``[N]``: the id of each input's region of the whole network
        (ids index the sorted distinct codes, see :func:`fastspline.ops.count_regions`)."""
        return ops.count_regions(self.concatenated(), backend=backend)[1]

    def count_regions(self, *, backend: str | None = None) -> int:
        """Number of distinct regions of the whole network visited by the inputs."""
        if not self.n_samples:
            return 0
        return int(ops.count_regions(self.concatenated(), backend=backend)[2].numel())

    def distance(
        self, other: RegionCodes, reduce: str = "mean", *, backend: str | None = None
    ) -> float | dict[str, float]:
        """Normalised Hamming distance to ``other`` (same layers, inputs and shapes).

        Per layer: the fraction of (input, unit) bits that differ (a conv unit is
        one (channel, position)). ``reduce="mean"`` returns the mean over layers
        (the partition distance of the paper); ``"none"`` a dict layer name -> distance.
        """
        if not isinstance(other, RegionCodes):
            raise TypeError(f"distance: other must be RegionCodes, got {type(other).__name__}")
        return self._distances([other], reduce, backend, "distance")[0]

    def distances(
        self, others: Sequence[RegionCodes], reduce: str = "mean", *, backend: str | None = None
    ) -> list[float] | list[dict[str, float]]:
        """:meth:`distance` to each of ``others``, in one batch of kernel calls (one
        host sync for device codes): what an early-bird step needs against its window."""
        return self._distances(_check_others(others), reduce, backend, "distances")

    def _distances(self, others: Sequence[RegionCodes], reduce: str, backend: str | None, op: str) -> list[Any]:
        if reduce not in ("mean", "none"):
            raise ValueError(f"{op}: reduce must be 'mean' or 'none', got {reduce!r}")
        results: list[Any] = []
        for counts in self._differing_bits_many(others, backend, op):
            per_layer = {name: differing / bits if bits else 0.0 for name, (differing, bits) in counts.items()}
            results.append(per_layer if reduce == "none" else sum(per_layer.values()) / len(per_layer) if per_layer else 0.0)
        return results

    def _differing_bits(self, other: RegionCodes, backend: str | None, op: str) -> dict[str, tuple[int, int]]:
        """Per layer: (bits that differ from ``other``, bits); ``op`` names the caller in errors."""
        return self._differing_bits_many([other], backend, op)[0]

    def _differing_bits_many(
        self, others: Sequence[RegionCodes], backend: str | None, op: str
    ) -> list[dict[str, tuple[int, int]]]:
        """:meth:`_differing_bits` for each of ``others``, all layers' totals in one kernel batch."""
        names = list(self._layers)
        mine = list(self._layers.values())
        pairs = []
        for other in others:
            if list(other._layers) != names:
                raise ValueError(f"{op}: the layers differ: {names} vs {other.names}")
            for name, layer, theirs in zip(names, mine, other._layers.values()):
                ours, words = layer.words, theirs.words
                if ours.shape != words.shape or layer.unit_shape != theirs.unit_shape:
                    raise ValueError(
                        f"{op}: layer {name!r} has codes {tuple(ours.shape)} of units {layer.unit_shape} "
                        f"vs {tuple(words.shape)} of units {theirs.unit_shape}"
                    )
                if not (ours.is_cpu and words.is_cpu) and words.device != ours.device:
                    words = words.to(ours.device)
                pairs.append((ours, words))
        differing = iter(ops._hamming_totals(pairs, backend=backend))
        bits = [layer.n_samples * layer.n_units for layer in self._layers.values()]
        return [{name: (next(differing), n) for name, n in zip(names, bits)} for _ in others]

    # -- files
    def save(self, path: str | os.PathLike) -> None:
        """Write to ``path`` atomically (a temporary file renamed over it), with ``meta``
        (which must hold only str, int, float, bool, None, lists and str-keyed dicts,
        so that :meth:`load` can read it without unpickling arbitrary objects)."""
        _check_meta(self.meta, "meta")
        payload = {
            "format": _FILE_FORMAT,
            "version": _FILE_VERSION,
            "meta": self.meta,
            "layers": [
                {"name": n, "words": l.words.cpu(), "n_units": l.n_units, "unit_shape": list(l.unit_shape)}
                for n, l in self._layers.items()
            ],
        }
        atomic_torch_save(payload, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> RegionCodes:
        """Read a file written by :meth:`save` (words on the CPU).

        FileNotFoundError when ``path`` is missing; ValueError on a truncated,
        corrupt or foreign file.
        """
        payload = load_torch_archive(path, "RegionCodes.load", "fastspline codes file")
        if not isinstance(payload, dict) or payload.get("format") != _FILE_FORMAT:
            raise ValueError(f"RegionCodes.load: {os.fspath(path)!r} is a torch file but not a fastspline RegionCodes file")
        if payload.get("version") != _FILE_VERSION:
            raise ValueError(
                f"RegionCodes.load: {os.fspath(path)!r} has format version {payload.get('version')!r}, "
                f"this fastspline reads version {_FILE_VERSION}"
            )
        entries, meta = payload.get("layers"), payload.get("meta")
        if not isinstance(entries, list) or not isinstance(meta, dict):
            raise ValueError(f"RegionCodes.load: {os.fspath(path)!r} is malformed (layers or meta missing)")
        layers = {}
        for i, entry in enumerate(entries):
            try:
                if not isinstance(entry, dict):
                    raise TypeError(f"an entry must be a dict, got {type(entry).__name__}")
                name = entry["name"]
                if not isinstance(name, str) or name in layers:
                    raise ValueError(f"the name {name!r} is not a str or repeats an earlier layer's")
                layer = LayerCodes(entry["words"], entry["n_units"], tuple(entry["unit_shape"]))
                tail = layer.n_units % 64
                if tail and layer.n_samples and bool((layer.words[:, -1] >> tail).any()):  # they would count as units
                    raise ValueError(f"pad bits past unit {layer.n_units} are set")
                layers[name] = layer
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"RegionCodes.load: layer {i} of {os.fspath(path)!r} is malformed ({exc})") from exc
        return cls(layers, meta)


def _check_meta(value: object, where: str) -> None:
    if type(value) in (str, int, float, bool, type(None)):
        return
    if type(value) in (list, tuple):
        for i, item in enumerate(value):
            _check_meta(item, f"{where}[{i}]")
        return
    if type(value) is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise TypeError(f"RegionCodes.save: {where} keys must be str, got {type(key).__name__} {key!r}")
            _check_meta(item, f"{where}[{key!r}]")
        return
    raise TypeError(
        f"RegionCodes.save: {where} is a {type(value).__name__}; meta may hold only str, int, float, bool, None, "
        "lists and dicts"
    )


# ---------------------------------------------------------------- capture


def _batches(data: Any, batch_size: int, max_samples: int | None) -> tuple[Iterable[Any], int | None]:
    """The batches of ``data`` and how many there are (None when unknown)."""
    if isinstance(data, torch.Tensor):
        if data.dim() == 0:
            raise ValueError("codes: data must have a batch dimension, got a 0-d tensor")
        if max_samples is not None:
            data = data[:max_samples]
        rows = data.shape[0]
        if 0 < rows <= batch_size:  # one batch (the early-bird probe's usual case): a view, not the
            return (data[0:rows],), 1  # caller's tensor, whose shape a forward's in-place op could change
        # Slices, not data.split(): half the cost (~6 us) in the per-epoch early-bird step.
        return (data[i : i + batch_size] for i in range(0, rows, batch_size)), math.ceil(rows / batch_size)
    if isinstance(data, (str, bytes, dict)) or not isinstance(data, Iterable):
        raise TypeError(
            "codes: data must be a DataLoader, an iterable of batches (tensors, (x, y) tuples or "
            f"dicts with 'x'/'input') or a tensor, got {type(data).__name__}"
        )
    try:
        total = len(data)  # type: ignore[arg-type]
    except TypeError:
        total = None
    return data, total


def _inputs_of(batch: Any) -> torch.Tensor:
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    if isinstance(batch, dict):
        for key in ("x", "input", "inputs"):
            if key in batch and isinstance(batch[key], torch.Tensor):
                return batch[key]
        raise ValueError(f"codes: a dict batch needs an 'x' or 'input' tensor, got keys {sorted(map(str, batch))}")
    raise TypeError(
        f"codes: each batch must be a tensor, an (x, y) tuple/list or a dict with 'x'/'input', got {type(batch).__name__}"
    )


class _Recorder:
    """Packs the signs of each observed pre-activation and keeps the words per layer."""

    def __init__(self, backend: str | None, keep_on: str) -> None:
        self.backend = backend
        self.keep_on = keep_on
        self.words: dict[str, list[torch.Tensor]] = {}
        self.unit_shape: dict[str, tuple[int, ...]] = {}
        self.calls: dict[str, int] = {}  # calls of each layer in the current batch
        self.pending: list[tuple[str, torch.Tensor]] = []  # this batch's words, in forward order
        self.nan_flags: list[tuple[str, torch.Tensor]] = []  # per layer of this batch: any NaN (on the device)
        self.rows = 0
        self.seen = 0  # inputs before this batch

    def start_batch(self, rows: int, seen: int) -> None:
        self.calls.clear()
        self.pending.clear()
        self.nan_flags.clear()
        self.rows = rows
        self.seen = seen

    def is_batched(self, value: object) -> bool:
        return isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] == self.rows

    def record(self, name: str, value: object) -> None:
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"codes: layer {name!r} produced {type(value).__name__}, not a tensor")
        if not self.is_batched(value):
            raise ValueError(
                f"codes: layer {name!r} saw a tensor of shape {tuple(value.shape)} whose first dim is not the "
                f"batch of {self.rows} inputs; choose the layers to code with layers="
            )
        if not value.is_floating_point():
            raise TypeError(f"codes: layer {name!r} produced a {value.dtype} tensor, expected floating point")
        # A module (or functional call site) reached twice in one forward, e.g. one
        # nn.ReLU instance reused in a block, is one layer per call: "name#1", ...
        k = self.calls.get(name, 0)
        self.calls[name] = k + 1
        if k:
            name = f"{name}#{k}"
        shape = tuple(value.shape[1:])
        if self.unit_shape.setdefault(name, shape) != shape:
            raise ValueError(f"codes: layer {name!r} changed shape between batches: {self.unit_shape[name]} vs {shape}")
        # Packed now, while this batch's activation is alive: floats are never kept.
        # reshape is a view for the usual contiguous activations; pack_signs reads any strides.
        # The NaN flag comes from the same read on the cpu backend; elsewhere it is a device
        # tensor, checked in end_batch: one host sync per batch, not one per layer.
        flat = value if value.dim() == 2 else value.reshape(value.shape[0], -1)
        words, nan = ops._pack_signs_any_nan(flat, backend=self.backend)
        self.pending.append((name, words))
        self.nan_flags.append((name, nan))

    def end_batch(self) -> None:
        # cpu flags are bools; other backends' are 0-d device tensors: one host sync per device.
        flags = [flag for _, flag in self.nan_flags]
        if not all(type(flag) is bool for flag in flags):
            flags = ops._host_values(flags)
        if any(flags):
            name = next(name for (name, _), nan in zip(self.nan_flags, flags) if nan)
            raise ValueError(
                f"codes: layer {name!r} has NaN activations for inputs {self.seen}..{self.seen + self.rows - 1}; "
                "a NaN has no sign, so its region is undefined (a diverged model, or NaN inputs)"
            )
        pending = self.pending
        if self.keep_on == "cpu" and not all(words.is_cpu for _, words in pending):
            devices = {words.device for _, words in pending}
            if len(devices) == 1:
                # One device-to-host copy per batch instead of one synchronising copy per layer.
                host = torch.cat([words.reshape(-1) for _, words in pending]).cpu()
                parts = host.split([words.numel() for _, words in pending])
                pending = [(name, part.view(words.shape)) for (name, words), part in zip(pending, parts)]
            else:  # a model split over devices
                pending = [(name, words.cpu()) for name, words in pending]
        for name, words in pending:
            self.words.setdefault(name, []).append(words)
        self.pending = []


class _ModuleStack:
    """Which module's forward is running, so functional calls get a module's name.

    ``frames``: ``[name, functional calls so far]`` of each module being run, innermost last.
    """

    def __init__(self) -> None:
        self.frames: list[list[Any]] = []
        self.handles: list[Any] = []

    def install(self, model: nn.Module) -> None:
        for name, module in model.named_modules():
            if isinstance(module, torch.jit.ScriptModule):
                continue  # takes no hooks, and a mode never sees the calls of its TorchScript forward
            self.handles.append(module.register_forward_pre_hook(lambda m, args, name=name: self._enter(name)))
            self.handles.append(
                module.register_forward_hook(lambda m, args, out, name=name: self._leave(name), always_call=True)
            )

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        self.frames.clear()

    def _enter(self, name: str) -> None:
        self.frames.append([name, 0])

    def _leave(self, name: str) -> None:
        if self.frames and self.frames[-1][0] == name:
            self.frames.pop()


def _eager() -> Any:
    """A context in which every ``torch.compile``d callable runs uncompiled: compiled submodules
    (``torch.compile(child)`` or ``child.compile()``) and ``model.compile()`` too, whose Dynamo
    tracing of codes()' hooks failed with an internal AssertionError from the second batch on.
    Nothing to do when Dynamo was never imported (nothing was compiled)."""
    if "torch._dynamo.eval_frame" not in sys.modules:
        return contextlib.nullcontext()
    set_stance = getattr(torch.compiler, "set_stance", None)  # torch >= 2.6
    return contextlib.nullcontext() if set_stance is None else set_stance("force_eager")


def _uncompiled(model: nn.Module) -> nn.Module:
    """The module a ``torch.compile``'d model wraps (same modules, same names), else ``model``.
    codes() runs it: compiled code replays the module stack's hooks after the graph, so
    functional calls would lose their module."""
    dynamo = sys.modules.get("torch._dynamo.eval_frame")  # not imported: nothing was compiled
    return model._orig_mod if dynamo is not None and isinstance(model, dynamo.OptimizedModule) else model


def explain_dtype(exc: RuntimeError, model: nn.Module, x: torch.Tensor, where: str) -> None:
    """A forward that failed on inputs of another dtype than the model's float parameters
    (a float64 or int64 probe for a float32 model): raises TypeError saying so, from ``exc``."""
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
    if dtype is not None and x.dtype != dtype and (x.is_floating_point() or "dtype" in str(exc)):
        raise TypeError(
            f"{where}: the model failed on {x.dtype} inputs; its parameters are {dtype}: convert the inputs "
            f"(x.to({dtype})) or the model ({type(exc).__name__}: {exc})"
        ) from exc


class _FunctionalCalls(TorchFunctionMode):
    """Records every functional piecewise-linear call made by a module's forward."""

    def __init__(
        self, recorder: _Recorder, stack: _ModuleStack, hooked: set[str], where: str, constants: set[int]
    ) -> None:
        super().__init__()
        self.recorder = recorder
        self.stack = stack
        self.hooked = hooked
        self.where = where
        self.constants = constants  # ids of the model's parameters and buffers: never a batch
        # Tensors computed in forward from constants only (F.relu(self.p * 2) is no layer even
        # when p's first dim equals the batch's): id -> weak reference, dropped when freed.
        self.derived: dict[int, weakref.ref] = {}
        self.recorded = 0
        self.names: set[str] = set()
        # Another function mode (outside codes()) could change a relu's output: then pack inputs.
        self.outer_mode = torch._C._len_torch_function_stack() > 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        constant = self._from_constants(args, kwargs)
        if func not in _FUNCTIONAL or not self.stack.frames:
            out = func(*args, **kwargs)
            if not constant:
                self._written_with_data(func, args, kwargs)
            return self._track(out, constant)
        frame = self.stack.frames[-1]
        x = args[0] if args else kwargs.get("input")
        # Calls inside a hooked activation module's own forward are that module's layer.
        if frame[0] in self.hooked or constant or not self.recorder.is_batched(x):
            return self._track(func(*args, **kwargs), constant)
        owner, k = frame
        frame[1] = k + 1
        name = f"{owner}:relu[{k}]"
        self.recorded += 1
        self.names.add(name)
        # A relu's output has its input's code (see _keeps_sign), unless a tensor subclass
        # or an outer mode handles the call.
        from_output = func in _SIGN_KEEPING_CALLS and type(x) is torch.Tensor and not self.outer_mode
        if self.where == "pre" and not from_output:
            self.recorder.record(name, x)  # before an in-place call overwrites x
            return self._track(func(*args, **kwargs), False)
        out = func(*args, **kwargs)
        self.recorder.record(name, out)
        return self._track(out, False)

    def _is_constant(self, t: torch.Tensor) -> bool:
        if id(t) in self.constants:
            return True
        ref = self.derived.get(id(t))
        if ref is None or ref() is not t:
            return False
        base = t._base  # a view of a tensor that data was written into holds data too
        return base is None or self._is_constant(base)

    def _written_with_data(self, func: Any, args: tuple, kwargs: dict) -> None:
        """Unmarks what a call with data wrote into (item assignment ``h[:, :k] = z``, an
        in-place method, ``inplace=True`` or ``out=``) and the tensor it is a view of: a
        ``torch.zeros(n, ...)`` filled with data in forward is no constant. Item assignment
        returns None, and a write through a view returns the view, so _track alone missed both."""
        name = getattr(func, "__name__", "")
        if "out" in kwargs:
            targets = kwargs["out"]
        elif (
            func is torch.Tensor.__setitem__
            or (name.endswith("_") and not name.endswith("__"))
            or name in _INPLACE_DUNDERS
            or kwargs.get("inplace") is True
        ):
            targets = args[0] if args else kwargs.get("input")
        else:
            return
        for t in targets if isinstance(targets, (tuple, list)) else (targets,):
            if isinstance(t, torch.Tensor):
                for u in (t, t._base):
                    if u is not None:
                        self.derived.pop(id(u), None)

    def _from_constants(self, args: tuple, kwargs: dict) -> bool:
        """Every tensor argument (also inside a list or tuple argument) is a constant."""
        for group in (args, kwargs.values()):
            for a in group:
                if isinstance(a, torch.Tensor):
                    if not self._is_constant(a):
                        return False
                elif isinstance(a, (list, tuple)):
                    for b in a:
                        if isinstance(b, torch.Tensor) and not self._is_constant(b):
                            return False
        return True

    def _track(self, out: Any, constant: bool) -> Any:
        """Marks ``out`` (a tensor, or tensors in a tuple or list) constant, or unmarks it (an
        in-place call with data on a constant)."""
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if not isinstance(t, torch.Tensor):
                continue
            key = id(t)
            if constant:
                if key not in self.constants:
                    self.derived[key] = weakref.ref(t, lambda ref, key=key: self._forget(key, ref))
            elif key in self.derived:
                del self.derived[key]
        return out

    def _forget(self, key: int, ref: weakref.ref) -> None:
        if self.derived.get(key) is ref:
            del self.derived[key]


# Bounds that survive rounding to any float dtype (float16's smallest normal is 2**-14), so
# that a positive max_val or slope stays positive and finite in the activation's arithmetic.
_SAFE_MIN, _SAFE_MAX = 2.0**-14, 2.0**14


def _keeps_sign(module: nn.Module) -> bool:
    """Whether ``module``'s output has its input's sign code: ``out > 0`` exactly where
    ``x > 0``, and NaN exactly where ``x`` is NaN, for every float (-0.0 and +-inf too).
    codes() then packs the output after the module ran instead of its input before:
    the same bits, read after the activation wrote them rather than between the layer
    that wrote them and the activation (on a CPU the activation then pays no second
    pass over cache lines another core just read; about 20 us per 256x256 layer on a
    2-core machine, measured during development). Asked at each call, so attributes a
    parent changes during forward count."""
    kind = type(module)  # exact types: a subclass may change forward
    if "forward" in module.__dict__:  # forward replaced on the instance
        return False
    if kind is nn.ReLU:
        return True
    if kind in (nn.Hardtanh, nn.ReLU6):
        return float(module.min_val) <= 0.0 and _SAFE_MIN <= float(module.max_val)
    if kind is nn.LeakyReLU:  # slope 0 (or one that rounds to 0) would turn -inf into NaN
        return _SAFE_MIN <= float(module.negative_slope) <= _SAFE_MAX
    return False


def _hook_activation(recorder: _Recorder, name: str, module: nn.Module) -> list[Any]:
    """Hooks that record the sign code of ``module``'s input (``where="pre"``): from its
    output when the module keeps signs (see _keeps_sign) and no global forward hook could
    change that output; the forward hook is prepended, so it runs before the module's own
    forward hooks, as the input's pre-hook did."""
    if type(module) is nn.ReLU and "forward" not in module.__dict__ and not _torch_module._global_forward_hooks:
        # A plain ReLU keeps signs whatever its attributes: one hook, on the output (the
        # per-epoch early-bird step calls this once per layer and batch).
        def relu_after(m: nn.Module, args: tuple, out: object) -> None:
            if "forward" in m.__dict__ or _torch_module._global_forward_hooks:
                raise RuntimeError(
                    f"codes: layer {name!r}: its forward was replaced, or a global forward hook registered, "
                    "during the pass; its input's code is gone (the ReLU may run in place)"
                )
            recorder.record(name, out)

        return [module.register_forward_hook(relu_after, prepend=True)]

    from_output: list[bool] = []

    def before(m: nn.Module, args: tuple, kwargs: dict) -> None:
        from_output.append(_keeps_sign(m) and not _torch_module._global_forward_hooks)
        if not from_output[-1]:
            recorder.record(name, args[0] if args else kwargs.get("input"))

    def after(m: nn.Module, args: tuple, out: object) -> None:
        if from_output.pop():
            recorder.record(name, out)

    return [
        module.register_forward_pre_hook(before, with_kwargs=True),
        module.register_forward_hook(after, prepend=True),
    ]


def _first_tensor_device(modules: Iterable[nn.Module]) -> torch.device:
    """Where the first parameter (else buffer) of ``modules`` is, as ``next(model.parameters())``
    finds it (``modules`` in ``model.modules()`` order); the CPU when there is none."""
    modules = list(modules)
    for kind in ("_parameters", "_buffers"):
        for module in modules:
            for tensor in getattr(module, kind).values():
                if tensor is not None:
                    return tensor.device
    return torch.device("cpu")


def _resolve_layers(
    model: nn.Module, named: dict[str, nn.Module], layers: Sequence[str | nn.Module] | None
) -> dict[str, nn.Module]:
    """The modules to hook, by name; ``named``: ``dict(model.named_modules())``."""
    if layers is None:
        return {name: m for name, m in named.items() if isinstance(m, tuple(ACTIVATIONS))}
    if isinstance(layers, (str, nn.Module)):
        layers = [layers]
    if not isinstance(layers, Iterable):
        raise TypeError(f"codes: layers must be None, a module name, a module or a sequence of them, got {type(layers).__name__}")
    by_id = {id(m): name for name, m in named.items()}
    chosen: dict[str, nn.Module] = {}
    for item in layers:
        if isinstance(item, str):
            if item not in named:  # a second attribute name of a module: named by its first
                try:
                    item = by_id.get(id(model.get_submodule(item)), item)
                except AttributeError:
                    pass
            if item not in named:
                near = [n for n in named if n and (item in n or n in item)][:5]
                hint = f"; similar names: {near}" if near else ""
                raise ValueError(f"codes: layers names {item!r}, which is not a module of the model{hint}")
            chosen[item] = named[item]
        elif isinstance(item, nn.Module):
            if id(item) not in by_id:
                raise ValueError(f"codes: layers holds a {type(item).__name__} that is not part of the model")
            chosen[by_id[id(item)]] = item
        else:
            raise TypeError(f"codes: layers must hold module names or modules, got {type(item).__name__} {item!r}")
    if not chosen:
        raise ValueError("codes: layers is empty; pass None to find the activations")
    return chosen


def _check_count(name: str, value: object, allow_none: bool) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"codes: {name} must be an int{' or None' if allow_none else ''}, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"codes: {name} must be >= 1, got {value}")


def codes(
    model: nn.Module,
    data: Any,
    layers: Sequence[str | nn.Module] | None = None,
    *,
    device: torch.device | str | None = None,
    max_samples: int | None = None,
    where: str = "pre",
    backend: str | None = None,
    progress: bool = True,
    batch_size: int = 256,
    keep_on: str = "cpu",
    functional: bool = True,
) -> RegionCodes:
    """Packed region codes of every piecewise-linear layer of ``model`` over ``data``.

    Args:
        model: any ``nn.Module``; run in eval mode under ``no_grad``; the train/eval
            mode of each submodule is restored and every hook removed afterwards,
            also when forward raises. A ``torch.compile``d model runs uncompiled.
        data: a DataLoader or iterable of batches (tensors, ``(x, y)`` tuples/lists or
            dicts with ``"x"``/``"input"``), or one tensor (split into ``batch_size``).
        layers: ``None`` finds activation modules and functional calls (see the
            module doc); otherwise module names or modules whose *outputs* are
            the pre-activations (e.g. BatchNorm layers).
        device: where the inputs are sent (default: where the model's first
            parameter or buffer is, else CPU); the model is not moved.
        max_samples: stop after this many inputs.
        where: ``"pre"`` codes the sign of the activation's input (the spline
            code); ``"post"`` the sign of its output. For ``layers=`` modules the
            hooked output is the pre-activation, so both mean that output.
        backend: ``pack_signs`` backend (default: the fastest for the device).
        progress: show a tqdm bar over batches.
        batch_size: rows per batch when ``data`` is a tensor.
        keep_on: ``"cpu"`` moves each batch's words to the CPU (one copy per
            batch); ``"device"`` keeps them where they were packed.
        functional: with ``layers=None``, also find functional calls (intercepting
            torch functions during the first batch); ``False`` hooks activation
            modules only, saving that interception (a fixed cost per call,
            about 0.1-1 ms on a CPU) when the model is known to have none.

    Returns:
        :class:`RegionCodes`, layers in the order the forward pass reached them;
        ``meta["functional_layers"]`` counts the layers found as functional calls
        (``None`` when they were not searched).

    Raises:
        TypeError/ValueError on bad arguments, when no layer is found (naming what
        was searched), when the data yields no samples, when a layer is not
        reached by every input (data-dependent control flow), or when a coded
        activation holds NaN (its sign is undefined; +-inf are coded by their sign).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"codes: model must be an nn.Module, got {type(model).__name__}")
    if where not in ("pre", "post"):
        raise ValueError(f"codes: where must be 'pre' or 'post', got {where!r}")
    if keep_on not in ("cpu", "device"):
        raise ValueError(f"codes: keep_on must be 'cpu' or 'device', got {keep_on!r}")
    if not isinstance(functional, bool):
        raise TypeError(f"codes: functional must be a bool, got {type(functional).__name__} {functional!r}")
    _check_count("batch_size", batch_size, allow_none=False)
    _check_count("max_samples", max_samples, allow_none=True)
    named = dict(model.named_modules())  # the one walk of the module tree: layers, device, modes
    if device is None:
        device = _first_tensor_device(named.values())
    elif not isinstance(device, (str, torch.device)):
        raise TypeError(f"codes: device must be a torch.device, a str or None, got {type(device).__name__}")
    try:
        device = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"codes: device {device!r} is not a torch device ({exc})") from exc
    batches, total = _batches(data, batch_size, max_samples)
    hooked = _resolve_layers(model, named, layers)
    find_functional = layers is None and functional

    recorder = _Recorder(backend, keep_on)
    stack = _ModuleStack()
    mode = None
    if find_functional:
        # A weight whose first dim happens to equal a batch's rows is not a layer.
        constants = {
            id(t) for m in named.values() for t in (*m._parameters.values(), *m._buffers.values()) if t is not None
        }
        mode = _FunctionalCalls(recorder, stack, set(hooked), where, constants)
    handles: list[Any] = []
    modes = training_modes(model, named.values())
    forward = _uncompiled(model)
    n_seen = 0
    functional_layers: int | None = None
    bar = None
    try:
        for name, module in hooked.items():
            if layers is None and where == "pre":
                handles += _hook_activation(recorder, name, module)
            else:
                handles.append(module.register_forward_hook(lambda m, args, out, name=name: recorder.record(name, out)))
        if mode is not None:
            stack.install(model)
        set_eval(model, modes)
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, desc="codes", unit="batch", leave=False)
        with torch.no_grad(), _eager():
            for batch in batches:
                x = _inputs_of(batch)
                if x.dim() == 0:
                    raise ValueError("codes: a batch must have a batch dimension, got a 0-d tensor")
                if max_samples is not None:
                    x = x[: max_samples - n_seen]
                if x.shape[0] == 0:
                    continue
                recorder.start_batch(x.shape[0], n_seen)
                if x.device != device:
                    x = x.to(device, non_blocking=True)
                try:
                    if mode is not None:
                        with mode:
                            forward(x)
                        stack.frames.clear()
                    else:
                        forward(x)
                except RuntimeError as exc:
                    explain_dtype(exc, model, x, "codes")
                    raise
                recorder.end_batch()
                if n_seen == 0:
                    if not recorder.words:
                        raise ValueError(_nothing_found(model, hooked, layers, find_functional))
                    functional_layers = None if mode is None else len(mode.names)
                    if mode is not None and mode.recorded == 0:
                        # No functional calls in this model: drop the per-op interception.
                        stack.remove()
                        mode = None
                n_seen += x.shape[0]
                if bar is not None:
                    bar.update(1)
                if max_samples is not None and n_seen >= max_samples:
                    break
    finally:
        for handle in handles:
            handle.remove()
        stack.remove()
        restore_modes(modes)
        if bar is not None:
            bar.close()

    if n_seen == 0:
        raise ValueError(f"codes: data ({type(data).__name__}) yielded no samples")
    result = {}
    for name in list(recorder.words):
        chunks = recorder.words.pop(name)  # freed layer by layer: the peak is the codes plus one layer
        words = torch.cat(chunks) if len(chunks) > 1 else chunks[0]
        del chunks
        if words.shape[0] != n_seen:
            raise ValueError(
                f"codes: layer {name!r} was reached for {words.shape[0]} of {n_seen} inputs "
                "(control flow that depends on the data?); choose layers every input reaches with layers="
            )
        result[name] = LayerCodes._of(words, recorder.unit_shape[name])
    import fastspline

    meta = {
        "where": where,
        "n_samples": n_seen,
        "model": type(model).__name__,
        "layers": "found" if layers is None else "given",
        "functional_layers": functional_layers,
        "fastspline_version": fastspline.__version__,
        "torch_version": str(torch.__version__),
    }
    return RegionCodes(result, meta)


def _nothing_found(model: nn.Module, hooked: dict[str, nn.Module], layers: object, functional: bool) -> str:
    if layers is not None:
        return f"codes: the modules {sorted(hooked)} given in layers= were not called by the forward pass of {type(model).__name__}"
    searched = ", ".join(t.__name__ for t in ACTIVATIONS)
    if not functional:
        return (
            f"codes: found no activation module in {type(model).__name__} ({searched}; add others with "
            "register_activation), and functional=False left functional calls unsearched"
        )
    return (
        f"codes: found no piecewise-linear layer in {type(model).__name__}: searched for activation modules "
        f"({searched}; add others with register_activation) and functional calls "
        "(torch.relu, F.relu, x.relu(), F.leaky_relu, F.relu6, F.hardtanh, F.prelu); "
        "pass layers= to code the outputs of chosen modules (e.g. BatchNorm layers)"
    )
