"""Pre-activation ResNet with bottleneck blocks, as in network slimming / EB /
Spline-EB (``depth = 9n + 2``: 20, 56, 101, 164 ...).

Each block is ``bn1 -> select -> relu1 -> conv1 (1x1) -> bn2 -> relu2 ->
conv2 (3x3, stride) -> bn3 -> relu3 -> conv3 (1x1, 4*planes)`` plus the residual
(a 1x1 strided conv where the shape changes). ``select`` keeps a subset of the
block's input channels (a :class:`ChannelSelect` with an index buffer), so the
residual stream keeps its width while the block's first layer is pruned.

Block ``b``'s widths are ``[selected inputs, conv1 out, conv2 out]``; the model's
width list is those of all blocks in order, then the final BN's selected channels
(network slimming's flat ``cfg``). Stem: conv3x3 to 16 channels; stages of
``planes`` 16, 32, 64 with strides 1, 2, 2; then ``bn -> select -> relu ->
global average pool -> classifier``.
"""
from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from fastspline.models.base import (
    SplineModel, WidthLayer, check_positive_int, check_width, check_widths, init_weights, spatial_size,
)

__all__ = ["ChannelSelect", "PreResNet", "preresnet", "default_preresnet_widths"]

EXPANSION = 4
STAGE_PLANES = (16, 32, 64)
STAGE_STRIDES = (1, 2, 2)


class ChannelSelect(nn.Module):
    """Keeps channels ``indices`` of a ``[N, C, ...]`` input.

    ``indices``: int64 buffer ``[K]`` (``K <= C``), ``arange(K)`` when built; a pruner
    writes the kept channels' positions into it.
    """

    def __init__(self, in_channels: int, kept: int) -> None:
        super().__init__()
        if not 1 <= kept <= in_channels:
            raise ValueError(f"ChannelSelect: kept must be in [1, {in_channels}], got {kept}")
        self.in_channels = in_channels
        self.register_buffer("indices", torch.arange(kept, dtype=torch.int64))
        self._identity_key: tuple | None = None  # indices' (storage, version) when last found to be arange

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.indices.numel() == self.in_channels and self._keeps_all_in_order():
            return x  # nothing to copy
        return x.index_select(1, self.indices)

    def _keeps_all_in_order(self) -> bool:
        """``indices`` is ``arange(C)``; checked again only after a write to it (a loaded or
        edited buffer may hold a permutation)."""
        if torch.compiler.is_compiling():
            return False
        key = (self.indices.data_ptr(), self.indices._version)
        if key != self._identity_key:
            order = torch.arange(self.indices.numel(), device=self.indices.device)
            if not torch.equal(self.indices, order):
                return False
            self._identity_key = key
        return True

    def extra_repr(self) -> str:
        return f"{self.in_channels} -> {self.indices.numel()}"


class Bottleneck(nn.Module):
    """Pre-activation bottleneck. ``widths = [selected inputs, conv1 out, conv2 out]``."""

    def __init__(self, inplanes: int, planes: int, widths: Sequence[int], stride: int = 1) -> None:
        super().__init__()
        selected, mid1, mid2 = widths
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.select = ChannelSelect(inplanes, selected)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(selected, mid1, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid1)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(mid1, mid2, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid2)
        self.relu3 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(mid2, planes * EXPANSION, kernel_size=1, bias=False)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes * EXPANSION:
            self.downsample = nn.Conv2d(inplanes, planes * EXPANSION, kernel_size=1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.relu1(self.select(self.bn1(x))))
        out = self.conv2(self.relu2(self.bn2(out)))
        out = self.conv3(self.relu3(self.bn3(out)))
        residual = x if self.downsample is None else self.downsample(x)
        return out + residual


def default_preresnet_widths(depth: int) -> list[int]:
    """Network slimming's default flat cfg for ``depth = 9n + 2``: ``3n`` blocks of 3 widths, then 256."""
    blocks = _blocks_per_stage(depth)
    widths: list[int] = []
    inplanes = 16
    for planes in STAGE_PLANES:
        for _ in range(blocks):
            widths += [inplanes, planes, planes]
            inplanes = planes * EXPANSION
    return widths + [inplanes]


def _blocks_per_stage(depth: object) -> int:
    if isinstance(depth, bool) or not isinstance(depth, int):
        raise TypeError(f"preresnet: depth must be an int, got {type(depth).__name__} {depth!r}")
    if depth < 11 or (depth - 2) % 9:
        raise ValueError(f"preresnet: depth must be 9n + 2 with n >= 1 (20, 56, 101, 164 ...), got {depth}")
    return (depth - 2) // 9


class PreResNet(SplineModel):
    """Pre-activation bottleneck ResNet (see the module doc).

    Args:
        depth: 9n + 2.
        widths: flat width list (``3 * 3n + 1`` entries), default
            :func:`default_preresnet_widths`.
        in_channels, num_classes, input_size: input channels, classes, ``H`` or ``(H, W)``.

    Input ``[N, in_channels, H, W]``, output ``[N, num_classes]``. Modules:
    ``stem``, ``layer{1,2,3}.{b}.{bn1,select,relu1,conv1,...}``, ``bn``, ``select``,
    ``relu``, ``classifier``.
    """

    arch = "preresnet"

    def __init__(
        self,
        depth: int = 20,
        widths: Sequence[int] | None = None,
        in_channels: int = 3,
        num_classes: int = 10,
        input_size: int | tuple[int, int] = 32,
    ) -> None:
        super().__init__()
        blocks = _blocks_per_stage(depth)
        check_positive_int(in_channels, "in_channels", "preresnet")
        check_positive_int(num_classes, "num_classes", "preresnet")
        self.input_size = spatial_size(input_size, 2, "preresnet")
        if widths is None:
            widths = default_preresnet_widths(depth)
        check_widths(widths, None, "preresnet")
        widths = [operator.index(w) for w in widths]
        expected = 9 * blocks + 1
        if len(widths) != expected:
            raise ValueError(f"preresnet: depth {depth} needs {expected} widths, got {len(widths)}")
        self.depth = depth
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.cfg = widths
        self.stem = nn.Conv2d(in_channels, 16, kernel_size=3, padding=1, bias=False)
        inplanes = 16
        k = 0
        for s, (planes, stride) in enumerate(zip(STAGE_PLANES, STAGE_STRIDES)):
            stage = []
            for b in range(blocks):
                block_widths = widths[3 * k : 3 * k + 3]
                if block_widths[0] > inplanes:
                    raise ValueError(
                        f"preresnet: block {k} selects {block_widths[0]} of its {inplanes} input channels"
                    )
                stage.append(Bottleneck(inplanes, planes, block_widths, stride if b == 0 else 1))
                inplanes = planes * EXPANSION
                k += 1
            setattr(self, f"layer{s + 1}", nn.Sequential(*stage))
        if widths[-1] > inplanes:
            raise ValueError(f"preresnet: the final select keeps {widths[-1]} of {inplanes} channels")
        self.bn = nn.BatchNorm2d(inplanes)
        self.select = ChannelSelect(inplanes, widths[-1])
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(widths[-1], num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        x = self.pool(self.relu(self.select(self.bn(x))))
        return self.classifier(torch.flatten(x, 1))

    def widths(self) -> list[int]:
        return list(self.cfg)

    def width_layers(self) -> list[WidthLayer]:
        layers = []
        blocks = (self.depth - 2) // 9
        for s in range(3):
            for b in range(blocks):
                p = f"layer{s + 1}.{b}"
                layers += [
                    WidthLayer(f"{p}.relu1", f"{p}.bn1", None, select=f"{p}.select"),
                    WidthLayer(f"{p}.relu2", f"{p}.bn2", f"{p}.conv1"),
                    WidthLayer(f"{p}.relu3", f"{p}.bn3", f"{p}.conv2"),
                ]
        layers.append(WidthLayer("relu", "bn", None, select="select"))
        return layers

    def config(self) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "depth": self.depth,
            "widths": list(self.cfg),
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "input_size": list(self.input_size),
        }

    def _with_widths(self, widths: list[int]) -> PreResNet:
        return PreResNet(self.depth, widths, self.in_channels, self.num_classes, tuple(self.input_size))


def preresnet(
    depth: int = 20,
    in_channels: int = 3,
    num_classes: int = 10,
    input_size: int | tuple[int, int] = 32,
    width: float = 1.0,
    widths: Sequence[int] | None = None,
) -> PreResNet:
    """A PreResNet of ``depth`` (20, 56, 101, ...); ``width`` scales the default
    bottleneck widths (the residual stream keeps 64/128/256 channels, as in the
    official code, so the selects and the classifier read those); ``widths``
    gives the flat width list directly."""
    if widths is None:
        check_width(width, "preresnet")
        base = default_preresnet_widths(depth)
        widths = [w if i % 3 == 0 or i == len(base) - 1 else max(1, round(w * width)) for i, w in enumerate(base)]
    return PreResNet(depth, widths, in_channels, num_classes, input_size)
