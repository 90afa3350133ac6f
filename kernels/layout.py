"""Bit layout kernels: pack_signs (floats -> words), unpack_bits (words -> bools), bit_transpose."""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .common import INTERPRETED, LAUNCH_OPTIONS, autotune_on_gpu, interpreter_block, on_device, program_index, split_grid

# ---------------------------------------------------------------- pack_signs

# Leading (non-packed) dims a launch handles: an inner dim plus up to three outer dims.
PACK_OUTER_DIMS = 3


# Tiling: 1-D (split_grid) over [BLOCK_R rows] x [BLOCK_W words] tiles, word tiles fastest,
# where rows run over the leading dims in row-major order (each row's element offset
# comes from its (outer0, outer1, outer2, inner) index and the strides, so any view is
# read in place). A program loads a [BLOCK_R, BLOCK_W, 64] float tile, compares, shifts
# each bit to its place and sums the 64 distinct powers of two (= OR, bit 63 included)
# into one word. Bandwidth-bound: every float is read once, 1/16..1/64 of that written.
@autotune_on_gpu(
    configs=[
        triton.Config({"BLOCK_R": 16, "BLOCK_W": 1}, num_warps=4),
        triton.Config({"BLOCK_R": 32, "BLOCK_W": 1}, num_warps=4),
        triton.Config({"BLOCK_R": 64, "BLOCK_W": 1}, num_warps=8),
        triton.Config({"BLOCK_R": 8, "BLOCK_W": 2}, num_warps=4),
        triton.Config({"BLOCK_R": 4, "BLOCK_W": 4}, num_warps=4),
        triton.Config({"BLOCK_R": 1, "BLOCK_W": 16}, num_warps=4),
    ],
    key=["n", "stride_n", "stride_inner"],
)
@triton.jit
def _pack_signs_kernel(
    x_ptr,  # float16/float32/float64, or bfloat16 bits as int16: [outer0, outer1, outer2, inner, n], any strides
    threshold_ptr,  # float32 [1] (float64 [1] when IS_FP64): compare x > threshold
    out_ptr,  # int64 [rows, W] contiguous, rows = outer0 * outer1 * outer2 * inner
    rows,  # number of rows (product of the leading dims)
    n,  # elements along the packed dim
    W,  # words per row: ceil(n / 64)
    inner,  # size of the innermost leading dim
    outer1,  # size of outer dim 1
    outer2,  # size of outer dim 2
    stride_outer0,  # elements between steps of outer dim 0 of x
    stride_outer1,  # elements between steps of outer dim 1 of x
    stride_outer2,  # elements between steps of outer dim 2 of x
    stride_inner,  # elements between steps of the inner leading dim of x
    stride_n,  # stride of the packed dim (elements)
    IS_FP64: tl.constexpr,  # compare in float64 (else in float32)
    IS_BF16: tl.constexpr,  # x holds bfloat16 bit patterns (int16): widen them by a shift
    BLOCK_R: tl.constexpr,  # rows per program
    BLOCK_W: tl.constexpr,  # words per program
):
    pid = program_index()
    word_tiles = tl.cdiv(W, BLOCK_W)
    r = (pid // word_tiles) * BLOCK_R + tl.arange(0, BLOCK_R).to(tl.int64)  # [BLOCK_R]
    w = (pid % word_tiles) * BLOCK_W + tl.arange(0, BLOCK_W).to(tl.int64)  # [BLOCK_W]
    outer = r // inner
    outer01 = outer // outer2  # (outer0, outer1) index; no outer1 * outer2: int32 args, it would wrap
    row_offset = (
        (outer01 // outer1) * stride_outer0
        + (outer01 % outer1) * stride_outer1
        + (outer % outer2) * stride_outer2
        + (r % inner) * stride_inner
    )
    bit = tl.arange(0, 64).to(tl.int64)  # [64]
    element = w[None, :, None] * 64 + bit[None, None, :]  # [1, BLOCK_W, 64]
    mask = (r[:, None, None] < rows) & (element < n)
    x = tl.load(x_ptr + row_offset[:, None, None] + element * stride_n, mask=mask, other=0)
    threshold = tl.load(threshold_ptr)
    if IS_FP64:
        above = x > threshold
    elif IS_BF16:
        # bfloat16 is the top half of the float32 of the same value: exact, subnormals
        # included (the interpreter's bfloat16 cast flushes those).
        above = (x.to(tl.int32) << 16).to(tl.float32, bitcast=True) > threshold
    else:
        above = x.to(tl.float32) > threshold  # exact: the threshold is rounded toward -inf
    bits = tl.where(mask & above, 1, 0).to(tl.int64) << bit[None, None, :]
    words = tl.sum(bits, axis=2)  # [BLOCK_R, BLOCK_W]
    tl.store(out_ptr + r[:, None] * W + w[None, :], words, mask=(r[:, None] < rows) & (w[None, :] < W))


def float32_floor(threshold: float) -> float:
    """The largest float32 <= ``threshold`` (a float64): for float32 (and so
    float16/bfloat16) values x, ``x > threshold`` exactly when ``x > this``.
    NaN stays NaN (every comparison false), as csrc/cpu/ops.cpp round_down_to_float."""
    if math.isnan(threshold):
        return threshold
    as_float32 = torch.tensor(threshold, dtype=torch.float64).to(torch.float32)  # nearest; may round up
    if float(as_float32) > threshold:
        as_float32 = torch.nextafter(as_float32, torch.tensor(-math.inf, dtype=torch.float32))
    return float(as_float32)


def _coalesce(sizes: list[int], strides: list[int]) -> tuple[list[int], list[int]]:
    """Drop size-1 dims and merge neighbours that step through memory as one dim
    (row-major order of the rows is kept)."""
    out_sizes: list[int] = []
    out_strides: list[int] = []
    for size, stride in zip(sizes, strides):
        if size == 1:
            continue
        if out_sizes and out_strides[-1] == stride * size:
            out_sizes[-1] *= size
            out_strides[-1] = stride
        else:
            out_sizes.append(size)
            out_strides.append(stride)
    return out_sizes, out_strides


def pack_signs(x: torch.Tensor, threshold: float, out: torch.Tensor) -> None:
    """Bits ``x > threshold`` of ``x`` [..., n] (any strides; threshold the float64
    floor of the real threshold) packed into the contiguous int64 ``out`` [..., W]."""
    n = x.shape[-1]
    w = out.shape[-1]
    if out.numel() == 0:
        return
    sizes, strides = _coalesce(list(x.shape[:-1]), list(x.stride()[:-1]))
    if len(sizes) > PACK_OUTER_DIMS + 1:  # rare: one launch per index of the outermost dim
        for index in range(x.shape[0]):
            pack_signs(x[index], threshold, out[index])
        return
    sizes = [1] * (PACK_OUTER_DIMS + 1 - len(sizes)) + sizes
    strides = [0] * (PACK_OUTER_DIMS + 1 - len(strides)) + strides
    is_fp64 = x.dtype == torch.float64
    value = threshold if is_fp64 else float32_floor(threshold)
    threshold_t = torch.full((1,), value, dtype=torch.float64 if is_fp64 else torch.float32, device=x.device)
    rows = out.numel() // w
    blocks = {}
    if INTERPRETED:
        block_w = interpreter_block(w, 64)
        blocks = {"BLOCK_R": interpreter_block(rows, block_w * 64), "BLOCK_W": block_w}

    def grid(meta):
        return split_grid(triton.cdiv(rows, meta["BLOCK_R"]) * triton.cdiv(w, meta["BLOCK_W"]))

    is_bf16 = x.dtype == torch.bfloat16
    with on_device(x):
        _pack_signs_kernel[grid](
            x.view(torch.int16) if is_bf16 else x, threshold_t, out, rows, n, w, sizes[3], sizes[1], sizes[2],
            strides[0], strides[1], strides[2], strides[3], x.stride(-1),
            IS_FP64=is_fp64, IS_BF16=is_bf16, **blocks, **LAUNCH_OPTIONS,
        )


# ---------------------------------------------------------------- unpack_bits


# Tiling: 1-D (split_grid) over [BLOCK_R rows] x [BLOCK_W words] tiles, word tiles fastest; a
# program expands its words to a [BLOCK_R, BLOCK_W, 64] byte tile. Bandwidth-bound on
# the writes (64 bytes out per word in).
@autotune_on_gpu(
    configs=[
        triton.Config({"BLOCK_R": 1, "BLOCK_W": 32}, num_warps=4),
        triton.Config({"BLOCK_R": 4, "BLOCK_W": 8}, num_warps=4),
        triton.Config({"BLOCK_R": 16, "BLOCK_W": 2}, num_warps=4),
        triton.Config({"BLOCK_R": 32, "BLOCK_W": 1}, num_warps=4),
        triton.Config({"BLOCK_R": 4, "BLOCK_W": 32}, num_warps=8),
    ],
    key=["n_bits"],
)
@triton.jit
def _unpack_bits_kernel(
    words_ptr,  # int64 [rows, W], strides (stride_row, stride_word)
    out_ptr,  # uint8 (bool storage) [rows, n_bits] contiguous
    rows,  # number of rows
    W,  # words per row
    n_bits,  # bits per row (W = ceil(n_bits / 64))
    stride_row,  # elements between rows of the words (0: one row broadcast)
    stride_word,  # elements between words of a row
    BLOCK_R: tl.constexpr,  # rows per program
    BLOCK_W: tl.constexpr,  # words per program
):
    pid = program_index()
    word_tiles = tl.cdiv(W, BLOCK_W)
    r = (pid // word_tiles) * BLOCK_R + tl.arange(0, BLOCK_R).to(tl.int64)
    w = (pid % word_tiles) * BLOCK_W + tl.arange(0, BLOCK_W).to(tl.int64)
    bit = tl.arange(0, 64).to(tl.int64)
    in_rows = r[:, None] < rows
    in_words = w[None, :] < W
    x = tl.load(words_ptr + r[:, None] * stride_row + w[None, :] * stride_word, mask=in_rows & in_words, other=0)
    bits = ((x[:, :, None] >> bit[None, None, :]) & 1).to(tl.uint8)  # [BLOCK_R, BLOCK_W, 64]
    element = w[None, :, None] * 64 + bit[None, None, :]
    tl.store(out_ptr + r[:, None, None] * n_bits + element, bits, mask=in_rows[:, :, None] & (element < n_bits))


def unpack_bits(words: torch.Tensor, n_bits: int, out: torch.Tensor) -> None:
    """``words`` [rows, W] (any strides) -> the contiguous bool ``out`` [rows, n_bits]."""
    rows, w = words.shape
    if rows == 0 or n_bits == 0:
        return
    blocks = {}
    if INTERPRETED:
        block_w = interpreter_block(w, 64)
        blocks = {"BLOCK_R": interpreter_block(rows, block_w * 64), "BLOCK_W": block_w}

    def grid(meta):
        return split_grid(triton.cdiv(rows, meta["BLOCK_R"]) * triton.cdiv(w, meta["BLOCK_W"]))

    with on_device(words):
        _unpack_bits_kernel[grid](
            words, out.view(torch.uint8), rows, w, n_bits, words.stride(0), words.stride(1),
            **blocks, **LAUNCH_OPTIONS,
        )


# ---------------------------------------------------------------- bit_transpose


# Tiling: 1-D (split_grid) over ([BLOCK_S output words] = 64*BLOCK_S input rows) x
# ([BLOCK_W input words] = 64*BLOCK_W output rows). A program loads the
# [BLOCK_S, 64, BLOCK_W] input words once, spreads them to a
# [BLOCK_S, 64 (row t), BLOCK_W, 64 (bit b)] tile of bits, shifts bit b of input row t
# to position t and sums over t: output word (unit 64*w + b, samples 64*s..64*s+63).
# Bandwidth-bound (each word read and written once); the shifts are ALU work per bit.
@autotune_on_gpu(
    configs=[
        triton.Config({"BLOCK_S": 1, "BLOCK_W": 1}, num_warps=4),
        triton.Config({"BLOCK_S": 2, "BLOCK_W": 1}, num_warps=4),
        triton.Config({"BLOCK_S": 1, "BLOCK_W": 2}, num_warps=4),
        triton.Config({"BLOCK_S": 2, "BLOCK_W": 2}, num_warps=8),
    ],
    key=["W", "n_bits"],
)
@triton.jit
def _bit_transpose_kernel(
    words_ptr,  # int64 [N, W], strides (stride_row, stride_word)
    out_ptr,  # int64 [n_bits, S] contiguous, S = ceil(N / 64)
    N,  # input rows (samples)
    W,  # input words per row
    n_bits,  # input bits per row (units) = output rows
    S,  # output words per row
    stride_row,  # elements between rows of the words (0: one row broadcast)
    stride_word,  # elements between words of a row
    BLOCK_S: tl.constexpr,  # output words (64 input rows each) per program
    BLOCK_W: tl.constexpr,  # input words (64 output rows each) per program
):
    pid = program_index()
    word_tiles = tl.cdiv(W, BLOCK_W)
    s = (pid // word_tiles) * BLOCK_S + tl.arange(0, BLOCK_S).to(tl.int64)  # [BLOCK_S]
    w = (pid % word_tiles) * BLOCK_W + tl.arange(0, BLOCK_W).to(tl.int64)  # [BLOCK_W]
    lane = tl.arange(0, 64).to(tl.int64)  # input row within an output word / bit within an input word
    row = s[:, None, None] * 64 + lane[None, :, None]  # [BLOCK_S, 64, 1]
    x = tl.load(
        words_ptr + row * stride_row + w[None, None, :] * stride_word,
        mask=(row < N) & (w[None, None, :] < W),
        other=0,
    )  # [BLOCK_S, 64 (t), BLOCK_W]
    bits = (x[:, :, :, None] >> lane[None, None, None, :]) & 1  # [BLOCK_S, 64 (t), BLOCK_W, 64 (b)]
    out = tl.sum(bits << lane[None, :, None, None], axis=1)  # [BLOCK_S, BLOCK_W, 64 (b)]
    unit = w[None, :, None] * 64 + lane[None, None, :]  # [1, BLOCK_W, 64]
    tl.store(out_ptr + unit * S + s[:, None, None], out, mask=(unit < n_bits) & (s[:, None, None] < S))


def bit_transpose(words: torch.Tensor, n_bits: int, out: torch.Tensor) -> None:
    """``words`` [N, W] (any strides) -> the contiguous int64 ``out`` [n_bits, ceil(N/64)]."""
    n, w = words.shape
    s = out.shape[1]
    if out.numel() == 0:
        return
    blocks = {}
    if INTERPRETED:
        block_w = interpreter_block(w, 64 * 64)
        blocks = {"BLOCK_S": interpreter_block(s, block_w * 64 * 64), "BLOCK_W": block_w}

    def grid(meta):
        return split_grid(triton.cdiv(s, meta["BLOCK_S"]) * triton.cdiv(w, meta["BLOCK_W"]))

    with on_device(words):
        _bit_transpose_kernel[grid](
            words, out, n, w, n_bits, s, words.stride(0), words.stride(1), **blocks, **LAUNCH_OPTIONS
        )
