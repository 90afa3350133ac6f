"""Bitonic sorting networks along the last dim of a [rows, L] block (L a power of two).

The structure follows triton.language.standard (sort_impl / topk, after
https://www.doc.ic.ac.uk/~hlgr/pdfs/MassivelyParallelTopK.pdf): the block is viewed
as a hypercube [2, 2, ..., 2] and each compare-and-swap pairs the elements that
differ in one index bit. Triton's own compare-and-swap finds the partner with an
XOR reduction, which the interpreter runs element by element in Python (minutes
for one tile); here it takes the min and max over the pair's size-2 axis, which
are plain min/max reductions both compiled and interpreted.
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.constexpr_function
def _log2(n):
    log2 = 0
    while n > 1:
        n >>= 1
        log2 += 1
    return log2


@triton.jit
def _indicator(n_dims: tl.constexpr, j: tl.constexpr):
    """0 for the left and 1 for the right element of each pair along hypercube bit j
    (bit 0 is the innermost), shaped to broadcast over the hypercube."""
    return tl.reshape(tl.arange(0, 2), [1] * (n_dims - j - 1) + [2] + [1] * j)


@triton.jit
def _compare_and_swap(h, flip, j: tl.constexpr):
    """Order every pair along hypercube bit j: ascending where ``flip`` is 0, else descending."""
    n_dims: tl.constexpr = _log2(h.numel)
    low = tl.min(h, axis=n_dims - 1 - j, keep_dims=True)
    high = tl.max(h, axis=n_dims - 1 - j, keep_dims=True)
    return tl.where((flip ^ _indicator(n_dims, j)).to(tl.int1), high, low)


@triton.jit
def _merge_hypercube(h, stage: tl.constexpr, order: tl.constexpr):
    """Bitonic merge of the runs of 2**stage elements: order 0 ascending, 1 descending,
    2 alternating run by run (to build the next stage's bitonic sequences)."""
    if order == 2:
        flip = _indicator(_log2(h.numel), stage)
    else:
        flip = order
    for i in tl.static_range(stage):
        h = _compare_and_swap(h, flip, stage - 1 - i)
    return h


@triton.jit
def smallest_sorted(x, K: tl.constexpr, DESCENDING: tl.constexpr):
    """The K smallest entries of each row of ``x`` [R, L] (K <= L, both powers of two,
    K >= 2), sorted descending if DESCENDING else ascending: [R, K]."""
    log_n: tl.constexpr = _log2(x.shape[1])
    log_k: tl.constexpr = _log2(K)
    h = tl.reshape(x, [2] * _log2(x.numel))
    # Sorted runs of K, alternating in direction (the last stage: the final direction).
    for i in tl.static_range(1, log_k + 1):
        h = _merge_hypercube(h, i, 2 if i < log_n else DESCENDING)
    # Halve: the pairwise minimum of a run and its (oppositely sorted) neighbour holds
    # the K smallest of both and is bitonic; merge it back into a sorted run.
    for i in tl.static_range(log_k + 1, log_n + 1):
        h = tl.min(h, axis=_log2(h.numel) - 1 - log_k)
        h = _merge_hypercube(h, log_k, 2 if i < log_n else DESCENDING)
    return tl.reshape(h, [x.shape[0], K])


@triton.jit
def merge_bitonic(x, DESCENDING: tl.constexpr):
    """Sort each row of ``x`` [R, L] whose entries form a bitonic sequence (L >= 2)."""
    h = tl.reshape(x, [2] * _log2(x.numel))
    h = _merge_hypercube(h, _log2(x.shape[1]), DESCENDING)
    return tl.reshape(h, x.shape)
