"""cfg-driven networks that prune into smaller dense networks.

Every model is a :class:`SplineModel`: ``widths()`` lists the units of each
prunable layer, ``width_layers()`` names the modules behind each entry,
``rebuild(widths)`` returns a smaller (or larger) dense model of the same
architecture, and ``config()`` is a JSON-able dict that :func:`build` turns back
into the architecture (e.g. from a checkpoint). Activations are explicit
``nn.ReLU`` modules, so :func:`fastspline.codes.codes` finds every layer, and
each ReLU's input is a BatchNorm output, the pre-activation the paper's code hooks.

Sizes: VGG and PreResNet take 32x32 (CIFAR), 28x28 (MNIST) and 8x8 (digits)
images, :func:`cnn1d` length-40 sequences (MNIST-1D), :func:`mlp` anything flat.
"""
from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

from fastspline.models.base import SplineModel, WidthLayer, check_width, init_weights
from fastspline.models.cnn1d import CNN1D_CFG, CNN1d, cnn1d
from fastspline.models.mlp import MLP, mlp
from fastspline.models.preresnet import ChannelSelect, PreResNet, default_preresnet_widths, preresnet
from fastspline.models.vgg import VGG, VGG_CFGS, vgg

__all__ = [
    "CNN1D_CFG",
    "CNN1d",
    "ChannelSelect",
    "InputShapeError",
    "MLP",
    "MODEL_NAMES",
    "PreResNet",
    "SplineModel",
    "VGG",
    "VGG_CFGS",
    "WidthLayer",
    "build",
    "cnn1d",
    "create",
    "default_preresnet_widths",
    "init_weights",
    "mlp",
    "preresnet",
    "vgg",
]

MODEL_NAMES = (*VGG_CFGS, "preresnet20", "preresnet56", "preresnet101", "mlp", "cnn1d")


def build(config: dict[str, Any]) -> SplineModel:
    """The architecture described by ``model.config()`` (freshly initialised)."""
    if not isinstance(config, dict) or "arch" not in config:
        raise TypeError(f"build: config must be a dict from model.config() with an 'arch' key, got {config!r}")
    args = {k: v for k, v in config.items() if k != "arch"}
    if "input_size" in args and isinstance(args["input_size"], list):
        args["input_size"] = tuple(args["input_size"])
    arch = config["arch"]
    try:
        if arch == "vgg":
            return VGG(**args)
        if arch == "preresnet":
            return PreResNet(**args)
        if arch == "mlp":
            return MLP(**args)
        if arch == "cnn1d":
            return CNN1d(**args)
    except TypeError as exc:  # an unknown or missing key: say which config
        raise ValueError(f"build: config {config!r} does not match arch {arch!r}: {exc}") from exc
    raise ValueError(f"build: unknown arch {arch!r}; known: vgg, preresnet, mlp, cnn1d")


class InputShapeError(ValueError):
    """:func:`create`: the model cannot take inputs of that shape (a VGG given vectors, ...)."""


def create(
    name: str,
    input_shape: Sequence[int],
    num_classes: int,
    *,
    width: float = 1.0,
    hidden: Sequence[int] = (256, 256),
) -> SplineModel:
    """A model by name for inputs of ``input_shape`` (one sample, no batch dim).

    ``name``: one of :data:`MODEL_NAMES` (``vgg11``, ``vgg16``, ``vgg-small``,
    ``preresnet20``, ``preresnet56``, ``preresnet101``, ``mlp``, ``cnn1d`` ...).
    Images ``(C, H, W)`` suit VGG and PreResNet, sequences ``(C, L)`` suit
    ``cnn1d``, anything suits ``mlp`` (flattened; ``hidden`` sizes scaled by ``width``).
    """
    if not isinstance(name, str):
        raise TypeError(f"create: name must be a str, got {type(name).__name__}")
    if (
        isinstance(input_shape, (str, bytes))
        or not isinstance(input_shape, Sequence)
        or not all(hasattr(type(s), "__index__") and not isinstance(s, bool) and operator.index(s) >= 1 for s in input_shape)
    ):
        raise TypeError(f"create: input_shape must be a sequence of positive ints (one sample's shape), got {input_shape!r}")
    shape = tuple(operator.index(s) for s in input_shape)
    if name in VGG_CFGS or name.startswith("preresnet"):
        if len(shape) != 3:
            raise InputShapeError(f"create: {name} needs image inputs (C, H, W), got input_shape {shape}")
        if name in VGG_CFGS:
            return vgg(name, shape[0], num_classes, (shape[1], shape[2]), width)
        depth_text = name[len("preresnet"):]
        if not depth_text.isdigit():
            raise ValueError(f"create: unknown model {name!r}; known: {', '.join(MODEL_NAMES)}")
        return preresnet(int(depth_text), shape[0], num_classes, (shape[1], shape[2]), width)
    if name == "cnn1d":
        if len(shape) == 1:
            shape = (1, shape[0])
        if len(shape) != 2:
            raise InputShapeError(f"create: cnn1d needs sequence inputs (C, L), got input_shape {shape}")
        return cnn1d(None, shape[0], num_classes, shape[1], width)
    if name == "mlp":
        check_width(width, "create")
        if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence) or not all(
            hasattr(type(h), "__index__") and not isinstance(h, bool) and operator.index(h) >= 1 for h in hidden
        ):
            raise ValueError(f"create: hidden must be a sequence of ints >= 1, got {hidden!r}")
        inputs = 1
        for s in shape:
            inputs *= s
        sizes = [inputs, *(max(1, round(h * width)) for h in hidden), num_classes]
        return mlp(sizes)
    raise ValueError(f"create: unknown model {name!r}; known: {', '.join(MODEL_NAMES)}")
