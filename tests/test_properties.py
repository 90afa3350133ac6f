"""Hypothesis properties of the ops, on every backend and ISA (the ``impl`` fixture).

Codes are drawn word by word from the full int64 range (hypothesis favours the
edges: 0, -1, INT64_MIN, INT64_MAX) and rows are picked from a small pool so
that duplicates and ties are common. Examples per test come from the
hypothesis profile (``HYPOTHESIS_PROFILE=dev|ci``, see conftest.py).
"""
from __future__ import annotations

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st

import fastspline as fs
from cases import INT64_MAX, INT64_MIN, pad_mask

MAX_BITS = 200
MAX_ROWS = 10

words_strategy = st.one_of(
    st.integers(INT64_MIN, INT64_MAX),
    st.sampled_from([0, -1, 1, INT64_MIN, INT64_MAX, 0x5555555555555555]),
)


def _row(draw, n_bits: int) -> list[int]:
    w = (n_bits + 63) // 64
    row = draw(st.lists(words_strategy, min_size=w, max_size=w))
    if w:
        row[-1] &= pad_mask(n_bits)
    return row


def _rows(draw, n_bits: int, pool: list[list[int]], min_rows: int = 0) -> torch.Tensor:
    """Rows that are pool members (duplicates) or fresh codes."""
    w = (n_bits + 63) // 64
    choices = draw(
        st.lists(st.integers(-1, len(pool) - 1), min_size=min_rows, max_size=MAX_ROWS)
    )
    rows = [pool[c] if c >= 0 else _row(draw, n_bits) for c in choices]
    return torch.tensor(rows, dtype=torch.int64).reshape(len(rows), w)


@st.composite
def code_sets(draw, count: int, min_rows: int = 0, max_bits: int = MAX_BITS):
    """(n_bits, [count tensors of codes with n_bits bits])."""
    n_bits = draw(st.integers(0, max_bits))
    pool = [_row(draw, n_bits) for _ in range(draw(st.integers(1, 3)))]
    return n_bits, [_rows(draw, n_bits, pool, min_rows) for _ in range(count)]


# ---------------------------------------------------------------- metric properties


@given(code_sets(2))
def test_cdist_symmetric(impl, data):
    _, (a, b) = data
    ab = fs.hamming_cdist(a, b, backend=impl.backend)
    ba = fs.hamming_cdist(b, a, backend=impl.backend)
    assert torch.equal(ab, ba.t())
    aa = fs.hamming_cdist(a, backend=impl.backend)
    assert torch.equal(aa, aa.t())


@given(code_sets(1))
def test_distance_to_self_is_zero(impl, data):
    _, (a,) = data
    assert torch.equal(fs.hamming(a, a, backend=impl.backend), torch.zeros(a.shape[0], dtype=torch.int64))
    assert fs.hamming_total(a, a, backend=impl.backend).item() == 0
    d = fs.hamming_cdist(a, backend=impl.backend)
    assert torch.equal(d.diagonal(), torch.zeros(a.shape[0], dtype=torch.int32))
    # Distinct rows are at distance > 0: zero exactly where the codes are equal.
    same = (a[:, None, :] == a[None, :, :]).all(dim=-1)
    assert torch.equal(d == 0, same)


@given(code_sets(3))
def test_triangle_inequality(impl, data):
    _, (a, b, c) = data
    ab = fs.hamming_cdist(a, b, backend=impl.backend).to(torch.int64)
    bc = fs.hamming_cdist(b, c, backend=impl.backend).to(torch.int64)
    ac = fs.hamming_cdist(a, c, backend=impl.backend).to(torch.int64)
    # d(a_i, c_k) <= d(a_i, b_j) + d(b_j, c_k) for every j
    assert bool((ac[:, None, :] <= ab[:, :, None] + bc[None, :, :]).all())


@given(code_sets(2))
def test_distances_within_code_length(impl, data):
    n_bits, (a, b) = data
    d = fs.hamming_cdist(a, b, backend=impl.backend)
    assert bool(((d >= 0) & (d <= n_bits)).all())
    counts = fs.popcount(a, backend=impl.backend)
    assert bool(((counts >= 0) & (counts <= n_bits)).all())


@given(code_sets(2))
def test_cdist_agrees_with_rowwise_ops(impl, data):
    """cdist[i, j] == hamming(a[i], b[j]) == popcount(a[i] ^ b[j])."""
    _, (a, b) = data
    d = fs.hamming_cdist(a, b, backend=impl.backend)
    n, m = d.shape
    a_rep = a.repeat_interleave(m, dim=0)
    b_rep = b.repeat(n, 1)
    rowwise = fs.hamming(a_rep, b_rep, backend=impl.backend)
    assert torch.equal(d.reshape(-1).to(torch.int64), rowwise)
    assert torch.equal(fs.popcount(a_rep ^ b_rep, backend=impl.backend), rowwise)


@given(code_sets(2))
def test_hamming_total_is_sum_of_hamming(impl, data):
    _, (a, b) = data
    rows = min(a.shape[0], b.shape[0])
    a, b = a[:rows], b[:rows]
    total = fs.hamming_total(a, b, backend=impl.backend)
    assert total.dtype == torch.int64 and total.shape == ()
    assert total.item() == fs.hamming(a, b, backend=impl.backend).sum().item()


@given(code_sets(1))
def test_popcount_counts_unpacked_bits(impl, data):
    n_bits, (a,) = data
    bits = fs.unpack_bits(a, n_bits, backend=impl.backend)
    assert torch.equal(fs.popcount(a, backend=impl.backend), bits.sum(dim=-1))


# ---------------------------------------------------------------- search ops


@given(code_sets(2, min_rows=1), st.data())
def test_topk_is_prefix_of_stable_sort(impl, data, draw):
    _, (a, b) = data
    k = draw.draw(st.integers(1, b.shape[0]), label="k")
    dist, index = fs.hamming_topk(a, b, k, backend=impl.backend)
    d = fs.hamming_cdist(a, b, backend=impl.backend)
    values, order = torch.sort(d, dim=1, stable=True)
    assert torch.equal(dist, values[:, :k])
    assert torch.equal(index, order[:, :k])


@given(code_sets(2), st.data())
def test_radius_is_filtered_cdist(impl, data, draw):
    n_bits, (a, b) = data
    r = draw.draw(st.integers(0, n_bits + 70), label="r")
    i, j, dist = fs.hamming_radius(a, b, r, backend=impl.backend)
    d = fs.hamming_cdist(a, b, backend=impl.backend)
    want_i, want_j = torch.nonzero(d <= r, as_tuple=True)
    assert torch.equal(i, want_i) and torch.equal(j, want_j)
    assert torch.equal(dist, d[want_i, want_j])


# ---------------------------------------------------------------- layout


@given(code_sets(1))
def test_unpack_pack_round_trip(impl, data):
    """words -> bits -> floats -> pack_signs(threshold 0.5) gives the words back."""
    n_bits, (a,) = data
    bits = fs.unpack_bits(a, n_bits, backend=impl.backend)
    assert torch.equal(fs.pack_signs(bits.to(torch.float32), threshold=0.5, backend=impl.backend), a)


FLOAT_WIDTHS = {torch.float16: 16, torch.float32: 32, torch.float64: 64, torch.bfloat16: 32}


@given(
    st.sampled_from(list(FLOAT_WIDTHS)),
    st.integers(0, 3),
    st.data(),
)
def test_pack_unpack_round_trip(impl, dtype, rows, draw):
    """pack_signs then unpack_bits gives back x > threshold (compared in float64)."""
    n = draw.draw(st.integers(0, 140), label="n")
    values = draw.draw(
        st.lists(st.floats(width=FLOAT_WIDTHS[dtype]), min_size=rows * n, max_size=rows * n), label="x"
    )
    threshold = draw.draw(st.floats(allow_nan=False) | st.sampled_from([0.0, -0.0]), label="threshold")
    x = torch.tensor(values, dtype=torch.float64).to(dtype).reshape(rows, n)
    packed = fs.pack_signs(x, threshold=threshold, backend=impl.backend)
    assert packed.shape == (rows, (n + 63) // 64)
    with np.errstate(invalid="ignore"):
        want = torch.from_numpy(x.to(torch.float64).numpy() > threshold)
    assert torch.equal(fs.unpack_bits(packed, n, backend=impl.backend), want)


@given(code_sets(1))
def test_bit_transpose_twice_is_identity(impl, data):
    n_bits, (a,) = data
    rows = a.shape[0]
    once = fs.bit_transpose(a, n_bits, backend=impl.backend)
    assert once.shape == (n_bits, (rows + 63) // 64)
    twice = fs.bit_transpose(once, rows, backend=impl.backend)
    assert torch.equal(twice, a)
    # and bit u of row s is bit s of row u
    assert torch.equal(
        fs.unpack_bits(once, rows, backend=impl.backend), fs.unpack_bits(a, n_bits, backend=impl.backend).t()
    )


@given(code_sets(1))
def test_count_regions_partitions_rows(impl, data):
    _, (codes,) = data
    unique, inverse, counts = fs.count_regions(codes, backend=impl.backend)
    assert torch.equal(unique[inverse], codes)
    assert torch.equal(counts, torch.bincount(inverse, minlength=unique.shape[0]))
    rows = [tuple(r) for r in unique.tolist()]
    assert rows == sorted(set(rows))  # strictly increasing: distinct and signed-lexicographic
    assert len(rows) == len({tuple(r) for r in codes.tolist()})
