"""The CPU test matrix on a GPU backend: proxies that take CPU tensors, run the
GPU backend on device copies (views copied with their storage, so strides,
offsets and stride-0 rows reach the kernels as they are) and return CPU tensors.

Enabled by ``FASTSPLINE_TEST_GPU=1`` on a machine with CUDA (benchmarks/gpu_check.sh):
conftest registers ``cuda@gpu`` and ``triton@gpu`` as backends, so every test
that takes the ``impl`` fixture also checks those kernels bit-exact.
"""
from __future__ import annotations

import sys
from types import ModuleType

import torch

OPS = (
    "pack_signs", "unpack_bits", "popcount", "hamming", "hamming_total", "hamming_cdist",
    "hamming_topk", "hamming_radius", "bit_transpose", "count_regions",
)


def to_gpu(t: object) -> object:
    """``t`` on the GPU with the same sizes, strides and storage offset."""
    if not isinstance(t, torch.Tensor):
        return t
    storage = t.untyped_storage()
    flat = torch.empty(0, dtype=t.dtype).set_(storage, 0, (storage.nbytes() // t.element_size(),), (1,))
    return flat.cuda().as_strided(t.shape, t.stride(), t.storage_offset())


def to_cpu(t: object) -> object:
    if isinstance(t, tuple):
        return tuple(to_cpu(x) for x in t)
    if isinstance(t, torch.Tensor):
        assert t.device.type == "cuda", f"GPU backend returned a {t.device} tensor"
        return t.cpu()
    return t


def _proxy(target: ModuleType, op: str):
    def run(*args: object) -> object:
        if op == "hamming_cdist" and len(args) == 3 and args[2] is not None:  # out=: write back into the CPU tensor
            a, b, out = args
            got = target.hamming_cdist(to_gpu(a), to_gpu(b), None)
            out.copy_(got.cpu())
            return out
        return to_cpu(getattr(target, op)(*(to_gpu(x) for x in args)))

    run.__name__ = op
    return run


def register(backend_name: str) -> str:
    """Register ``<backend_name>@gpu`` in the backend registry; returns its name."""
    from fastspline import backends

    target = backends.load(backend_name)
    name = f"{backend_name}@gpu"
    module = ModuleType(f"gpu_proxy_{backend_name}")
    module.NAME = name
    module.DEVICE_TYPES = ("cpu",)
    for op in OPS:
        setattr(module, op, _proxy(target, op))
    sys.modules[module.__name__] = module
    backends._MODULES[name] = module.__name__
    return name
