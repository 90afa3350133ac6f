"""The CUDA module builds, imports without a GPU, and fails clearly without one."""
from __future__ import annotations

import shutil

import pytest
import torch

import fastspline as fs
from fastspline import backends

needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH: the CUDA module is not built")
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: tests/test_gpu.py runs the kernels")


@needs_nvcc
def test_cuda_module_built_and_importable():
    from fastspline import _cuda

    assert _cuda.build_info().startswith("CUDA ")
    assert fs.build_info()["cuda_built"] is True
    assert backends.available()["cuda"] is None


@needs_nvcc
@no_gpu
def test_cuda_call_without_gpu_raises_clear_error():
    from fastspline import _cuda

    with pytest.raises(RuntimeError, match=r"fastspline\._cuda: cudaGetDeviceCount failed: cuda"):
        _cuda.device_count()


@needs_nvcc
def test_cuda_backend_refuses_cpu_tensors():
    a = torch.zeros(3, 2, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"hamming_cdist: backend 'cuda' runs on \('cuda',\) tensors, got a cpu tensor"):
        fs.hamming_cdist(a, a, backend="cuda")
    with pytest.raises(ValueError, match=r"pack_signs: backend 'cuda' runs on"):
        fs.pack_signs(torch.randn(4, 5), backend="cuda")


@needs_nvcc
def test_cuda_bindings_reject_null_pointers():
    from fastspline import _cuda

    with pytest.raises(ValueError, match="null pointer"):
        _cuda.hamming_cdist(0, 4, 0, 4, 2, 0, 4, 0)
    with pytest.raises(ValueError, match="negative size"):
        _cuda.unpack_bits(1, -1, 1, 1, 1, 0)


@needs_nvcc
@no_gpu
def test_cuda_tensor_core_entry_points_fail_clearly_without_gpu():
    from fastspline import _cuda

    with pytest.raises(RuntimeError, match=r"fastspline\._cuda: cudaGetDevice"):
        _cuda.compute_capability()
    with pytest.raises(ValueError, match="null pointer"):
        _cuda.hamming_cdist_mma(0, 4, 0, 4, 2, 0, 4, True, 0)
    with pytest.raises(ValueError, match="iters and blocks must be >= 1"):
        _cuda.peak(0, 0, 1, 8, 0)


@needs_nvcc
def test_cdist_method_env_is_validated(monkeypatch):
    from fastspline.backends import cuda

    monkeypatch.setenv("FASTSPLINE_CUDA_CDIST", "fast")
    with pytest.raises(ValueError, match=r"FASTSPLINE_CUDA_CDIST must be one of \('auto', 'popc', 'mma-xor', 'mma-and'\), got 'fast'"):
        cuda.cdist_method(256, 256, torch.device("cuda", 0))
    monkeypatch.setenv("FASTSPLINE_CUDA_CDIST", "popc")
    assert cuda.cdist_method(256, 256, torch.device("cuda", 0)) == "popc"


@needs_nvcc
@no_gpu
def test_cdist_mma_staging_is_checked_before_any_cuda_call():
    """The launcher refuses what the cp.async kernel cannot take (an odd word count,
    rows not 16-byte aligned) and unknown staging codes, naming why."""
    from fastspline import _cuda

    for staging in (-1, 9):
        with pytest.raises(ValueError, match=r"staging must be 0 \(auto\), 1 \(sync\), 2 \(cp.async\), 3 \(cp.async, wide tiles\), "
                                             r"4 \(wgmma\), 5 \(wgmma, wide tiles\), 6 \(wgmma, wide tiles, loaded deeper\), "
                                             r"7 \(wgmma in clusters of two\) or 8 \(wgmma in clusters of four\)"):
            _cuda.hamming_cdist_mma(16, 4, 16, 4, 2, 16, 4, False, 0, staging)
    for staging in (4, 5, 6, 7, 8):
        with pytest.raises(ValueError, match="the wgmma kernels count AND only"):
            _cuda.hamming_cdist_mma(16, 4, 16, 4, 2, 16, 4, True, 0, staging)
    for staging in (2, 3, 4, 5, 6, 7, 8):  # square and wide tiles, wgmma square, wide, deep and in clusters
        for a, w in ((16, 3), (24, 2)):  # odd w; a misaligned by 8 bytes
            with pytest.raises(ValueError, match="cp.async kernel needs an even word count and 16-byte aligned rows"):
                _cuda.hamming_cdist_mma(a, 4, 16, 4, w, 16, 4, False, 0, staging)
        with pytest.raises(ValueError, match="the cp.async AND kernel needs a workspace of n \\+ m int64"):
            _cuda.hamming_cdist_mma(16, 4, 32, 4, 2, 16, 4, False, 0, staging)
        if staging >= 7:  # bulk copies of the packed panels need a 16-byte aligned workspace
            with pytest.raises(ValueError, match="the clustered kernels' workspace must be 16-byte aligned"):
                _cuda.hamming_cdist_mma(16, 4, 32, 4, 2, 16, 4, False, 0, staging, 72)
        # Accepted layouts get as far as the device query, which fails without a GPU.
        for use_xor, workspace in ((False, 64), (True, 0))[: 1 if staging >= 4 else 2]:
            with pytest.raises(RuntimeError, match=r"fastspline\._cuda: cudaGetDevice"):
                _cuda.hamming_cdist_mma(16, 4, 32, 4, 2, 16, 4, use_xor, 0, staging, workspace)


@needs_nvcc
@no_gpu
def test_pack_stream_kernel_layout_rules():
    """Kernel 3 (stream) takes rows of whole 16-byte vectors, 16-byte aligned, at one row
    stride; other layouts are refused by name before any CUDA call."""
    from fastspline import _cuda

    refused = [  # (x, dtype code, sizes, strides)
        (16, 0, [3, 102], [102, 1]),  # float32 rows not whole 16-byte vectors
        (16, 2, [3, 100], [100, 1]),  # float16: 100 % 8 != 0
        (16, 0, [3, 128], [130, 1]),  # row starts not 16-byte aligned
        (16, 0, [3, 128], [1, 3]),  # packed dim strided
        (24, 0, [3, 128], [128, 1]),  # base not 16-byte aligned
        (16, 0, [2, 3, 128], [512, 128, 1]),  # leading dims do not collapse to one row stride
    ]
    for x, dtype, sizes, strides in refused:
        with pytest.raises(ValueError, match="pack_signs: kernel 3 does not apply to this input"):
            _cuda.pack_signs(x, dtype, sizes, strides, 0.0, 16, 0, 3)
    accepted = [
        (16, 0, [3, 128], [128, 1]), (16, 0, [3, 100], [100, 1]), (16, 0, [3, 128], [256, 1]),
        (32, 1, [2, 1, 3, 64], [192, 7, 64, 1]), (16, 3, [5, 64], [64, 1]), (16, 0, [4, 3, 8], [24, 8, 1]),
        (16, 0, [1, 40], [999, 1]),
    ]
    for x, dtype, sizes, strides in accepted:  # get as far as a CUDA call, which fails without a GPU
        with pytest.raises(RuntimeError, match=r"fastspline\._cuda: cuda\w+ failed: cuda"):
            _cuda.pack_signs(x, dtype, sizes, strides, 0.0, 16, 0, 3)


@needs_nvcc
@no_gpu
def test_pack_columns16_kernel_layout_rules():
    """Kernel 4 (columns16) takes a strided packed dim whose innermost neighbour dim is
    contiguous with a size, and every other stride, of whole 16-byte vectors, x aligned;
    other layouts are refused by name before any CUDA call."""
    from fastspline import _cuda

    refused = [  # (x, dtype code, sizes, strides): NCHW [2, 64, H, W] with channels moved last
        (16, 0, [2, 4, 6, 64], [1536, 6, 1, 24]),  # W = 6 not whole vectors
        (16, 2, [2, 4, 4, 64], [1024, 4, 1, 16]),  # float16: W = 4 < 8
        (16, 0, [2, 4, 8, 64], [2048, 8, 1, 34]),  # channel stride 34 not whole vectors
        (16, 0, [2, 4, 8, 64], [2050, 8, 1, 32]),  # batch stride not whole vectors
        (24, 0, [2, 4, 8, 64], [2048, 8, 1, 32]),  # base not 16-byte aligned
        (16, 0, [3, 128], [128, 1]),  # packed dim contiguous (stream / rows)
    ]
    for x, dtype, sizes, strides in refused:
        with pytest.raises(ValueError, match="pack_signs: kernel 4 does not apply to this input"):
            _cuda.pack_signs(x, dtype, sizes, strides, 0.0, 16, 0, 4)
    accepted = [
        (16, 0, [2, 4, 8, 64], [2048, 8, 1, 32]), (16, 2, [2, 4, 8, 64], [2048, 8, 1, 32]),
        (16, 1, [3, 2, 70], [140, 1, 2]), (16, 0, [2, 8, 64], [512, 1, 8]), (32, 3, [1, 16, 3], [48, 1, 16]),
    ]
    for x, dtype, sizes, strides in accepted:  # get as far as a CUDA call, which fails without a GPU
        with pytest.raises(RuntimeError, match=r"fastspline\._cuda: [\w ]+ failed: cuda"):  # the launch
            _cuda.pack_signs(x, dtype, sizes, strides, 0.0, 16, 0, 4)


@needs_nvcc
def test_kernel_choice_envs_are_validated(monkeypatch):
    from fastspline.backends import cuda

    monkeypatch.setenv("FASTSPLINE_CUDA_PACK", "ballot")
    with pytest.raises(ValueError, match=r"FASTSPLINE_CUDA_PACK must be one of \('auto', 'rows', 'columns', 'stream', 'columns16'\), got 'ballot'"):
        cuda.pack_kernel()
    monkeypatch.setenv("FASTSPLINE_CUDA_PACK", "stream")
    assert cuda.pack_kernel() == 3
    monkeypatch.setenv("FASTSPLINE_CUDA_MMA_STAGING", "pipelined")
    with pytest.raises(ValueError, match=r"FASTSPLINE_CUDA_MMA_STAGING must be one of \('auto', 'sync', 'async', 'wide', 'wgmma', 'wgmma-wide', 'wgmma-deep', 'wgmma-cluster', 'wgmma-cluster4'\), got 'pipelined'"):
        cuda.mma_staging(torch.device("cuda", 0))
    monkeypatch.setenv("FASTSPLINE_CUDA_MMA_STAGING", "sync")
    assert cuda.mma_staging(torch.device("cuda", 0)) == 1


@needs_nvcc
@no_gpu
def test_fused_search_launchers_check_arguments_before_any_cuda_call():
    from fastspline import _cuda

    for k, splits in ((0, 1), (33, 1), (5, 0)):
        with pytest.raises(ValueError, match=r"k must be in \[1, 32\]|splits must be >= 1"):
            _cuda.hamming_topk_mma(16, 4, 16, 4, 2, k, splits, 16, 0)
    with pytest.raises(ValueError, match="fewer than 2\\^31 rows"):
        _cuda.hamming_topk_mma(16, 4, 16, 2**31, 1, 5, 1, 16, 0)
    with pytest.raises(RuntimeError, match=r"fastspline\._cuda: cudaGetDevice"):  # accepted, then no device
        _cuda.hamming_topk_mma(16, 4, 16, 4, 2, 32, 3, 16, 0)
    with pytest.raises(ValueError, match="r must be >= 0"):
        _cuda.hamming_radius_mma(16, 4, 16, 4, 2, -1, 16, 0, 0, 0, 0, False, 0)
    with pytest.raises(ValueError, match="the fill pass needs offsets and outputs"):
        _cuda.hamming_radius_mma(16, 4, 16, 4, 2, 3, 0, 16, 0, 16, 16, True, 0)
    with pytest.raises(RuntimeError, match=r"fastspline\._cuda: cudaGetDevice"):
        _cuda.hamming_radius_mma(16, 4, 16, 4, 2, 3, 16, 0, 0, 0, 0, False, 0)
    # The pipelined kernels (a workspace given): even word counts, 16-byte aligned rows.
    for a, w in ((16, 3), (24, 2)):
        with pytest.raises(ValueError, match="hamming_topk_mma: the pipelined kernel needs an even word count and 16-byte aligned rows"):
            _cuda.hamming_topk_mma(a, 4, 16, 4, w, 5, 1, 16, 0, 64)
        with pytest.raises(ValueError, match="hamming_radius_mma: the pipelined kernel needs an even word count and 16-byte aligned rows"):
            _cuda.hamming_radius_mma(a, 4, 16, 4, w, 3, 16, 0, 0, 0, 0, False, 0, 64)
    with pytest.raises(RuntimeError, match=r"fastspline\._cuda: cudaGetDevice"):
        _cuda.hamming_topk_mma(16, 4, 16, 4, 2, 32, 3, 16, 0, 64)


@needs_nvcc
def test_search_method_env_is_validated(monkeypatch):
    from fastspline.backends import cuda

    monkeypatch.setenv("FASTSPLINE_CUDA_SEARCH", "heap")
    with pytest.raises(ValueError, match=r"FASTSPLINE_CUDA_SEARCH must be one of \('auto', 'fused', 'pipelined', 'blocks'\), got 'heap'"):
        cuda.search_method("topk", torch.device("cuda", 0))
    monkeypatch.setenv("FASTSPLINE_CUDA_SEARCH", "blocks")
    assert cuda.search_method("radius", torch.device("cuda", 0)) == "blocks"
