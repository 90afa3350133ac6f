"""VGG with BatchNorm, as in network slimming / EB tickets / Spline-EB.

conv3x3 (no bias) -> BatchNorm2d -> ReLU per entry of the cfg, 2x2 max-pool
for each ``"M"``, then global average pooling and one linear classifier (on
32x32 inputs the official code's ``AvgPool2d(2)`` after four pools is the same
global average). Modules are named ``features.conv{i}``, ``features.bn{i}``,
``features.relu{i}``, ``features.pool{j}`` and ``classifier``.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from fastspline.models.base import (
    CfgEntry,
    SplineModel,
    WidthLayer,
    check_positive_int,
    check_width,
    conv_features,
    init_weights,
    spatial_size,
)

__all__ = ["VGG", "vgg", "VGG_CFGS"]


VGG_CFGS: dict[str, list[CfgEntry]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512],
    # The throwaway prototype's digits network (PAPER.md §6): 11.9 MFLOPs per 8x8 image.
    "vgg-small": [64, 64, "M", 128, 128, "M"],
}


class VGG(SplineModel):
    """VGG-style CNN for square or rectangular images.

    Args:
        cfg: conv widths and ``"M"`` (max-pool) entries. A pool that would take a
            side below 1 pixel is left out (so VGG-11 runs on 8x8 digits); ``cfg``
            as stored is the effective one.
        in_channels, num_classes: input channels and classes.
        input_size: ``H`` or ``(H, W)`` of the inputs.

    Input ``[N, in_channels, H, W]``, output logits ``[N, num_classes]``.
    """

    arch = "vgg"

    def __init__(self, cfg: Sequence[CfgEntry], in_channels: int = 3, num_classes: int = 10, input_size: int | tuple[int, int] = 32) -> None:
        super().__init__()
        check_positive_int(in_channels, "in_channels", "vgg")
        check_positive_int(num_classes, "num_classes", "vgg")
        size = list(spatial_size(input_size, 2, "vgg"))
        layers, effective, channels, size = conv_features(cfg, in_channels, size, "vgg")
        self.cfg: list[CfgEntry] = effective
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.input_size = spatial_size(input_size, 2, "vgg")
        self.features = nn.Sequential(layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))
        return self.classifier(torch.flatten(x, 1))

    def widths(self) -> list[int]:
        return [c for c in self.cfg if c != "M"]  # type: ignore[misc]

    def width_layers(self) -> list[WidthLayer]:
        return [
            WidthLayer(activation=f"features.relu{i}", norm=f"features.bn{i}", producer=f"features.conv{i}")
            for i in range(len(self.widths()))
        ]

    def config(self) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "cfg": list(self.cfg),
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "input_size": list(self.input_size),
        }

    def _with_widths(self, widths: list[int]) -> VGG:
        it = iter(widths)
        cfg = [entry if entry == "M" else next(it) for entry in self.cfg]
        return VGG(cfg, self.in_channels, self.num_classes, tuple(self.input_size))


def vgg(
    cfg: str | Sequence[CfgEntry] = "vgg16",
    in_channels: int = 3,
    num_classes: int = 10,
    input_size: int | tuple[int, int] = 32,
    width: float = 1.0,
) -> VGG:
    """A VGG by name (``"vgg11"``, ``"vgg13"``, ``"vgg16"``, ``"vgg19"``,
    ``"vgg-small"``) or explicit cfg list, each conv width scaled by ``width``
    (rounded, at least 1)."""
    if isinstance(cfg, str):
        if cfg not in VGG_CFGS:
            raise ValueError(f"vgg: cfg must be one of {sorted(VGG_CFGS)} or a list, got {cfg!r}")
        cfg = VGG_CFGS[cfg]
    check_width(width, "vgg")
    # Only valid widths are scaled: the model's own check reports 0, negatives and non-ints.
    scaled = [max(1, round(entry * width)) if type(entry) is int and entry >= 1 else entry for entry in cfg]
    return VGG(scaled, in_channels, num_classes, input_size)
