"""Nearest-neighbour searches over codes: k nearest rows (hamming_topk) and all pairs
within a radius (hamming_radius). Neither materialises the N x M distance matrix.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .bitonic import merge_bitonic, smallest_sorted
from .common import (
    INT64_MAX,
    INTERPRETED,
    LAUNCH_OPTIONS,
    USE_LIBDEVICE,
    autotune_on_gpu,
    distance_tile,
    interpreter_block,
    next_power_of_2,
    on_device,
)
from .distance import interpreter_pair_blocks

# ---------------------------------------------------------------- top-k

# Longest running list a program keeps (int64 keys in registers); larger k takes the
# chunked path of the backend (distance rows + a stable sort on the device), where the
# N x k output is near N x M anyway. Longer lists compile slowly: 30-40 s a config for
# 1024 keys on sm_80, against about 16 s for 512.
MAX_TOPK_LIST = 512
# Shortest running list: sorting 16 keys costs little, and tiny lists would make the
# bitonic network degenerate (1-element hypercubes).
MIN_TOPK_LIST = 16


def _topk_prune(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """Tiles as long as the running list (at least 64); short lists also try twice that.
    Lists of 256 and more keys take 8 warps only: with 4 the sorting networks need
    ~190 registers a thread and compile for over a minute (sm_80)."""
    length = kwargs["L"]
    wanted = {max(length, 64)} | ({max(2 * length, 128)} if length <= 64 else set())
    return [c for c in configs if c.kwargs["BLOCK_M"] in wanted and (length < 256 or c.num_warps == 8)]


# Tiling: 1-D grid over ([BLOCK_N rows of a], split of b's rows), splits fastest. A
# program walks its split of b in [BLOCK_M] tiles: distances of the [BLOCK_N, BLOCK_M]
# tile (as cdist), each pair packed into one int64 key (distance << shift | index of b),
# so that ascending keys are ascending (distance, index): ties go to the lower index
# with no extra compare. The tile's L smallest keys (bitonic top-k, sorted descending)
# are merged into the running ascending list of L keys per row: their elementwise
# minimum holds the L smallest of both and is bitonic, so one bitonic merge re-sorts it.
# Popcount-bound for long codes; sort-bound for short codes and large k
# (O(BLOCK_M log^2 L) compare-swaps per tile).
@autotune_on_gpu(
    configs=[
        triton.Config({"BLOCK_M": block_m, "BLOCK_K": 1}, num_warps=warps)
        for block_m in (64, 128, 256, 512, 1024)
        for warps in (4, 8)
    ],
    key=["W", "L", "BLOCK_N"],
    prune_configs_by={"early_config_prune": _topk_prune},
)
@triton.jit
def _topk_kernel(
    a_ptr,  # int64 [N, W], strides (stride_a_row, stride_a_word)
    b_ptr,  # int64 [M, W], strides (stride_b_row, stride_b_word)
    keys_ptr,  # int64 [N, splits, k] contiguous: each split's k smallest keys (unless DECODE)
    dist_ptr,  # int32 [N, k] contiguous: distances, nearest first (DECODE)
    index_ptr,  # int64 [N, k] contiguous: rows of b (DECODE)
    N,  # rows of a
    M,  # rows of b
    W,  # words per code
    k,  # neighbours per row, 1 <= k <= L
    stride_a_row,  # elements between rows of a (0: one row broadcast)
    stride_a_word,  # elements between words of a row of a
    stride_b_row,  # elements between rows of b (0: one row broadcast)
    stride_b_word,  # elements between words of a row of b
    shift,  # bits of a row index of b: key = distance << shift | index
    index_mask,  # (1 << shift) - 1
    m_per_split,  # rows of b per split
    splits,  # number of splits of b
    L: tl.constexpr,  # running list length: a power of two >= k
    DECODE: tl.constexpr,  # one split: write distances and indices instead of keys
    BLOCK_N: tl.constexpr,  # rows of a per program
    BLOCK_M: tl.constexpr,  # rows of b per tile, >= L
    BLOCK_K: tl.constexpr,  # words per step of the distance tile
    USE_LIBDEVICE: tl.constexpr,  # popcount: libdevice (GPU) or SWAR (interpreter)
):
    pid = tl.program_id(0).to(tl.int64)
    split = pid % splits
    rows_a = (pid // splits) * BLOCK_N + tl.arange(0, BLOCK_N).to(tl.int64)
    m_start = split * m_per_split
    m_end = tl.minimum(m_start + m_per_split, M)
    best = tl.full((BLOCK_N, L), INT64_MAX, dtype=tl.int64)  # ascending, sentinels last
    for m0 in range(m_start, m_end, BLOCK_M):
        rows_b = m0 + tl.arange(0, BLOCK_M).to(tl.int64)
        d = distance_tile(
            a_ptr, b_ptr, rows_a, rows_b, N, m_end, W, stride_a_row, stride_a_word, stride_b_row, stride_b_word,
            BLOCK_N, BLOCK_M, BLOCK_K, USE_LIBDEVICE,
        )
        keys = tl.where(rows_b[None, :] < m_end, (d.to(tl.int64) << shift) | rows_b[None, :], INT64_MAX)
        candidates = smallest_sorted(keys, L, DESCENDING=True)  # the tile's L smallest, descending
        best = merge_bitonic(tl.minimum(best, candidates), DESCENDING=False)
    column = tl.arange(0, L)
    mask = (rows_a[:, None] < N) & (column[None, :] < k)
    if DECODE:
        at = rows_a[:, None] * k + column[None, :]
        tl.store(dist_ptr + at, (best >> shift).to(tl.int32), mask=mask)
        tl.store(index_ptr + at, best & index_mask, mask=mask)
    else:
        tl.store(keys_ptr + (rows_a[:, None] * splits + split) * k + column[None, :], best, mask=mask)


def topk_list_length(k: int) -> int:
    return max(next_power_of_2(k), MIN_TOPK_LIST)


def _gpu_splits(row_tiles: int, m: int, device: torch.device) -> int:
    """Splits of b so that about two programs per SM run when a has few row tiles."""
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    wanted = -(-2 * sms // max(row_tiles, 1))
    return max(1, min(wanted, -(-m // 256)))


def topk(
    a: torch.Tensor, b: torch.Tensor, k: int, dist: torch.Tensor, index: torch.Tensor, splits: int | None = None
) -> None:
    """The k nearest rows of ``b`` [M, W] for each row of ``a`` [N, W] (any strides) into
    the contiguous ``dist`` int32 [N, k] and ``index`` int64 [N, k]; ``k`` must be at most
    MAX_TOPK_LIST. ``splits`` (tests) forces how many programs share each row's search."""
    n, w = a.shape
    m = b.shape[0]
    if n == 0:
        return
    length = topk_list_length(k)
    if length > MAX_TOPK_LIST:
        raise ValueError(f"hamming_topk: the Triton top-k keeps at most {MAX_TOPK_LIST} neighbours, got k={k}")
    shift = max(1, (m - 1).bit_length())
    if (w * 64).bit_length() + shift > 63:
        raise ValueError(f"hamming_topk: {m} rows of {w} words do not fit a 63-bit (distance, index) key")
    if INTERPRETED:
        pair = interpreter_pair_blocks(n, max(m, length), w)
        block_m = max(pair["BLOCK_M"], length)
        block_n = interpreter_block(n, block_m * pair["BLOCK_K"])
        blocks = {"BLOCK_N": block_n, "BLOCK_M": block_m, "BLOCK_K": pair["BLOCK_K"]}
    else:
        blocks = {"BLOCK_N": max(1, min(32, 2048 // length))}
    row_tiles = triton.cdiv(n, blocks["BLOCK_N"])
    if splits is None:
        splits = 1 if INTERPRETED else _gpu_splits(row_tiles, m, a.device)
    m_per_split = triton.cdiv(m, splits)
    decode = splits == 1
    keys = index if decode else torch.empty(n, splits, k, dtype=torch.int64, device=a.device)
    with on_device(a):
        _topk_kernel[(row_tiles * splits,)](
            a, b, keys, dist, index, n, m, w, k,
            a.stride(0), a.stride(1), b.stride(0), b.stride(1), shift, (1 << shift) - 1, m_per_split, splits,
            L=length, DECODE=decode, USE_LIBDEVICE=USE_LIBDEVICE, **blocks, **LAUNCH_OPTIONS,
        )
    if not decode:
        # Keys are distinct (they hold the index), so any exact selection agrees.
        merged = torch.topk(keys.view(n, splits * k), k, dim=1, largest=False, sorted=True).values
        dist.copy_(merged >> shift)
        index.copy_(merged & ((1 << shift) - 1))


# ---------------------------------------------------------------- radius

# Columns of b per tile in both radius passes: fixed, since the count buffer has one
# entry per (row of a, tile of b) and the fill pass must see the same tiles.
RADIUS_BLOCK_M = 128

_RADIUS_COUNT_CONFIGS = [
    triton.Config({"BLOCK_N": 16, "BLOCK_K": 1}, num_warps=4),
    triton.Config({"BLOCK_N": 32, "BLOCK_K": 1}, num_warps=4),
    triton.Config({"BLOCK_N": 64, "BLOCK_K": 1}, num_warps=8),
    triton.Config({"BLOCK_N": 16, "BLOCK_K": 2}, num_warps=4),
]
# The fill pass holds the prefix sums and slots too: smaller tiles per warp.
_RADIUS_FILL_CONFIGS = [
    triton.Config({"BLOCK_N": 16, "BLOCK_K": 1}, num_warps=4),
    triton.Config({"BLOCK_N": 16, "BLOCK_K": 1}, num_warps=8),
    triton.Config({"BLOCK_N": 32, "BLOCK_K": 1}, num_warps=8),
    triton.Config({"BLOCK_N": 16, "BLOCK_K": 2}, num_warps=4),
]


@triton.jit
def _radius_tile(
    a_ptr, b_ptr, N, M, W, r, stride_a_row, stride_a_word, stride_b_row, stride_b_word,
    BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, USE_LIBDEVICE: tl.constexpr,
):
    """This program's tile in both radius passes, which must see the same tiles (arguments
    as theirs): ``(tiles_m, tile_m, rows_a, rows_b, d, hit)`` with rows_a int64 [BLOCK_N],
    rows_b int64 [BLOCK_M], d int32 and hit [BLOCK_N, BLOCK_M]; hit: within r, row of b in
    range. Rows of a past N are the caller's to mask (the count pass masks only its store:
    masking hit there costs registers)."""
    pid = tl.program_id(0).to(tl.int64)
    tiles_m = tl.cdiv(M, BLOCK_M)
    tile_m = pid % tiles_m
    rows_a = (pid // tiles_m) * BLOCK_N + tl.arange(0, BLOCK_N).to(tl.int64)
    rows_b = tile_m * BLOCK_M + tl.arange(0, BLOCK_M).to(tl.int64)
    d = distance_tile(
        a_ptr, b_ptr, rows_a, rows_b, N, M, W, stride_a_row, stride_a_word, stride_b_row, stride_b_word,
        BLOCK_N, BLOCK_M, BLOCK_K, USE_LIBDEVICE,
    )
    hit = (d <= r) & (rows_b[None, :] < M)
    return tiles_m, tile_m, rows_a, rows_b, d, hit


# Tiling: 1-D grid over [BLOCK_N rows of a] x [BLOCK_M rows of b] tiles, b tiles fastest.
# Pass 1 of hamming_radius: each program counts, per row of a, the pairs of its tile
# within the radius and stores them at counts[row, tile] (no atomics: every entry has
# one writer). Popcount-bound, like cdist, with an int32 count per row out.
@autotune_on_gpu(configs=_RADIUS_COUNT_CONFIGS, key=["W"])
@triton.jit
def _radius_count_kernel(
    a_ptr,  # int64 [N, W], strides (stride_a_row, stride_a_word)
    b_ptr,  # int64 [M, W], strides (stride_b_row, stride_b_word)
    counts_ptr,  # int64 [N, tiles_m] contiguous: pairs within r per (row of a, tile of b)
    N,  # rows of a
    M,  # rows of b
    W,  # words per code
    r,  # radius: count pairs with distance <= r
    stride_a_row,  # elements between rows of a (0: one row broadcast)
    stride_a_word,  # elements between words of a row of a
    stride_b_row,  # elements between rows of b (0: one row broadcast)
    stride_b_word,  # elements between words of a row of b
    BLOCK_N: tl.constexpr,  # rows of a per program
    BLOCK_M: tl.constexpr,  # rows of b per program (fixed: defines the count layout)
    BLOCK_K: tl.constexpr,  # words per step of the distance tile
    USE_LIBDEVICE: tl.constexpr,  # popcount: libdevice (GPU) or SWAR (interpreter)
):
    tiles_m, tile_m, rows_a, _, _, hit = _radius_tile(
        a_ptr, b_ptr, N, M, W, r, stride_a_row, stride_a_word, stride_b_row, stride_b_word,
        BLOCK_N, BLOCK_M, BLOCK_K, USE_LIBDEVICE,
    )
    count = tl.sum(hit.to(tl.int32), axis=1).to(tl.int64)
    tl.store(counts_ptr + rows_a * tiles_m + tile_m, count, mask=rows_a < N)


# Tiling: as the count pass. Pass 2 of hamming_radius: each program recomputes its tile,
# ranks the hits of each row left to right (a prefix sum along the tile row) and writes
# (i, j, d) at starts[row, tile] + rank, where starts is the exclusive prefix sum of the
# counts in row-major order: the output comes out sorted by (i, j) with no sort.
# Popcount-bound; the scattered writes are as many as the pairs found.
@autotune_on_gpu(configs=_RADIUS_FILL_CONFIGS, key=["W"])
@triton.jit
def _radius_fill_kernel(
    a_ptr,  # int64 [N, W], strides (stride_a_row, stride_a_word)
    b_ptr,  # int64 [M, W], strides (stride_b_row, stride_b_word)
    starts_ptr,  # int64 [N, tiles_m] contiguous: first output slot of each (row, tile)
    i_ptr,  # int64 [P] out: rows of a
    j_ptr,  # int64 [P] out: rows of b
    d_ptr,  # int32 [P] out: distances
    N,  # rows of a
    M,  # rows of b
    W,  # words per code
    r,  # radius
    stride_a_row,  # elements between rows of a (0: one row broadcast)
    stride_a_word,  # elements between words of a row of a
    stride_b_row,  # elements between rows of b (0: one row broadcast)
    stride_b_word,  # elements between words of a row of b
    BLOCK_N: tl.constexpr,  # rows of a per program
    BLOCK_M: tl.constexpr,  # rows of b per program (as the count pass)
    BLOCK_K: tl.constexpr,  # words per step of the distance tile
    USE_LIBDEVICE: tl.constexpr,  # popcount: libdevice (GPU) or SWAR (interpreter)
):
    tiles_m, tile_m, rows_a, rows_b, d, hit = _radius_tile(
        a_ptr, b_ptr, N, M, W, r, stride_a_row, stride_a_word, stride_b_row, stride_b_word,
        BLOCK_N, BLOCK_M, BLOCK_K, USE_LIBDEVICE,
    )
    hit = hit & (rows_a[:, None] < N)
    rank = tl.cumsum(hit.to(tl.int32), axis=1) - 1  # [BLOCK_N, BLOCK_M]
    start = tl.load(starts_ptr + rows_a * tiles_m + tile_m, mask=rows_a < N, other=0)
    slot = start[:, None] + rank.to(tl.int64)
    zeros = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.int64)
    tl.store(i_ptr + slot, rows_a[:, None] + zeros, mask=hit)
    tl.store(j_ptr + slot, rows_b[None, :] + zeros, mask=hit)
    tl.store(d_ptr + slot, d, mask=hit)


def radius(a: torch.Tensor, b: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All pairs (i, j) with distance(a[i], b[j]) <= r, sorted by (i, j), as
    ``(i int64 [P], j int64 [P], d int32 [P])``; ``a`` [N, W] and ``b`` [M, W] any strides."""
    n, w = a.shape
    m = b.shape[0]
    device = a.device
    if n == 0 or m == 0:
        return (
            torch.empty(0, dtype=torch.int64, device=device),
            torch.empty(0, dtype=torch.int64, device=device),
            torch.empty(0, dtype=torch.int32, device=device),
        )
    blocks = {"BLOCK_M": RADIUS_BLOCK_M}
    if INTERPRETED:
        blocks = interpreter_pair_blocks(n, m, w)
    block_m = blocks["BLOCK_M"]
    tiles_m = triton.cdiv(m, block_m)
    counts = torch.empty(n, tiles_m, dtype=torch.int64, device=device)
    args = (a.stride(0), a.stride(1), b.stride(0), b.stride(1))

    def grid(meta):
        return (triton.cdiv(n, meta["BLOCK_N"]) * tiles_m,)

    with on_device(a):
        _radius_count_kernel[grid](
            a, b, counts, n, m, w, r, *args, USE_LIBDEVICE=USE_LIBDEVICE, **blocks, **LAUNCH_OPTIONS
        )
        flat = counts.view(-1)
        ends = torch.cumsum(flat, 0)
        total = int(ends[-1])  # one device sync: the output size
        starts = ends - flat
        i = torch.empty(total, dtype=torch.int64, device=device)
        j = torch.empty(total, dtype=torch.int64, device=device)
        d = torch.empty(total, dtype=torch.int32, device=device)
        if total > 0:
            _radius_fill_kernel[grid](
                a, b, starts, i, j, d, n, m, w, r, *args, USE_LIBDEVICE=USE_LIBDEVICE, **blocks, **LAUNCH_OPTIONS
            )
    return i, j, d
