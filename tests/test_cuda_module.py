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
