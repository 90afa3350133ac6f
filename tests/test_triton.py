"""Triton backend specifics; the shared matrix (test_ops.py, test_properties.py, ...)
already runs every op on "triton" through the ``impl`` fixture.

Here: tilings with many small programs (the interpreter otherwise picks blocks
that cover a test's data in one program), the top-k paths the matrix does not
reach (several programs per row, the large-k fallback in several chunks), deep
strided pack_signs inputs, the float32 threshold rounding, the registry
contract, and a cross-compile of the GPU code path (libdevice popcount,
autotune configs) for sm_80/sm_90 without a GPU.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import fastspline as fs
from fastspline import backends
from cases import make_gen, near_copies, random_floats, random_words

REASON = backends.available().get("triton")
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"triton backend unavailable: {REASON}")

if REASON is None:
    from fastspline.backends import triton as triton_backend
    from fastspline.kernels import common, layout, search

    INTERPRETED = common.INTERPRETED
else:
    INTERPRETED = True
# Interpreted (conftest sets TRITON_INTERPRET=1): CPU tensors. Compiled (a run without
# TRITON_INTERPRET on a GPU machine): CUDA tensors.
DEVICE = torch.device("cpu" if INTERPRETED else "cuda")
needs_device = pytest.mark.skipif(
    not INTERPRETED and not torch.cuda.is_available(), reason="compiled Triton kernels need a CUDA device"
)
interpreter_only = pytest.mark.skipif(not INTERPRETED, reason="sizes the interpreter's tiles")


def _same(got, want) -> None:
    """``got`` (on DEVICE) equals the reference's ``want`` (on the CPU), bit for bit."""
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.device.type == DEVICE.type
        assert g.dtype == w.dtype and g.shape == w.shape and torch.equal(g.cpu(), w)


def _run(op, *args):
    """``op`` on the triton backend with the tensors moved to DEVICE."""
    moved = [arg.to(DEVICE) if isinstance(arg, torch.Tensor) else arg for arg in args]
    return op(*moved, backend="triton")


def _pairs(n: int, m: int, n_bits: int, key: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows around a small pool: duplicates and near neighbours (ties, radius hits)."""
    gen = make_gen(key, n, m, n_bits)
    pool = random_words(5, n_bits, gen)
    a = near_copies(pool, n, n_bits, gen, max_flips=2)
    b = near_copies(pool, m, n_bits, gen, max_flips=2)
    b[::5] = random_words(b[::5].shape[0], n_bits, gen)
    return a, b


def test_registered_and_never_default_for_cpu():
    assert "triton" in backends.names()
    if INTERPRETED:
        assert triton_backend.DEVICE_TYPES == ("cuda", "cpu") and not common.USE_LIBDEVICE
    else:
        assert triton_backend.DEVICE_TYPES == ("cuda",) and common.USE_LIBDEVICE
    assert backends.select("cpu") != "triton"


@interpreter_only
@pytest.mark.parametrize("n_bits", [65, 700])
def test_many_small_tiles(monkeypatch, n_bits):
    """Tiny interpreter tiles: every op runs as many programs with tails in every
    dim - cdist's grouped tile order, top-k merging across tiles of b, radius
    slots across tiles, atomics from many programs, transposes over many blocks."""
    monkeypatch.setattr(common, "INTERPRETER_TILE_ELEMENTS", 1024)
    a, b = _pairs(45, 70, n_bits, "tiles")
    x = random_floats((3, 37, 2 * n_bits + 3), torch.float32, 0.2, make_gen("tiles-x", n_bits)).transpose(0, 1)
    for op, args in [
        (fs.pack_signs, (x, -1, 0.2)),
        (fs.pack_signs, (x, 0, 0.2)),
        (fs.unpack_bits, (a, n_bits)),
        (fs.popcount, (a,)),
        (fs.hamming, (a, a.flip(0))),
        (fs.hamming_total, (a, a.flip(0))),
        (fs.hamming_cdist, (a, b)),
        # k = 1 and k = M (list edges) at 65 bits; the long K loop with one k in between
        *[(fs.hamming_topk, (a, b, k)) for k in ((1, 20, 70) if n_bits < 100 else (20,))],
        (fs.hamming_radius, (a, b, n_bits // 3)),
        (fs.bit_transpose, (a, n_bits)),
        (fs.count_regions, (torch.cat([a, a[::3]]),)),
    ]:
        _same(_run(op, *args), op(*args, backend="reference"))


def test_split_grid_stays_within_cuda_bounds():
    # cdiv(rows, BLOCK_R) programs passed grid dim 0's bound (2**31 - 1) from 2**31 rows at BLOCK_R = 1.
    for programs in (1, 1000, 2**31 - 1, 2**31, 2**31 + 1, 3 * 2**33 + 5, 2**46):
        x, y = common.split_grid(programs)
        assert x <= common.MAX_GRID_DIM0 and y <= 65535 and 0 <= x * y - programs < y, programs
    assert common.split_grid(2**31 - 1) == (2**31 - 1, 1)
    assert common.split_grid(2**31) == (2**30, 2)


@interpreter_only
def test_row_tilings_split_over_two_grid_dims(monkeypatch):
    """Grid dim 0 shrunk to 7 programs: the row tilings (11 to 495 programs here) run
    over dims 0 and 1, with programs past the last tile, and give the same results."""
    monkeypatch.setattr(common, "INTERPRETER_TILE_ELEMENTS", 64)
    monkeypatch.setattr(common, "MAX_GRID_DIM0", 7)
    a, b = _pairs(45, 70, 700, "split-grid")
    x = random_floats((3, 37, 203), torch.float32, 0.2, make_gen("split-grid-x")).transpose(0, 1)
    for op, args in [
        (fs.pack_signs, (x, -1, 0.2)),
        (fs.unpack_bits, (a, 700)),
        (fs.popcount, (a,)),
        (fs.hamming, (a, a.flip(0))),
        (fs.hamming_total, (a, a.flip(0))),
        (fs.bit_transpose, (a, 700)),
        (fs.count_regions, (torch.cat([a, a[::3]]),)),
    ]:
        _same(_run(op, *args), op(*args, backend="reference"))


@needs_device
@pytest.mark.parametrize("splits", [2, 3, 8])
@pytest.mark.parametrize("k", [1, 5, 16, 17])
def test_topk_split_rows_merge(splits, k):
    """Several programs per row of a, each searching a slice of b, then the exact
    merge of their keys (the GPU path when a has few rows); ties to the lower index."""
    a, b = _pairs(23, 61, 129, "splits")
    dist = torch.empty(23, k, dtype=torch.int32, device=DEVICE)
    index = torch.empty(23, k, dtype=torch.int64, device=DEVICE)
    search.topk(a.to(DEVICE), b.to(DEVICE), k, dist, index, splits=splits)
    _same((dist, index), fs.hamming_topk(a, b, k, backend="reference"))


@needs_device
def test_topk_large_k_in_chunks(monkeypatch):
    """k past the register list: distance rows in several chunks and a stable sort."""
    monkeypatch.setattr(triton_backend, "_TOPK_CHUNK_ELEMENTS", 3 * 1100)
    a, b = _pairs(10, 1100, 65, "large-k")
    k = search.MAX_TOPK_LIST + 1
    _same(_run(fs.hamming_topk, a, b, k), fs.hamming_topk(a, b, k, backend="reference"))


@needs_device
def test_pack_signs_deep_strided():
    """Leading dims that do not merge into four: one launch per outer index."""
    base = random_floats((3, 4, 5, 6, 7, 130), torch.float16, 0.0, make_gen("deep"))
    x = base.permute(4, 2, 0, 3, 1, 5)[:, ::2]  # 5 leading dims, none mergeable
    x_device = base.to(DEVICE).permute(4, 2, 0, 3, 1, 5)[:, ::2]  # the same view of a copy
    for dim in (-1, 0, 2):
        _same(fs.pack_signs(x_device, dim, backend="triton"), fs.pack_signs(x, dim, backend="reference"))


@pytest.mark.parametrize(
    "threshold", [0.1, -0.1, 1e39, -1e39, 5e-324, -5e-324, 0.0, -0.0, math.inf, -math.inf, 3.4028235677973366e38]
)
def test_float32_floor(threshold):
    """The largest float32 <= threshold."""
    got = layout.float32_floor(threshold)
    assert got <= threshold
    assert np.float32(got) == got  # representable
    with np.errstate(over="ignore"):
        above = float(np.nextafter(np.float32(got), np.float32(np.inf)))
    assert above > threshold or got == math.inf


def test_float32_floor_nan():
    assert math.isnan(layout.float32_floor(math.nan))


def test_missing_triton_marks_backend_unavailable(monkeypatch):
    """Without triton, importing the backend raises ImportError and the registry
    reports it as the reason (no crash, no silent fallback)."""
    monkeypatch.setattr(backends, "_loaded", {k: v for k, v in backends._loaded.items() if k != "triton"})
    monkeypatch.setattr(backends, "_failed", dict(backends._failed))
    monkeypatch.setitem(sys.modules, "triton", None)  # `import triton` raises ImportError
    monkeypatch.setattr(fs, "kernels", fs.kernels)  # the re-import below rebinds it; restore it after
    for name in [m for m in sys.modules if m.startswith("fastspline.kernels") or m == "fastspline.backends.triton"]:
        monkeypatch.delitem(sys.modules, name)
    reason = backends.available()["triton"]  # "ModuleNotFoundError: import of triton halted; ..."
    assert reason is not None and reason.split(":")[0] in ("ImportError", "ModuleNotFoundError") and "triton" in reason
    with pytest.raises(RuntimeError, match="fastspline backend 'triton' is not available: .*triton"):
        fs.popcount(torch.zeros(2, 1, dtype=torch.int64), backend="triton")


def test_cross_compile_for_gpus():
    """The compiled code path (libdevice popc, autotune configs, constexpr variants)
    builds PTX and cubins for sm_80 and sm_90 with triton's own ptxas; about 15 s
    the first time, then from triton's cache. Full sweep of every config:
    ``python -m fastspline.kernels.cross_compile --ptxas-stats`` (minutes)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run(
        [sys.executable, "-m", "fastspline.kernels.cross_compile", "--quick", "--arch", "80", "--arch", "90"],
        env=env, cwd=Path(__file__).parent, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count("sm_90 ") >= 15, result.stdout


@pytest.mark.parametrize("shape", [(1, 1, 1), (37, 45, 2), (130, 70, 3), (5, 200, 17), (0, 4, 2), (3, 0, 1), (4, 5, 0)])
def test_cdist_dot_kernel(monkeypatch, shape):
    """The int8 tensor-core cdist (+-1 expansion, (K - dot) / 2) equals the reference,
    on plain, strided and self inputs; forced, as auto picks it on GPUs only."""
    monkeypatch.setenv("FASTSPLINE_TRITON_CDIST", "dot")
    n, m, w = shape
    gen = make_gen("triton-dot", shape)
    a = torch.randint(-(2**63), 2**63 - 1, (n, w), generator=gen, dtype=torch.int64)
    b = torch.randint(-(2**63), 2**63 - 1, (m, w), generator=gen, dtype=torch.int64)
    a[: n // 2] = -1  # all ones: the largest distances
    for x, y in ((a, b), (a[::2], b[1::2]), (a, a)):
        want = fs.hamming_cdist(x, y, backend="reference")
        got = fs.hamming_cdist(x.to(DEVICE), y.to(DEVICE), backend="triton").cpu()
        assert torch.equal(got, want)


def test_cdist_method_choice(monkeypatch):
    monkeypatch.setenv("FASTSPLINE_TRITON_CDIST", "fast")
    with pytest.raises(ValueError, match=r"FASTSPLINE_TRITON_CDIST must be one of \('auto', 'popc', 'dot'\), got 'fast'"):
        triton_backend.cdist_method(4, 4, 1, torch.device("cpu"))
    monkeypatch.delenv("FASTSPLINE_TRITON_CDIST")
    assert triton_backend.cdist_method(4096, 4096, 16, torch.device("cpu")) == "popc"
    assert triton_backend.cdist_method(4096, 4096, 16, torch.device("cuda")) == "dot"
    assert triton_backend.cdist_method(64, 4096, 16, torch.device("cuda")) == "popc"
    assert triton_backend.cdist_method(1 << 20, 1 << 20, 16, torch.device("cuda")) == "popc"  # expansion > 1 GiB


@interpreter_only
def test_pack_signs_outer_index_without_int32_product():
    """Row -> (outer0, outer1, outer2, inner) of a launch whose outer1 * outer2 passes
    int32 (the sizes are i32 arguments: their product wrapped, 65537 * 65535 to -1,
    so outer0 came out -1 and rows read memory before x). One program of the kernel,
    launched directly: rows 0..3 are (0, 0, o2, i), at element 2 * o2 + i of x."""
    base = torch.tensor([-1.0] * 4 + [1.0] * 4)
    x = base[4:]  # the element 4 before each of x's (stride_outer0 = 4) is in base: -1
    out = torch.full((4, 1), -7, dtype=torch.int64)
    layout._pack_signs_kernel[(1,)](
        x, torch.zeros(1), out, 2 * 65537 * 65535 * 2, 1, 1, 2, 65537, 65535, 4, 0, 2, 1, 1,
        IS_FP64=False, IS_BF16=False, BLOCK_R=4, BLOCK_W=1,
    )
    assert out.flatten().tolist() == [1, 1, 1, 1]
