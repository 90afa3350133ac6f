"""Early-bird (EB) ticket detection: the spline (partition) criterion of the
paper and the BatchNorm-mask baseline of You et al. (ICLR 2020).

Both are stepped once per epoch, ``detector.step(model, epoch)``, or passed to
:func:`fastspline.train.fit` as callbacks, and expose

- ``found`` / ``epoch``: whether and when the main threshold fired;
- ``fired``: ``{threshold: epoch or None}`` for the main threshold and each of
  ``report_thresholds`` (what each would have given on the same run);
- ``distances``: ``{epoch: window distance}`` (the value compared with the threshold);
- ``history``: float64 ``[E + 1, E + 1]`` epoch x epoch distances (NaN where not
  computed; row/column ``t`` is epoch ``t``, E the last epoch stepped).

:class:`SplineEarlyBird` (PAPER.md §2): after epoch ``t`` the packed region codes
of every ReLU layer on a fixed probe are computed with :func:`fastspline.codes.codes`;
``d(t, s)`` is the mean over layers of the fraction of (input, unit) bits that
differ; EB is found at ``t`` when ``max_{s = t-1 .. t-window} d(t, s) < threshold``.
Only packed codes are kept: a FIFO of the last ``window`` epochs' codes
(1 bit per unit and input, 32x less than the float activations the official code
keeps), plus the distances.

:class:`MaskEarlyBird`: the channel mask of a global threshold on |BN gamma| at
pruning ratio ``p``; the distance between two masks is the fraction of entries
that differ; a FIFO of ``window`` masks (the newest included); EB when every
distance to the newest is <= ``threshold`` (official: p, 0.1, 5).
"""
from __future__ import annotations

import math
import operator
import time
import weakref
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any, cast

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fastspline.codes import LayerCodes, RegionCodes, codes

__all__ = ["SplineEarlyBird", "MaskEarlyBird", "bn_mask", "probe_batch_size"]


def _check_threshold(value: object, name: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{where}: {name} must be a number in [0, 1], got {value!r}")
    return float(value)


def _check_window(value: object, low: int, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{where}: window must be an int, got {type(value).__name__} {value!r}")
    if value < low:
        raise ValueError(f"{where}: window must be >= {low}, got {value}")
    return value


def probe_batch_size(units: int) -> int:
    """The probe batch :class:`SplineEarlyBird` picks by default, from ``units``, the most
    values per input among the probe and its coded layers: 256 rows (``codes()``' default),
    more for narrow networks, up to 2**18 values (1 MiB of float32) per layer and batch and
    4,096 rows. So a 512-input probe of an MLP 256 units wide runs in one pass (one round of
    hooks and packing calls instead of two), while conv nets keep 256: there a larger batch
    spills the caches (MNIST-1D cnn1d, 1,280 values per input and layer, 512 inputs on the
    2-core CPU: 8.7 ms at 256 rows, 15.5 ms at 512; best of 60 alternating runs, session 13)."""
    if isinstance(units, bool) or not isinstance(units, int) or units < 0:
        raise ValueError(f"probe_batch_size: units must be an int >= 0, got {units!r}")
    return max(256, min(4096, 2**18 // max(1, units)))


class _EarlyBird:
    """Bookkeeping shared by both detectors: epochs, thresholds, distance matrix."""

    name = ""
    inclusive = False  # does a distance equal to the threshold fire?

    def __init__(self, threshold: float, report_thresholds: Sequence[float], keep_history: bool, stop_training: bool, where: str) -> None:
        self.threshold = _check_threshold(threshold, "threshold", where)
        if isinstance(report_thresholds, (str, bytes)) or not isinstance(report_thresholds, Sequence):
            raise TypeError(f"{where}: report_thresholds must be a sequence of numbers, got {type(report_thresholds).__name__}")
        extra = [_check_threshold(t, "report_thresholds[]", where) for t in report_thresholds]
        self.thresholds: list[float] = list(dict.fromkeys([self.threshold, *extra]))
        if not isinstance(keep_history, bool):
            raise TypeError(f"{where}: keep_history must be a bool, got {type(keep_history).__name__}")
        self.keep_history = keep_history
        self.stop_training = bool(stop_training)
        self.fired: dict[float, int | None] = {t: None for t in self.thresholds}
        self.distances: dict[int, float] = {}
        self.epochs: list[int] = []
        self._pairs: dict[tuple[int, int], float] = {}
        self._where = where

    @property
    def found(self) -> bool:
        """The main threshold has fired (at :attr:`epoch`)."""
        return self.fired[self.threshold] is not None

    @property
    def epoch(self) -> int | None:
        """The epoch the main threshold fired at, or None."""
        return self.fired[self.threshold]

    def _check_epoch(self, epoch: object) -> int:
        if isinstance(epoch, bool) or not hasattr(type(epoch), "__index__"):  # ints, numpy ints
            raise TypeError(f"{self._where}.step: epoch must be an int, got {type(epoch).__name__} {epoch!r}")
        epoch = operator.index(epoch)
        if epoch < 0 or (self.epochs and epoch <= self.epochs[-1]):
            last = self.epochs[-1] if self.epochs else None
            raise ValueError(f"{self._where}.step: epochs must increase and be >= 0, got {epoch} after {last}")
        return epoch

    def _fires(self, distance: float, threshold: float) -> bool:
        return distance <= threshold if self.inclusive else distance < threshold

    def _conclude(self, epoch: int, window_distance: float | None) -> None:
        self.epochs.append(epoch)
        if window_distance is None:
            return
        self.distances[epoch] = window_distance
        for t in self.thresholds:
            if self.fired[t] is None and self._fires(window_distance, t):
                self.fired[t] = epoch

    @property
    def history(self) -> torch.Tensor:
        """float64 ``[E + 1, E + 1]``: ``history[t, s]`` = distance between epochs t and s
        (symmetric, 0 on the diagonal of stepped epochs, NaN where not computed)."""
        size = self.epochs[-1] + 1 if self.epochs else 0
        matrix = torch.full((size, size), math.nan, dtype=torch.float64)
        for e in self.epochs:
            matrix[e, e] = 0.0
        for (t, s), d in self._pairs.items():
            matrix[t, s] = matrix[s, t] = d
        return matrix

    def summary(self) -> dict[str, Any]:
        """JSON-able results: thresholds and the epoch each fired at, window distances."""
        return {
            "detector": self.name,
            "threshold": self.threshold,
            "epoch": self.epoch,
            "fired": {str(t): e for t, e in self.fired.items()},
            "distances": {str(e): d for e, d in self.distances.items()},
        }

    def _base_state(self) -> dict[str, Any]:
        return {
            "epochs": list(self.epochs),
            "distances": [[e, d] for e, d in self.distances.items()],
            "fired": [[t, -1 if e is None else e] for t, e in self.fired.items()],
            "pairs": [[t, s, d] for (t, s), d in self._pairs.items()],
        }

    def _parse_base_state(self, state: object) -> dict[str, Any]:
        """The shared fields of ``state``, parsed without touching ``self``."""
        saved = {float(t): (None if int(e) < 0 else int(e)) for t, e in state["fired"]}
        distances = {int(e): float(d) for e, d in state["distances"]}
        # A threshold the state lacks (changed or added on resume) fires where the saved distances first reach it.
        first = {t: next((e for e in sorted(distances) if self._fires(distances[e], t)), None) for t in self.thresholds}
        return {
            "epochs": [int(e) for e in state["epochs"]],
            "distances": distances,
            "fired": {t: saved[t] if t in saved else first[t] for t in self.thresholds},
            "_pairs": {(int(t), int(s)): float(d) for t, s, d in state["pairs"]},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`'s output. A malformed state raises
        ValueError (TypeError for a non-dict) and leaves the detector as it was.
        A threshold the state lacks gets the first saved epoch whose distance fires it."""
        if not isinstance(state, dict):
            raise TypeError(f"{self._where}.load_state_dict: state must be a dict from state_dict(), got {type(state).__name__}")
        try:
            parsed = self._parse_base_state(state)
            parsed.update(self._parse_state(state))
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"{self._where}.load_state_dict: malformed state ({type(exc).__name__}: {exc})") from exc
        for name, value in parsed.items():
            setattr(self, name, value)

    def _parse_state(self, state: dict[str, Any]) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, model: nn.Module, epoch: int, record: dict[str, Any]) -> bool:
        """As a :func:`fastspline.train.fit` callback: steps, adds
        ``"<name>_distance"`` and ``"<name>_found"`` to ``record``; returns True
        (stop training) once found when built with ``stop_training=True``."""
        self.step(model, epoch)
        record[f"{self.name}_distance"] = self.distances.get(epoch)
        record[f"{self.name}_found"] = self.found
        return self.stop_training and self.found

    def step(self, model: nn.Module, epoch: int) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError


class SplineEarlyBird(_EarlyBird):
    """Spline EB detection on a fixed probe (see the module doc).

    Args:
        probe: float tensor ``[N, *input_shape]``: a canvas
            (:func:`fastspline.data.canvas`) or a fixed subset of the data.
        threshold: EB when the window's max distance is below it (paper 0.16).
        window: previous epochs compared (paper 3); the first possible EB is the
            ``window + 1``-th epoch stepped.
        layers: passed to :func:`fastspline.codes.codes` (None: every ReLU-like
            layer's input; or the BatchNorm modules, as the official code hooks).
        keep_history: record every computed distance (for :attr:`history`,
            :attr:`layer_history`); False keeps only the window maxima.
        report_thresholds: more thresholds whose firing epoch is reported in :attr:`fired`.
        history_depth: compare each epoch with this many previous epochs for the
            heatmap (codes of that many epochs are kept; default ``window``; the
            criterion always uses ``window``).
        batch_size: probe rows per forward pass; default (None): on the first step,
            :func:`probe_batch_size` of the widest coded layer, found by coding two probe
            inputs (256 rows, more for narrow networks; fixed from then on, so every epoch's
            codes come from the same batches).
        device, backend: passed to ``codes``.
        stop_training: as a ``fit`` callback, stop training once found.
        count_flops: count the probe's forward FLOPs (once, on the first step) into
            :attr:`probe_flops`.

    Attributes besides the shared ones: ``probe_flops`` (FLOPs of one probe pass),
    ``nbytes`` (bytes of the codes kept), ``last_seconds`` (``{"codes": s, "distances": s}``
    of the last step: the probe pass with packing, and the comparisons).
    """

    name = "spline"
    inclusive = False

    def __init__(
        self,
        probe: torch.Tensor,
        threshold: float = 0.16,
        window: int = 3,
        layers: Sequence[str | nn.Module] | None = None,
        keep_history: bool = True,
        *,
        report_thresholds: Sequence[float] = (),
        history_depth: int | None = None,
        device: torch.device | str | None = None,
        batch_size: int | None = None,
        backend: str | None = None,
        stop_training: bool = False,
        count_flops: bool = True,
    ) -> None:
        super().__init__(threshold, report_thresholds, keep_history, stop_training, "SplineEarlyBird")
        if not isinstance(probe, torch.Tensor):
            raise TypeError(f"SplineEarlyBird: probe must be a tensor [N, ...], got {type(probe).__name__}")
        if probe.dim() < 2 or probe.shape[0] == 0 or not probe.is_floating_point():
            raise ValueError(
                f"SplineEarlyBird: probe must be a non-empty floating tensor [N, ...], got {probe.dtype} {tuple(probe.shape)}"
            )
        self.window = _check_window(window, 1, "SplineEarlyBird")
        if history_depth is None:
            history_depth = window
        if isinstance(history_depth, bool) or not isinstance(history_depth, int) or history_depth < window:
            raise ValueError(f"SplineEarlyBird: history_depth must be an int >= window ({window}), got {history_depth!r}")
        self.history_depth = history_depth
        self.probe = probe
        if layers is not None and not isinstance(layers, (str, nn.Module, Sequence)) and isinstance(layers, Iterable):
            layers = list(layers)  # a generator would be used up by the first step
        self.layers = layers
        self.device = device
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"SplineEarlyBird: batch_size must be an int >= 1 or None, got {batch_size!r}")
        self.batch_size: int | None = batch_size  # None until the first step picks it
        self.backend = backend
        self.count_flops = bool(count_flops)
        self.probe_flops: int | None = None
        self.last_seconds: dict[str, float] = {}
        # (epoch, codes) of the last history_depth epochs, oldest first.
        self._fifo: deque[tuple[int, RegionCodes]] = deque(maxlen=history_depth)
        self._layer_pairs: dict[tuple[int, int], dict[str, float]] = {}
        # The model whose codes had no functional ReLU calls: its later steps skip that search.
        self._no_functional: weakref.ref[nn.Module] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # The weakref (a cache of which model had no functional calls) cannot be pickled;
        # an unpickled detector searches again on its first step.
        state = self.__dict__.copy()
        state["_no_functional"] = None
        return state

    @property
    def nbytes(self) -> int:
        """Bytes of the packed codes kept in the FIFO."""
        return sum(c.nbytes for _, c in self._fifo)

    @property
    def layer_names(self) -> list[str]:
        return self._fifo[-1][1].names if self._fifo else []

    @property
    def layer_history(self) -> dict[str, torch.Tensor]:
        """Per layer, a float64 ``[E + 1, E + 1]`` matrix like :attr:`history`."""
        size = self.epochs[-1] + 1 if self.epochs else 0
        result: dict[str, torch.Tensor] = {}
        for (t, s), per_layer in self._layer_pairs.items():
            for name, d in per_layer.items():
                if name not in result:
                    result[name] = torch.full((size, size), math.nan, dtype=torch.float64)
                    for e in self.epochs:
                        result[name][e, e] = 0.0
                result[name][t, s] = result[name][s, t] = d
        return result

    def codes_of(self, model: nn.Module) -> RegionCodes:
        """The probe's packed codes under ``model`` (what :meth:`step` compares)."""
        functional = self._no_functional is None or self._no_functional() is not model
        self._pick_batch_size(model, functional)
        result = self._codes(model, functional=functional)
        if result.meta.get("functional_layers") == 0:
            self._no_functional = weakref.ref(model)
        return result

    def _pick_batch_size(self, model: nn.Module, functional: bool) -> None:
        """Set a default ``batch_size`` (None) from the widest layer of two probe inputs' codes
        (two, not one: a BatchNorm kept in training mode needs more than one value per channel)."""
        if self.batch_size is not None:
            return
        one = codes(
            model, self.probe[:2], self.layers, device=self.device, progress=False, backend=self.backend, functional=functional
        )
        self.batch_size = probe_batch_size(max([self.probe[0].numel()] + [layer.n_units for _, layer in one.items()]))

    def _codes(self, model: nn.Module, functional: bool) -> RegionCodes:
        return codes(
            model, self.probe, self.layers, device=self.device, progress=False, batch_size=self.batch_size,
            backend=self.backend, functional=functional,
        )

    def step(self, model: nn.Module, epoch: int) -> bool:
        """Code the probe after ``epoch``, compare with the previous epochs, and
        return :attr:`found` (True from the firing epoch on)."""
        if not isinstance(model, nn.Module):
            raise TypeError(f"SplineEarlyBird.step: model must be an nn.Module, got {type(model).__name__}")
        epoch = self._check_epoch(epoch)
        self._pick_batch_size(model, True)  # before the FLOP counter: that short pass is not the probe's
        started = time.perf_counter()
        if self.count_flops and self.probe_flops is None:
            counter = FlopCounterMode(display=False)
            with counter:
                current = self.codes_of(model)
            self.probe_flops = int(counter.get_total_flops())
        else:
            current = self.codes_of(model)
        coded = time.perf_counter()
        in_window: list[float] = []
        newest_first = list(reversed(self._fifo))
        per_layers = current.distances([c for _, c in newest_first], reduce="none", backend=self.backend)
        for position, ((previous_epoch, _), per_layer) in enumerate(zip(newest_first, per_layers)):
            per_layer = cast("dict[str, float]", per_layer)
            mean = sum(per_layer.values()) / len(per_layer)
            if position < self.window:
                in_window.append(mean)
            if self.keep_history:
                self._pairs[(epoch, previous_epoch)] = mean
                self._layer_pairs[(epoch, previous_epoch)] = per_layer
        self.last_seconds = {"codes": coded - started, "distances": time.perf_counter() - coded}
        self._conclude(epoch, max(in_window) if len(in_window) == self.window else None)
        self._fifo.append((epoch, current))
        return self.found

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue (kept codes included); loadable with ``torch.load(weights_only=True)``."""
        state = self._base_state()
        state["fifo"] = [
            [e, [[name, layer.words, layer.n_units, list(layer.unit_shape)] for name, layer in c.items()]] for e, c in self._fifo
        ]
        state["layer_pairs"] = [[t, s, list(per.items())] for (t, s), per in self._layer_pairs.items()]
        state["probe_flops"] = -1 if self.probe_flops is None else self.probe_flops
        return state

    def _parse_state(self, state: dict[str, Any]) -> dict[str, Any]:
        fifo: deque[tuple[int, RegionCodes]] = deque(maxlen=self.history_depth)
        for e, layers in state["fifo"]:
            fifo.append(
                (int(e), RegionCodes({name: LayerCodes(words, n_units, tuple(shape)) for name, words, n_units, shape in layers}))
            )
        return {
            "_fifo": fifo,
            "_layer_pairs": {(int(t), int(s)): {str(n): float(d) for n, d in per} for t, s, per in state["layer_pairs"]},
            "probe_flops": None if state["probe_flops"] < 0 else int(state["probe_flops"]),
        }

    def summary(self) -> dict[str, Any]:
        result = super().summary()
        result.update(window=self.window, probe_samples=int(self.probe.shape[0]), probe_flops=self.probe_flops, codes_nbytes=self.nbytes)
        return result


def bn_mask(model: nn.Module, ratio: float, layers: Sequence[str | nn.Module] | None = None) -> torch.Tensor:
    """EB tickets' channel mask: bool ``[total BN channels]``, True (kept) where |gamma|
    is strictly above the global cut, the |gamma| at sorted position
    ``int(total * ratio)`` (as the official code: that prunes ``int(total * ratio) + 1``
    channels, ties aside). ``layers``: BatchNorm modules or names (default every
    affine BatchNorm, in ``model.modules()`` order)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"bn_mask: model must be an nn.Module, got {type(model).__name__}")
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= ratio < 1.0:
        raise ValueError(f"bn_mask: ratio must be in [0, 1), got {ratio!r}")
    norms = _bn_layers(model, layers)
    gammas = torch.cat([m.weight.detach().abs().flatten().cpu() for m in norms])
    if not torch.isfinite(gammas).all():
        raise ValueError(f"bn_mask: BatchNorm weights of {type(model).__name__} hold NaN or inf (a diverged model?)")
    ordered = torch.sort(gammas).values
    cut = ordered[min(int(gammas.numel() * ratio), gammas.numel() - 1)]
    return gammas > cut


def _bn_layers(model: nn.Module, layers: Sequence[str | nn.Module] | None) -> list[nn.Module]:
    if layers is None:
        found = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine]
        if not found:
            raise ValueError(f"bn_mask: {type(model).__name__} has no affine BatchNorm layer")
        return found
    if isinstance(layers, (str, nn.Module)):
        layers = [layers]
    if not isinstance(layers, Sequence):
        raise TypeError(f"bn_mask: layers must be None, a module name, a module or a sequence of them, got {type(layers).__name__}")
    named = dict(model.named_modules())
    own = {id(m) for m in named.values()}
    chosen = []
    for item in layers:
        module = named.get(item) if isinstance(item, str) else item
        if not isinstance(module, nn.modules.batchnorm._BatchNorm) or not module.affine:
            raise ValueError(f"bn_mask: layers must name affine BatchNorm modules of the model, got {item!r}")
        if id(module) not in own:
            raise ValueError(f"bn_mask: layers holds a {type(module).__name__} that is not part of the model")
        chosen.append(module)
    if not chosen:
        raise ValueError("bn_mask: layers is empty")
    return chosen


class MaskEarlyBird(_EarlyBird):
    """EB tickets' BN-mask detection (You et al., ICLR 2020), data-free.

    Args:
        ratio: pruning ratio ``p`` of the global |gamma| threshold.
        threshold: EB when every distance to the newest mask is <= it (official 0.1).
        window: masks in the FIFO, the newest included (official 5): the first
            possible EB is the ``window``-th epoch stepped.
        layers: BatchNorm modules or names (default all).
        keep_history, report_thresholds, stop_training: as :class:`SplineEarlyBird`.
    """

    name = "mask"
    inclusive = True

    def __init__(
        self,
        ratio: float,
        threshold: float = 0.1,
        window: int = 5,
        layers: Sequence[str | nn.Module] | None = None,
        keep_history: bool = True,
        *,
        report_thresholds: Sequence[float] = (),
        stop_training: bool = False,
    ) -> None:
        super().__init__(threshold, report_thresholds, keep_history, stop_training, "MaskEarlyBird")
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= ratio < 1.0:
            raise ValueError(f"MaskEarlyBird: ratio must be in [0, 1), got {ratio!r}")
        self.ratio = float(ratio)
        self.window = _check_window(window, 2, "MaskEarlyBird")
        self.layers = layers
        self._fifo: deque[tuple[int, torch.Tensor]] = deque(maxlen=window)

    def step(self, model: nn.Module, epoch: int) -> bool:
        """Take the mask of ``model`` after ``epoch`` and return :attr:`found`."""
        return self.step_mask(bn_mask(model, self.ratio, self.layers), epoch)

    def step_mask(self, mask: torch.Tensor, epoch: int) -> bool:
        """Like :meth:`step` with a given bool mask ``[channels]`` (e.g. a hand-built sequence)."""
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.dim() != 1:
            got = f"{mask.dtype} {tuple(mask.shape)}" if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise TypeError(f"MaskEarlyBird.step_mask: mask must be a 1-D bool tensor, got {got}")
        if mask.numel() == 0:
            raise ValueError("MaskEarlyBird.step_mask: mask is empty (no BatchNorm channels)")
        if self._fifo and self._fifo[-1][1].shape != mask.shape:
            raise ValueError(f"MaskEarlyBird.step_mask: mask has {mask.numel()} entries, earlier masks {self._fifo[-1][1].numel()}")
        epoch = self._check_epoch(epoch)
        found_distances = []
        for previous_epoch, previous in list(self._fifo)[-(self.window - 1) :]:
            d = float((previous != mask).sum()) / mask.numel()
            found_distances.append(d)
            if self.keep_history:
                self._pairs[(epoch, previous_epoch)] = d
        full = len(found_distances) == self.window - 1
        self._conclude(epoch, max(found_distances) if full else None)
        self._fifo.append((epoch, mask.clone()))
        return self.found

    def state_dict(self) -> dict[str, Any]:
        state = self._base_state()
        state["fifo"] = [[e, m] for e, m in self._fifo]
        return state

    def _parse_state(self, state: dict[str, Any]) -> dict[str, Any]:
        fifo: deque[tuple[int, torch.Tensor]] = deque(maxlen=self.window)
        for e, m in state["fifo"]:
            if not isinstance(m, torch.Tensor) or m.dtype != torch.bool or m.dim() != 1:
                raise ValueError(f"fifo mask of epoch {e} is not a 1-D bool tensor")
            fifo.append((int(e), m))
        return {"_fifo": fifo}

    def summary(self) -> dict[str, Any]:
        result = super().summary()
        result.update(window=self.window, ratio=self.ratio)
        return result
