"""What every fastspline model shares: a width list that rebuilds it, a config
that recreates it, and the weight initialisation of the paper's official code.

A *width* is the number of units of one prunable layer (a conv's channels, a
hidden linear layer's neurons, the channels a PreResNet block reads from its
input). ``model.widths()`` lists them in forward order, ``model.width_layers()``
names the modules of each one, and ``model.rebuild(widths)`` returns a freshly
initialised dense model of the same architecture with those widths: the
pruning step copies the kept units' weights into it.
"""
from __future__ import annotations

import math
import operator
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Union

from torch import nn

CfgEntry = Union[int, str]  # a conv width or "M" (max-pool)

__all__ = ["SplineModel", "WidthLayer", "init_weights", "check_widths", "check_width", "spatial_size", "conv_features"]


@dataclass(frozen=True)
class WidthLayer:
    """The modules behind one entry of ``model.widths()``.

    activation: name of the ``nn.ReLU`` whose input these units are (the layer
        name :func:`fastspline.codes.codes` gives them).
    norm: name of the BatchNorm producing that input, or None (no BN).
    producer: name of the conv/linear whose output channels these are, or None
        when the units are a selection of a residual stream (PreResNet's
        ``select``, whose kept indices live in a buffer).
    select: name of the :class:`~fastspline.models.preresnet.ChannelSelect` that
        picks these channels out of ``norm``'s output, or None.
    """

    activation: str
    norm: str | None
    producer: str | None
    select: str | None = None


class SplineModel(nn.Module):
    """Base of the cfg-driven models: subclasses set ``arch`` and implement
    :meth:`widths`, :meth:`width_layers`, :meth:`config` and :meth:`_with_widths`."""

    arch: str = ""

    def widths(self) -> list[int]:
        """Units of each prunable layer, in forward order."""
        raise NotImplementedError

    def width_layers(self) -> list[WidthLayer]:
        """The modules behind each entry of :meth:`widths` (same order)."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """JSON-able arguments that rebuild this architecture with
        :func:`fastspline.models.build` (weights not included)."""
        raise NotImplementedError

    def rebuild(self, widths: Sequence[int]) -> SplineModel:
        """A new dense model of this architecture with ``widths`` (freshly initialised).

        Raises ValueError when ``widths`` has the wrong length or a width < 1.
        """
        check_widths(widths, len(self.widths()), f"{type(self).__name__}.rebuild")
        return self._with_widths([operator.index(w) for w in widths])

    def _with_widths(self, widths: list[int]) -> SplineModel:
        raise NotImplementedError


def check_widths(widths: object, expected: int | None, where: str) -> None:
    """``widths``: a sequence of ``expected`` (any number when None) ints >= 1."""
    if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence):
        raise TypeError(f"{where}: widths must be a sequence of ints, got {type(widths).__name__}")
    if expected is not None and len(widths) != expected:
        raise ValueError(f"{where}: widths must have {expected} entries, got {len(widths)}")
    for i, w in enumerate(widths):
        # operator.index accepts numpy and 0-d torch integers too, but not floats or bools.
        if isinstance(w, bool) or not hasattr(type(w), "__index__"):
            raise TypeError(f"{where}: widths[{i}] must be an int, got {type(w).__name__} {w!r}")
        if operator.index(w) < 1:
            raise ValueError(f"{where}: widths[{i}] must be >= 1, got {w}")


def init_weights(model: nn.Module) -> None:
    """Initialise as the network-slimming / EB / Spline-EB code does.

    conv (1-D and 2-D) and hidden linear layers: normal(0, sqrt(2 / (k * out)))
    (Kaiming normal, fan-out); BatchNorm: weight 0.5, bias 0; the classifier
    (a linear layer named ``classifier``): normal(0, 0.01), bias 0.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"init_weights: model must be an nn.Module, got {type(model).__name__}")
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d)):
            fan_out = math.prod(module.kernel_size) * module.out_channels
            nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
            nn.init.constant_(module.weight, 0.5)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            if name.split(".")[-1] == "classifier":
                nn.init.normal_(module.weight, 0.0, 0.01)
            else:
                # A hidden linear layer followed by ReLU is a 1x1 conv: same rule as the convs.
                nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / module.out_features))
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def spatial_size(input_size: object, ndim: int, where: str) -> tuple[int, ...]:
    """``input_size`` (an int or a tuple of ``ndim`` ints) as a tuple."""
    if isinstance(input_size, bool):
        raise TypeError(f"{where}: input_size must be an int or a tuple of ints, got {input_size!r}")
    if isinstance(input_size, int):
        size = (input_size,) * ndim
    elif isinstance(input_size, (tuple, list)) and all(isinstance(s, int) and not isinstance(s, bool) for s in input_size):
        size = tuple(input_size)
    else:
        raise TypeError(f"{where}: input_size must be an int or a tuple of ints, got {input_size!r}")
    if len(size) != ndim or min(size) < 1:
        raise ValueError(f"{where}: input_size must be {ndim} positive sizes, got {input_size!r}")
    return size


def check_width(width: object, where: str) -> float:
    """A width multiplier: a finite number > 0 (``round(w * width)`` must be an int)."""
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
        raise ValueError(f"{where}: width must be a positive number, got {width!r}")
    if not math.isfinite(width):
        raise ValueError(f"{where}: width must be finite, got {width!r}")
    return width


def check_positive_int(value: object, name: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{where}: {name} must be an int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{where}: {name} must be >= 1, got {value}")
    return value


def conv_features(
    cfg: Sequence[CfgEntry], in_channels: int, size: list[int], where: str
) -> tuple[OrderedDict[str, nn.Module], list[CfgEntry], int, list[int]]:
    """The conv3x3 -> BatchNorm -> ReLU / max-pool stack of a VGG-style ``cfg`` (widths and
    "M") over inputs of spatial ``size`` (1 or 2 dims): the named layers, the cfg as built
    (a pool of a size-1 map is left out), the last width and the output size."""
    if isinstance(cfg, (str, bytes)) or not isinstance(cfg, Sequence):
        raise TypeError(f"{where}: cfg must be a list of widths and 'M', got {type(cfg).__name__}")
    conv, norm, pool = {1: (nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d), 2: (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d)}[len(size)]
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    effective: list[CfgEntry] = []
    channels, conv_index, pool_index = in_channels, 0, 0
    for i, entry in enumerate(cfg):
        if entry == "M":
            if min(size) < 2:
                continue  # nothing left to pool
            layers[f"pool{pool_index}"] = pool(kernel_size=2, stride=2)
            pool_index += 1
            size = [s // 2 for s in size]
        elif isinstance(entry, int) and not isinstance(entry, bool) and entry >= 1:
            layers[f"conv{conv_index}"] = conv(channels, entry, kernel_size=3, padding=1, bias=False)
            layers[f"bn{conv_index}"] = norm(entry)
            layers[f"relu{conv_index}"] = nn.ReLU(inplace=True)
            conv_index += 1
            channels = entry
        else:
            raise ValueError(f"{where}: cfg[{i}] must be a positive int or 'M', got {entry!r}")
        effective.append(entry)
    if conv_index == 0:
        raise ValueError(f"{where}: cfg has no conv layer: {list(cfg)!r}")
    return layers, effective, channels, size
