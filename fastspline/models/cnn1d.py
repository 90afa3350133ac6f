"""1-D VGG-style CNN for sequences (MNIST-1D: length 40, one channel).

conv1d k=3 (no bias) -> BatchNorm1d -> ReLU per cfg width, max-pool 2 per
``"M"``, then the flattened ``[channels x positions]`` feature map goes to one
linear classifier (flattening, not global pooling, keeps where a pattern sits,
which MNIST-1D needs). Modules ``features.conv{i}``, ``features.bn{i}``,
``features.relu{i}``, ``features.pool{j}``, ``classifier``.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from fastspline.models.base import CfgEntry, SplineModel, WidthLayer, check_positive_int, check_width, conv_features, init_weights

__all__ = ["CNN1d", "cnn1d", "CNN1D_CFG"]

CNN1D_CFG: list[CfgEntry] = [32, 32, "M", 64, 64, "M"]


class CNN1d(SplineModel):
    """Input ``[N, in_channels, length]`` (or ``[N, length]`` when ``in_channels == 1``),
    output ``[N, num_classes]``. A pool that would take the length below 1 is left out."""

    arch = "cnn1d"

    def __init__(self, cfg: Sequence[CfgEntry] = CNN1D_CFG, in_channels: int = 1, num_classes: int = 10, length: int = 40) -> None:
        super().__init__()
        check_positive_int(in_channels, "in_channels", "cnn1d")
        check_positive_int(num_classes, "num_classes", "cnn1d")
        check_positive_int(length, "length", "cnn1d")
        layers, effective, channels, (size,) = conv_features(cfg, in_channels, [length], "cnn1d")
        self.cfg: list[CfgEntry] = effective
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.length = length
        self.features = nn.Sequential(layers)
        self.classifier = nn.Linear(channels * size, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2 and self.in_channels == 1:
            x = x.unsqueeze(1)
        return self.classifier(torch.flatten(self.features(x), 1))

    def widths(self) -> list[int]:
        return [c for c in self.cfg if c != "M"]  # type: ignore[misc]

    def width_layers(self) -> list[WidthLayer]:
        return [
            WidthLayer(f"features.relu{i}", f"features.bn{i}", f"features.conv{i}") for i in range(len(self.widths()))
        ]

    def config(self) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "cfg": list(self.cfg),
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "length": self.length,
        }

    def _with_widths(self, widths: list[int]) -> CNN1d:
        it = iter(widths)
        cfg = [entry if entry == "M" else next(it) for entry in self.cfg]
        return CNN1d(cfg, self.in_channels, self.num_classes, self.length)


def cnn1d(
    cfg: Sequence[CfgEntry] | None = None,
    in_channels: int = 1,
    num_classes: int = 10,
    length: int = 40,
    width: float = 1.0,
) -> CNN1d:
    """A :class:`CNN1d` (default cfg ``[32, 32, "M", 64, 64, "M"]``), conv widths scaled by ``width``."""
    check_width(width, "cnn1d")
    cfg = CNN1D_CFG if cfg is None else cfg
    if isinstance(cfg, (str, bytes)) or not isinstance(cfg, Sequence):
        raise TypeError(f"cnn1d: cfg must be a list of widths and 'M', got {type(cfg).__name__}")
    # Only valid widths are scaled: the model's own check reports 0, negatives and non-ints.
    scaled = [max(1, round(entry * width)) if type(entry) is int and entry >= 1 else entry for entry in cfg]
    return CNN1d(scaled, in_channels, num_classes, length)
