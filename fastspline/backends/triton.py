"""Triton backend: the kernels of ``fastspline.kernels`` (the top-level ``kernels/`` folder).

Runs on CUDA tensors, compiled (libdevice popcount, autotuned blocks). With
``TRITON_INTERPRET=1`` in the environment before triton is imported, the same
kernels run interpreted on CPU tensors too (SWAR popcount, large blocks): that is
how the test suite checks them without a GPU. The registry never picks this
backend by itself for CPU tensors; name it with ``backend="triton"``.

Inputs arrive validated by :mod:`fastspline.ops` with any strides: the kernels
take strides, so word inputs are not copied (N-D inputs of the row-wise ops are
viewed as 2-D rows where torch can, else reshaped). Outputs are fresh contiguous
tensors on the input's device. Importing this module without triton raises
ImportError, which the registry reports as the reason the backend is unavailable.
"""
from __future__ import annotations

import math
import os

import torch

from fastspline.backends import reference
from fastspline.kernels import common, distance, layout, regions, search  # ImportError without triton

NAME = "triton"
DEVICE_TYPES = ("cuda", "cpu") if common.INTERPRETED else ("cuda",)

# Bound on the int32 distance rows the large-k top-k path holds at once.
_TOPK_CHUNK_ELEMENTS = 1 << 24


def _rows(t: torch.Tensor) -> torch.Tensor:
    """``t`` [..., W] as 2-D rows [R, W]: a view when the strides allow, else a copy."""
    return t.reshape(math.prod(t.shape[:-1]), t.shape[-1])


def pack_signs(x: torch.Tensor, threshold: float) -> torch.Tensor:
    out = torch.empty(*x.shape[:-1], (x.shape[-1] + 63) // 64, dtype=torch.int64, device=x.device)
    layout.pack_signs(x, threshold, out)
    return out


def unpack_bits(words: torch.Tensor, n_bits: int) -> torch.Tensor:
    out = torch.empty(*words.shape[:-1], n_bits, dtype=torch.bool, device=words.device)
    if out.numel() > 0:
        layout.unpack_bits(_rows(words), n_bits, out.view(-1, n_bits))
    return out


def popcount(words: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(words.shape[:-1], dtype=torch.int64, device=words.device)
    if out.numel() > 0:
        distance.rows_popcount(_rows(words), None, out.view(-1), total=False)
    return out


def hamming(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(a.shape[:-1], dtype=torch.int64, device=a.device)
    if out.numel() > 0:
        distance.rows_popcount(_rows(a), _rows(b), out.view(-1), total=False)
    return out


def hamming_total(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(1, dtype=torch.int64, device=a.device)
    if a.numel() > 0:
        distance.rows_popcount(_rows(a), _rows(b), out, total=True)
    return out.view(())


CDIST_METHODS = ("auto", "popc", "dot")
# The int8 tensor-core kernel: tiles big enough to feed it, expansions (1 byte a bit) small enough.
_DOT_MIN_ROWS = 128
_DOT_MAX_BYTES = 1 << 30


def cdist_method(n: int, m: int, w: int, device: torch.device) -> str:
    """The kernel ``hamming_cdist`` uses: ``FASTSPLINE_TRITON_CDIST`` when set (popc,
    dot), else on a GPU the int8 tensor-core kernel for at least 128 x 128 rows whose
    +-1 expansions fit in 1 GiB, else XOR + popcount."""
    method = os.environ.get("FASTSPLINE_TRITON_CDIST", "auto")
    if method not in CDIST_METHODS:
        raise ValueError(f"FASTSPLINE_TRITON_CDIST must be one of {CDIST_METHODS}, got {method!r}")
    if method != "auto":
        return method
    if device.type == "cuda" and min(n, m) >= _DOT_MIN_ROWS and (n + m) * w * 64 <= _DOT_MAX_BYTES:
        return "dot"
    return "popc"


def hamming_cdist(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    if out is None:
        out = torch.empty(a.shape[0], b.shape[0], dtype=torch.int32, device=a.device)
    if cdist_method(a.shape[0], b.shape[0], a.shape[1], a.device) == "dot":
        distance.cdist_dot(a, b, out)
    else:
        distance.cdist(a, b, out)
    return out


def hamming_topk(a: torch.Tensor, b: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    n, m = a.shape[0], b.shape[0]
    dist = torch.empty(n, k, dtype=torch.int32, device=a.device)
    index = torch.empty(n, k, dtype=torch.int64, device=a.device)
    if n == 0:
        return dist, index
    if search.topk_list_length(k) <= search.MAX_TOPK_LIST:
        search.topk(a, b, k, dist, index)
        return dist, index
    # k too large for lists in registers: the output is near N x M anyway, so take
    # distance rows a chunk at a time and keep the head of a stable sort (ties: lower index).
    step = max(1, _TOPK_CHUNK_ELEMENTS // max(m, 1))
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        d = torch.empty(hi - lo, m, dtype=torch.int32, device=a.device)
        distance.cdist(a[lo:hi], b, d)
        values, order = torch.sort(d, dim=1, stable=True)
        dist[lo:hi] = values[:, :k]
        index[lo:hi] = order[:, :k]
    return dist, index


def hamming_radius(a: torch.Tensor, b: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return search.radius(a, b, r)


def bit_transpose(words: torch.Tensor, n_bits: int) -> torch.Tensor:
    out = torch.empty(n_bits, (words.shape[0] + 63) // 64, dtype=torch.int64, device=words.device)
    layout.bit_transpose(words, n_bits, out)
    return out


def count_regions(codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n, w = codes.shape
    if n == 0 or w == 0:
        return reference.count_regions(codes)  # every row is the same empty code: no kernel needed
    # Lexicographic order of the rows (words as signed int64, word 0 first): stable
    # sorts from the last word to the first (LSD), on the device.
    order = torch.arange(n, device=codes.device)
    for word in range(w - 1, -1, -1):
        order = order[torch.sort(codes[order, word], stable=True).indices]
    starts = torch.empty(n, dtype=torch.int64, device=codes.device)
    regions.row_starts(codes, order, starts)
    inverse = torch.empty(n, dtype=torch.int64, device=codes.device)
    inverse[order] = torch.cumsum(starts, 0) - 1
    first = torch.nonzero(starts).flatten()  # sorted positions where a new code begins
    unique = codes[order[first]]
    counts = torch.diff(first, append=torch.tensor([n], dtype=torch.int64, device=codes.device))
    return unique, inverse, counts

