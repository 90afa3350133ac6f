"""Pure-torch reference backend: the specification of every kernel op.

Written for clarity, not speed; every other backend must return exactly what
these functions return. Inputs arrive validated by :mod:`fastspline.ops`
(int64 words, matching word counts and devices, the packed dim of
``pack_signs`` already moved last); the functions accept any strides.
Large all-pairs ops work in row chunks so that they stay usable as test
oracles on a few thousand rows.
"""
from __future__ import annotations

import torch

NAME = "reference"
DEVICE_TYPES = None  # any device torch runs on

_CHUNK_ELEMENTS = 1 << 24  # bound on the [rows, M, W] temporaries of the pairwise ops


def _bit_weights(device: torch.device) -> torch.Tensor:
    # 1 << j for j in 0..63 as int64; 1 << 63 wraps to -2**63, which is bit 63.
    return torch.ones(64, dtype=torch.int64, device=device) << torch.arange(64, device=device)


def pack_bool(bits: torch.Tensor) -> torch.Tensor:
    """bool [..., n] -> int64 [..., ceil(n/64)], bit j of word w = element 64*w + j."""
    n = bits.shape[-1]
    n_words = (n + 63) // 64
    padded = torch.zeros(*bits.shape[:-1], n_words * 64, dtype=torch.int64, device=bits.device)
    padded[..., :n] = bits.to(torch.int64)
    padded = padded.reshape(*bits.shape[:-1], n_words, 64)
    # Distinct powers of two: the int64 sum equals the bitwise OR (no overflow).
    return (padded * _bit_weights(bits.device)).sum(dim=-1)


def pack_signs(x: torch.Tensor, threshold: float) -> torch.Tensor:
    """bits ``x > threshold`` along the last dim, compared exactly (in float64)."""
    # Every supported float dtype embeds exactly in float64, so this is the
    # comparison of real numbers; NaN compares False and packs as 0.
    return pack_bool(x.to(torch.float64) > threshold)


def unpack_bits(words: torch.Tensor, n_bits: int) -> torch.Tensor:
    shifts = torch.arange(64, device=words.device)
    bits = (words.unsqueeze(-1) >> shifts) & 1
    return bits.reshape(*words.shape[:-1], words.shape[-1] * 64)[..., :n_bits].to(torch.bool)


_BYTE_POPCOUNT = torch.tensor([bin(i).count("1") for i in range(256)], dtype=torch.int64)


def popcount(words: torch.Tensor) -> torch.Tensor:
    if words.numel() == 0:  # an empty view may keep a last-dim stride that view(uint8) rejects
        return torch.zeros(words.shape[:-1], dtype=torch.int64, device=words.device)
    words = words.contiguous()
    if words.stride(-1) != 1:  # a size-1 last dim may keep any stride, which view(uint8) rejects
        words = words.clone(memory_format=torch.contiguous_format)
    as_bytes = words.view(torch.uint8).to(torch.int64)
    table = _BYTE_POPCOUNT.to(words.device)
    return table[as_bytes].sum(dim=-1)


def hamming(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return popcount(a ^ b)


def hamming_total(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return hamming(a, b).sum()


def _row_chunks(n_rows: int, m: int, w: int):
    step = max(1, _CHUNK_ELEMENTS // max(1, m * max(w, 1)))
    for start in range(0, n_rows, step):
        yield start, min(n_rows, start + step)


def hamming_cdist(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    n, m, w = a.shape[0], b.shape[0], a.shape[1]
    if out is None:
        out = torch.empty(n, m, dtype=torch.int32, device=a.device)
    for lo, hi in _row_chunks(n, m, w):
        out[lo:hi] = popcount(a[lo:hi, None, :] ^ b[None, :, :]).to(torch.int32)
    return out


def hamming_topk(a: torch.Tensor, b: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    n, m, w = a.shape[0], b.shape[0], a.shape[1]
    dist = torch.empty(n, k, dtype=torch.int32, device=a.device)
    index = torch.empty(n, k, dtype=torch.int64, device=a.device)
    for lo, hi in _row_chunks(n, m, w):
        d = hamming_cdist(a[lo:hi], b)
        # A stable sort keeps equal distances in index order: ties go to the lower index.
        values, order = torch.sort(d, dim=1, stable=True)
        dist[lo:hi] = values[:, :k]
        index[lo:hi] = order[:, :k]
    return dist, index


def hamming_radius(a: torch.Tensor, b: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n, m, w = a.shape[0], b.shape[0], a.shape[1]
    rows, cols, dists = [], [], []
    for lo, hi in _row_chunks(n, m, w):
        d = hamming_cdist(a[lo:hi], b)
        i, j = torch.nonzero(d <= r, as_tuple=True)  # row-major: sorted by (i, j)
        rows.append(i + lo)
        cols.append(j)
        dists.append(d[i, j])
    if not rows:  # no rows in a: three distinct empty outputs (custom ops forbid aliases)
        return tuple(torch.empty(0, dtype=t, device=a.device) for t in (torch.int64, torch.int64, torch.int32))
    return torch.cat(rows), torch.cat(cols), torch.cat(dists)


def bit_transpose(words: torch.Tensor, n_bits: int) -> torch.Tensor:
    bits = unpack_bits(words, n_bits)  # [N, n_bits]
    return pack_bool(bits.t())  # [n_bits, ceil(N/64)]


def count_regions(codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n, w = codes.shape
    if n == 0 or w == 0:
        # torch.unique(dim=0) rejects empty dims; every row is the same empty code.
        unique = codes[:1].clone()
        inverse = torch.zeros(n, dtype=torch.int64, device=codes.device)
        counts = torch.full((unique.shape[0],), n, dtype=torch.int64, device=codes.device)
        return unique, inverse, counts
    # Rows sorted lexicographically, words compared as signed int64 from word 0.
    return torch.unique(codes, dim=0, sorted=True, return_inverse=True, return_counts=True)
