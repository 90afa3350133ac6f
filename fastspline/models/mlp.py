"""Fully connected ReLU network: ``fc{i} -> bn{i} -> relu{i}`` per hidden layer,
then ``classifier``. Inputs of any shape ``[N, ...]`` are flattened."""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from fastspline.models.base import SplineModel, WidthLayer, check_positive_int, init_weights

__all__ = ["MLP", "mlp"]


class MLP(SplineModel):
    """ReLU MLP with ``sizes = [inputs, hidden..., classes]``.

    Args:
        sizes: at least two ints; the hidden ones are the prunable widths.
        batch_norm: BatchNorm1d after each hidden linear layer (needed by
            network slimming and the mask EB); without it the hidden layers get a bias.

    Input ``[N, sizes[0]]`` (or any ``[N, ...]`` with ``sizes[0]`` elements per
    sample), output ``[N, sizes[-1]]``. Modules ``layers.fc{i}``, ``layers.bn{i}``,
    ``layers.relu{i}``, ``classifier``.
    """

    arch = "mlp"

    def __init__(self, sizes: Sequence[int], batch_norm: bool = True) -> None:
        super().__init__()
        if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence):
            raise TypeError(f"mlp: sizes must be a sequence of ints, got {type(sizes).__name__}")
        if len(sizes) < 2:
            raise ValueError(f"mlp: sizes needs inputs and classes at least, got {list(sizes)}")
        for i, size in enumerate(sizes):
            check_positive_int(size, f"sizes[{i}]", "mlp")
        if not isinstance(batch_norm, bool):
            raise TypeError(f"mlp: batch_norm must be a bool, got {type(batch_norm).__name__}")
        self.sizes = [int(s) for s in sizes]
        self.batch_norm = batch_norm
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        for i, (fan_in, fan_out) in enumerate(zip(self.sizes[:-2], self.sizes[1:-1])):
            layers[f"fc{i}"] = nn.Linear(fan_in, fan_out, bias=not batch_norm)
            if batch_norm:
                layers[f"bn{i}"] = nn.BatchNorm1d(fan_out)
            layers[f"relu{i}"] = nn.ReLU(inplace=True)
        self.layers = nn.Sequential(layers)
        self.classifier = nn.Linear(self.sizes[-2], self.sizes[-1])
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.layers(torch.flatten(x, 1)))

    def widths(self) -> list[int]:
        return self.sizes[1:-1]

    def width_layers(self) -> list[WidthLayer]:
        return [
            WidthLayer(f"layers.relu{i}", f"layers.bn{i}" if self.batch_norm else None, f"layers.fc{i}")
            for i in range(len(self.sizes) - 2)
        ]

    def config(self) -> dict[str, Any]:
        return {"arch": self.arch, "sizes": list(self.sizes), "batch_norm": self.batch_norm}

    def _with_widths(self, widths: list[int]) -> MLP:
        return MLP([self.sizes[0], *widths, self.sizes[-1]], self.batch_norm)


def mlp(sizes: Sequence[int], batch_norm: bool = True) -> MLP:
    """An :class:`MLP`, e.g. ``mlp([40, 256, 256, 10])`` (MNIST-1D) or
    ``mlp([2, 20, 2], batch_norm=False)`` (the 2-D X toy task)."""
    return MLP(sizes, batch_norm)
