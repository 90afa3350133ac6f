"""Row-wise popcount / Hamming distance / fused total, and the all-pairs distance matrix.

Inputs are int64 codes ``[rows, W]`` with any strides (stride-0 rows included);
outputs are fresh contiguous tensors allocated by the caller.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import (
    INTERPRETED,
    LAUNCH_OPTIONS,
    USE_LIBDEVICE,
    autotune_on_gpu,
    distance_tile,
    interpreter_block,
    next_power_of_2,
    on_device,
    popcount64,
    program_index,
    split_grid,
)

# ---------------------------------------------------------------- row-wise


# Tiling: 1-D (split_grid) over [BLOCK_R rows] x [BLOCK_W words] tiles of a (and b), word tiles
# fastest. Each tile popcounts a (or a ^ b), sums over its words and adds the row sums
# (or, TOTAL, the tile's sum) into the zeroed int64 output with atomics, so long rows
# spread over many programs. Bandwidth-bound: every word is read once.
@autotune_on_gpu(
    configs=[
        triton.Config({"BLOCK_R": 1, "BLOCK_W": 1024}, num_warps=4),
        triton.Config({"BLOCK_R": 4, "BLOCK_W": 256}, num_warps=4),
        triton.Config({"BLOCK_R": 16, "BLOCK_W": 64}, num_warps=4),
        triton.Config({"BLOCK_R": 64, "BLOCK_W": 16}, num_warps=4),
        triton.Config({"BLOCK_R": 256, "BLOCK_W": 4}, num_warps=4),
        triton.Config({"BLOCK_R": 512, "BLOCK_W": 1}, num_warps=4),
    ],
    key=["W", "HAS_B", "TOTAL"],
    reset_to_zero=["out_ptr"],  # atomics accumulate: timing runs must start from zero
)
@triton.jit
def _rows_kernel(
    a_ptr,  # int64 [rows, W], strides (stride_a_row, stride_a_word)
    b_ptr,  # int64 [rows, W], strides (stride_b_row, stride_b_word); unused unless HAS_B
    out_ptr,  # int64 [rows] zeroed (per-row counts), or [1] zeroed when TOTAL
    rows,  # number of rows
    W,  # words per row
    stride_a_row,  # elements between rows of a (0: one row broadcast)
    stride_a_word,  # elements between words of a row of a
    stride_b_row,  # elements between rows of b (0: one row broadcast)
    stride_b_word,  # elements between words of a row of b
    HAS_B: tl.constexpr,  # popcount(a ^ b) instead of popcount(a)
    TOTAL: tl.constexpr,  # one fused sum instead of a count per row
    BLOCK_R: tl.constexpr,  # rows per tile
    BLOCK_W: tl.constexpr,  # words per tile
    USE_LIBDEVICE: tl.constexpr,  # popcount: libdevice (GPU) or SWAR (interpreter)
):
    pid = program_index()
    word_tiles = tl.cdiv(W, BLOCK_W)
    r = (pid // word_tiles) * BLOCK_R + tl.arange(0, BLOCK_R).to(tl.int64)
    k = (pid % word_tiles) * BLOCK_W + tl.arange(0, BLOCK_W).to(tl.int64)
    mask = (r[:, None] < rows) & (k[None, :] < W)
    x = tl.load(a_ptr + r[:, None] * stride_a_row + k[None, :] * stride_a_word, mask=mask, other=0)
    if HAS_B:
        x ^= tl.load(b_ptr + r[:, None] * stride_b_row + k[None, :] * stride_b_word, mask=mask, other=0)
    counts = tl.sum(popcount64(x, USE_LIBDEVICE), axis=1).to(tl.int64)  # [BLOCK_R]
    if TOTAL:
        tl.atomic_add(out_ptr, tl.sum(counts, axis=0))
    else:
        tl.atomic_add(out_ptr + r, counts, mask=r < rows)


def rows_popcount(a: torch.Tensor, b: torch.Tensor | None, out: torch.Tensor, total: bool) -> None:
    """popcount(a) or popcount(a ^ b) per row of the 2-D ``a`` (and ``b``) into the
    zeroed int64 ``out`` ([rows], or [1] summed when ``total``)."""
    rows, w = a.shape
    if rows == 0 or w == 0:
        return
    has_b = b is not None
    b = a if b is None else b
    blocks = {}
    if INTERPRETED:
        block_w = interpreter_block(w)
        blocks = {"BLOCK_R": interpreter_block(rows, block_w), "BLOCK_W": block_w}

    def grid(meta):
        return split_grid(triton.cdiv(rows, meta["BLOCK_R"]) * triton.cdiv(w, meta["BLOCK_W"]))

    with on_device(a):
        _rows_kernel[grid](
            a, b, out, rows, w, a.stride(0), a.stride(1), b.stride(0), b.stride(1),
            HAS_B=has_b, TOTAL=total, USE_LIBDEVICE=USE_LIBDEVICE, **blocks, **LAUNCH_OPTIONS,
        )


# ---------------------------------------------------------------- all pairs


@triton.jit
def tile_coordinates(pid, N, M, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, GROUP_N: tl.constexpr):
    """(tile row, tile column) of program ``pid`` in a 1-D grid over the
    [cdiv(N, BLOCK_N), cdiv(M, BLOCK_M)] tiles, grouped GROUP_N tile rows at a
    time so that neighbouring programs share rows of b in L2 (Triton matmul tutorial)."""
    tiles_n = tl.cdiv(N, BLOCK_N)
    tiles_m = tl.cdiv(M, BLOCK_M)
    per_group = GROUP_N * tiles_m
    first_n = (pid // per_group) * GROUP_N
    group_rows = tl.minimum(tiles_n - first_n, GROUP_N)
    tile_n = first_n + (pid % per_group) % group_rows
    tile_m = (pid % per_group) // group_rows
    return tile_n, tile_m


# Tiling: 1-D grid over [BLOCK_N x BLOCK_M] output tiles (grouped for L2 reuse); each
# program loops over the words BLOCK_K at a time (XOR + popcount + add into int32
# accumulators) and writes its tile once. Popcount-bound: each pair of words costs a
# XOR, a POPC and an add, while the tile loads are reused BLOCK_M (BLOCK_N) times.
@autotune_on_gpu(
    configs=[
        triton.Config({"BLOCK_N": 64, "BLOCK_M": 64, "BLOCK_K": 1, "GROUP_N": 8}, num_warps=4),
        triton.Config({"BLOCK_N": 64, "BLOCK_M": 64, "BLOCK_K": 1, "GROUP_N": 8}, num_warps=8),
        triton.Config({"BLOCK_N": 128, "BLOCK_M": 64, "BLOCK_K": 1, "GROUP_N": 8}, num_warps=8),
        triton.Config({"BLOCK_N": 64, "BLOCK_M": 128, "BLOCK_K": 1, "GROUP_N": 8}, num_warps=8),
        triton.Config({"BLOCK_N": 32, "BLOCK_M": 64, "BLOCK_K": 2, "GROUP_N": 8}, num_warps=4),
        triton.Config({"BLOCK_N": 32, "BLOCK_M": 32, "BLOCK_K": 4, "GROUP_N": 8}, num_warps=4),
    ],
    key=["W"],
)
@triton.jit
def _cdist_kernel(
    a_ptr,  # int64 [N, W], strides (stride_a_row, stride_a_word)
    b_ptr,  # int64 [M, W], strides (stride_b_row, stride_b_word)
    out_ptr,  # int32 [N, M], row stride stride_out_row, column stride 1
    N,  # rows of a
    M,  # rows of b
    W,  # words per code
    stride_a_row,  # elements between rows of a (0: one row broadcast)
    stride_a_word,  # elements between words of a row of a
    stride_b_row,  # elements between rows of b (0: one row broadcast)
    stride_b_word,  # elements between words of a row of b
    stride_out_row,  # elements between rows of out
    BLOCK_N: tl.constexpr,  # rows of a per tile
    BLOCK_M: tl.constexpr,  # rows of b per tile
    BLOCK_K: tl.constexpr,  # words per step
    GROUP_N: tl.constexpr,  # tile rows per L2 group
    USE_LIBDEVICE: tl.constexpr,  # popcount: libdevice (GPU) or SWAR (interpreter)
):
    pid = tl.program_id(0).to(tl.int64)
    tile_n, tile_m = tile_coordinates(pid, N, M, BLOCK_N, BLOCK_M, GROUP_N)
    rows_a = tile_n * BLOCK_N + tl.arange(0, BLOCK_N).to(tl.int64)
    rows_b = tile_m * BLOCK_M + tl.arange(0, BLOCK_M).to(tl.int64)
    d = distance_tile(
        a_ptr, b_ptr, rows_a, rows_b, N, M, W, stride_a_row, stride_a_word, stride_b_row, stride_b_word,
        BLOCK_N, BLOCK_M, BLOCK_K, USE_LIBDEVICE,
    )
    mask = (rows_a[:, None] < N) & (rows_b[None, :] < M)
    tl.store(out_ptr + rows_a[:, None] * stride_out_row + rows_b[None, :], d, mask=mask)


def interpreter_pair_blocks(n: int, m: int, w: int) -> dict[str, int]:
    """Block sizes of a [n, m] distance tiling for interpreted launches: all the
    words of a step at once (up to 16), then b's rows, then a's rows."""
    block_k = min(next_power_of_2(max(w, 1)), 16)
    block_m = interpreter_block(m, block_k)
    block_n = interpreter_block(n, block_m * block_k)
    return {"BLOCK_N": block_n, "BLOCK_M": block_m, "BLOCK_K": block_k}


def cdist(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> None:
    """All-pairs distances of ``a`` [N, W] and ``b`` [M, W] into int32 ``out`` [N, M]
    (row-major with unit column stride)."""
    n, w = a.shape
    m = b.shape[0]
    if n == 0 or m == 0:
        return
    blocks = {}
    if INTERPRETED:
        blocks = {**interpreter_pair_blocks(n, m, w), "GROUP_N": 8}

    def grid(meta):
        return (triton.cdiv(n, meta["BLOCK_N"]) * triton.cdiv(m, meta["BLOCK_M"]),)

    with on_device(a):
        _cdist_kernel[grid](
            a, b, out, n, m, w, a.stride(0), a.stride(1), b.stride(0), b.stride(1), out.stride(0),
            USE_LIBDEVICE=USE_LIBDEVICE, **blocks, **LAUNCH_OPTIONS,
        )


# ---------------------------------------------------------------- all pairs on tensor cores

# Tiling: as _cdist_kernel, over codes expanded to +-1 int8 (one byte per bit, pad bits
# -1 in both operands): one int8 tensor-core GEMM per tile with int32 accumulators, and
# d = (K - dot) / 2 in the epilogue, K = 64 * words (pad bits agree, so they add 1 to
# dot each). Exact: the dot is an integer in [-K, K]. The expansion costs 8x the
# codes' memory, so callers use it for tiles large enough to feed the tensor cores.
@autotune_on_gpu(
    configs=[
        triton.Config({"BLOCK_N": 128, "BLOCK_M": 128, "BLOCK_K": 128, "GROUP_N": 8}, num_warps=8, num_stages=3),
        triton.Config({"BLOCK_N": 128, "BLOCK_M": 256, "BLOCK_K": 128, "GROUP_N": 8}, num_warps=8, num_stages=3),
        triton.Config({"BLOCK_N": 256, "BLOCK_M": 128, "BLOCK_K": 128, "GROUP_N": 8}, num_warps=8, num_stages=3),
        triton.Config({"BLOCK_N": 128, "BLOCK_M": 128, "BLOCK_K": 256, "GROUP_N": 8}, num_warps=8, num_stages=3),
        triton.Config({"BLOCK_N": 128, "BLOCK_M": 128, "BLOCK_K": 64, "GROUP_N": 8}, num_warps=4, num_stages=4),
    ],
    key=["K"],
)
@triton.jit
def _cdist_dot_kernel(
    sa_ptr,  # int8 [N, K] contiguous, +-1
    sb_ptr,  # int8 [M, K] contiguous, +-1
    out_ptr,  # int32 [N, M], row stride stride_out_row, column stride 1
    N,  # rows of a
    M,  # rows of b
    K,  # bits per code, a multiple of 64
    stride_out_row,  # elements between rows of out
    BLOCK_N: tl.constexpr,  # rows of a per tile
    BLOCK_M: tl.constexpr,  # rows of b per tile
    BLOCK_K: tl.constexpr,  # bits per step
    GROUP_N: tl.constexpr,  # tile rows per L2 group
):
    pid = tl.program_id(0).to(tl.int64)
    tile_n, tile_m = tile_coordinates(pid, N, M, BLOCK_N, BLOCK_M, GROUP_N)
    rows_a = tile_n * BLOCK_N + tl.arange(0, BLOCK_N).to(tl.int64)
    rows_b = tile_m * BLOCK_M + tl.arange(0, BLOCK_M).to(tl.int64)
    cols = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.int32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + cols
        x = tl.load(sa_ptr + rows_a[:, None] * K + k[None, :], mask=(rows_a[:, None] < N) & (k[None, :] < K), other=0)
        y = tl.load(sb_ptr + rows_b[:, None] * K + k[None, :], mask=(rows_b[:, None] < M) & (k[None, :] < K), other=0)
        acc = tl.dot(x, tl.trans(y), acc, out_dtype=tl.int32)
    d = (K - acc) // 2
    mask = (rows_a[:, None] < N) & (rows_b[None, :] < M)
    tl.store(out_ptr + rows_a[:, None] * stride_out_row + rows_b[None, :], d, mask=mask)


def signs_int8(words: torch.Tensor) -> torch.Tensor:
    """Codes [R, W] as +-1 int8 [R, 64 W] (bit 1 -> +1, bit 0 and pad bits -> -1)."""
    from .layout import unpack_bits

    bits = torch.empty(words.shape[0], words.shape[1] * 64, dtype=torch.bool, device=words.device)
    unpack_bits(words, bits.shape[1], bits)
    return bits.view(torch.int8).mul_(2).sub_(1)


def cdist_dot(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> None:
    """:func:`cdist` on int8 tensor cores (via +-1 expansion); same result."""
    n, w = a.shape
    m = b.shape[0]
    if n == 0 or m == 0:
        return
    if w == 0:
        out.zero_()
        return
    sa = signs_int8(a)
    sb = sa if b is a else signs_int8(b)
    blocks = {}
    if INTERPRETED:
        # tl.dot needs at least 16 rows a side.
        blocks = {"BLOCK_N": max(16, min(64, next_power_of_2(n))), "BLOCK_M": max(16, min(64, next_power_of_2(m))), "BLOCK_K": 64, "GROUP_N": 8}

    def grid(meta):
        return (triton.cdiv(n, meta["BLOCK_N"]) * triton.cdiv(m, meta["BLOCK_M"]),)

    with on_device(a):
        _cdist_dot_kernel[grid](sa, sb, out, n, m, 64 * w, out.stride(0), **blocks, **LAUNCH_OPTIONS)
