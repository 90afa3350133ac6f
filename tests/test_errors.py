"""Every documented input error: the exception type, and a message that names
the op and the argument and shows the offending value (STYLE.md convention 5).

Validation happens in fastspline/ops.py before any backend runs, so these
tests need no backend fixture; backend-specific refusals are at the end.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

import fastspline as fs
from fastspline import backends
from cases import cpu_available

WORDS = torch.zeros(3, 2, dtype=torch.int64)  # 3 codes of 2 words (65..128 bits)
WORDS5 = torch.zeros(5, 2, dtype=torch.int64)
X = torch.zeros(3, 70)


def raises(exc, *fragments: str):
    """pytest.raises matching every fragment literally, in order."""
    return pytest.raises(exc, match=".*".join(re.escape(f) for f in fragments))


# ---------------------------------------------------------------- non-tensor inputs

NOT_A_TENSOR = [
    ("pack_signs-x", lambda v: fs.pack_signs(v), "pack_signs: x"),
    ("unpack_bits-words", lambda v: fs.unpack_bits(v, 100), "unpack_bits: words"),
    ("popcount-words", lambda v: fs.popcount(v), "popcount: words"),
    ("hamming-a", lambda v: fs.hamming(v, WORDS), "hamming: a"),
    ("hamming-b", lambda v: fs.hamming(WORDS, v), "hamming: b"),
    ("hamming_total-a", lambda v: fs.hamming_total(v, WORDS), "hamming_total: a"),
    ("hamming_total-b", lambda v: fs.hamming_total(WORDS, v), "hamming_total: b"),
    ("hamming_cdist-a", lambda v: fs.hamming_cdist(v, WORDS), "hamming_cdist: a"),
    ("hamming_cdist-b", lambda v: fs.hamming_cdist(WORDS, v), "hamming_cdist: b"),
    ("hamming_topk-a", lambda v: fs.hamming_topk(v, WORDS, 1), "hamming_topk: a"),
    ("hamming_topk-b", lambda v: fs.hamming_topk(WORDS, v, 1), "hamming_topk: b"),
    ("hamming_radius-a", lambda v: fs.hamming_radius(v, WORDS, 1), "hamming_radius: a"),
    ("hamming_radius-b", lambda v: fs.hamming_radius(WORDS, v, 1), "hamming_radius: b"),
    ("bit_transpose-words", lambda v: fs.bit_transpose(v, 100), "bit_transpose: words"),
    ("count_regions-codes", lambda v: fs.count_regions(v), "count_regions: codes"),
]


@pytest.mark.parametrize(("call", "prefix"), [c[1:] for c in NOT_A_TENSOR], ids=[c[0] for c in NOT_A_TENSOR])
@pytest.mark.parametrize(
    ("value", "type_name"),
    [([[0, 1]], "list"), (np.zeros((3, 2), dtype=np.int64), "ndarray"), (7, "int"), ("codes", "str")],
    ids=["list", "ndarray", "int", "str"],
)
def test_non_tensor_input(call, prefix, value, type_name):
    with raises(TypeError, prefix, "must be a torch.Tensor", f"got {type_name}"):
        call(value)


def test_none_as_second_code_set():
    with raises(TypeError, "hamming: b must be a torch.Tensor", "got NoneType"):
        fs.hamming(WORDS, None)


# ---------------------------------------------------------------- dtypes

WORD_ARGS = [c for c in NOT_A_TENSOR if not c[0].startswith("pack_signs")]


@pytest.mark.parametrize(("call", "prefix"), [c[1:] for c in WORD_ARGS], ids=[c[0] for c in WORD_ARGS])
@pytest.mark.parametrize("dtype", [torch.int32, torch.uint64, torch.uint8, torch.float64, torch.bool], ids=str)
def test_words_must_be_int64(call, prefix, dtype):
    with raises(TypeError, prefix, "must be packed codes of dtype torch.int64", f"got {dtype}"):
        call(WORDS.to(dtype))


@pytest.mark.parametrize(
    "dtype", [torch.int64, torch.int32, torch.uint8, torch.bool, torch.complex64, torch.float8_e4m3fn], ids=str
)
def test_pack_signs_x_must_be_float(dtype):
    x = torch.zeros(3, 70).to(dtype)
    with raises(TypeError, "pack_signs: x must be a floating tensor", f"got {dtype}"):
        fs.pack_signs(x)


# ---------------------------------------------------------------- shapes

PAIR_OPS = [
    ("hamming", lambda a, b: fs.hamming(a, b)),
    ("hamming_total", lambda a, b: fs.hamming_total(a, b)),
    ("hamming_cdist", lambda a, b: fs.hamming_cdist(a, b)),
    ("hamming_topk", lambda a, b: fs.hamming_topk(a, b, 1)),
    ("hamming_radius", lambda a, b: fs.hamming_radius(a, b, 1)),
]


@pytest.mark.parametrize(("name", "call"), PAIR_OPS, ids=[p[0] for p in PAIR_OPS])
def test_word_counts_must_match(name, call):
    b = torch.zeros(3, 3, dtype=torch.int64)
    with raises(ValueError, f"{name}: a and b must have the same number of words per code", "got 2 and 3"):
        call(WORDS, b)
    with raises(ValueError, f"{name}: a and b must have the same number of words per code", "got 3 and 2"):
        call(b, WORDS)


@pytest.mark.parametrize(("name", "call"), PAIR_OPS, ids=[p[0] for p in PAIR_OPS])
def test_devices_must_match(name, call):
    meta = torch.zeros(3, 2, dtype=torch.int64, device="meta")
    with raises(ValueError, f"{name}: a and b must be on the same device", "got cpu and meta"):
        call(WORDS, meta)
    with raises(ValueError, f"{name}: a and b must be on the same device", "got meta and cpu"):
        call(meta, WORDS)


@pytest.mark.parametrize("op", [fs.hamming, fs.hamming_total], ids=lambda f: f.__name__)
@pytest.mark.parametrize(
    "b_shape", [(4, 2), (1, 2), (1, 3, 2), (2,)], ids=lambda s: "x".join(map(str, s))
)
def test_rowwise_shapes_must_match(op, b_shape):
    """Same shape exactly: broadcastable shapes are refused too."""
    b = torch.zeros(b_shape, dtype=torch.int64)
    with raises(ValueError, f"{op.__name__}: a and b must have the same shape", f"got (3, 2) and {tuple(b_shape)}"):
        op(WORDS, b)


@pytest.mark.parametrize(
    ("name", "call", "arg"),
    [
        ("hamming_cdist", lambda t: fs.hamming_cdist(t), "a"),
        ("hamming_cdist", lambda t: fs.hamming_cdist(WORDS, t), "b"),
        ("hamming_topk", lambda t: fs.hamming_topk(t, WORDS, 1), "a"),
        ("hamming_topk", lambda t: fs.hamming_topk(WORDS, t, 1), "b"),
        ("hamming_radius", lambda t: fs.hamming_radius(t, WORDS, 1), "a"),
        ("hamming_radius", lambda t: fs.hamming_radius(WORDS, t, 1), "b"),
        ("bit_transpose", lambda t: fs.bit_transpose(t, 128), "words"),
        ("count_regions", lambda t: fs.count_regions(t), "codes"),
    ],
    ids=["cdist-a", "cdist-b", "topk-a", "topk-b", "radius-a", "radius-b", "bit_transpose", "count_regions"],
)
@pytest.mark.parametrize("shape", [(2,), (1, 3, 2), ()], ids=["1d", "3d", "0d"])
def test_two_dimensional_inputs(name, call, arg, shape):
    t = torch.zeros(shape, dtype=torch.int64)
    with raises(ValueError, f"{name}: {arg} must be 2-D [rows, words]", f"got shape {tuple(shape)}"):
        call(t)


@pytest.mark.parametrize(
    ("name", "call", "arg"),
    [
        ("popcount", lambda t: fs.popcount(t), "words"),
        ("unpack_bits", lambda t: fs.unpack_bits(t, 0), "words"),
        ("hamming", lambda t: fs.hamming(t, t), "a"),
        ("hamming_total", lambda t: fs.hamming_total(t, t), "a"),
    ],
    ids=["popcount", "unpack_bits", "hamming", "hamming_total"],
)
def test_zero_dim_words(name, call, arg):
    with raises(ValueError, f"{name}: {arg} must have a words dimension", "0-d"):
        call(torch.tensor(5, dtype=torch.int64))


@pytest.mark.parametrize("op", ["hamming_cdist", "hamming_topk", "hamming_radius"])
def test_codes_too_long_for_int32_distances(op):
    """Distances are int32: codes of 2**25 words (2**31 bits) are refused (no memory: 0 rows)."""
    too_long = torch.empty(0, 2**25, dtype=torch.int64)
    calls = {
        "hamming_cdist": lambda: fs.hamming_cdist(too_long),
        "hamming_topk": lambda: fs.hamming_topk(too_long, torch.empty(1, 2**25, dtype=torch.int64).expand(1, -1), 1),
        "hamming_radius": lambda: fs.hamming_radius(too_long, too_long, 1),
    }
    with raises(ValueError, f"{op}: codes of {2**25} words may have distances beyond int32"):
        calls[op]()


def test_longest_codes_with_int32_distances_are_accepted():
    longest = torch.empty(0, 2**25 - 1, dtype=torch.int64)  # 2**31 - 64 bits
    assert fs.hamming_cdist(longest, backend="reference").shape == (0, 0)


# ---------------------------------------------------------------- k, r, n_bits, dim, threshold


@pytest.mark.parametrize("k", [0, -1, 6, 2**40])
def test_topk_k_out_of_range(k):
    with raises(ValueError, "hamming_topk: k must be", "[1, 5]", f"got {k}"):
        fs.hamming_topk(WORDS, WORDS5, k)


def test_topk_k_with_empty_b():
    empty = torch.zeros(0, 2, dtype=torch.int64)
    with raises(ValueError, "hamming_topk: k must be in [1, M]", "M=0", "k=1"):
        fs.hamming_topk(WORDS, empty, 1)


@pytest.mark.parametrize(
    ("k", "shown"),
    [(2.0, "float 2.0"), (True, "bool True"), ("2", "str '2'"), (None, "NoneType None"), (np.float64(2), "float64")],
    ids=["float", "bool", "str", "None", "np.float64"],
)
def test_topk_k_must_be_int(k, shown):
    with raises(TypeError, "hamming_topk: k must be an int", f"got {shown}"):
        fs.hamming_topk(WORDS, WORDS5, k)


def test_topk_k_tensor_is_not_an_int():
    with raises(TypeError, "hamming_topk: k must be an int", "Tensor"):
        fs.hamming_topk(WORDS, WORDS5, torch.tensor(2))


def test_topk_k_numpy_int_is_accepted():
    dist, index = fs.hamming_topk(WORDS, WORDS5, np.int64(2), backend="reference")
    assert dist.shape == (3, 2) and index.shape == (3, 2)


@pytest.mark.parametrize("r", [-1, -(2**40)])
def test_radius_negative(r):
    with raises(ValueError, "hamming_radius: r must be >= 0", f"got {r}"):
        fs.hamming_radius(WORDS, WORDS5, r)


@pytest.mark.parametrize(("r", "shown"), [(1.5, "float 1.5"), (False, "bool False"), (None, "NoneType")])
def test_radius_must_be_int(r, shown):
    with raises(TypeError, "hamming_radius: r must be an int", f"got {shown}"):
        fs.hamming_radius(WORDS, WORDS5, r)


N_BITS_OPS = [("unpack_bits", fs.unpack_bits), ("bit_transpose", fs.bit_transpose)]


@pytest.mark.parametrize(("name", "op"), N_BITS_OPS, ids=[o[0] for o in N_BITS_OPS])
@pytest.mark.parametrize(("n_bits", "needed"), [(0, 0), (64, 1), (129, 3), (200, 4)])
def test_n_bits_inconsistent_with_words(name, op, n_bits, needed):
    needs = f"{name}: n_bits={n_bits} needs ceil(n_bits/64)={needed} words"
    with raises(ValueError, needs, "has 2 per code", "(3, 2)"):
        op(WORDS, n_bits)


@pytest.mark.parametrize(("name", "op"), N_BITS_OPS, ids=[o[0] for o in N_BITS_OPS])
def test_n_bits_negative_or_not_int(name, op):
    with raises(ValueError, f"{name}: n_bits must be >= 0", "got -1"):
        op(WORDS, -1)
    with raises(TypeError, f"{name}: n_bits must be an int", "got float 128.0"):
        op(WORDS, 128.0)
    with raises(TypeError, f"{name}: n_bits must be an int", "got bool True"):
        op(torch.zeros(3, 1, dtype=torch.int64), True)


@pytest.mark.parametrize(("n_bits", "ok"), [(65, True), (128, True), (64, False)])
def test_n_bits_bounds_of_two_words(n_bits, ok):
    """Two words hold 65..128 bits: both ends accepted, 64 refused."""
    if ok:
        assert fs.unpack_bits(WORDS, n_bits, backend="reference").shape == (3, n_bits)
    else:
        with raises(ValueError, "unpack_bits: n_bits=64"):
            fs.unpack_bits(WORDS, n_bits, backend="reference")


@pytest.mark.parametrize("dim", [2, -3, 100])
def test_pack_signs_dim_out_of_range(dim):
    with raises(ValueError, "pack_signs: dim must be [-2, 1]", f"got {dim}"):
        fs.pack_signs(X, dim)


@pytest.mark.parametrize(("dim", "shown"), [(1.0, "float 1.0"), (None, "NoneType"), (True, "bool True")])
def test_pack_signs_dim_must_be_int(dim, shown):
    with raises(TypeError, "pack_signs: dim must be an int", f"got {shown}"):
        fs.pack_signs(X, dim)


def test_pack_signs_zero_dim_x():
    with raises(ValueError, "pack_signs: x must have at least one dimension", "0-d"):
        fs.pack_signs(torch.tensor(0.5))


@pytest.mark.parametrize(
    ("threshold", "shown"),
    [
        ("0.5", "str '0.5'"),
        (1j, "complex 1j"),
        (True, "bool True"),
        (None, "NoneType None"),
        (torch.tensor(0.5), "Tensor"),
    ],
    ids=["str", "complex", "bool", "None", "tensor"],
)
def test_pack_signs_threshold_must_be_real(threshold, shown):
    with raises(TypeError, "pack_signs: threshold must be a real number", f"got {shown}"):
        fs.pack_signs(X, threshold=threshold)


# ---------------------------------------------------------------- backend argument

VALID_CALLS = [
    ("pack_signs", lambda **kw: fs.pack_signs(X, **kw)),
    ("unpack_bits", lambda **kw: fs.unpack_bits(WORDS, 100, **kw)),
    ("popcount", lambda **kw: fs.popcount(WORDS, **kw)),
    ("hamming", lambda **kw: fs.hamming(WORDS, WORDS, **kw)),
    ("hamming_total", lambda **kw: fs.hamming_total(WORDS, WORDS, **kw)),
    ("hamming_cdist", lambda **kw: fs.hamming_cdist(WORDS, **kw)),
    ("hamming_topk", lambda **kw: fs.hamming_topk(WORDS, WORDS5, 2, **kw)),
    ("hamming_radius", lambda **kw: fs.hamming_radius(WORDS, WORDS5, 2, **kw)),
    ("bit_transpose", lambda **kw: fs.bit_transpose(WORDS, 100, **kw)),
    ("count_regions", lambda **kw: fs.count_regions(WORDS, **kw)),
]
VALID_IDS = [c[0] for c in VALID_CALLS]


@pytest.mark.parametrize(("name", "call"), VALID_CALLS, ids=VALID_IDS)
@pytest.mark.parametrize("bad", ["nope", "CPU", "", "reference "])
def test_unknown_backend_name(name, call, bad):
    with raises(ValueError, f"{name}: backend must be one of {backends.names()} or None", f"got {bad!r}"):
        call(backend=bad)


@pytest.mark.parametrize(("name", "call"), VALID_CALLS, ids=VALID_IDS)
@pytest.mark.parametrize(
    ("bad", "shown"), [(1, "int"), (b"cpu", "bytes"), (["cpu"], "list")], ids=["int", "bytes", "list"]
)
def test_backend_must_be_str(name, call, bad, shown):
    with raises(TypeError, f"{name}: backend must be a str or None", f"got {shown}"):
        call(backend=bad)


@pytest.mark.parametrize(("name", "call"), VALID_CALLS, ids=VALID_IDS)
def test_valid_calls_succeed_on_reference(name, call):
    """The calls above are valid: only the backend argument makes them fail."""
    call(backend="reference")


@pytest.mark.skipif(not cpu_available(), reason="the cpu backend is not built")
def test_cpu_backend_refuses_other_devices():
    meta = torch.zeros(3, 2, dtype=torch.int64, device="meta")
    with raises(ValueError, "popcount: backend 'cpu' runs on", "got a meta tensor"):
        fs.popcount(meta, backend="cpu")


@pytest.mark.skipif(cpu_available(), reason="the cpu backend is built")
def test_unbuilt_cpu_backend_named_explicitly():
    """Naming an unavailable backend raises (no silent fallback) and says why."""
    reason = backends.available()["cpu"]
    with raises(RuntimeError, "fastspline backend 'cpu' is not available", reason):
        fs.popcount(WORDS, backend="cpu")


def test_registry_load_unknown_name():
    with raises(ValueError, "backend must be one of", "got 'nope'"):
        backends.load("nope")


@pytest.mark.skipif(not cpu_available(), reason="the cpu backend is not built")
@pytest.mark.parametrize("isa", ["sse", "AVX2", "", "neon"])
def test_cpu_set_isa_unknown(isa):
    from fastspline.backends import cpu

    before = cpu.isa()
    with raises(ValueError, "isa must be 'scalar', 'avx2' or 'avx512'", f"got {isa!r}"):
        cpu.set_isa(isa)
    with pytest.raises(ValueError):
        with cpu.forced_isa(isa):
            pass
    assert cpu.isa() == before


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: fs.pack_signs(torch.randn(2, 70).to_sparse()), "x"),
        (lambda: fs.popcount(torch.ones(2, 1, dtype=torch.int64).to_sparse()), "words"),
        (lambda: fs.hamming_cdist(torch.ones(2, 1, dtype=torch.int64).to_sparse()), "a"),
        (lambda: fs.hamming(torch.ones(2, 1, dtype=torch.int64), torch.ones(2, 1, dtype=torch.int64).to_sparse()), "b"),
        (lambda: fs.count_regions(torch.ones(2, 1, dtype=torch.int64).to_sparse()), "codes"),
        (
            lambda: fs.hamming_cdist(
                torch.ones(2, 1, dtype=torch.int64), out=torch.zeros(2, 2, dtype=torch.int32).to_sparse()
            ),
            "out",
        ),
    ],
    ids=["pack_signs", "popcount", "cdist", "hamming", "count_regions", "cdist-out"],
)
def test_sparse_inputs_are_rejected(call, name):
    with pytest.raises(TypeError, match=rf"\b{name} must be a dense"):
        call()


TOPK_OUT_OF_MEMORY = """
import resource
import torch, fastspline as fs
def vm():
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmSize"))
m = 1 << 25
a, b = torch.zeros(1, 1, dtype=torch.int64), torch.zeros(1, 1, dtype=torch.int64).expand(m, 1)
fs.hamming_topk(a, b[:1000], 5, backend="cpu")  # threads and pools made before the limit
# Room for the outputs, two copies of b and 256 MiB, not for the 512 MiB of top-k candidates.
limit = vm() + m * 12 + 2 * m * 8 + (256 << 20)
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
try:
    fs.hamming_topk(a, b, m, backend="cpu")
    print("no error")
except MemoryError as exc:
    print("MemoryError:", exc)
"""


@pytest.mark.skipif(not cpu_available(), reason="the cpu backend is not built")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc are Linux's")
def test_topk_out_of_memory_is_a_memory_error_not_an_abort():
    """The per-thread candidate heaps are allocated inside an OpenMP region, where an
    escaping std::bad_alloc called std::terminate (the process died with SIGABRT)."""
    done = subprocess.run([sys.executable, "-c", TOPK_OUT_OF_MEMORY], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "MemoryError: hamming_topk: k=33554432 needs 0.5 GiB of candidates per thread" in done.stdout, done.stdout
