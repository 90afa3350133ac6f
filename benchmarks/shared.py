"""Pieces the bench_*.py scripts share (import after ``_setup``):

    from shared import median_time, paired_extra, random_bn_vgg_features
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn


def median_time(fn: Callable[[], Any], repeats: int, warmup: int) -> tuple[float, list[float]]:
    """Median wall time of ``fn`` over ``repeats`` runs after ``warmup`` untimed ones, and all times."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), times


def paired_extra(fn: Callable[[], Any], base: Callable[[], Any], repeats: int, warmup: int) -> tuple[float, list[float]]:
    """What ``fn`` costs beyond ``base``: the median of ``time(fn) - time(base)`` over
    ``repeats`` back-to-back pairs, alternating which runs first (ABBA), so both see the
    same machine load. Returns the median and every pair's difference."""
    for _ in range(warmup):
        base()
        fn()
    extras = []
    for i in range(repeats):
        pair = {}
        for name, f in (("fn", fn), ("base", base)) if i % 2 == 0 else (("base", base), ("fn", fn)):
            started = time.perf_counter()
            f()
            pair[name] = time.perf_counter() - started
        extras.append(pair["fn"] - pair["base"])
    return statistics.median(extras), extras


def random_bn_vgg_features(cfg: Sequence[int | str], seed: int) -> tuple[list[nn.Module], int]:
    """Conv-BN-ReLU layers for ``cfg`` (ints: channels, "M": 2x2 max pool) on 3-channel input,
    seeded by ``seed`` (torch's global RNG too, for the layers' own init), with eval-mode BN
    statistics that are not the identity. Returns the layers and the last channel count."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    channels = 3
    for item in cfg:
        if item == "M":
            layers.append(nn.MaxPool2d(2))
            continue
        bn = nn.BatchNorm2d(item)
        with torch.no_grad():
            bn.running_mean.copy_(torch.randn(item, generator=gen) * 0.1)
            bn.running_var.copy_(torch.rand(item, generator=gen) + 0.5)
        layers += [nn.Conv2d(channels, item, 3, padding=1, bias=False), bn, nn.ReLU(inplace=True)]
        channels = item
    return layers, channels
