"""GPU backends bit-exact against the reference (on CPU copies), over the edge shapes.

Skipped without a CUDA device; benchmarks/gpu_check.sh runs it on a GPU machine.
"""
from __future__ import annotations

import pytest
import torch

import fastspline as fs
from fastspline import backends
from cases import make_gen, pack_kernel_views, random_words

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

GPU_BACKENDS = [
    pytest.param(name, marks=pytest.mark.skipif(backends.available().get(name) is not None, reason=f"{name} unavailable"))
    for name in ("cuda", "triton")
    if name in backends.names()
]
N_BITS = [1, 63, 64, 65, 129, 1000]
SHAPES = [(0, 5), (1, 1), (37, 45), (300, 131)]


def same(got, want) -> None:
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    for g, w in zip(got, want, strict=True):
        assert g.device.type == "cuda"
        assert g.dtype == w.dtype and g.shape == w.shape
        assert torch.equal(g.cpu(), w)


@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("n_bits", N_BITS)
@pytest.mark.parametrize("shape", SHAPES)
def test_word_ops(backend, n_bits, shape):
    n, m = shape
    gen = make_gen("gpu", backend, n_bits, shape)
    a, b = random_words(n, n_bits, gen), random_words(m, n_bits, gen)
    if m:
        b[::3] = b[0].clone()  # ties for topk
    ga, gb = a.cuda(), b.cuda()
    same(fs.popcount(ga, backend=backend), fs.popcount(a, backend="reference"))
    same(fs.hamming(ga, ga.flip(0), backend=backend), fs.hamming(a, a.flip(0), backend="reference"))
    same(fs.hamming_total(ga, ga.flip(0), backend=backend), fs.hamming_total(a, a.flip(0), backend="reference"))
    same(fs.hamming_cdist(ga, gb, backend=backend), fs.hamming_cdist(a, b, backend="reference"))
    same(fs.hamming_cdist(ga.t().contiguous().t(), backend=backend), fs.hamming_cdist(a, backend="reference"))
    if m:
        for k in (1, m):
            same(fs.hamming_topk(ga, gb, k, backend=backend), fs.hamming_topk(a, b, k, backend="reference"))
    for r in (0, n_bits // 2, n_bits):
        same(fs.hamming_radius(ga, gb, r, backend=backend), fs.hamming_radius(a, b, r, backend="reference"))
    same(fs.unpack_bits(ga, n_bits, backend=backend), fs.unpack_bits(a, n_bits, backend="reference"))
    same(fs.bit_transpose(ga, n_bits, backend=backend), fs.bit_transpose(a, n_bits, backend="reference"))
    dup = torch.cat([a, a[: n // 2]])
    same(fs.count_regions(dup.cuda(), backend=backend), fs.count_regions(dup, backend="reference"))


@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("threshold", [0.0, 0.1, -0.7])
def test_pack_signs(backend, dtype, threshold):
    gen = make_gen("gpu-pack", backend, dtype, threshold)
    x = torch.randn(5, 67, 3, 90, generator=gen).to(dtype)
    x[0, 0, 0, :5] = float("nan")
    x[1, 2, 1, :3] = 0.0
    x[2, 3, 2, :2] = float("inf")
    gx = x.cuda()
    for dim in range(4):
        for view, gview in ((x, gx), (x.permute(3, 1, 0, 2), gx.permute(3, 1, 0, 2)), (x[:, ::2], gx[:, ::2])):
            same(fs.pack_signs(gview, dim, threshold, backend=backend), fs.pack_signs(view, dim, threshold, backend="reference"))


needs_cuda_backend = pytest.mark.skipif(
    "cuda" not in backends.names() or backends.available().get("cuda") is not None, reason="cuda backend unavailable"
)


@needs_cuda_backend
@pytest.mark.parametrize("kernel", ["rows", "columns", "stream", "columns16"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_pack_kernels(monkeypatch, kernel, dtype):
    """Each CUDA pack kernel, forced, on the layouts it takes (others must refuse)."""
    monkeypatch.setenv("FASTSPLINE_CUDA_PACK", kernel)
    gen = make_gen("gpu-pack-kernels", kernel, dtype)
    x = torch.randn(3, 70, 5, 260, generator=gen).to(dtype)
    x[0, 0, 0, :7] = float("nan")
    x[1, 1, 1, :9] = 0.0
    x[2, 2, 2, :5] = 0.25  # at the threshold: not above it
    on_gpu = pack_kernel_views(x.cuda(), 256)
    cases = [(view, gview, dim) for (view, dim), (gview, _) in zip(pack_kernel_views(x, 256), on_gpu)]
    ran = 0
    for view, gview, dim in cases:
        want = fs.pack_signs(view, dim, 0.25, backend="reference")
        try:
            got = fs.pack_signs(gview, dim, 0.25, backend="cuda")
        except ValueError as exc:
            assert "does not apply to this input" in str(exc)
            continue
        same(got, want)
        ran += 1
    # stream: rows of whole 16-byte vectors (260 and 256 elements of 4 or 8 bytes), aligned, at
    # one row stride: x, x[..., :256], xc, xc[1:], xc.reshape (halves: the last three);
    # columns16: the columns layouts where the row run of 260 is whole vectors (not 8 halves).
    wide = dtype in (torch.float32, torch.float64)
    expected = {"columns": 5, "columns16": 5 if wide else 0, "stream": 5 if wide else 3}.get(kernel, len(cases))
    assert ran == expected


@needs_cuda_backend
def test_pack_stream_kernel_passes_its_self_check_and_is_auto():
    """Auto packing takes the stream kernel only after its per-device check; on the
    cards the project is tested on, the check must pass (a failure is a kernel bug)."""
    from fastspline.backends import cuda

    assert cuda.pack_stream_status(torch.device("cuda")) is None
    x = torch.randn(1000, 4096, device="cuda")
    same(fs.pack_signs(x, backend="cuda"), fs.pack_signs(x.cpu(), backend="reference"))


@needs_cuda_backend
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_pack_columns16_kernel_passes_its_self_check_and_is_auto(dtype):
    """The same for the columns16 kernel on NCHW channels (dim=1), whole and ragged words."""
    from fastspline.backends import cuda

    assert cuda.pack_columns16_status(torch.device("cuda")) is None
    for channels in (256, 200):
        x = torch.randn(8, channels, 16, 16, device="cuda").to(dtype)
        same(fs.pack_signs(x, 1, backend="cuda"), fs.pack_signs(x.cpu(), 1, backend="reference"))


@needs_cuda_backend
@pytest.mark.parametrize("method", ["popc", "mma-xor", "mma-and"])
@pytest.mark.parametrize("w", [1, 3, 4, 5, 8, 17])
@pytest.mark.parametrize("shape", [(1, 1), (127, 129), (128, 128), (300, 517), (1000, 64)])
def test_cdist_kernels(monkeypatch, method, w, shape):
    """Each cdist kernel (CUDA cores, both tensor-core variants) on ragged tiles and K."""
    from fastspline.backends import cuda

    if method != "popc" and cuda.mma_status(torch.device("cuda")) is not None:
        pytest.fail(f"binary tensor cores unusable: {cuda.mma_status(torch.device('cuda'))}")
    monkeypatch.setenv("FASTSPLINE_CUDA_CDIST", method)
    check_cuda_cdist(w, shape, make_gen("gpu-cdist", method, w, shape))


def check_cuda_cdist(w: int, shape: tuple[int, int], gen: torch.Generator) -> None:
    """The cuda backend's cdist (kernel as the environment forces it) against the
    reference: all-ones and all-zero rows, a given out, a row slice of a."""
    n, m = shape
    a = torch.randint(-(2**63), 2**63 - 1, (n, w), generator=gen, dtype=torch.int64)
    b = torch.randint(-(2**63), 2**63 - 1, (m, w), generator=gen, dtype=torch.int64)
    a[: n // 3] = -1  # all-ones rows: distance counts up to 64 w
    b[: m // 4] = 0
    want = fs.hamming_cdist(a, b, backend="reference")
    same(fs.hamming_cdist(a.cuda(), b.cuda(), backend="cuda"), want)
    out = torch.full((n, m), -7, dtype=torch.int32, device="cuda")
    fs.hamming_cdist(a.cuda(), b.cuda(), out=out, backend="cuda")
    same(out, want)
    # Row blocks of a (as topk / radius take them; even w keeps 16-byte alignment).
    same(fs.hamming_cdist(a.cuda()[n // 2 :], b.cuda(), backend="cuda"), want[n // 2 :])


@needs_cuda_backend
@pytest.mark.parametrize("staging", ["async", "wide"])
@pytest.mark.parametrize("method", ["mma-xor", "mma-and"])
@pytest.mark.parametrize("w", [2, 16, 18, 32, 34, 130])
@pytest.mark.parametrize("shape", [(1, 1), (127, 129), (128, 256), (300, 517), (1000, 64)])
def test_cdist_async_kernels(monkeypatch, staging, method, w, shape):
    """The cp.async-pipelined tensor-core kernels (128 x 128 and 256 x 128 tiles),
    forced: one to nine K slices, ragged last slices and tiles."""
    from fastspline.backends import cuda

    status = cuda.mma_async_status if staging == "async" else cuda.mma_wide_status
    if (reason := status(torch.device("cuda"))) is not None:
        pytest.fail(f"pipelined tensor-core kernel ({staging}) unusable: {reason}")
    monkeypatch.setenv("FASTSPLINE_CUDA_CDIST", method)
    monkeypatch.setenv("FASTSPLINE_CUDA_MMA_STAGING", staging)
    check_cuda_cdist(w, shape, make_gen("gpu-cdist-async", staging, method, w, shape))


@needs_cuda_backend
@pytest.mark.parametrize("staging", ["wgmma", "wgmma-wide", "wgmma-deep", "wgmma-cluster", "wgmma-cluster4"])
@pytest.mark.parametrize("w", [2, 16, 18, 32, 34, 130])
@pytest.mark.parametrize("shape", [(1, 1), (127, 129), (128, 256), (300, 517), (1000, 64)])
def test_cdist_wgmma_kernel(monkeypatch, staging, w, shape):
    """The wgmma kernels (sm_90 cards), forced: one to nine K slices, ragged slices and
    tiles. On an sm_90 card their self-checks must pass: if one does not, the kernel's
    shared-memory descriptors, accumulator layout (csrc/cuda/ops.cu, wgmma_desc) or, for
    the wide one, its in-flight ring (stream_slices' kDepth) are wrong for the hardware,
    and auto never uses it until fixed."""
    from fastspline.backends import cuda

    status = {"wgmma": cuda.wgmma_status, "wgmma-wide": cuda.wgmma_wide_status, "wgmma-deep": cuda.wgmma_deep_status,
              "wgmma-cluster": cuda.wgmma_cluster_status, "wgmma-cluster4": cuda.wgmma_cluster4_status}[staging]
    if (reason := status(torch.device("cuda"))) is not None:
        if torch.cuda.get_device_capability() != (9, 0):
            pytest.skip(reason)
        pytest.fail(f"{staging} tensor-core kernel unusable on this sm_90 card: {reason}")
    monkeypatch.setenv("FASTSPLINE_CUDA_CDIST", "mma-and")
    monkeypatch.setenv("FASTSPLINE_CUDA_MMA_STAGING", staging)
    check_cuda_cdist(w, shape, make_gen("gpu-cdist-wgmma", staging, w, shape))


@needs_cuda_backend
def test_wgmma_child_check_on_the_card(monkeypatch, tmp_path):
    """The wgmma kernels' first check in a child process (auto's default,
    FASTSPLINE_CUDA_WGMMA_AUTO=isolated), for real: on an sm_90 card both pass there and
    are remembered on disk (a second look starts no child); elsewhere they are
    unsupported without a child."""
    from fastspline.backends import cuda

    monkeypatch.setenv("FASTSPLINE_CACHE_DIR", str(tmp_path))
    index = torch.cuda.current_device()
    got = cuda._child_checks(index)
    if torch.cuda.get_device_capability() != (9, 0):
        assert all(isinstance(r, cuda._Unsupported) for r in got.values()) and not any(tmp_path.iterdir())
        return
    assert got == {4: None, 5: None}, got
    monkeypatch.setattr(cuda, "_run_child", lambda index, codes: pytest.fail("a child ran again"))
    assert cuda._child_checks(index) == {4: None, 5: None}


@needs_cuda_backend
@pytest.mark.parametrize("staging", ["async", "wide"])
def test_cdist_async_refuses_odd_word_counts(monkeypatch, staging):
    monkeypatch.setenv("FASTSPLINE_CUDA_CDIST", "mma-and")
    monkeypatch.setenv("FASTSPLINE_CUDA_MMA_STAGING", staging)
    a = torch.zeros(130, 3, dtype=torch.int64, device="cuda")
    with pytest.raises(ValueError, match="needs an even word count"):
        fs.hamming_cdist(a, a, backend="cuda")


@needs_cuda_backend
@pytest.mark.parametrize("method", ["fused", "pipelined", "blocks"])
@pytest.mark.parametrize("w", [1, 2, 17, 34])
@pytest.mark.parametrize("shape", [(1, 1), (1, 300), (127, 129), (300, 517), (129, 4200)])
def test_search_kernels(monkeypatch, method, w, shape):
    """Top-k (k <= 32 fused or pipelined, larger k by row blocks) and radius, each path
    forced, with ties, all-equal rows, column splits, radius 0 and past every distance."""
    from fastspline.backends import cuda

    if method == "pipelined" and w % 2:
        pytest.skip("the pipelined kernels take even word counts")
    statuses = {"fused": (cuda.topk_status, cuda.radius_status),
                "pipelined": (cuda.topk_pipelined_status, cuda.radius_pipelined_status)}.get(method, ())
    for status in statuses:
        if (reason := status(torch.device("cuda"))) is not None:
            pytest.fail(f"{status.__name__}: {method} kernel unusable: {reason}")
    monkeypatch.setenv("FASTSPLINE_CUDA_SEARCH", method)
    n, m = shape
    gen = make_gen("gpu-search", method, w, shape)
    a = torch.randint(-(2**63), 2**63 - 1, (n, w), generator=gen, dtype=torch.int64)
    b = torch.randint(-(2**63), 2**63 - 1, (m, w), generator=gen, dtype=torch.int64)
    b[::3] = b[0].clone()
    b[m // 2 : m // 2 + 40] = a[0].clone()  # distance 0 for row 0, 40 ties
    a[n // 2 :] = -1
    ga, gb = a.cuda(), b.cuda()
    for k in sorted({1, min(m, 7), min(m, 32), min(m, 33), m}):
        same(fs.hamming_topk(ga, gb, k, backend="cuda"), fs.hamming_topk(a, b, k, backend="reference"))
    for r in (0, 1, 32 * w, 64 * w, 10**6):
        same(fs.hamming_radius(ga, gb, r, backend="cuda"), fs.hamming_radius(a, b, r, backend="reference"))


@needs_cuda_backend
def test_cdist_auto_uses_tensor_cores_on_sm80_and_newer():
    from fastspline.backends import cuda

    major, _ = torch.cuda.get_device_capability()
    method = cuda.cdist_method(4096, 4096, torch.device("cuda"))
    assert method == ("mma-and" if major >= 8 else "popc")
    assert cuda.cdist_method(16, 4096, torch.device("cuda")) == "popc"


@pytest.mark.skipif("triton" not in backends.names() or backends.available().get("triton") is not None, reason="triton unavailable")
@pytest.mark.parametrize("method", ["popc", "dot"])
@pytest.mark.parametrize("w", [1, 3, 16])
@pytest.mark.parametrize("shape", [(1, 1), (127, 129), (300, 517)])
def test_triton_cdist_kernels(monkeypatch, method, w, shape):
    """Both Triton cdist kernels (XOR + popcount, int8 tensor cores) compiled on the GPU."""
    monkeypatch.setenv("FASTSPLINE_TRITON_CDIST", method)
    n, m = shape
    gen = make_gen("gpu-triton-cdist", method, w, shape)
    a = torch.randint(-(2**63), 2**63 - 1, (n, w), generator=gen, dtype=torch.int64)
    b = torch.randint(-(2**63), 2**63 - 1, (m, w), generator=gen, dtype=torch.int64)
    a[: n // 3] = -1
    want = fs.hamming_cdist(a, b, backend="reference")
    same(fs.hamming_cdist(a.cuda(), b.cuda(), backend="triton"), want)
    same(fs.hamming_cdist(a.cuda()[::2], b.cuda(), backend="triton"), fs.hamming_cdist(a[::2], b, backend="reference"))


def test_default_backend_for_cuda_tensors_is_cuda():
    if backends.available().get("cuda") is not None:
        pytest.skip("cuda backend unavailable")
    a = torch.zeros(2, 1, dtype=torch.int64, device="cuda")
    assert fs.hamming_cdist(a).device.type == "cuda"
    assert backends.select("cuda") == "cuda"
