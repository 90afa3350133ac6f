"""Independent numpy oracle for every fastspline op.

Written from the bit layout in the docstring of ``fastspline/ops.py`` only,
with numpy primitives (``packbits``/``unpackbits`` with ``bitorder="little"``,
``lexsort``, ``nonzero``, ``unique``) so that it shares no code with the
pure-torch reference backend: the tests compare every backend against both.

Inputs are numpy arrays (use :func:`words_np` / :func:`floats_np` to convert
torch tensors); outputs are numpy arrays with the dtypes the ops return.
"""
from __future__ import annotations

import numpy as np
import torch

# ---------------------------------------------------------------- conversions


def words_np(words: torch.Tensor) -> np.ndarray:
    """int64 torch tensor (any strides) -> C-contiguous little-endian int64 array."""
    return np.ascontiguousarray(words.numpy(), dtype="<i8")


def floats_np(x: torch.Tensor) -> np.ndarray:
    """Float torch tensor -> float64 array, converted without torch's float casts.

    float16/float32/float64 go through numpy's own (exact) widening; bfloat16,
    which numpy lacks, is rebuilt from its bit pattern: a bfloat16 is the top
    16 bits of the float32 with the same value.
    """
    if x.dtype == torch.bfloat16:
        raw = x.view(torch.int16).numpy().astype(np.uint16).astype(np.uint32) << np.uint32(16)
        return raw.view(np.float32).astype(np.float64)
    return x.numpy().astype(np.float64)


# ---------------------------------------------------------------- packing


def n_words(n_bits: int) -> int:
    return -(-n_bits // 64)


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """bool [..., n] -> int64 [..., ceil(n/64)] (little-endian bit order, zero pad)."""
    bits = np.asarray(bits, dtype=bool)
    n = bits.shape[-1]
    packed = np.packbits(bits, axis=-1, bitorder="little")  # uint8 [..., ceil(n/8)], pad bits 0
    pad = n_words(n) * 8 - packed.shape[-1]
    packed = np.concatenate(
        [packed, np.zeros((*packed.shape[:-1], pad), dtype=np.uint8)], axis=-1
    )
    return np.ascontiguousarray(packed).view("<i8")


def unpack_bits(words: np.ndarray, n_bits: int) -> np.ndarray:
    """int64 [..., W] -> bool [..., n_bits]."""
    as_bytes = np.ascontiguousarray(words, dtype="<i8").view(np.uint8)
    bits = np.unpackbits(as_bytes, axis=-1, bitorder="little")
    return bits[..., :n_bits].astype(bool)


def pad_bits_are_zero(words: np.ndarray, n_bits: int) -> bool:
    """True when every bit at or past n_bits in the words is zero."""
    all_bits = unpack_bits(words, words.shape[-1] * 64)
    return not all_bits[..., n_bits:].any()


def pack_signs(x: np.ndarray, dim: int, threshold: float) -> np.ndarray:
    """Bits ``x > threshold`` along ``dim`` (moved last); x is float64 (exact)."""
    x = np.moveaxis(np.asarray(x, dtype=np.float64), dim, -1)
    with np.errstate(invalid="ignore"):
        bits = x > np.float64(threshold)  # NaN compares False
    return pack_bits(bits)


# ---------------------------------------------------------------- distances


def popcount(words: np.ndarray) -> np.ndarray:
    """int64 [..., W] -> int64 [...]: set bits per code."""
    w = words.shape[-1]
    return unpack_bits(words, 64 * w).sum(axis=-1, dtype=np.int64)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return popcount(np.bitwise_xor(a, b))


def hamming_total(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray(hamming(a, b).sum(dtype=np.int64), dtype=np.int64)


def hamming_cdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[N, W] x [M, W] -> int32 [N, M].

    With the bits as 0/1 matrices A and B, d = A (1-B)^T + (1-A) B^T: the number
    of positions where exactly one is set; int64 matmul is exact.
    """
    n_bits = 64 * a.shape[1]
    bits_a = unpack_bits(a, n_bits).astype(np.int64)
    bits_b = unpack_bits(b, n_bits).astype(np.int64)
    d = bits_a @ (1 - bits_b).T + (1 - bits_a) @ bits_b.T
    return d.reshape(a.shape[0], b.shape[0]).astype(np.int32)


def hamming_topk(a: np.ndarray, b: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Nearest ``k`` rows of b per row of a; ties by lower index of b."""
    d = hamming_cdist(a, b)
    index = np.broadcast_to(np.arange(b.shape[0], dtype=np.int64), d.shape)
    order = np.lexsort((index, d), axis=-1)[:, :k].astype(np.int64)  # last key is primary
    return np.take_along_axis(d, order, axis=1).astype(np.int32), order


def hamming_radius(
    a: np.ndarray, b: np.ndarray, r: int, d: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs with distance <= r; ``d`` may pass hamming_cdist(a, b) when already known."""
    d = hamming_cdist(a, b) if d is None else d
    i, j = np.nonzero(d <= r)  # row-major order: sorted by (i, j)
    return i.astype(np.int64), j.astype(np.int64), d[i, j].astype(np.int32)


# ---------------------------------------------------------------- layout


def bit_transpose(words: np.ndarray, n_bits: int) -> np.ndarray:
    """int64 [N, ceil(n_bits/64)] -> int64 [n_bits, ceil(N/64)]."""
    bits = unpack_bits(words, n_bits)  # [N, n_bits]
    return pack_bits(np.ascontiguousarray(bits.T))


def count_regions(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(unique rows sorted signed-lexicographically, inverse, counts)."""
    n, w = codes.shape
    if n == 0:
        return (
            np.zeros((0, w), dtype=np.int64),
            np.zeros(0, dtype=np.int64),
            np.zeros(0, dtype=np.int64),
        )
    # np.unique(axis=0) sorts rows as structured records of int64 fields: signed
    # lexicographic order, word 0 first (tests/test_ops.py checks this).
    unique, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    return (
        unique.astype(np.int64),
        inverse.astype(np.int64).reshape(-1),
        counts.astype(np.int64),
    )
