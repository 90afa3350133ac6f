"""Fuzz run: every op on every implementation, bit-exact (marker ``fuzz``, run by tests/fuzz.sh).

Each example is checked with exact equality against the numpy oracle (oracle.py)
and, off the reference backend, against the pure-torch reference too. Examples
are reproducible: each (op, implementation) has its own fixed seed and no example
database is used, so every CI run draws the same inputs. Counts per test are
``EXAMPLES[backend]`` (times ``FASTSPLINE_FUZZ_SCALE``); the counts actually run are
printed at the end of the session (conftest.py) and checked by tests/fuzz.sh.

Inputs lean to the edges: 0 rows, codes of 0/1/63/64/65/127/128/129... bits, row
counts around the 64-row blocks of bit_transpose, all-zero/all-one/sparse/dense
codes, near-duplicate rows (ties, radius hits), non-contiguous views (transposed,
stepped, offset) and stride-0 views (expanded rows or words), N-D leading shapes;
for pack_signs: NaN, +-0, +-inf, subnormals and extremes among the floats, the
packed dim anywhere and with any stride (0 included), thresholds equal to an
element or its float neighbours, +-inf, NaN, ints past 2**53 and fractions;
k = 1, M and k > M; radii equal to a distance present and one below it.
"""
from __future__ import annotations

import math
import os
import zlib
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, seed, settings
from hypothesis import strategies as st

import fastspline as fs
import oracle
from cases import FLOAT_DTYPES, noncontiguous_copy, pad_mask, random_floats, random_words

pytestmark = pytest.mark.fuzz

SCALE = float(os.environ.get("FASTSPLINE_FUZZ_SCALE", "1"))


def _cpu_examples(total: int = 900) -> int:
    """Examples per op for each instruction set of the cpu backend: ``total`` shared by
    the sets this CPU runs (300 each with AVX-512, 450 on an AVX2-only CPU), so every
    machine fuzzes the cpu backend as much and fuzz.sh's 10,000 holds without AVX-512."""
    try:
        from fastspline.backends import cpu
    except ImportError:  # no extension: the cpu cases skip
        return total
    return -(-total // max(1, len(cpu.supported_isas())))


# Examples per (op, implementation). Interpreted Triton runs ~1.7 ms per program instance.
EXAMPLES = {"cpu": _cpu_examples(), "reference": 150, "triton": 30, "cuda": 100}

EDGE_BITS = [0, 1, 2, 63, 64, 65, 127, 128, 129, 191, 192, 193, 256, 511, 512, 513]
EDGE_ROWS = [0, 1, 2, 3, 63, 64, 65]
n_bits_strategy = st.one_of(st.sampled_from(EDGE_BITS), st.integers(0, 700))
rows_strategy = st.one_of(st.sampled_from(EDGE_ROWS), st.integers(0, 70))
STYLES = ("random", "zeros", "ones", "sparse", "dense", "near")
LAYOUTS_2D = ("contiguous", "transposed", "strided", "offset_transposed", "expand_rows", "expand_words")
LAYOUTS_ND = ("contiguous", "permuted", "strided", "expand_lead", "expand_words")


def run(impl, op: str, counts, strategy, check) -> None:
    """Run ``check(impl, case)`` on ``EXAMPLES`` examples of ``strategy``, counting them."""
    name = str(impl)
    examples = max(1, round(EXAMPLES[impl.backend.split("@")[0]] * SCALE))  # cuda@sim: as cuda

    @seed(zlib.crc32(f"{op}/{name}".encode()))
    @settings(settings.get_profile("fuzz"), max_examples=examples)
    @given(strategy)
    def body(case) -> None:
        check(impl, case)
        counts[(op, name)] += 1

    body()


def same(got: torch.Tensor, want: np.ndarray | torch.Tensor) -> None:
    """Exact equality of values, shape and dtype."""
    want = torch.from_numpy(np.asarray(want)) if not isinstance(want, torch.Tensor) else want
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    assert got.shape == want.shape, (tuple(got.shape), tuple(want.shape))
    assert torch.equal(got, want)


def same_as_reference(impl, got, call) -> None:
    """``got`` equals ``call(backend="reference")`` element for element (skipped on the reference)."""
    if impl.backend == "reference":
        return
    want = call(backend="reference")
    if isinstance(got, tuple):
        assert len(got) == len(want)
        for g, w in zip(got, want):
            same(g, w)
    else:
        same(got, want)


# ---------------------------------------------------------------- code generation


def make_words(rows: int, n_bits: int, style: str, gen: torch.Generator, pool: torch.Tensor | None = None) -> torch.Tensor:
    """Contiguous int64 ``[rows, ceil(n_bits/64)]`` codes of one style, pad bits zero."""
    w = (n_bits + 63) // 64
    if style == "random" or n_bits == 0:
        return random_words(rows, n_bits, gen)
    if style == "near" and pool is not None and pool.shape[0] and rows:
        pick = torch.randint(0, pool.shape[0], (rows,), generator=gen)
        flips = torch.rand(rows, n_bits, generator=gen) < 1.5 / n_bits  # ~1.5 flipped bits per row
        bits = torch.from_numpy(oracle.unpack_bits(oracle.words_np(pool[pick]), n_bits)) ^ flips
        return torch.from_numpy(oracle.pack_bits(bits.numpy()).copy()).reshape(rows, w)
    p = {"zeros": 0.0, "ones": 1.0, "sparse": 0.03, "dense": 0.97, "near": 0.5}[style]
    bits = torch.rand(rows, n_bits, generator=gen) < p
    return torch.from_numpy(oracle.pack_bits(bits.numpy()).copy()).reshape(rows, w)


def view_2d(words: torch.Tensor, layout: str, n_bits: int) -> torch.Tensor:
    """A view with the given layout; ``expand_*`` change the values (rows or words repeated)."""
    n, w = words.shape
    if layout in ("transposed", "strided", "offset_transposed"):
        return noncontiguous_copy(words, layout)
    if layout == "expand_rows" and n > 0:
        return words[:1].expand(n, w)  # stride 0 over rows: every row is row 0
    if layout == "expand_words" and w > 0 and n_bits % 64 == 0:
        return words[:, :1].expand(n, w)  # stride 0 over words: no pad bits to spoil
    return words


def view_nd(words: torch.Tensor, lead: tuple[int, ...], layout: str, n_bits: int) -> torch.Tensor:
    """``words`` [prod(lead), W] as ``[*lead, W]`` in the given layout."""
    w = words.shape[-1]
    t = words.reshape(*lead, w)
    if layout == "permuted" and t.dim() >= 2:
        return t.transpose(0, -1).contiguous().transpose(0, -1)
    if layout == "strided" and t.numel() > 0:
        buf = torch.full([2 * s + 1 for s in t.shape], 0x5A5A5A5A5A5A5A5A, dtype=torch.int64)
        view = buf[tuple(slice(1, None, 2) for _ in t.shape)]
        view.copy_(t)
        return view
    if layout == "expand_lead" and lead and t.numel() > 0:
        return t.narrow(0, 0, 1).expand(t.shape)
    if layout == "expand_words" and w > 0 and n_bits % 64 == 0:
        return t.narrow(-1, 0, 1).expand(t.shape)
    return t


@st.composite
def code_matrices(draw, count: int, rows=rows_strategy, n_bits=n_bits_strategy):
    """(n_bits, [count 2-D code tensors]) sharing a pool of near-duplicate bases."""
    bits = draw(n_bits, label="n_bits")
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**63 - 1), label="seed"))
    pool = random_words(draw(st.integers(1, 4), label="pool"), bits, gen)
    out = []
    for _ in range(count):
        style = draw(st.sampled_from(STYLES), label="style")
        layout = draw(st.sampled_from(LAYOUTS_2D), label="layout")
        words = make_words(draw(rows, label="rows"), bits, style, gen, pool)
        out.append(view_2d(words, layout, bits))
    return bits, out


@st.composite
def code_arrays(draw, count: int):
    """(n_bits, [count code tensors of one N-D shape [*lead, W]]), 0 to 3 leading dims."""
    bits = draw(n_bits_strategy, label="n_bits")
    lead = tuple(draw(st.lists(st.sampled_from([0, 1, 2, 3, 5, 64, 65]), max_size=3), label="lead"))
    if math.prod(lead) > 2000:
        lead = lead[:1]
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**63 - 1), label="seed"))
    pool = random_words(2, bits, gen)
    out = []
    for _ in range(count):
        style = draw(st.sampled_from(STYLES), label="style")
        layout = draw(st.sampled_from(LAYOUTS_ND), label="layout")
        words = make_words(math.prod(lead), bits, style, gen, pool)
        out.append(view_nd(words, lead, layout, bits))
    return bits, out


# ---------------------------------------------------------------- floats for pack_signs

SPECIAL_THRESHOLDS = [
    0.0, -0.0, 0.5, -1.0, 1e-40, -1e-45, 65504.0, 65520.0, 3.4e38, 1e300,
    math.inf, -math.inf, math.nan, 2**60 + 1, -(2**60) - 1, Fraction(1, 3), Fraction(-7, 10**50),
    np.float32(0.1), np.float16(-0.5),
]


@st.composite
def pack_cases(draw):
    """(x, dim, threshold): x float of any dtype, rank 1-3, any layout."""
    dtype = draw(st.sampled_from(FLOAT_DTYPES), label="dtype")
    n = draw(n_bits_strategy, label="n")
    lead = draw(st.lists(st.sampled_from([0, 1, 2, 3, 7, 64, 65]), max_size=2), label="lead")
    if math.prod(lead) * n > 40000:
        lead = lead[:1] if lead and lead[0] * n <= 40000 else []
    threshold_kind = draw(st.sampled_from(["special", "float", "element", "above", "below"]), label="threshold_kind")
    threshold: object = draw(st.sampled_from(SPECIAL_THRESHOLDS)) if threshold_kind == "special" else 0.0
    if threshold_kind == "float":
        threshold = draw(st.floats(allow_nan=False), label="threshold")
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**63 - 1), label="seed"))
    special = draw(st.sampled_from([0.0, 0.1, 0.5, 1.0]), label="special_fraction")
    center = float(threshold) if isinstance(threshold, (int, float)) and not isinstance(threshold, Fraction) else 0.0
    shape = (*lead, n)
    x = random_floats(shape, dtype, center if math.isfinite(center) else 0.0, gen, special)
    if threshold_kind in ("element", "above", "below") and x.numel():
        value = float(x.reshape(-1)[int(torch.randint(0, x.numel(), (), generator=gen))])
        if value != value:
            value = 0.0
        if threshold_kind != "element" and math.isfinite(value):
            value = math.nextafter(value, math.inf if threshold_kind == "above" else -math.inf)
        threshold = value
    # Move the packed dim somewhere, then pick a layout for the whole tensor.
    dim = draw(st.integers(0, len(shape) - 1), label="dim")
    x = x.movedim(-1, dim)
    layout = draw(st.sampled_from(["contiguous", "packed_strided", "stepped", "expand_packed", "expand_lead"]), label="layout")
    if layout == "packed_strided":  # the packed dim innermost in memory no longer
        x = x.movedim(dim, 0).contiguous().movedim(0, dim) if x.dim() > 1 else x
    elif layout == "stepped" and x.numel():
        buf = torch.zeros([2 * s for s in x.shape], dtype=dtype)
        view = buf[tuple(slice(None, None, 2) for _ in x.shape)]
        view.copy_(x)
        x = view
    elif layout == "expand_packed" and x.numel():
        x = x.narrow(dim, 0, 1).expand(x.shape)  # stride 0 along the packed dim
    elif layout == "expand_lead" and x.dim() > 1 and x.numel():
        other = 0 if dim != 0 else 1
        x = x.narrow(other, 0, 1).expand(x.shape)
    negative_dim = draw(st.booleans(), label="negative_dim")
    return x, dim - x.dim() if negative_dim else dim, threshold


def exact_greater(x: np.ndarray, threshold: object) -> np.ndarray:
    """``x > threshold`` for float64 ``x`` and a real threshold, compared as exact
    rationals (Fractions), NaN entries False: independent of any float rounding."""
    if isinstance(threshold, float) and math.isnan(threshold):
        return np.zeros(x.shape, dtype=bool)
    if not isinstance(threshold, Fraction) and math.isinf(float(threshold)):
        with np.errstate(invalid="ignore"):
            return x > float(threshold)
    t = Fraction(float(threshold)) if isinstance(threshold, np.floating) else Fraction(threshold)
    values = np.unique(x[~np.isnan(x)])
    above = np.array([v > 0 if math.isinf(v) else Fraction(float(v)) > t for v in values], dtype=bool)
    out = np.zeros(x.shape, dtype=bool)
    known = ~np.isnan(x)
    out[known] = above[np.searchsorted(values, x[known])]
    return out


# ---------------------------------------------------------------- one test per op


def test_fuzz_pack_signs(impl, fuzz_counts):
    def check(impl, case):
        x, dim, threshold = case
        got = fs.pack_signs(x, dim, threshold, backend=impl.backend)
        bits = exact_greater(oracle.floats_np(x), threshold)
        same(got, oracle.pack_bits(np.moveaxis(bits, dim, -1)))
        same_as_reference(impl, got, lambda **kw: fs.pack_signs(x, dim, threshold, **kw))
        # codes()' pack with its NaN check, on the same layout (the packed dim last).
        moved = x.movedim(dim, -1)
        words, nan = fs.ops._pack_signs_any_nan(moved, backend=impl.backend)
        same(words, fs.pack_signs(moved, backend="reference").numpy())
        assert bool(nan) == bool(np.isnan(oracle.floats_np(x)).any())

    run(impl, "pack_signs", fuzz_counts, pack_cases(), check)


def test_fuzz_unpack_bits(impl, fuzz_counts):
    def check(impl, case):
        n_bits, (words,) = case
        got = fs.unpack_bits(words, n_bits, backend=impl.backend)
        same(got, oracle.unpack_bits(oracle.words_np(words), n_bits))
        same_as_reference(impl, got, lambda **kw: fs.unpack_bits(words, n_bits, **kw))

    run(impl, "unpack_bits", fuzz_counts, code_arrays(1), check)


def test_fuzz_popcount(impl, fuzz_counts):
    def check(impl, case):
        _, (words,) = case
        got = fs.popcount(words, backend=impl.backend)
        same(got, oracle.popcount(oracle.words_np(words)))
        same_as_reference(impl, got, lambda **kw: fs.popcount(words, **kw))

    run(impl, "popcount", fuzz_counts, code_arrays(1), check)


def test_fuzz_hamming(impl, fuzz_counts):
    def check(impl, case):
        _, (a, b) = case
        got = fs.hamming(a, b, backend=impl.backend)
        same(got, oracle.hamming(oracle.words_np(a), oracle.words_np(b)))
        same_as_reference(impl, got, lambda **kw: fs.hamming(a, b, **kw))

    run(impl, "hamming", fuzz_counts, code_arrays(2), check)


def test_fuzz_hamming_total(impl, fuzz_counts):
    def check(impl, case):
        _, (a, b) = case
        got = fs.hamming_total(a, b, backend=impl.backend)
        same(got, oracle.hamming_total(oracle.words_np(a), oracle.words_np(b)))
        same_as_reference(impl, got, lambda **kw: fs.hamming_total(a, b, **kw))

    run(impl, "hamming_total", fuzz_counts, code_arrays(2), check)


@st.composite
def cdist_cases(draw):
    n_bits, (a, b) = draw(code_matrices(2))
    mode = draw(st.sampled_from(["pair", "self", "out"]), label="mode")
    return n_bits, a, b, mode


def test_fuzz_hamming_cdist(impl, fuzz_counts):
    def check(impl, case):
        _, a, b, mode = case
        if mode == "self":
            got = fs.hamming_cdist(a, backend=impl.backend)
            b = a
        elif mode == "out":  # a reused buffer full of garbage must be overwritten
            out = torch.full((a.shape[0], b.shape[0]), -7, dtype=torch.int32)
            got = fs.hamming_cdist(a, b, out=out, backend=impl.backend)
            assert got is out
        else:
            got = fs.hamming_cdist(a, b, backend=impl.backend)
        same(got, oracle.hamming_cdist(oracle.words_np(a), oracle.words_np(b)))
        same_as_reference(impl, got, lambda **kw: fs.hamming_cdist(a, b, **kw))

    run(impl, "hamming_cdist", fuzz_counts, cdist_cases(), check)


@st.composite
def topk_cases(draw):
    n_bits, (a, b) = draw(code_matrices(2))
    m = b.shape[0]
    kind = draw(st.sampled_from(["1", "M", "any", "over"]), label="k_kind")
    if kind == "over" or m == 0:
        k = m + draw(st.integers(1, 3), label="excess")  # k > rows: refused
    elif kind == "1":
        k = 1
    elif kind == "M":
        k = m
    else:
        k = draw(st.integers(1, m), label="k")
    return n_bits, a, b, k


def test_fuzz_hamming_topk(impl, fuzz_counts):
    def check(impl, case):
        _, a, b, k = case
        if k > b.shape[0]:
            with pytest.raises(ValueError, match="hamming_topk: k must be"):
                fs.hamming_topk(a, b, k, backend=impl.backend)
            return
        got = fs.hamming_topk(a, b, k, backend=impl.backend)
        want = oracle.hamming_topk(oracle.words_np(a), oracle.words_np(b), k)
        same(got[0], want[0])
        same(got[1], want[1])
        same_as_reference(impl, got, lambda **kw: fs.hamming_topk(a, b, k, **kw))

    run(impl, "hamming_topk", fuzz_counts, topk_cases(), check)


@st.composite
def radius_cases(draw):
    n_bits, (a, b) = draw(code_matrices(2))
    kind = draw(st.sampled_from(["zero", "present", "below_present", "n_bits", "beyond", "huge"]), label="r_kind")
    d = oracle.hamming_cdist(oracle.words_np(a), oracle.words_np(b))
    present = int(d.flat[draw(st.integers(0, d.size - 1), label="pair")]) if d.size else 0
    r = {
        "zero": 0,
        "present": present,
        "below_present": max(0, present - 1),
        "n_bits": n_bits,
        "beyond": n_bits + 1,
        "huge": 2**40,
    }[kind]
    return n_bits, a, b, r, d


def test_fuzz_hamming_radius(impl, fuzz_counts):
    def check(impl, case):
        _, a, b, r, d = case
        got = fs.hamming_radius(a, b, r, backend=impl.backend)
        want = oracle.hamming_radius(oracle.words_np(a), oracle.words_np(b), r, d)
        for g, w in zip(got, want):
            same(g, w)
        same_as_reference(impl, got, lambda **kw: fs.hamming_radius(a, b, r, **kw))

    run(impl, "hamming_radius", fuzz_counts, radius_cases(), check)


BIT_TRANSPOSE_ROWS = st.one_of(st.sampled_from([0, 1, 63, 64, 65, 127, 128, 129, 192]), st.integers(0, 200))


def test_fuzz_bit_transpose(impl, fuzz_counts):
    def check(impl, case):
        n_bits, (words,) = case
        got = fs.bit_transpose(words, n_bits, backend=impl.backend)
        same(got, oracle.bit_transpose(oracle.words_np(words), n_bits))
        same_as_reference(impl, got, lambda **kw: fs.bit_transpose(words, n_bits, **kw))

    strategy = code_matrices(1, rows=BIT_TRANSPOSE_ROWS, n_bits=st.one_of(st.sampled_from(EDGE_BITS), st.integers(0, 300)))
    run(impl, "bit_transpose", fuzz_counts, strategy, check)


def test_fuzz_count_regions(impl, fuzz_counts):
    def check(impl, case):
        _, (codes,) = case
        got = fs.count_regions(codes, backend=impl.backend)
        want = oracle.count_regions(oracle.words_np(codes))
        if codes.shape[0] and codes.shape[1] == 0:  # every row is the one empty code
            want = (np.zeros((1, 0), dtype=np.int64), want[1], np.array([codes.shape[0]], dtype=np.int64))
        for g, w in zip(got, want):
            same(g, w)
        same_as_reference(impl, got, lambda **kw: fs.count_regions(codes, **kw))

    run(impl, "count_regions", fuzz_counts, code_matrices(1), check)


def test_pad_mask_helper_matches_oracle():
    """The generators keep pad bits zero (a broken pad mask would void the fuzz run)."""
    gen = torch.Generator().manual_seed(1)
    for n_bits in EDGE_BITS:
        for style in STYLES:
            words = make_words(9, n_bits, style, gen, random_words(2, n_bits, gen))
            assert oracle.pad_bits_are_zero(oracle.words_np(words), n_bits), (n_bits, style)
    assert pad_mask(64) == -1
