"""Every op on every backend and ISA, bit-exact against the reference backend
and the independent numpy oracle (``tests/oracle.py``), never a tolerance.

Data is dense random codes over the full int64 range (negative words, bit 63
set) plus near-duplicates, so that an implementation that returns zeros,
ignores a word, a tail or the sign bit, or breaks ties the wrong way fails.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction

import numpy as np
import pytest
import torch

import fastspline as fs
import oracle
from oracle import n_words
from cases import (
    FLOAT_DTYPES,
    INT64_MAX,
    INT64_MIN,
    NONCONTIGUOUS_LAYOUTS,
    dtype_neighbors,
    make_gen,
    near_copies,
    noncontiguous_copy,
    random_floats,
    random_words,
)

N_BITS = (1, 63, 64, 65, 127, 129, 1000)
N_BITS_WITH_ZERO = (0, *N_BITS)
ROWS = (0, 1, 1031)
CPU = torch.device("cpu")


# ---------------------------------------------------------------- helpers


def as_tensor(expected: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(expected))  # a copy; keeps 0-d arrays 0-d


def _assert_matches(got: torch.Tensor, expected: np.ndarray, what: str) -> None:
    """Same dtype, shape, device and bits as the oracle's answer."""
    want = as_tensor(expected)
    assert isinstance(got, torch.Tensor), f"{what}: got {type(got).__name__}"
    assert got.device == CPU, f"{what}: device {got.device}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype}, oracle {want.dtype}"
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)}, oracle {tuple(want.shape)}"
    assert torch.equal(got, want), f"{what}: differs from the numpy oracle at {_first_diff(got, want)}"


def _first_diff(got: torch.Tensor, want: torch.Tensor) -> str:
    diff = (got != want).nonzero()
    if diff.numel() == 0:
        return "no element (shapes/dtypes differ)"
    index = tuple(diff[0].tolist())
    return f"{index}: got {got[index].item()}, want {want[index].item()} ({diff.shape[0]} elements differ)"


def assert_exact(got: torch.Tensor, reference, expected: np.ndarray, what: str = "") -> None:
    """``got`` equals the numpy oracle, then the reference backend's answer
    (``reference()``, run only now so that a backend is judged by the oracle even
    where the reference itself fails) equals it too: bit-exact to both."""
    _assert_matches(got, expected, what)
    ref = reference()
    _assert_matches(ref, expected, f"{what} (reference backend)")
    assert torch.equal(got, ref)


def assert_exact_tuple(got, reference, expected, what: str = "") -> None:
    assert isinstance(got, tuple) and len(got) == len(expected), f"{what}: got {type(got).__name__}"
    for position, (g, e) in enumerate(zip(got, expected)):
        _assert_matches(g, e, f"{what}[{position}]")
    ref = reference()
    assert isinstance(ref, tuple) and len(ref) == len(expected), f"{what}: reference gave {type(ref).__name__}"
    for position, (g, r, e) in enumerate(zip(got, ref, expected)):
        _assert_matches(r, e, f"{what}[{position}] (reference backend)")
        assert torch.equal(g, r)


def call(op, impl, *args, **kwargs):
    """Run ``op`` on ``impl`` (checking that its inputs are left unchanged);
    returns the result and a thunk that runs the same call on the reference."""
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    before = [t.clone() for t in tensors]
    got = op(*args, backend=impl.backend, **kwargs)
    for t, saved in zip(tensors, before):
        assert _same_bits(t, saved), f"{op.__name__} on {impl} modified its input"
    return got, lambda: op(*args, backend="reference", **kwargs)


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise equality (NaN payloads and -0.0 included, where torch.equal says NaN != NaN)."""
    if a.is_floating_point():
        as_int = {2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
        a, b = a.view(as_int), b.view(as_int)
    return a.shape == b.shape and torch.equal(a, b)


# ---------------------------------------------------------------- the oracle itself


def test_oracle_layout_matches_docstring():
    """Bit j of word w is element 64*w + j, least-significant first; bit 63 is the sign."""
    for position in (0, 1, 62, 63, 64, 65, 127, 128):
        bits = np.zeros(130, dtype=bool)
        bits[position] = True
        words = oracle.pack_bits(bits)
        want = np.zeros(3, dtype=np.int64)
        word, offset = divmod(position, 64)
        want[word] = np.int64(-(2**63)) if offset == 63 else np.int64(1 << offset)
        np.testing.assert_array_equal(words, want)
        np.testing.assert_array_equal(oracle.unpack_bits(words, 130), bits)


def test_oracle_unique_orders_rows_as_signed_words():
    """np.unique(axis=0) must sort rows lexicographically with signed int64 words,
    word 0 first (the order ops.count_regions documents)."""
    values = [INT64_MIN, -(2**62), -1, 0, 1, 2**62, INT64_MAX]
    rng = np.random.default_rng(7)
    codes = rng.choice(np.array(values, dtype=np.int64), size=(300, 3))
    unique, inverse, counts = oracle.count_regions(codes)
    want = sorted(set(map(tuple, codes.tolist())))
    assert [tuple(row) for row in unique.tolist()] == want
    np.testing.assert_array_equal(unique[inverse], codes)
    np.testing.assert_array_equal(counts, np.bincount(inverse, minlength=len(want)))


def test_oracle_bfloat16_conversion_is_exact():
    x = torch.tensor([1.0, -0.0, float("inf"), float("nan"), 3.0e38, 9.2e-41, 0.30078125], dtype=torch.bfloat16)
    got = oracle.floats_np(x)
    want = x.to(torch.float64).numpy()
    np.testing.assert_array_equal(got, want)  # NaN == NaN in assert_array_equal
    assert np.signbit(got[1])


# ---------------------------------------------------------------- pack_signs

PACK_SHAPE = (5, 67, 3, 9)


@pytest.mark.parametrize("threshold", [0.0, 0.3, -0.7])
@pytest.mark.parametrize("dim", [0, 1, 2, 3, -1, -4])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_pack_signs_each_dim(impl, dtype, dim, threshold):
    """Packing every dim of a 4-D tensor: the packed dim is contiguous (dim 3) or strided."""
    x = random_floats(PACK_SHAPE, dtype, threshold, make_gen("pack4d", dtype, dim, threshold))
    got, reference = call(fs.pack_signs, impl, x, dim, threshold)
    n = PACK_SHAPE[dim]
    expected = oracle.pack_signs(oracle.floats_np(x), dim, threshold)
    others = [s for axis, s in enumerate(PACK_SHAPE) if axis != dim % 4]
    assert expected.shape == (*others, n_words(n))
    assert_exact(got, reference, expected, f"pack_signs dim={dim}")
    assert oracle.pad_bits_are_zero(got.numpy(), n)
    # Density: neither all-zero nor all-one, so a constant output cannot pass.
    density = oracle.popcount(expected).sum() / max(1, expected.size // n_words(n) * n)
    assert 0.2 < density < 0.8


@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("n", N_BITS_WITH_ZERO)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_pack_signs_sizes(impl, dtype, n, rows):
    """Word-aligned sizes and tails: n in {0, 1, 63, 64, 65, 127, 129, 1000}."""
    x = random_floats((rows, n), dtype, 0.0, make_gen("pack_sizes", dtype, n, rows))
    got, reference = call(fs.pack_signs, impl, x)
    assert_exact(got, reference, oracle.pack_signs(oracle.floats_np(x), -1, 0.0), f"pack_signs n={n} rows={rows}")
    assert oracle.pad_bits_are_zero(got.numpy(), n)


def _noncontiguous_floats(layout: str, dtype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
    if layout == "permuted":  # [5, 7, 130] with the last dim of stride 5
        x = random_floats((7, 130, 5), dtype, 0.3, gen).permute(2, 0, 1)
    elif layout == "sliced":  # every other row and element, storage offset 1
        x = random_floats((11, 270), dtype, 0.3, gen)[::2, 1::2]
    elif layout == "transposed":  # column-major [6, 130]
        x = random_floats((130, 6), dtype, 0.3, gen).t()
    elif layout == "expanded_rows":  # stride 0 across rows
        x = random_floats((1, 130), dtype, 0.3, gen).expand(6, 130)
    elif layout == "expanded_packed":  # stride 0 along the packed dim: rows are all 0 or all 1
        x = random_floats((6, 1), dtype, 0.3, gen).expand(6, 130)
    elif layout == "sliced_3d":  # slices in every dim of a 3-D tensor
        x = random_floats((9, 8, 260), dtype, 0.3, gen)[1::2, ::3, ::2]
    else:
        raise ValueError(layout)
    assert not x.is_contiguous()
    return x


@pytest.mark.parametrize("dim", [-1, 0])
@pytest.mark.parametrize(
    "layout", ["permuted", "sliced", "transposed", "expanded_rows", "expanded_packed", "sliced_3d"]
)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_pack_signs_noncontiguous(impl, dtype, layout, dim):
    x = _noncontiguous_floats(layout, dtype, make_gen("pack_noncontig", dtype, layout))
    got, reference = call(fs.pack_signs, impl, x, dim, 0.3)
    expected = oracle.pack_signs(oracle.floats_np(x.contiguous()), dim, 0.3)
    assert_exact(got, reference, expected, f"pack_signs {layout} dim={dim}")
    assert oracle.pad_bits_are_zero(got.numpy(), x.shape[dim])


def _nan_cases(dtype: torch.dtype, gen: torch.Generator) -> list[tuple[str, torch.Tensor, Callable]]:
    """(name, base, view) covering every pack path, packed along the view's last dim: rows of
    whole words and tails, short rows back to back (one bit stream), a transposed view (64x64
    bit blocks), general strides, and a view whose neighbouring memory holds NaN."""
    def floats(*shape: int) -> torch.Tensor:
        x = random_floats(shape, dtype, 0.0, gen)  # with infinities, zeros, subnormals...
        x[torch.isnan(x)] = math.inf  # ...but no NaN
        return x

    padded = floats(7, 300)
    padded[:, 201:] = math.nan  # outside the view
    same = lambda x: x  # noqa: E731
    return [
        ("rows", floats(9, 1000), same), ("tail", floats(5, 65), same), ("one", floats(1, 1), same),
        ("short", floats(300, 37), same), ("long_stream", floats(9000, 5), same),
        ("transposed", floats(200, 70), lambda x: x.t()), ("strided", floats(40, 330), lambda x: x[::3, ::2]),
        ("view_beside_nan", padded, lambda x: x[:, :201]),
    ]


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_pack_signs_any_nan(impl, dtype):
    """codes()' pack with a NaN check: the same words as pack_signs, and True exactly when
    some element of the view (not of the memory around it) is NaN, wherever it is."""
    for name, base, view in _nan_cases(dtype, make_gen("pack_nan", dtype)):
        x = view(base)
        words, nan = fs.ops._pack_signs_any_nan(x, backend=impl.backend)
        assert torch.equal(words, fs.pack_signs(x, backend="reference")) and not bool(nan), name
        last_row, last_col = x.shape[0] - 1, x.shape[1] - 1
        for row, col in sorted({(0, 0), (last_row, last_col), (last_row // 2, last_col // 2), (last_row, 0)}):
            for value in (math.nan, -math.nan):
                y = view(base.clone())
                y[row, col] = value
                words, nan = fs.ops._pack_signs_any_nan(y, backend=impl.backend)
                assert bool(nan), (name, row, col, value)
                assert torch.equal(words, fs.pack_signs(y, backend="reference")), (name, row, col)
        assert torch.isinf(x).any() or name == "one"  # infinities are not NaN (checked above)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_pack_signs_any_nan_at_every_position(impl, dtype):
    """Every SIMD lane and tail position: a NaN at each index of 130-element rows."""
    x = torch.ones(2, 130, dtype=dtype)
    for i in range(130):
        y = x.clone()
        y[1, i] = math.nan
        assert bool(fs.ops._pack_signs_any_nan(y, backend=impl.backend)[1]), i
        assert bool(fs.ops._pack_signs_any_nan(y[:, : i + 1], backend=impl.backend)[1]), i
        assert not bool(fs.ops._pack_signs_any_nan(y[:, :i], backend=impl.backend)[1]), i


def test_pack_signs_any_nan_reads_16_bit_nan_bits(impl):
    """float16 / bfloat16 NaN by their bits: every mantissa pattern above infinity, either sign."""
    for dtype, inf_bits in ((torch.float16, 0x7C00), (torch.bfloat16, 0x7F80)):
        for bits in (inf_bits, inf_bits + 1, inf_bits | 0x0200, 0x7FFF, inf_bits | 0x8000, 0xFFFF):
            x = torch.zeros(3, 70, dtype=torch.int16)
            x[1, 69] = bits - 0x10000 if bits >= 0x8000 else bits
            nan = bool(fs.ops._pack_signs_any_nan(x.view(dtype), backend=impl.backend)[1])
            assert nan == ((bits & 0x7FFF) > inf_bits), (dtype, hex(bits))


@pytest.mark.parametrize(
    "threshold",
    [-0.0, 0.1, 1e-3, 2.5, 65504.0, 1e5, -1e5, 1e39, -1e39, 5e-324, -5e-324, math.inf, -math.inf, math.nan],
    ids=repr,
)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_pack_signs_thresholds(impl, dtype, threshold):
    """Thresholds past the dtype's range, subnormal, infinite, NaN, negative zero."""
    x = random_floats((4, 200), dtype, threshold, make_gen("pack_thresholds", dtype, threshold), special_fraction=0.5)
    got, reference = call(fs.pack_signs, impl, x, -1, threshold)
    assert_exact(got, reference, oracle.pack_signs(oracle.floats_np(x), -1, threshold), f"threshold={threshold!r}")


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_pack_signs_threshold_is_not_rounded_to_dtype(impl, dtype):
    """x > threshold as real numbers: with v representable in x.dtype, a threshold
    just below v (in float64) must set the bit, v itself and just above must not.
    Rounding the threshold to x.dtype (or to float32) would turn the first into v."""
    targets = [0.1, 0.3, -0.7, 1.0, 1e-3, -2.5, 1000.1]
    values = sorted({v for t in targets for v in dtype_neighbors(t, dtype, radius=1)})
    x = torch.tensor(values, dtype=torch.float64).to(dtype)
    assert x.to(torch.float64).tolist() == values  # every value is exact in dtype
    for v in values:
        below = float(np.nextafter(v, -np.inf))
        above = float(np.nextafter(v, np.inf))
        for threshold in (below, v, above):
            got, reference = call(fs.pack_signs, impl, x, -1, threshold)
            want_bits = np.array([value > threshold for value in values])  # Python float comparison: exact
            expected = oracle.pack_bits(want_bits)
            assert_exact(got, reference, expected, f"{dtype} v={v!r} threshold={threshold!r}")
        # The case that catches rounding: the element equal to v is set for `below` only.
        position = values.index(v)
        assert oracle.unpack_bits(fs.pack_signs(x, -1, below, backend=impl.backend).numpy(), len(values))[position]


# Subnormal bit patterns of each dtype (float16's all become normal float32, so no
# compare in the kernels ever sees them subnormal; they are here for completeness).
_SUBNORMAL_BITS = {
    torch.float32: (torch.int32, [1, 0x7FFFFF]),
    torch.float64: (torch.int64, [1, 0xFFFFFFFFFFFFF]),
    torch.float16: (torch.int16, [1, 0x3FF]),
    torch.bfloat16: (torch.int16, [1, 0x7F]),
}


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_pack_signs_exact_under_flush_denormal(impl, dtype, threads):
    """torch.set_flush_denormal(True) sets MXCSR.DAZ on the calling thread only: SSE/AVX
    compares then read subnormals (and a subnormal float32 threshold) as 0. The cpu kernels
    still compare exactly, on the caller and on OpenMP workers alike (they gave 0 for
    positive subnormals on the caller, 1 on workers), and leave the caller's DAZ set.
    The reference backend is torch's own compare, which DAZ changes: cpu backends only."""
    if impl.backend != "cpu":
        pytest.skip("exactness under DAZ is the cpu kernels' (torch's own compares flush)")
    int_dtype, patterns = _SUBNORMAL_BITS[dtype]
    positive = torch.tensor(patterns, dtype=int_dtype).view(dtype)
    zero = torch.zeros(1, dtype=dtype)
    values = torch.cat([positive, -positive, zero, -zero])  # +tiny, +largest subnormal, negatives, +-0
    # rows (one contiguous word each, and short rows packed as one bit stream), a transposed view
    # and general strides: every pack path, on enough rows for several tasks per thread
    x = values.repeat(4096, 11)[:, :64].contiguous()  # [4096, 64]
    views = [x, x.view(-1, 4), x[:, :4], x.t()[:, :100], x[:, ::3], x[::2].t()[::2]]
    smallest = float(positive[0].to(torch.float64))
    thresholds = (0.0, smallest / 2, -smallest / 2, -1e-300, 1e-300, -5e-324, 5e-324)
    # The expected bits, computed before DAZ is on (it would flush numpy's compares too).
    cases = [
        (view, threshold, as_tensor(oracle.pack_bits(view.to(torch.float64).numpy() > threshold)))
        for view in views
        for threshold in thresholds
    ]
    assert all(want.any() for _, threshold, want in cases if threshold == 0.0)  # positive subnormals set bits
    previous_threads = torch.get_num_threads()
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU has no flush-denormal mode")
    try:
        torch.set_num_threads(threads)
        for view, threshold, want in cases:
            got = fs.pack_signs(view, -1, threshold, backend=impl.backend)
            assert torch.equal(got, want), f"{tuple(view.shape)} {view.stride()} threshold={threshold!r}"
        # The caller's MXCSR is restored: DAZ is still on (a subnormal times 1 flushes to 0).
        tiny = torch.tensor([1], dtype=torch.int32).view(torch.float32)
        assert (tiny * 1.0).item() == 0.0
    finally:
        torch.set_flush_denormal(False)
        torch.set_num_threads(previous_threads)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_pack_signs_known_values(impl, dtype):
    """A hand-checked row: NaN packs 0, -0.0 and 0.0 are not > 0, +inf is, element j is bit j."""
    values = [float("nan"), float("inf"), float("-inf"), -0.0, 0.0, 1.0, -1.0] + [0.5] * 57 + [2.0, -3.0]
    x = torch.tensor(values, dtype=dtype)
    got = fs.pack_signs(x, backend=impl.backend)
    bit_set = [1, 5] + list(range(7, 64)) + [64]
    want = [0, 0]
    for bit in bit_set:
        want[bit // 64] |= 1 << (bit % 64)
    want = [w - (1 << 64) if w >= 2**63 else w for w in want]
    assert torch.equal(got, torch.tensor(want, dtype=torch.int64))


def test_pack_signs_threshold_types(impl):
    """threshold may be any real number: int, numpy floats; the result is the same comparison."""
    x = random_floats((3, 100), torch.float32, 1.0, make_gen("threshold_types"))
    expected = oracle.pack_signs(oracle.floats_np(x), -1, 1.0)
    for threshold in (1, 1.0, np.float32(1.0), np.float64(1.0), np.int64(1)):
        got, reference = call(fs.pack_signs, impl, x, -1, threshold)
        assert_exact(got, reference, expected, f"threshold {type(threshold).__name__}")


@pytest.mark.parametrize(
    ("threshold", "want"),
    [
        # 2**53 + 3 lies between the float64 values 2**53 + 2 and 2**53 + 4; float() rounds it
        # up to 2**53 + 4, so that element (> threshold as real numbers) packs as 0.
        (2**53 + 3, [True, True, True]),
        (Fraction(2**54 + 7, 2), [True, True, True]),  # 2**53 + 3.5
        # float(10**400) raises OverflowError; every finite value is below it, +inf is above.
        (10**400, [True, False, False]),
    ],
    ids=["int-2**53+3", "Fraction-2**53+3.5", "int-10**400"],
)
def test_pack_signs_real_threshold_beyond_float64(threshold, want):
    x = torch.tensor([math.inf, 1e308, 2.0**53 + 4], dtype=torch.float64)
    got = fs.pack_signs(x, threshold=threshold, backend="reference")
    assert fs.unpack_bits(got, 3, backend="reference").tolist() == want


@pytest.mark.parametrize(("shape", "dim"), [((0, 5), 0), ((0, 5), 1), ((3, 0, 4), 1), ((3, 0, 4), 2), ((2, 3, 0), 0)])
def test_pack_signs_empty_dims(impl, shape, dim):
    """Zero-size packed dim (no words) or zero-size other dims (no rows)."""
    x = torch.randn(shape)
    got, reference = call(fs.pack_signs, impl, x, dim)
    assert_exact(got, reference, oracle.pack_signs(oracle.floats_np(x), dim, 0.0), f"pack_signs {shape} dim={dim}")


# ---------------------------------------------------------------- unpack_bits / popcount


@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("n_bits", N_BITS_WITH_ZERO)
def test_unpack_bits(impl, n_bits, rows):
    words = random_words(rows, n_bits, make_gen("unpack", n_bits, rows))
    got, reference = call(fs.unpack_bits, impl, words, n_bits)
    assert_exact(got, reference, oracle.unpack_bits(oracle.words_np(words), n_bits), f"unpack_bits {n_bits}")


@pytest.mark.parametrize("n_bits", [0, 1, 65, 1000])
def test_unpack_bits_3d(impl, n_bits):
    words = random_words((3, 7), n_bits, make_gen("unpack3d", n_bits))
    got, reference = call(fs.unpack_bits, impl, words, n_bits)
    assert_exact(got, reference, oracle.unpack_bits(oracle.words_np(words), n_bits), "unpack_bits 3-D")


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_unpack_inverts_pack(impl, dtype):
    x = random_floats((40, 129), dtype, 0.0, make_gen("unpack_pack", dtype))
    packed = fs.pack_signs(x, backend=impl.backend)
    got, reference = call(fs.unpack_bits, impl, packed, 129)
    assert_exact(got, reference, oracle.floats_np(x) > 0.0, "unpack(pack(x))")


@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("n_bits", N_BITS_WITH_ZERO)
def test_popcount(impl, n_bits, rows):
    words = random_words(rows, n_bits, make_gen("popcount", n_bits, rows))
    got, reference = call(fs.popcount, impl, words)
    assert_exact(got, reference, oracle.popcount(oracle.words_np(words)), f"popcount {n_bits}")


def test_popcount_extreme_words(impl):
    """All-ones, sign-only and single-bit words (randint never draws INT64_MAX)."""
    values = [INT64_MIN, -1, 0, 1, INT64_MAX, 1 << 62, -(1 << 62), 0x5555555555555555, -0x5555555555555556]
    words = torch.tensor(values, dtype=torch.int64).reshape(-1, 1).repeat(1, 19)
    got, reference = call(fs.popcount, impl, words)
    assert_exact(got, reference, oracle.popcount(oracle.words_np(words)), "popcount extremes")
    assert got[1].item() == 64 * 19 and got[0].item() == 19 and got[4].item() == 63 * 19


@pytest.mark.parametrize("shape", [(3, 5), (2, 0), (0, 4), (2, 3, 4)])
@pytest.mark.parametrize("n_bits", [0, 65, 1000])
def test_popcount_batched(impl, shape, n_bits):
    words = random_words(shape, n_bits, make_gen("popcount_nd", shape, n_bits))
    got, reference = call(fs.popcount, impl, words)
    assert_exact(got, reference, oracle.popcount(oracle.words_np(words)), f"popcount {shape}")


# ---------------------------------------------------------------- hamming / hamming_total


def _pair(rows, n_bits: int, key) -> tuple[torch.Tensor, torch.Tensor]:
    gen = make_gen(*key)
    a = random_words(rows, n_bits, gen)
    b = random_words(rows, n_bits, gen)
    if isinstance(rows, int) and rows > 0:
        b[::3] = a[::3]  # some identical pairs: distance 0
        b[1::3] = near_copies(a[1::3], a[1::3].shape[0], n_bits, gen) if n_bits else b[1::3]
    return a, b


@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("n_bits", N_BITS_WITH_ZERO)
def test_hamming(impl, n_bits, rows):
    a, b = _pair(rows, n_bits, ("hamming", n_bits, rows))
    got, reference = call(fs.hamming, impl, a, b)
    assert_exact(got, reference, oracle.hamming(oracle.words_np(a), oracle.words_np(b)), f"hamming {n_bits}")


@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("n_bits", N_BITS_WITH_ZERO)
def test_hamming_total(impl, n_bits, rows):
    a, b = _pair(rows, n_bits, ("hamming_total", n_bits, rows))
    got, reference = call(fs.hamming_total, impl, a, b)
    expected = oracle.hamming_total(oracle.words_np(a), oracle.words_np(b))
    assert expected.shape == ()
    assert_exact(got, reference, expected, f"hamming_total {n_bits}")


@pytest.mark.parametrize("shape", [(2, 3), (4, 0), (0, 5), (2, 3, 4)])
@pytest.mark.parametrize("n_bits", [0, 63, 129])
def test_hamming_batched(impl, shape, n_bits):
    a, b = _pair(shape, n_bits, ("hamming_nd", shape, n_bits))
    a_np, b_np = oracle.words_np(a), oracle.words_np(b)
    got, reference = call(fs.hamming, impl, a, b)
    assert_exact(got, reference, oracle.hamming(a_np, b_np), f"hamming {shape}")
    got, reference = call(fs.hamming_total, impl, a, b)
    assert_exact(got, reference, oracle.hamming_total(a_np, b_np), f"hamming_total {shape}")


def test_hamming_total_large(impl):
    """A total over many words: all-ones against zeros, so the sum is exactly known."""
    a = torch.full((513, 77), -1, dtype=torch.int64)
    b = torch.zeros_like(a)
    got, reference = call(fs.hamming_total, impl, a, b)
    assert_exact(got, reference, oracle.hamming_total(oracle.words_np(a), oracle.words_np(b)), "total")
    assert got.item() == 513 * 77 * 64


def test_hamming_totals_of_many_pairs(impl):
    """ops._hamming_totals (RegionCodes.distance over its layers): Python ints equal to the
    numpy oracle's total of each pair, for every backend, non-contiguous pairs included."""
    from fastspline.ops import _hamming_totals

    pairs = [_pair(rows, n_bits, ("totals", rows, n_bits)) for rows, n_bits in [(7, 1), (0, 65), (33, 64), (5, 1000)]]
    a, b = _pair(12, 130, ("totals", "strided"))
    pairs.append((a[::2, 1:], b[1::2, :2]))
    pairs.append((torch.full((513, 77), -1, dtype=torch.int64), torch.zeros(513, 77, dtype=torch.int64)))
    got = _hamming_totals(pairs, backend=impl.backend)
    expected = [int(oracle.hamming_total(oracle.words_np(x), oracle.words_np(y))) for x, y in pairs]
    assert got == expected and all(type(v) is int for v in got)
    assert got[-1] == 513 * 77 * 64
    assert _hamming_totals([], backend=impl.backend) == []
    with pytest.raises(ValueError, match="hamming_total: a and b must have the same shape"):
        _hamming_totals([pairs[0], (pairs[2][0], pairs[0][1])], backend=impl.backend)


def test_autograd_zero_tensors_read_as_zeros(impl):
    """torch._efficientzerotensor (what autograd hands out for zero grads) has no memory behind
    it (data_ptr 0): every op reads it as the zeros it stands for."""
    a = torch.randint(-2**62, 2**62, (5, 2), generator=make_gen("zerotensor"))
    zero = torch._efficientzerotensor(5, 2, dtype=torch.int64)
    assert not fs.pack_signs(torch._efficientzerotensor(4, 70), backend=impl.backend).any()
    assert torch.equal(fs.popcount(zero, backend=impl.backend).cpu(), torch.zeros(5, dtype=torch.int64))
    assert torch.equal(fs.hamming(a, zero, backend=impl.backend).cpu(), fs.popcount(a, backend="reference"))
    assert int(fs.hamming_total(zero, a, backend=impl.backend)) == int(fs.popcount(a, backend="reference").sum())
    want = fs.popcount(a, backend="reference").to(torch.int32)[:, None].expand(5, 5)
    assert torch.equal(fs.hamming_cdist(a, zero, backend=impl.backend).cpu(), want)


class _Subclass(torch.Tensor):
    pass


def test_cpu_shortcuts_take_only_plain_cpu_tensors(monkeypatch):
    """ops' eager cpu shortcuts (codes()' pack with its NaN flag, RegionCodes' totals) skip the
    argument checks only for plain dense cpu tensors of the right dtype: a negated view, a
    tensor subclass, another dtype, a mismatched pair or a backend other than cpu go through
    the checked path (with its errors), and both paths give the same results."""
    pytest.importorskip("fastspline._C")
    from fastspline import ops

    gen = make_gen("cpu_shortcuts")
    x = torch.randn(70, 130, generator=gen)
    a, b = (torch.randint(-2**62, 2**62, (9, 3), generator=gen) for _ in range(2))
    pairs = [(a, b), (a[1:5], b[4:8])]
    want_words = fs.pack_signs(x[:, 1:], backend="reference")
    want_x = fs.pack_signs(x, backend="reference")
    want_totals = [int(fs.hamming_total(p, q, backend="reference")) for p, q in pairs]
    checked: list[str] = []
    real_pack_args, real_check = ops._pack_args, ops._check_rowwise
    monkeypatch.setattr(ops, "_pack_args", lambda *args: checked.append("pack") or real_pack_args(*args))
    monkeypatch.setattr(ops, "_check_rowwise", lambda *args: checked.append("totals") or real_check(*args))

    words, nan = ops._pack_signs_any_nan(x[:, 1:])
    assert torch.equal(words, want_words) and nan is False
    assert ops._hamming_totals(pairs) == want_totals
    assert checked == []  # the shortcuts were taken
    with monkeypatch.context() as off:
        off.setattr(ops, "_cpu_fast", lambda backend: False)
        words, nan = ops._pack_signs_any_nan(x[:, 1:])
        assert torch.equal(words, want_words) and nan is False
        assert ops._hamming_totals(pairs) == want_totals
    assert checked == ["pack", "totals", "totals"]

    for odd in (torch._neg_view(-x), x.as_subclass(_Subclass)):
        checked.clear()
        words, _ = ops._pack_signs_any_nan(odd)
        assert checked == ["pack"] and torch.equal(words, want_x)
    for odd_a in (torch._neg_view(-a), a.as_subclass(_Subclass)):
        checked.clear()
        assert ops._hamming_totals([(odd_a, b)]) == want_totals[:1]
        assert checked == ["totals"]
    for odd_b in (torch._neg_view(-b), b.as_subclass(_Subclass), b.t().contiguous().t()):
        checked.clear()
        assert ops._hamming_totals([(a, odd_b)]) == want_totals[:1]
        assert checked == ["totals"]
    for zero in (torch._efficientzerotensor(9, 3, dtype=torch.int64),):
        checked.clear()  # autograd's zero tensor has no memory: the checked path makes real zeros
        assert ops._hamming_totals([(a, zero), (zero, b)]) == [int(fs.popcount(a).sum()), int(fs.popcount(b).sum())]
        assert checked == ["totals", "totals"]
    strided = int(fs.hamming_total(a[1::2], b[::2][:4], backend="reference"))
    checked.clear()  # a non-contiguous pair: all go through the checked path (which copies it)
    assert ops._hamming_totals([pairs[0], (a[1::2], b[::2][:4])]) == [want_totals[0], strided]
    assert checked == ["totals", "totals"]
    checked.clear()
    words, nan = ops._pack_signs_any_nan(x, backend="reference")
    assert checked == ["pack"] and torch.equal(words, want_x)
    with pytest.raises(TypeError, match="pack_signs: x must be a floating tensor"):
        ops._pack_signs_any_nan(torch.zeros(3, 4, dtype=torch.int32))
    with pytest.raises(TypeError, match="hamming_total: a must be packed codes of dtype torch.int64"):
        ops._hamming_totals([(a.to(torch.int32), b)])
    with pytest.raises(TypeError, match="hamming_total: b must be packed codes of dtype torch.int64"):
        ops._hamming_totals([(a, b.to(torch.int32))])
    with pytest.raises(ValueError, match="pack_signs: x must have at least one dimension"):
        ops._pack_signs_any_nan(torch.tensor(1.0))
    checked.clear()
    words, nan = ops._pack_signs_any_nan(torch._efficientzerotensor(3, 70))
    assert checked == ["pack"] and not words.any() and nan is False
    with pytest.raises(ValueError, match="hamming_total: a and b must have the same shape"):
        ops._hamming_totals([(a, b[:3])])
    with pytest.raises(ValueError, match="a words dimension"):
        ops._hamming_totals([(torch.tensor(1), torch.tensor(1))])


def test_cpu_extension_hamming_totals_checks_its_arguments():
    """The one-call binding behind the cpu backend's _hamming_totals: sizes checked in C++."""
    pytest.importorskip("fastspline._C")
    from fastspline import _C

    a, b = torch.full((3, 2), -1, dtype=torch.int64), torch.zeros(3, 2, dtype=torch.int64)
    assert _C.hamming_totals([a.data_ptr(), a.data_ptr()], [b.data_ptr(), a.data_ptr()], [6, 6], 1) == [384, 0]
    assert _C.hamming_totals([], [], [], 1) == []
    assert _C.hamming_totals([0], [0], [0], 2) == [0]
    with pytest.raises(ValueError, match="hamming_totals: a, b and n_words must have the same length"):
        _C.hamming_totals([a.data_ptr()], [b.data_ptr()], [6, 6], 1)
    with pytest.raises(ValueError, match="hamming_totals: negative size -1"):
        _C.hamming_totals([a.data_ptr()], [b.data_ptr()], [-1], 1)
    with pytest.raises(ValueError, match="b: null pointer for non-empty data"):
        _C.hamming_totals([a.data_ptr()], [0], [6], 1)


# ---------------------------------------------------------------- pairwise ops

PAIR_SHAPES = [(0, 5), (5, 0), (0, 0), (1, 1), (1, 1031), (1031, 37)]


def _pairwise_data(n: int, m: int, n_bits: int, key) -> tuple[torch.Tensor, torch.Tensor]:
    """a and b drawn around a small pool of codes: exact duplicates, near
    neighbours (ties in distance) and unrelated random rows."""
    gen = make_gen(*key)
    pool = random_words(6, n_bits, gen)
    a = near_copies(pool, n, n_bits, gen, max_flips=2)
    b = near_copies(pool, m, n_bits, gen, max_flips=2)
    if n > 2:
        a[::3] = random_words(a[::3].shape[0], n_bits, gen)
    if m > 2:
        b[::4] = random_words(b[::4].shape[0], n_bits, gen)
    return a, b


def _pair_params(shapes) -> list:
    params = []
    for n_bits in N_BITS_WITH_ZERO:
        for n, m in shapes:
            params.append(pytest.param(n_bits, (n, m), id=f"{n_bits}-{n}x{m}"))
    return params


@pytest.mark.parametrize(("n_bits", "shape"), _pair_params(PAIR_SHAPES))
def test_hamming_cdist(impl, n_bits, shape):
    a, b = _pairwise_data(*shape, n_bits, ("cdist", n_bits, shape))
    got, reference = call(fs.hamming_cdist, impl, a, b)
    assert_exact(got, reference, oracle.hamming_cdist(oracle.words_np(a), oracle.words_np(b)), f"cdist {n_bits}")


@pytest.mark.parametrize("rows", [0, 1, 300])
@pytest.mark.parametrize("n_bits", [0, 1, 64, 129, 1000])
def test_hamming_cdist_self(impl, n_bits, rows):
    """b=None: a against itself."""
    a, _ = _pairwise_data(rows, 0, n_bits, ("cdist_self", n_bits, rows))
    got, reference = call(fs.hamming_cdist, impl, a)
    a_np = oracle.words_np(a)
    assert_exact(got, reference, oracle.hamming_cdist(a_np, a_np), f"cdist(a) {n_bits}")


def _topk_ks(m: int) -> list[int]:
    return sorted({1, max(1, m // 3), m})


TOPK_CASES = [
    (n, m, k)
    for n, m in [(0, 5), (1, 1), (1, 1031), (1031, 37), (40, 64), (40, 65)]
    for k in _topk_ks(m)
]


@pytest.mark.parametrize("case", TOPK_CASES, ids=lambda c: f"{c[0]}x{c[1]}-k{c[2]}")
@pytest.mark.parametrize("n_bits", N_BITS_WITH_ZERO)
def test_hamming_topk(impl, n_bits, case):
    n, m, k = case
    a, b = _pairwise_data(n, m, n_bits, ("topk", n_bits, n, m))
    got, reference = call(fs.hamming_topk, impl, a, b, k)
    expected = oracle.hamming_topk(oracle.words_np(a), oracle.words_np(b), k)
    assert_exact_tuple(got, reference, expected, f"topk {n_bits} k={k}")


@pytest.mark.parametrize("k", [1, 3, 50, 200])
def test_hamming_topk_ties(impl, k):
    """b is 4 distinct codes repeated 50 times in a shuffled order: every distance
    is shared by about 50 indices, and only lower-index-first tie-breaking passes."""
    gen = make_gen("topk_ties")
    distinct = random_words(4, 129, gen)
    b = distinct[torch.randint(0, 4, (200,), generator=gen)]
    a = torch.cat([distinct, random_words(5, 129, gen)])
    got, reference = call(fs.hamming_topk, impl, a, b, k)
    expected = oracle.hamming_topk(oracle.words_np(a), oracle.words_np(b), k)
    assert_exact_tuple(got, reference, expected, f"topk ties k={k}")
    # Row 0 equals distinct[0]: its nearest are exactly the first k copies of it in b.
    copies = torch.nonzero((b == distinct[0]).all(dim=1)).flatten()
    first = min(k, copies.numel())
    assert torch.equal(got[1][0, :first], copies[:first])


def _radii(n_bits: int) -> list[int]:
    return sorted({0, 1, 3, n_bits // 2, n_bits, n_bits + 1, 64 * n_words(n_bits) + 7, 10**12})


RADIUS_SHAPES = [(0, 5), (5, 0), (1, 1), (1, 1031), (250, 37)]


@pytest.mark.parametrize(("n_bits", "shape"), _pair_params(RADIUS_SHAPES))
def test_hamming_radius(impl, n_bits, shape):
    a, b = _pairwise_data(*shape, n_bits, ("radius", n_bits, shape))
    a_np, b_np = oracle.words_np(a), oracle.words_np(b)
    d = oracle.hamming_cdist(a_np, b_np)
    for r in _radii(n_bits):
        got, reference = call(fs.hamming_radius, impl, a, b, r)
        expected = oracle.hamming_radius(a_np, b_np, r, d)
        assert_exact_tuple(got, reference, expected, f"radius {n_bits} r={r}")
        if r >= n_bits:
            assert got[0].numel() == shape[0] * shape[1]  # every pair is within the radius


def test_hamming_radius_finds_neighbours(impl):
    """With r=2 on near-copies, a non-trivial but partial set of pairs matches."""
    a, b = _pairwise_data(200, 150, 1000, ("radius_partial",))
    got, reference = call(fs.hamming_radius, impl, a, b, 2)
    expected = oracle.hamming_radius(oracle.words_np(a), oracle.words_np(b), 2)
    assert_exact_tuple(got, reference, expected, "radius r=2")
    assert 0 < got[0].numel() < 200 * 150


def test_reference_row_chunks(monkeypatch):
    """The reference works on row chunks bounded by _CHUNK_ELEMENTS; shrink the bound
    so that the chunk boundaries (row offsets of topk/radius) are exercised."""
    from fastspline.backends import reference as reference_backend

    monkeypatch.setattr(reference_backend, "_CHUNK_ELEMENTS", 3 * 37 * 3)  # 3 rows of a per chunk
    a, b = _pairwise_data(50, 37, 129, ("chunks",))
    a_np, b_np = oracle.words_np(a), oracle.words_np(b)
    _assert_matches(reference_backend.hamming_cdist(a, b), oracle.hamming_cdist(a_np, b_np), "chunked cdist")
    _assert_matches(fs.hamming_cdist(a, b, backend="reference"), oracle.hamming_cdist(a_np, b_np), "chunked cdist")
    for got, want in zip(fs.hamming_topk(a, b, 5, backend="reference"), oracle.hamming_topk(a_np, b_np, 5)):
        _assert_matches(got, want, "chunked topk")
    for got, want in zip(fs.hamming_radius(a, b, 40, backend="reference"), oracle.hamming_radius(a_np, b_np, 40)):
        _assert_matches(got, want, "chunked radius")


# ---------------------------------------------------------------- bit_transpose


@pytest.mark.parametrize("rows", [0, 1, 63, 64, 65, 1031])
@pytest.mark.parametrize("n_bits", N_BITS_WITH_ZERO)
def test_bit_transpose(impl, n_bits, rows):
    words = random_words(rows, n_bits, make_gen("transpose", n_bits, rows))
    got, reference = call(fs.bit_transpose, impl, words, n_bits)
    expected = oracle.bit_transpose(oracle.words_np(words), n_bits)
    assert expected.shape == (n_bits, n_words(rows))
    assert_exact(got, reference, expected, f"bit_transpose {n_bits}x{rows}")
    assert oracle.pad_bits_are_zero(got.numpy(), rows)


# ---------------------------------------------------------------- count_regions


@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("n_bits", [0, 1, 64, 65, 129, 1000])
def test_count_regions(impl, n_bits, rows):
    gen = make_gen("regions", n_bits, rows)
    pool = random_words(max(1, rows // 10), n_bits, gen)
    codes = near_copies(pool, rows, n_bits, gen, max_flips=1)  # many duplicate rows
    got, reference = call(fs.count_regions, impl, codes)
    expected = oracle.count_regions(oracle.words_np(codes))
    assert_exact_tuple(got, reference, expected, f"count_regions {n_bits}x{rows}")
    if rows > 10 and n_bits > 0:
        assert got[0].shape[0] < rows  # duplicates were merged


@pytest.mark.parametrize("n_words_per_code", [1, 2, 5])
def test_count_regions_signed_order(impl, n_words_per_code):
    """Rows from extreme words: ordering must compare words as signed int64, word 0 first."""
    gen = make_gen("regions_signed", n_words_per_code)
    values = torch.tensor([INT64_MIN, INT64_MIN + 1, -(2**62), -1, 0, 1, 2**62, INT64_MAX], dtype=torch.int64)
    codes = values[torch.randint(0, values.numel(), (700, n_words_per_code), generator=gen)]
    got, reference = call(fs.count_regions, impl, codes)
    expected = oracle.count_regions(oracle.words_np(codes))
    assert_exact_tuple(got, reference, expected, "count_regions signed")
    unique, inverse, counts = got
    assert torch.equal(unique[inverse], codes)
    assert int(counts.sum()) == codes.shape[0]


# ---------------------------------------------------------------- non-contiguous int64 inputs


@pytest.mark.parametrize("layout", NONCONTIGUOUS_LAYOUTS)
def test_word_ops_noncontiguous(impl, layout):
    """Every int64-input op on transposed / strided / offset views equals the contiguous result."""
    n_bits = 129
    a, b = _pairwise_data(67, 41, n_bits, ("noncontig", layout))
    a_view = noncontiguous_copy(a, layout)
    b_view = noncontiguous_copy(b, layout)
    a_np, b_np = oracle.words_np(a), oracle.words_np(b)
    b_rows = b[:1].expand(67, -1)  # stride-0 rows

    got, ref = call(fs.unpack_bits, impl, a_view, n_bits)
    assert_exact(got, ref, oracle.unpack_bits(a_np, n_bits), "unpack_bits")
    got, ref = call(fs.popcount, impl, a_view)
    assert_exact(got, ref, oracle.popcount(a_np), "popcount")
    b_same = noncontiguous_copy(b[:41].repeat(2, 1)[:67], layout)
    b_same_np = oracle.words_np(b_same)
    got, ref = call(fs.hamming, impl, a_view, b_same)
    assert_exact(got, ref, oracle.hamming(a_np, b_same_np), "hamming")
    got, ref = call(fs.hamming, impl, a_view, b_rows)  # stride-0 rows in b
    assert_exact(got, ref, oracle.hamming(a_np, oracle.words_np(b_rows)), "hamming expanded")
    got, ref = call(fs.hamming_total, impl, a_view, b_same)
    assert_exact(got, ref, oracle.hamming_total(a_np, b_same_np), "hamming_total")
    got, ref = call(fs.hamming_cdist, impl, a_view, b_view)
    assert_exact(got, ref, oracle.hamming_cdist(a_np, b_np), "hamming_cdist")
    got, ref = call(fs.hamming_cdist, impl, a_view)
    assert_exact(got, ref, oracle.hamming_cdist(a_np, a_np), "hamming_cdist self")
    got, ref = call(fs.hamming_topk, impl, a_view, b_view, 7)
    assert_exact_tuple(got, ref, oracle.hamming_topk(a_np, b_np, 7), "hamming_topk")
    got, ref = call(fs.hamming_radius, impl, a_view, b_view, 3)
    assert_exact_tuple(got, ref, oracle.hamming_radius(a_np, b_np, 3), "hamming_radius")
    got, ref = call(fs.bit_transpose, impl, a_view, n_bits)
    assert_exact(got, ref, oracle.bit_transpose(a_np, n_bits), "bit_transpose")
    got, ref = call(fs.count_regions, impl, a_view)
    assert_exact_tuple(got, ref, oracle.count_regions(a_np), "count_regions")


def test_word_ops_empty_strided_views(impl):
    """Zero-row views with a word stride != 1 (an empty slice of a strided buffer)."""
    empty = torch.zeros(5, 4, dtype=torch.int64)[:0, ::2]  # shape [0, 2], strides (4, 2)
    b = random_words(3, 128, make_gen("empty_strided"))
    e_np, b_np = oracle.words_np(empty), oracle.words_np(b)
    got, ref = call(fs.unpack_bits, impl, empty, 100)
    assert_exact(got, ref, oracle.unpack_bits(e_np, 100), "unpack_bits")
    got, ref = call(fs.hamming, impl, empty, empty)
    assert_exact(got, ref, oracle.hamming(e_np, e_np), "hamming")
    got, ref = call(fs.hamming_total, impl, empty, empty)
    assert_exact(got, ref, oracle.hamming_total(e_np, e_np), "hamming_total")
    got, ref = call(fs.hamming_cdist, impl, empty, b)
    assert_exact(got, ref, oracle.hamming_cdist(e_np, b_np), "cdist")
    got, ref = call(fs.hamming_cdist, impl, b, empty)
    assert_exact(got, ref, oracle.hamming_cdist(b_np, e_np), "cdist empty b")
    got, ref = call(fs.hamming_topk, impl, empty, b, 2)
    assert_exact_tuple(got, ref, oracle.hamming_topk(e_np, b_np, 2), "topk")
    got, ref = call(fs.hamming_radius, impl, b, empty, 5)
    assert_exact_tuple(got, ref, oracle.hamming_radius(b_np, e_np, 5), "radius")
    got, ref = call(fs.bit_transpose, impl, empty, 128)
    assert_exact(got, ref, oracle.bit_transpose(e_np, 128), "bit_transpose")
    got, ref = call(fs.count_regions, impl, empty)
    assert_exact_tuple(got, ref, oracle.count_regions(e_np), "count_regions")


def test_popcount_empty_strided_view(impl):
    empty = torch.zeros(5, 4, dtype=torch.int64)[:0, ::2]  # shape [0, 2], strides (4, 2)
    got, ref = call(fs.popcount, impl, empty)
    assert_exact(got, ref, oracle.popcount(oracle.words_np(empty)), "popcount")


def test_word_ops_expanded_rows(impl):
    """Stride-0 rows (one code broadcast to many rows) as a and as b."""
    gen = make_gen("expanded")
    row = random_words(1, 200, gen)
    a = row.expand(50, -1)
    b = random_words(30, 200, gen)
    a_np, b_np = oracle.words_np(a), oracle.words_np(b)
    got, ref = call(fs.hamming_cdist, impl, a, b)
    assert_exact(got, ref, oracle.hamming_cdist(a_np, b_np), "cdist expanded a")
    got, ref = call(fs.hamming_cdist, impl, b, a)
    assert_exact(got, ref, oracle.hamming_cdist(b_np, a_np), "cdist expanded b")
    got, ref = call(fs.count_regions, impl, a)
    assert_exact_tuple(got, ref, oracle.count_regions(a_np), "count_regions expanded")
    got, ref = call(fs.bit_transpose, impl, a, 200)
    assert_exact(got, ref, oracle.bit_transpose(a_np, 200), "bit_transpose expanded")
    got, ref = call(fs.popcount, impl, a)
    assert_exact(got, ref, oracle.popcount(a_np), "popcount expanded")


# ---------------------------------------------------------------- default backend


def test_default_backend_matches_reference():
    """backend=None (the device default, or the reference fallback) gives the reference's answer."""
    gen = make_gen("default")
    a, b = random_words(20, 100, gen), random_words(9, 100, gen)
    x = random_floats((20, 100), torch.float32, 0.0, gen)
    checks = [
        (fs.pack_signs, (x,)),
        (fs.unpack_bits, (a, 100)),
        (fs.popcount, (a,)),
        (fs.hamming, (a[:9], b)),
        (fs.hamming_total, (a[:9], b)),
        (fs.hamming_cdist, (a, b)),
        (fs.hamming_topk, (a, b, 4)),
        (fs.hamming_radius, (a, b, 45)),
        (fs.bit_transpose, (a, 100)),
        (fs.count_regions, (a,)),
    ]
    for op, args in checks:
        got = op(*args)
        want = op(*args, backend="reference")
        pairs = zip(got, want) if isinstance(got, tuple) else [(got, want)]
        for g, w in pairs:
            assert g.dtype == w.dtype and torch.equal(g, w), op.__name__


# Inputs whose memory is not their values: lazily negated views, an out= sharing memory
# with the inputs; thresholds of more than float64 precision.


def test_pack_signs_reads_negated_views(impl):
    """``z.conj().imag`` is a float tensor with the negative bit set: its values are
    the negation of its memory, which kernels reading raw pointers must not miss."""
    z = torch.randn(3, 70, dtype=torch.complex64, generator=make_gen("neg_view"))
    x = z.conj().imag
    assert x.is_neg()
    for dim in (-1, 0):
        got = fs.pack_signs(x, dim, backend=impl.backend)
        want = oracle.pack_signs(oracle.floats_np(x.resolve_neg()), dim, 0.0)
        assert torch.equal(got, torch.from_numpy(want)), f"dim={dim}"


def test_word_ops_read_negated_views(impl):
    words = random_words(4, 130, make_gen("neg_words"))
    view = torch._neg_view(-words)  # the values of `words`, stored negated
    assert view.is_neg()
    assert torch.equal(fs.popcount(view, backend=impl.backend), torch.from_numpy(oracle.popcount(words.numpy())))
    assert torch.equal(fs.unpack_bits(view, 130, backend=impl.backend), torch.from_numpy(oracle.unpack_bits(words.numpy(), 130)))


@pytest.mark.skipif(np.finfo(np.longdouble).nmant <= 52, reason="np.longdouble is float64 here")
def test_pack_signs_longdouble_threshold_is_exact(impl):
    """A np.longdouble threshold just below 1.0 is not 1.0: float() would round it."""
    below = np.longdouble(1) - np.longdouble(2.0) ** -62
    above = np.longdouble(1) + np.longdouble(2.0) ** -62
    for dtype in (torch.float64, torch.float32, torch.float16, torch.bfloat16):
        x = torch.tensor([1.0, 0.5, 2.0], dtype=dtype)
        assert fs.pack_signs(x, threshold=below, backend=impl.backend).tolist() == [0b101], dtype
        assert fs.pack_signs(x, threshold=above, backend=impl.backend).tolist() == [0b100], dtype
    huge = np.longdouble("1e4000")  # beyond float64 but finite: inf is above it
    x = torch.tensor([float("inf"), 1e308], dtype=torch.float64)
    assert fs.pack_signs(x, threshold=huge, backend=impl.backend).tolist() == [0b01]


def test_hamming_cdist_out_sharing_memory_with_inputs(impl):
    """``out`` may share memory with ``a`` (or ``b``): the result is still the
    distances of the inputs as they were, not of half-overwritten rows."""
    gen = make_gen("cdist_out_alias")
    n = 70
    buf = random_words((n * n // 2,), 64, gen).view(-1)
    a = buf[:n].view(n, 1)
    b = random_words(n, 64, gen)
    expected = oracle.hamming_cdist(a.numpy().copy(), b.numpy().copy())
    out = buf.view(torch.int32).view(n, n)  # its first rows are the memory of a
    got = fs.hamming_cdist(a, b, out=out, backend=impl.backend)
    assert got is out
    assert torch.equal(out, torch.from_numpy(expected))
    # b aliased instead, a self-distance call on a slice of the buffer too
    buf = random_words((n * n // 2,), 64, gen).view(-1)
    b = buf[-n:].view(n, 1)
    expected = oracle.hamming_cdist(a.numpy().copy(), b.numpy().copy())
    out = buf.view(torch.int32).view(n, n)
    assert torch.equal(fs.hamming_cdist(a, b, out=out, backend=impl.backend), torch.from_numpy(expected))


def test_hamming_cdist_out_negated_view(impl):
    """An ``out`` with the negative bit set stores its values negated: the kernels
    write raw memory, so the distances must still read back as themselves."""
    gen = make_gen("cdist_out_neg_view")
    a, b = random_words(5, 130, gen), random_words(7, 130, gen)
    out = torch._neg_view(torch.zeros(5, 7, dtype=torch.int32))
    assert out.is_neg()
    got = fs.hamming_cdist(a, b, out=out, backend=impl.backend)
    assert got is out
    assert torch.equal(out, torch.from_numpy(oracle.hamming_cdist(oracle.words_np(a), oracle.words_np(b))))
