"""count_regions: group boundaries of lexicographically sorted rows."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import INTERPRETED, LAUNCH_OPTIONS, autotune_on_gpu, interpreter_block, on_device, program_index, split_grid


# Tiling: 1-D (split_grid) over [BLOCK_R] positions of the sorted order; a program walks the
# words BLOCK_W at a time, comparing row order[p] with row order[p - 1], and stores 1
# where they differ anywhere (or p == 0): the first row of each distinct code.
# Bandwidth-bound: two gathered reads per word (rows land in sorted, not memory, order).
@autotune_on_gpu(
    configs=[
        triton.Config({"BLOCK_R": 64, "BLOCK_W": 4}, num_warps=4),
        triton.Config({"BLOCK_R": 128, "BLOCK_W": 1}, num_warps=4),
        triton.Config({"BLOCK_R": 16, "BLOCK_W": 16}, num_warps=4),
        triton.Config({"BLOCK_R": 4, "BLOCK_W": 64}, num_warps=4),
    ],
    key=["W"],
)
@triton.jit
def _row_starts_kernel(
    codes_ptr,  # int64 [N, W], strides (stride_row, stride_word)
    order_ptr,  # int64 [N]: row indices in lexicographic order of the rows
    starts_ptr,  # int64 [N] out: 1 where the sorted row differs from the one before, else 0
    N,  # rows
    W,  # words per row
    stride_row,  # elements between rows of the words (0: one row broadcast)
    stride_word,  # elements between words of a row
    BLOCK_R: tl.constexpr,  # sorted positions per program
    BLOCK_W: tl.constexpr,  # words per step
):
    p = program_index() * BLOCK_R + tl.arange(0, BLOCK_R).to(tl.int64)
    valid = p < N
    row = tl.load(order_ptr + p, mask=valid, other=0)
    before = tl.load(order_ptr + p - 1, mask=valid & (p > 0), other=0)
    differs = p == 0
    for k0 in range(0, W, BLOCK_W):
        k = k0 + tl.arange(0, BLOCK_W).to(tl.int64)
        mask = valid[:, None] & (k[None, :] < W)
        x = tl.load(codes_ptr + row[:, None] * stride_row + k[None, :] * stride_word, mask=mask, other=0)
        y = tl.load(codes_ptr + before[:, None] * stride_row + k[None, :] * stride_word, mask=mask, other=0)
        differs = differs | (tl.max((x != y).to(tl.int32), axis=1) > 0)
    tl.store(starts_ptr + p, differs.to(tl.int64), mask=valid)


def row_starts(codes: torch.Tensor, order: torch.Tensor, out: torch.Tensor) -> None:
    """``out[p]`` = 1 where row ``order[p]`` of ``codes`` [N, W] (any strides) differs
    from row ``order[p - 1]`` (and at p = 0), else 0; int64 [N]."""
    n, w = codes.shape
    if n == 0:
        return
    blocks = {}
    if INTERPRETED:
        block_w = interpreter_block(w)
        blocks = {"BLOCK_R": interpreter_block(n, 2 * block_w), "BLOCK_W": block_w}

    def grid(meta):
        return split_grid(triton.cdiv(n, meta["BLOCK_R"]))

    with on_device(codes):
        _row_starts_kernel[grid](
            codes, order, out, n, w, codes.stride(0), codes.stride(1), **blocks, **LAUNCH_OPTIONS
        )
