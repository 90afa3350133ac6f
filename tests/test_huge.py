"""Sizes past 32-bit indexing (marker ``huge``, run by tests/fuzz.sh, not by the normal run).

Each test stays under ~5 GiB of memory (the process peaks at 5.1 GB RSS) and ~20 s
on 2 cores. Expected values come from the structure of the data (closed forms), not
from the reference backend, which would need tens of GiB here. What is covered:

- rows of more than 2**31 bits: popcount, hamming, hamming_total (a sum past 2**32),
  unpack_bits, count_regions, on every CPU instruction set;
- pack_signs of a row of more than 2**31 elements, contiguous (float16) and as a
  stride-0 view (no memory behind it);
- the longest codes with int32 distances (2**31 - 64 bits): cdist, topk, radius;
- top-k and radius over more than 2**31 pairs (pair counts past int32);
- a cdist output of 2**30 + 2**21 elements (byte offsets past 2**32), checked by row
  and column sums and full rows past the 2**31-byte offset;
- bit_transpose of 2**32 bits (bit indices past 2**31), round trip and spot bits.

Not covered: a cdist output or radius result of more than 2**31 *elements*
(8 GiB and 40 GiB): the kernels index them with int64 like the cases above.
"""
from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
import torch

import fastspline as fs
from fastspline import backends
from cases import cpu_available

pytestmark = [
    pytest.mark.huge,
    pytest.mark.skipif(not cpu_available(), reason="the cpu backend is not built"),
]

ISAS = ["scalar", "avx2", "avx512"]
BITS_OVER_2_31 = 2**31 + 65  # 2**25 + 2 words, one bit in the last


@pytest.fixture(autouse=True)
def free_memory() -> Iterator[None]:
    yield
    gc.collect()


def isa_params() -> list:
    supported = backends.load("cpu").supported_isas() if cpu_available() else []
    return [pytest.param(isa, marks=pytest.mark.skipif(isa not in supported, reason=f"this CPU lacks {isa}")) for isa in ISAS]


def ones_row(n_bits: int) -> torch.Tensor:
    """int64 [ceil(n_bits/64)]: the first n_bits bits set, pad bits zero."""
    words = torch.full(((n_bits + 63) // 64,), -1, dtype=torch.int64)
    if n_bits % 64:
        words[-1] = (1 << (n_bits % 64)) - 1
    return words


@pytest.fixture
def long_rows() -> torch.Tensor:
    """int64 [3, 2**25 + 2] (768 MiB): rows all ones, zeros, then ones but for bits
    0, 2**31 - 1, 2**31 and the last bit (the 2**31 boundary and the tail word)."""
    n_words = (BITS_OVER_2_31 + 63) // 64
    rows = torch.zeros(3, n_words, dtype=torch.int64)
    rows[0] = ones_row(BITS_OVER_2_31)
    rows[2] = rows[0]
    for bit in (0, 2**31 - 1, 2**31, BITS_OVER_2_31 - 1):
        rows[2, bit // 64] &= ~(1 << (bit % 64)) if bit % 64 != 63 else 2**63 - 1
    return rows


@pytest.mark.parametrize("isa", isa_params())
def test_rowwise_ops_on_rows_over_2_31_bits(long_rows, isa):
    n = BITS_OVER_2_31
    with backends.load("cpu").forced_isa(isa):
        assert fs.popcount(long_rows).tolist() == [n, 0, n - 4]
        other = long_rows[[1, 0, 0]]
        assert fs.hamming(long_rows, other).tolist() == [n, n, 4]
        assert fs.hamming_total(long_rows, other).item() == 2 * n + 4  # past 2**32
        assert fs.hamming_total(long_rows[:2], long_rows[1:]).item() == 2 * n - 4


def test_unpack_bits_of_a_row_over_2_31_bits(long_rows):
    bits = fs.unpack_bits(long_rows[2:], BITS_OVER_2_31)  # bool [1, 2**31 + 65]: 2 GiB
    assert bits.shape == (1, BITS_OVER_2_31)
    cleared = [0, 2**31 - 1, 2**31, BITS_OVER_2_31 - 1]
    assert not bits[0, cleared].any()
    assert bits[0, [1, 2**31 - 2, 2**31 + 1, BITS_OVER_2_31 - 2]].all()
    assert int(bits.count_nonzero()) == BITS_OVER_2_31 - 4


def test_count_regions_of_rows_over_2_31_bits(long_rows):
    codes = long_rows[[1, 0, 2, 0, 1]]
    unique, inverse, counts = fs.count_regions(codes)  # a sort in ops.cpp: no ISA kernels
    # Signed order, word 0 first: row 2 (word 0 = -2) < the all-ones row (-1) < zeros.
    assert torch.equal(unique, long_rows[[2, 0, 1]])
    assert inverse.tolist() == [2, 1, 0, 1, 2]
    assert counts.tolist() == [1, 2, 2]


def test_pack_signs_of_a_row_over_2_31_elements():
    x = torch.ones(BITS_OVER_2_31, dtype=torch.float16)  # 4 GiB
    for i, value in ((0, -1.0), (2**31 - 1, float("nan")), (2**31, 0.0), (2**31 + 1, -0.0), (BITS_OVER_2_31 - 1, -65504.0)):
        x[i] = value
    words = fs.pack_signs(x)
    assert words.shape == ((BITS_OVER_2_31 + 63) // 64,)
    assert fs.popcount(words).item() == BITS_OVER_2_31 - 5
    expected_tail = ones_row(BITS_OVER_2_31)
    expected_tail[0] ^= 1
    expected_tail[(2**31 - 1) // 64] ^= -(2**63)  # bit 63 of word 2**25 - 1
    expected_tail[2**31 // 64] ^= 0b11
    expected_tail[-1] = 0
    assert torch.equal(words, expected_tail)
    del x
    gc.collect()
    # The same length as a stride-0 view: no memory behind it, read element by element.
    view = torch.tensor([0.5], dtype=torch.float32).expand(BITS_OVER_2_31)
    assert torch.equal(fs.pack_signs(view, threshold=0.25), ones_row(BITS_OVER_2_31))
    assert fs.pack_signs(view, threshold=0.5).count_nonzero().item() == 0


@pytest.mark.parametrize("isa", isa_params())
def test_longest_codes_with_int32_distances(isa):
    n_bits = 64 * (2**25 - 1)  # 2**31 - 64: the longest code the int32 ops accept
    codes = torch.zeros(2, 2**25 - 1, dtype=torch.int64)  # 512 MiB
    codes[0] = -1
    # Each call repacks B into the ISA's lanes (8 rows per block on AVX-512: 2 GiB here),
    # so the ISA loop makes two calls; top-k (the same tiles) runs once.
    with backends.load("cpu").forced_isa(isa):
        assert fs.hamming_cdist(codes).tolist() == [[0, n_bits], [n_bits, 0]]
        i, j, d = fs.hamming_radius(codes, codes, n_bits - 1)
        assert i.tolist() == [0, 1] and j.tolist() == [0, 1] and d.tolist() == [0, 0]
    if isa == backends.load("cpu").isa():
        dist, index = fs.hamming_topk(codes, codes, 2)
        assert dist.tolist() == [[0, n_bits], [0, n_bits]] and index.tolist() == [[0, 1], [1, 0]]
        i, j, d = fs.hamming_radius(codes, codes, n_bits)
        assert i.tolist() == [0, 0, 1, 1] and d.tolist() == [0, n_bits, n_bits, 0]


def test_topk_and_radius_over_2_31_pairs():
    """a_i = i (i < 2**16), b_j = j (j < 2**15 + 8): 2**31 + 2**19 pairs, one word each.
    The nearest b of a_i is i itself when i < M, else i - 2**15 (bit 15 cleared) at distance 1."""
    n, m = 2**16, 2**15 + 8
    a = torch.arange(n, dtype=torch.int64).unsqueeze(1)
    b = torch.arange(m, dtype=torch.int64).unsqueeze(1)
    assert n * m > 2**31
    dist, index = fs.hamming_topk(a, b, 1)
    i = torch.arange(n)
    inside = i < m
    assert torch.equal(dist[:, 0], (~inside).to(torch.int32))
    assert torch.equal(index[:, 0], torch.where(inside, i, i - 2**15))
    ii, jj, dd = fs.hamming_radius(a, b, 0)
    assert torch.equal(ii, torch.arange(m)) and torch.equal(jj, torch.arange(m)) and dd.count_nonzero() == 0


def _popcount16(values: torch.Tensor) -> torch.Tensor:
    counts = torch.zeros_like(values)
    for bit in range(16):
        counts += (values >> bit) & 1
    return counts


def test_cdist_output_past_2_31_bytes():
    """a_i = i, b_j = j: d[i, j] = popcount(i ^ j); a 4 GiB int32 output (2**30 + 2**21 elements)."""
    n, m = 2**15, 2**15 + 64
    a = torch.arange(n, dtype=torch.int64).unsqueeze(1)
    b = torch.arange(m, dtype=torch.int64).unsqueeze(1)
    d = fs.hamming_cdist(a, b)
    assert d.shape == (n, m) and d.numel() * d.element_size() > 2**32
    # Per bit: rows with it set differ from the columns without it, and the reverse.
    bits = torch.arange(16)
    i, j = torch.arange(n), torch.arange(m)
    i_has = (i[:, None] >> bits) & 1  # [n, 16]
    j_has = (j[:, None] >> bits) & 1  # [m, 16]
    want_rows = torch.where(i_has == 1, m - j_has.sum(0), j_has.sum(0)).sum(1)
    want_cols = torch.where(j_has == 1, n - i_has.sum(0), i_has.sum(0)).sum(1)
    cols = torch.zeros(m, dtype=torch.int64)
    for start in range(0, n, 1024):  # int64 sums in chunks: no 8 GiB temporary
        chunk = d[start : start + 1024].to(torch.int64)
        assert torch.equal(chunk.sum(1), want_rows[start : start + 1024]), start
        cols += chunk.sum(0)
    assert torch.equal(cols, want_cols)
    # Full rows where the byte offset crosses 2**31 and 2**32, and the last row.
    for row in (2**31 // (4 * m), 2**31 // (4 * m) + 1, 2**32 // (4 * m) - 1, n - 1):
        assert torch.equal(d[row].to(torch.int64), _popcount16(row ^ j)), row


def test_bit_transpose_of_2_32_bits():
    """[2**21 codes, 2048 bits] <-> [2048, 2**21 bits]: 512 MiB each way; bit indices past 2**31."""
    rows, n_bits = 2**21, 2048
    gen = torch.Generator().manual_seed(7)
    words = torch.randint(-(2**63), 2**63 - 1, (rows, n_bits // 64), generator=gen, dtype=torch.int64)
    units = fs.bit_transpose(words, n_bits)
    assert units.shape == (n_bits, rows // 64)
    for s, u in ((0, 0), (rows - 1, n_bits - 1), (2**20 + 3, 1029), (12345, 2047), (rows - 64, 64)):
        bit = (int(words[s, u // 64]) >> (u % 64)) & 1
        assert (int(units[u, s // 64]) >> (s % 64)) & 1 == bit, (s, u)
    assert fs.popcount(units).sum() == fs.popcount(words).sum()
    back = fs.bit_transpose(units, rows)
    assert torch.equal(back, words)
