"""fastspline: spline region codes of ReLU networks, popcount Hamming kernels,
spline early-bird detection and spline pruning."""
from __future__ import annotations

from fastspline.ops import (
    bit_transpose,
    count_regions,
    hamming,
    hamming_cdist,
    hamming_radius,
    hamming_topk,
    hamming_total,
    pack_signs,
    popcount,
    unpack_bits,
)
from fastspline._info import build_info
from fastspline.codes import LayerCodes, RegionCodes, codes, register_activation

__version__ = "0.1.0"

__all__ = [
    "LayerCodes",
    "RegionCodes",
    "bit_transpose",
    "build_info",
    "codes",
    "count_regions",
    "hamming",
    "hamming_cdist",
    "hamming_radius",
    "hamming_topk",
    "hamming_total",
    "pack_signs",
    "popcount",
    "register_activation",
    "unpack_bits",
]
