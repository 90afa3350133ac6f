"""The ``fastspline::<op>`` custom ops: schema, fake kernels and torch.compile.

``torch.library.opcheck`` runs each op for real and under FakeTensor / AOT
dispatch (static and dynamic shapes) and checks that the fake kernel in
fastspline/ops.py reports the dtypes, shapes and strides the backend returns.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import fastspline as fs
from cases import make_gen, random_floats, random_words


def _samples(backend: str) -> list[tuple[str, tuple]]:
    """(op name, args) pairs in the custom ops' own signatures: backend name last.
    pack_signs takes x with the packed dim already last (ops.py moves it)."""
    gen = make_gen("opcheck")
    a = random_words(4, 100, gen)
    b = random_words(5, 100, gen)
    b[1] = a[0]  # a pair at distance 0 for the radius search
    codes = torch.cat([a, a[:2], b])  # duplicate rows
    x = random_floats((3, 70), torch.float32, 0.0, gen)
    x_half = random_floats((2, 130, 3), torch.float16, 0.3, gen).movedim(1, -1)  # strided packed dim
    return [
        ("pack_signs", (x, 0.0, backend)),
        ("pack_signs", (x_half, 0.3, backend)),
        ("unpack_bits", (a, 100, backend)),
        ("popcount", (a, backend)),
        ("popcount", (torch.stack([a, b[:4]]), backend)),
        ("hamming", (a, b[:4], backend)),
        ("hamming_total", (a, b[:4], backend)),
        ("hamming_cdist", (a, b, backend)),
        ("hamming_topk", (a, b, 3, backend)),
        ("hamming_radius", (a, b, 40, backend)),
        ("bit_transpose", (a, 100, backend)),
        ("count_regions", (codes, backend)),
    ]


def _ids() -> list[str]:
    names = [name for name, _ in _samples("reference")]
    return [f"{name}-{names[:i].count(name)}" for i, name in enumerate(names)]


# Every op, including the two with data-dependent output sizes (hamming_radius,
# count_regions, whose fake kernels use new_dynamic_size()), passes all of
# opcheck's default sub-tests, test_aot_dispatch_dynamic included: none is restricted.
@pytest.mark.parametrize("index", range(len(_ids())), ids=_ids())
def test_opcheck(backend, index):
    name, args = _samples(backend)[index]
    op = getattr(torch.ops.fastspline, name).default
    torch.library.opcheck(op, args)


def test_every_op_is_a_custom_op():
    for name in fs.ops.__all__:
        op = getattr(torch.ops.fastspline, name)
        assert isinstance(op.default, torch._ops.OpOverload)
        assert op.default._schema.arguments[-1].name == "backend"


def test_meta_tensors_get_the_documented_shapes():
    """The fake kernels on meta tensors (fixed-size ops): shapes and dtypes from the docstrings."""
    x = torch.empty(5, 67, 3, device="meta")
    a = torch.empty(7, 3, dtype=torch.int64, device="meta")
    b = torch.empty(4, 3, dtype=torch.int64, device="meta")
    checks = [
        (fs.pack_signs(x, dim=1), (5, 3, 2), torch.int64),
        (fs.unpack_bits(a, 150), (7, 150), torch.bool),
        (fs.popcount(a), (7,), torch.int64),
        (fs.hamming(a, a), (7,), torch.int64),
        (fs.hamming_total(a, a), (), torch.int64),
        (fs.hamming_cdist(a, b), (7, 4), torch.int32),
        (fs.hamming_cdist(a), (7, 7), torch.int32),
        (fs.hamming_topk(a, b, 3)[0], (7, 3), torch.int32),
        (fs.hamming_topk(a, b, 3)[1], (7, 3), torch.int64),
        (fs.bit_transpose(a, 150), (150, 1), torch.int64),
    ]
    for out, shape, dtype in checks:
        assert out.device.type == "meta"
        assert tuple(out.shape) == shape and out.dtype == dtype


def _pipeline(x: torch.Tensor, b: torch.Tensor, backend: str | None):
    codes = fs.pack_signs(x, dim=0, threshold=0.1, backend=backend)
    return (
        fs.hamming_cdist(codes, b, backend=backend) + 1,
        fs.popcount(codes, backend=backend),
        fs.hamming_topk(codes, b, 2, backend=backend),
        fs.hamming_radius(codes, b, 60, backend=backend),
        fs.count_regions(codes, backend=backend),
    )


def _assert_same(got, want):
    if isinstance(want, (tuple, list)):
        assert len(got) == len(want)
        for g, w in zip(got, want):
            _assert_same(g, w)
    else:
        assert got.dtype == want.dtype and torch.equal(got, want)


def test_compile_aot_eager_every_backend(backend):
    """Dynamo + AOT autograd through the fake kernels, without code generation (fast);
    a second shape exercises recompilation / dynamic shapes."""
    torch._dynamo.reset()
    gen = make_gen("compile_aot")
    b = random_words(9, 130, gen)
    compiled = torch.compile(_pipeline, fullgraph=False, backend="aot_eager")
    for rows in (11, 17):
        x = random_floats((130, rows), torch.float32, 0.1, gen)
        _assert_same(compiled(x, b, backend), _pipeline(x, b, backend))
    torch._dynamo.reset()


def _static_pipeline(x: torch.Tensor, b: torch.Tensor, backend: str | None):
    codes = fs.pack_signs(x, dim=0, threshold=0.1, backend=backend)
    other = fs.pack_signs(x.flip(1), dim=0, backend=backend)
    return (
        fs.hamming_cdist(codes, b, backend=backend) + 1,
        fs.popcount(codes, backend=backend),
        fs.hamming(codes, other, backend=backend),
        fs.hamming_total(codes, other, backend=backend) * 2,
        fs.hamming_topk(codes, b, 2, backend=backend),
        fs.bit_transpose(codes, x.shape[0], backend=backend),
        fs.unpack_bits(codes, x.shape[0], backend=backend),
    )


def test_compile_fullgraph_every_backend(backend):
    """The ops with static output shapes trace into one graph: no graph break (the input
    checks once read Tensor._is_zerotensor, which Dynamo cannot trace: every op broke the
    graph twice and fullgraph=True failed)."""
    if backend == "cuda@sim":  # the graph holds the ops, whatever runs them: spare the emulator 40 s
        pytest.skip("traced the same as the other backends; the emulated kernels only cost time")
    torch._dynamo.reset()
    gen = make_gen("compile_fullgraph")
    b = random_words(9, 130, gen)
    x = random_floats((130, 11), torch.float32, 0.1, gen)
    compiled = torch.compile(_static_pipeline, fullgraph=True, backend="aot_eager")
    _assert_same(compiled(x, b, backend), _static_pipeline(x, b, backend))
    explained = torch._dynamo.explain(_static_pipeline)(x, b, backend)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
    torch._dynamo.reset()


def test_compile_fullgraph_as_the_first_call_of_a_process():
    """The first call picks and imports the backend, which Dynamo cannot trace: fullgraph
    failed when no eager call had loaded it (the test above runs after others have)."""
    import subprocess
    import sys

    script = (
        "import torch, fastspline as fs\n"
        "f = lambda x: fs.hamming_cdist(fs.pack_signs(x))\n"
        "x = torch.randn(20, 100)\n"
        "assert torch.equal(torch.compile(f, backend='aot_eager', fullgraph=True)(x), f(x))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def test_compile_numpy_threshold():
    """A numpy float64 threshold (np.percentile's type) under torch.compile: it reached the
    op as a tensor (np.float64 passed through as a float subclass), or as a 0-d array when
    made inside the compiled function, and both failed."""
    torch._dynamo.reset()
    x = random_floats((4, 70), torch.float32, 0.5, make_gen("compile_numpy"))
    want = fs.pack_signs(x, threshold=0.5)
    assert torch.equal(torch.compile(lambda x, t: fs.pack_signs(x, threshold=t), backend="eager")(x, np.float64(0.5)), want)
    assert torch.equal(torch.compile(lambda x: fs.pack_signs(x, threshold=np.float64(0.5)), backend="eager")(x), want)
    assert torch.equal(fs.pack_signs(x, threshold=np.array(0.5)), want)
    with pytest.raises(TypeError, match=r"threshold must be a real number, got ndarray array\(\[0.5\]\)"):
        fs.pack_signs(x, threshold=np.array([0.5]))
    torch._dynamo.reset()


def test_compile_inductor_smoke():
    """The default torch.compile (inductor) around pack_signs and hamming_cdist with the
    default backend; about 15 s on 2 CPU cores, most of it inductor's own start-up."""
    torch._dynamo.reset()
    gen = make_gen("compile_inductor")
    b = random_words(9, 130, gen)

    def distances(x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        codes = fs.pack_signs(x, dim=0, threshold=0.1)
        return fs.hamming_cdist(codes, b) * 2 + 1

    compiled = torch.compile(distances, fullgraph=False)
    x = random_floats((130, 11), torch.float32, 0.1, gen)
    got = compiled(x, b)
    want = distances(x, b)
    assert got.dtype == torch.int32 and torch.equal(got, want)
    torch._dynamo.reset()
