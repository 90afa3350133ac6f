"""CUDA backend: the ``fastspline._cuda`` extension on CUDA tensors.

The extension takes device pointers and the current torch stream; this module
allocates outputs with torch on the input's device. ``hamming_cdist`` has two
kernels: XOR + popc on the CUDA cores, and binary tensor cores (``mma.sync``
b1, sm_80+); :func:`cdist_method` says which one a call uses. The tensor-core
kernel is checked once per device against the popc kernel before first use
and is not used (with a logged warning) if it disagrees. ``hamming_topk`` and
``hamming_radius`` run the cdist kernel over row blocks of ``a`` (never an
N×M buffer) and select with torch on the device; ``count_regions`` is
``torch.unique`` on the device, which orders rows as the reference does.
Without a GPU the module still imports; a call raises the CUDA error.
"""
from __future__ import annotations

import logging
import os

import torch

from fastspline import _cuda  # ImportError here marks the backend unavailable

NAME = "cuda"
DEVICE_TYPES = ("cuda",)

_DTYPE_CODES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}
_BLOCK_BYTES = 1 << 28  # int32 distances held at once by topk / radius (256 MiB)

CDIST_METHODS = ("auto", "popc", "mma-xor", "mma-and")
# The tensor-core kernel's 128x128 tiles pay off once both sides have this many rows.
_MMA_MIN_ROWS = 128
_mma_status: dict[int, str | None] = {}  # device index -> why b1 MMA is not used (None: it is)
logger = logging.getLogger("fastspline")


def _env_method() -> str:
    method = os.environ.get("FASTSPLINE_CUDA_CDIST", "auto")
    if method not in CDIST_METHODS:
        raise ValueError(f"FASTSPLINE_CUDA_CDIST must be one of {CDIST_METHODS}, got {method!r}")
    return method


def mma_status(device: torch.device) -> str | None:
    """None when the binary tensor-core kernel is usable on ``device``, else why not.

    Checked once per device: compute capability >= 8.0, then both MMA variants
    against the popc kernel on random codes with ragged tiles and word counts.
    """
    index = torch.device(device).index
    index = torch.cuda.current_device() if index is None else index
    if index in _mma_status:
        return _mma_status[index]
    with torch.cuda.device(index):
        cc = _cuda.compute_capability()
        reason = None
        if cc < 80:
            reason = f"compute capability {cc / 10:.1f} < 8.0"
        else:
            gen = torch.Generator(device=f"cuda:{index}").manual_seed(12345)
            for n, m, w in ((200, 131, 13), (129, 257, 4), (1, 300, 1)):
                a = torch.randint(-(2**63), 2**63 - 1, (n, w), generator=gen, device=f"cuda:{index}", dtype=torch.int64)
                b = torch.randint(-(2**63), 2**63 - 1, (m, w), generator=gen, device=f"cuda:{index}", dtype=torch.int64)
                want = _cdist(a, b, None, "popc")
                for method in ("mma-xor", "mma-and"):
                    if not torch.equal(_cdist(a, b, None, method), want):
                        reason = f"{method} kernel disagreed with the popc kernel in its self-check ({n}x{m}x{w} words)"
                        break
                if reason:
                    break
    if reason is not None and cc >= 80:
        logger.warning("fastspline: binary tensor-core cdist disabled on cuda:%d: %s; using the popc kernel", index, reason)
    _mma_status[index] = reason
    return reason


def cdist_method(n: int, m: int, device: torch.device) -> str:
    """The kernel ``hamming_cdist`` uses for ``n`` x ``m`` rows on ``device``:
    ``FASTSPLINE_CUDA_CDIST`` when set (popc, mma-xor, mma-and), else mma-and
    for large tiles where the tensor cores pass their check, else popc. AND, not
    XOR: on an H200, b1 MMA ran 5.1 P bit pairs/s with .and.popc and 0.77 P with
    .xor.popc (benchmarks/results/gpu-NVIDIA_H200.json)."""
    method = _env_method()
    if method != "auto":
        if method != "popc" and (reason := mma_status(device)) is not None:
            raise RuntimeError(f"FASTSPLINE_CUDA_CDIST={method}: the binary tensor-core kernel is unavailable: {reason}")
        return method
    if min(n, m) >= _MMA_MIN_ROWS and mma_status(device) is None:
        return "mma-and"
    return "popc"


def _stream(t: torch.Tensor) -> int:
    return torch.cuda.current_stream(t.device).cuda_stream


def _words(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous()


PACK_KERNELS = {"auto": 0, "rows": 1, "vec4": 2, "columns": 3}


def pack_kernel() -> int:
    """``FASTSPLINE_CUDA_PACK`` (auto, rows, vec4, columns) as the extension's code;
    a kernel that does not apply to an input raises ValueError (benchmarks and tests)."""
    name = os.environ.get("FASTSPLINE_CUDA_PACK", "auto")
    if name not in PACK_KERNELS:
        raise ValueError(f"FASTSPLINE_CUDA_PACK must be one of {tuple(PACK_KERNELS)}, got {name!r}")
    return PACK_KERNELS[name]


def pack_signs(x: torch.Tensor, threshold: float) -> torch.Tensor:
    n = x.shape[-1]
    out = torch.empty(*x.shape[:-1], (n + 63) // 64, dtype=torch.int64, device=x.device)
    if x.dim() > 9:  # the kernel takes up to 8 leading dims; merging them may copy
        x = x.reshape(-1, n)
    if out.numel() > 0:
        with torch.cuda.device(x.device):
            _cuda.pack_signs(
                x.data_ptr(), _DTYPE_CODES[x.dtype], list(x.shape), list(x.stride()), threshold,
                out.data_ptr(), _stream(x), pack_kernel(),
            )
    return out


def unpack_bits(words: torch.Tensor, n_bits: int) -> torch.Tensor:
    words = _words(words)
    rows = words.numel() // max(1, words.shape[-1])
    out = torch.empty(*words.shape[:-1], n_bits, dtype=torch.bool, device=words.device)
    if out.numel() > 0:
        with torch.cuda.device(words.device):
            _cuda.unpack_bits(words.data_ptr(), rows, words.shape[-1], n_bits, out.data_ptr(), _stream(words))
    return out


def _rows(a: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    out = torch.empty(a.shape[:-1], dtype=torch.int64, device=a.device)
    if out.numel() > 0:
        with torch.cuda.device(a.device):
            _cuda.hamming_rows(
                a.data_ptr(), 0 if b is None else b.data_ptr(), out.numel(), a.shape[-1], out.data_ptr(), _stream(a)
            )
    return out


def popcount(words: torch.Tensor) -> torch.Tensor:
    return _rows(_words(words), None)


def hamming(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return _rows(_words(a), _words(b))


def hamming_total(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = _words(a), _words(b)
    total = torch.zeros((), dtype=torch.int64, device=a.device)
    if a.numel() > 0:
        with torch.cuda.device(a.device):
            _cuda.hamming_total(a.data_ptr(), b.data_ptr(), a.numel(), total.data_ptr(), _stream(a))
    return total


def _cdist(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None, method: str) -> torch.Tensor:
    if out is None:
        out = torch.empty(a.shape[0], b.shape[0], dtype=torch.int32, device=a.device)
    if out.numel() > 0:
        if a.shape[1] == 0:
            out.zero_()
        else:
            args = (a.data_ptr(), a.shape[0], b.data_ptr(), b.shape[0], a.shape[1], out.data_ptr(), out.shape[1])
            with torch.cuda.device(a.device):
                if method == "popc":
                    _cuda.hamming_cdist(*args, _stream(a))
                else:
                    _cuda.hamming_cdist_mma(*args, method == "mma-xor", _stream(a))
    return out


def hamming_cdist(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    a, b = _words(a), _words(b)
    return _cdist(a, b, out, cdist_method(a.shape[0], b.shape[0], a.device))


def _row_blocks(n: int, m: int):
    step = max(1, _BLOCK_BYTES // max(1, 4 * m))
    for lo in range(0, n, step):
        yield lo, min(n, lo + step)


def hamming_topk(a: torch.Tensor, b: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = _words(a), _words(b)
    dist = torch.empty(a.shape[0], k, dtype=torch.int32, device=a.device)
    index = torch.empty(a.shape[0], k, dtype=torch.int64, device=a.device)
    for lo, hi in _row_blocks(a.shape[0], b.shape[0]):
        block = hamming_cdist(a[lo:hi], b)
        values, order = torch.sort(block, dim=1, stable=True)  # stable: ties keep the lower index
        dist[lo:hi] = values[:, :k]
        index[lo:hi] = order[:, :k]
    return dist, index


def hamming_radius(a: torch.Tensor, b: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    a, b = _words(a), _words(b)
    rows, cols, dists = [], [], []
    for lo, hi in _row_blocks(a.shape[0], b.shape[0]):
        block = hamming_cdist(a[lo:hi], b)
        i, j = torch.nonzero(block <= r, as_tuple=True)  # row-major: sorted by (i, j)
        rows.append(i + lo)
        cols.append(j)
        dists.append(block[i, j])
    if not rows:
        return tuple(torch.empty(0, dtype=t, device=a.device) for t in (torch.int64, torch.int64, torch.int32))
    return torch.cat(rows), torch.cat(cols), torch.cat(dists)


def bit_transpose(words: torch.Tensor, n_bits: int) -> torch.Tensor:
    words = _words(words)
    n = words.shape[0]
    out = torch.empty(n_bits, (n + 63) // 64, dtype=torch.int64, device=words.device)
    if out.numel() > 0:
        with torch.cuda.device(words.device):
            _cuda.bit_transpose(words.data_ptr(), n, words.shape[1], n_bits, out.data_ptr(), _stream(words))
    return out


def count_regions(codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from fastspline.backends import reference

    return reference.count_regions(codes)  # torch.unique on the device: the reference's own order
