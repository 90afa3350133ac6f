"""Shared pieces of the Triton kernels: the popcount, the GPU/interpreter switch, block sizes.

Bit layout (as fastspline/ops.py): codes are int64 words read as unsigned; bit
``j`` of word ``w`` is unit ``64*w + j``, least-significant first; pad bits are 0.

Two ways to run every kernel, fixed when this module is imported:

- compiled, on a CUDA GPU: popcounts use libdevice ``popc`` (``__nv_popcll``),
  block sizes are picked by ``triton.autotune`` from per-kernel configs;
- interpreted (``TRITON_INTERPRET=1`` in the environment before triton is
  imported): the kernels run as numpy on the CPU. The interpreter has no extern
  calls, so popcounts use a SWAR sequence, and a program instance costs a fixed
  Python overhead plus numpy work proportional to its tile, so the launchers pass
  large blocks sized to the problem (:func:`interpreter_block`) and no autotuning.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import libdevice

# Whether @triton.jit builds interpreted kernels: triton reads the same switch.
INTERPRETED: bool = bool(triton.knobs.runtime.interpret)
# The popcount the kernels compile in: libdevice on a GPU, SWAR under the interpreter.
USE_LIBDEVICE: bool = not INTERPRETED

# Compile options of every launch. The kernels do no float arithmetic that could be
# fused (compares only); saying so also keeps Triton 3.9 from warning that the
# TRITON_DEFAULT_FP_FUSION default will change. The interpreter takes no options.
LAUNCH_OPTIONS: dict[str, Any] = {} if INTERPRETED else {"enable_fp_fusion": False}

# Triton's bound on the number of elements of any block (triton/_utils.py).
MAX_BLOCK_ELEMENTS = 1 << 20
# Interpreter tiles: about this many elements per program instance (numpy work per
# op) and a fixed cost per program of about this many elements' worth of work.
INTERPRETER_TILE_ELEMENTS = 1 << 17
INTERPRETER_PROGRAM_COST = 1 << 15

# The largest int64, as a constexpr that kernels can read (sentinel keys sort last).
INT64_MAX = tl.constexpr(2**63 - 1)

# CUDA's bound on grid dim 0 (dims 1 and 2: 65535).
MAX_GRID_DIM0 = 2**31 - 1


def split_grid(programs: int) -> tuple[int, int]:
    """Launch grid of a 1-D tiling of ``programs`` programs, over grid dims 0 and 1 once
    they pass dim 0's bound (cdiv(rows, BLOCK_R) does from 2**31 rows at BLOCK_R = 1).
    Pruning such configs would not do: autotune keys leave out the row count, so a config
    tuned on a small launch is reused for a large one. Dim 0 is balanced, so fewer than
    ``grid[1]`` programs past ``programs`` run; they find no rows (the kernels mask by
    row). Kernels read their index with :func:`program_index`. The pair kernels (cdist,
    top-k, radius) keep 1-D grids: their tiles are at least 16 x 128 pairs, so their
    outputs would outgrow a GPU's memory first."""
    parts = max(1, -(-programs // MAX_GRID_DIM0))
    return (-(-programs // parts), parts)


@triton.jit
def program_index():
    """This program's index (int64) in a :func:`split_grid` launch."""
    return tl.program_id(1).to(tl.int64) * tl.num_programs(0) + tl.program_id(0)


@triton.jit
def popcount64(x, USE_LIBDEVICE: tl.constexpr):
    """Set bits of each int64 in ``x`` (read as unsigned), as int32.

    libdevice ``popc`` on int64 is ``__nv_popcll`` (one POPC per 32-bit half).
    The SWAR branch is exact for negative words: the first step masks after the
    arithmetic shift, after the third every byte holds 0..8 so bit 63 is clear,
    and the multiply sums the bytes into the top byte (at most 64, no carry out).
    """
    if USE_LIBDEVICE:
        count = libdevice.popc(x)
    else:
        x = x - ((x >> 1) & 0x5555555555555555)
        x = (x & 0x3333333333333333) + ((x >> 2) & 0x3333333333333333)
        x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0F
        count = ((x * 0x0101010101010101) >> 56).to(tl.int32)
    return count


@triton.jit
def distance_tile(
    a_ptr,  # int64 [N, W], strides (stride_a_row, stride_a_word)
    b_ptr,  # int64 [M, W], strides (stride_b_row, stride_b_word)
    rows_a,  # int64 [BLOCK_N]: row indices into a (may run past N)
    rows_b,  # int64 [BLOCK_M]: row indices into b (may run past M)
    N,  # rows of a
    M,  # rows of b
    W,  # words per code
    stride_a_row,  # elements between rows of a (0: one row broadcast)
    stride_a_word,  # elements between words of a row of a
    stride_b_row,  # elements between rows of b (0: one row broadcast)
    stride_b_word,  # elements between words of a row of b
    BLOCK_N: tl.constexpr,  # len(rows_a)
    BLOCK_M: tl.constexpr,  # len(rows_b)
    BLOCK_K: tl.constexpr,  # words per step: [BLOCK_N, BLOCK_M, BLOCK_K] XOR tile
    USE_LIBDEVICE: tl.constexpr,
):
    """Hamming distances of a [BLOCK_N] x [BLOCK_M] tile of row pairs, int32.

    Rows past N or M read zero words (distance 0): callers mask them. Every step
    XORs a [BLOCK_N, BLOCK_K] slab of a against a [BLOCK_M, BLOCK_K] slab of b
    and sums the popcounts over the words; with BLOCK_K == 1 that is an
    outer-product update (no cross-thread reduction), which GPUs prefer.
    """
    words = tl.arange(0, BLOCK_K)
    in_a = rows_a < N
    in_b = rows_b < M
    a_rows = a_ptr + rows_a[:, None] * stride_a_row
    b_rows = b_ptr + rows_b[:, None] * stride_b_row
    acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.int32)
    for k0 in range(0, W, BLOCK_K):
        k = (k0 + words).to(tl.int64)
        x = tl.load(a_rows + k[None, :] * stride_a_word, mask=in_a[:, None] & (k[None, :] < W), other=0)
        y = tl.load(b_rows + k[None, :] * stride_b_word, mask=in_b[:, None] & (k[None, :] < W), other=0)
        acc += tl.sum(popcount64(x[:, None, :] ^ y[None, :, :], USE_LIBDEVICE), axis=2)
    return acc


def autotune_on_gpu(configs: Sequence[triton.Config], key: list[str], **kwargs: Any) -> Callable:
    """``triton.autotune`` for compiled kernels; under the interpreter the kernel
    is left as is and the launcher passes the block sizes itself (autotuning
    there would only time numpy). ``FASTSPLINE_TRITON_AUTOTUNE=0`` keeps the first
    config only (no timing runs): the GPU test matrix, with its many shapes, uses it."""

    def decorate(kernel):
        if INTERPRETED:
            return kernel
        options = dict(kwargs)
        chosen = list(configs)
        if os.environ.get("FASTSPLINE_TRITON_AUTOTUNE", "1") == "0":
            prune = dict(options.get("prune_configs_by") or {})
            early = prune.get("early_config_prune")
            if early is None:
                chosen = chosen[:1]
            else:  # the first config the kernel's own pruning allows for these arguments
                prune["early_config_prune"] = lambda cfgs, named_args, **kw: early(cfgs, named_args, **kw)[:1]
                options["prune_configs_by"] = prune
        return triton.autotune(configs=chosen, key=key, **options)(kernel)

    return decorate


def next_power_of_2(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def interpreter_block(size: int, per_item: int = 1) -> int:
    """Power-of-two block along a dim of ``size`` items for an interpreted launch.

    ``per_item``: elements of the largest tile temporary per item of this dim
    (the other block dims multiplied). Picks the block with the least modelled
    time: numpy work on padded tiles plus a fixed cost per program instance,
    with tiles kept within INTERPRETER_TILE_ELEMENTS (read at each call, so tests
    can shrink it to get many small tiles) and Triton's block limit.
    """
    per_item = max(1, per_item)
    limit = max(1, min(INTERPRETER_TILE_ELEMENTS, MAX_BLOCK_ELEMENTS) // per_item)
    best, best_cost = 1, None
    block = 1
    while block <= limit:
        programs = -(-max(size, 1) // block)
        cost = programs * (block * per_item + INTERPRETER_PROGRAM_COST)
        if best_cost is None or cost < best_cost:
            best, best_cost = block, cost
        if block >= size:
            break
        block *= 2
    return best


def on_device(t: torch.Tensor) -> contextlib.AbstractContextManager:
    """Launch on ``t``'s GPU (Triton launches on the current device)."""
    return torch.cuda.device(t.device) if t.device.type == "cuda" else contextlib.nullcontext()
