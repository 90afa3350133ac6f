"""C++ CPU backend: the ``fastspline._C`` extension (AVX-512 / AVX2 / scalar).

The extension takes raw pointers, sizes and strides (no libtorch linking);
this module allocates the outputs with torch and passes ``data_ptr()``s.
The instruction set is chosen at import from CPUID; ``FASTSPLINE_ISA``
(``scalar``, ``avx2``, ``avx512``) or :func:`set_isa` forces one.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence

import torch

from fastspline import _C  # ImportError here marks the backend unavailable
from fastspline.backends import plain_cpu, reference

NAME = "cpu"
DEVICE_TYPES = ("cpu",)

_DTYPE_CODES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}


def supported_isas() -> list[str]:
    """Instruction sets this CPU runs, slowest first (always starts with ``scalar``)."""
    return list(_C.supported_isas())


def isa() -> str:
    """The instruction set the kernels use now."""
    return _C.isa()


def set_isa(name: str) -> None:
    """Force the kernels' instruction set; ValueError if this CPU lacks it."""
    if name not in ("scalar", "avx2", "avx512"):
        raise ValueError(f"isa must be 'scalar', 'avx2' or 'avx512', got {name!r}")
    if name not in supported_isas():
        raise ValueError(f"isa {name!r} is not supported by this CPU (supported: {supported_isas()})")
    _C.set_isa(name)


@contextlib.contextmanager
def forced_isa(name: str) -> Iterator[None]:
    """Run a block with the kernels forced to ``name``, then restore the previous choice."""
    previous = isa()
    set_isa(name)
    try:
        yield
    finally:
        _C.set_isa(previous)


if os.environ.get("FASTSPLINE_ISA"):
    set_isa(os.environ["FASTSPLINE_ISA"])


def _threads() -> int:
    return torch.get_num_threads()


def _words(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous()


def pack_signs(x: torch.Tensor, threshold: float) -> torch.Tensor:
    return pack_signs_any_nan(x, threshold, check_nan=False)[0]


def pack_signs_any_nan(x: torch.Tensor, threshold: float, check_nan: bool = True) -> tuple[torch.Tensor, bool]:
    """``pack_signs`` and whether ``x`` holds a NaN, in one read of ``x`` (each row is
    scanned right after it is packed, while in cache); False when not ``check_nan``."""
    n = x.shape[-1]
    out = torch.empty(*x.shape[:-1], (n + 63) // 64, dtype=torch.int64)
    nan = False
    if out.numel() > 0:
        nan = _C.pack_signs(
            x.data_ptr(), _DTYPE_CODES[x.dtype], list(x.shape), list(x.stride()), threshold, out.data_ptr(), _threads(),
            check_nan,
        )
    return out, nan


def unpack_bits(words: torch.Tensor, n_bits: int) -> torch.Tensor:
    words = _words(words)
    rows = words.numel() // max(1, words.shape[-1])
    out = torch.empty(*words.shape[:-1], n_bits, dtype=torch.bool)
    if out.numel() > 0:
        _C.unpack_bits(words.data_ptr(), rows, words.shape[-1], n_bits, out.data_ptr(), _threads())
    return out


def popcount(words: torch.Tensor) -> torch.Tensor:
    words = _words(words)
    out = torch.empty(words.shape[:-1], dtype=torch.int64)
    if out.numel() > 0:
        _C.popcount(words.data_ptr(), out.numel(), words.shape[-1], out.data_ptr(), _threads())
    return out


def hamming(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = _words(a), _words(b)
    out = torch.empty(a.shape[:-1], dtype=torch.int64)
    if out.numel() > 0:
        _C.hamming(a.data_ptr(), b.data_ptr(), out.numel(), a.shape[-1], out.data_ptr(), _threads())
    return out


def hamming_total(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.tensor(hamming_total_int(a, b), dtype=torch.int64)


def hamming_total_int(a: torch.Tensor, b: torch.Tensor) -> int:
    """``hamming_total`` as a Python int (no tensor made)."""
    a, b = _words(a), _words(b)
    return _C.hamming_total(a.data_ptr(), b.data_ptr(), a.numel(), _threads()) if a.numel() else 0


def hamming_totals_int(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> list[int]:
    """``hamming_total_int`` of each ``(a, b)`` pair (same shapes), in one call into the extension."""
    words = [(_words(a), _words(b)) for a, b in pairs]  # kept alive through the call
    return _C.hamming_totals([a.data_ptr() for a, _ in words], [b.data_ptr() for _, b in words], [a.numel() for a, _ in words], _threads())


def hamming_totals_plain(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> list[int] | None:
    """``hamming_totals_int`` for ``ops._hamming_totals``' unchecked path; None (nothing run)
    unless every pair is two contiguous int64 tensors of one shape, not 0-d, that
    ``backends.plain_cpu`` accepts: the checked path then takes them."""
    for a, b in pairs:
        if not (plain_cpu(a) and plain_cpu(b) and a.dtype is torch.int64 and b.dtype is torch.int64):
            return None
        if not (a.is_contiguous() and b.is_contiguous()) or a.dim() == 0 or a.shape != b.shape:
            return None
    return hamming_totals_int(pairs)


def hamming_cdist(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    a, b = _words(a), _words(b)
    fresh = out is None
    if fresh:
        out = torch.empty(a.shape[0], b.shape[0], dtype=torch.int32)
    if out.numel() > 0:
        _C.hamming_cdist(
            a.data_ptr(), a.shape[0], b.data_ptr(), b.shape[0], a.shape[1], out.data_ptr(), _threads(), fresh
        )
    return out


def hamming_topk(a: torch.Tensor, b: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = _words(a), _words(b)
    dist = torch.empty(a.shape[0], k, dtype=torch.int32)
    index = torch.empty(a.shape[0], k, dtype=torch.int64)
    if dist.numel() > 0:
        threads = _threads()
        try:
            _C.hamming_topk(
                a.data_ptr(), a.shape[0], b.data_ptr(), b.shape[0], a.shape[1], k,
                dist.data_ptr(), index.data_ptr(), threads,
            )
        except MemoryError as exc:  # each thread keeps k candidates of up to 64 rows of a
            need = min(a.shape[0], 64) * k * 16
            raise MemoryError(
                f"hamming_topk: k={k} needs {need / 2**30:.1f} GiB of candidates per thread ({threads} threads) "
                "besides the outputs; use a smaller k, or hamming_radius"
            ) from exc
    return dist, index


def hamming_radius(a: torch.Tensor, b: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    a, b = _words(a), _words(b)
    n, m, w = a.shape[0], b.shape[0], a.shape[1]
    # Two passes over the pairs: count per row, then fill at the row offsets.
    counts = torch.zeros(n, dtype=torch.int64)
    if n > 0 and m > 0:
        _C.hamming_radius_count(a.data_ptr(), n, b.data_ptr(), m, w, r, counts.data_ptr(), _threads())
    offsets = torch.zeros(n + 1, dtype=torch.int64)
    torch.cumsum(counts, 0, out=offsets[1:])
    total = int(offsets[-1])
    i = torch.empty(total, dtype=torch.int64)
    j = torch.empty(total, dtype=torch.int64)
    d = torch.empty(total, dtype=torch.int32)
    if total > 0:
        _C.hamming_radius_fill(
            a.data_ptr(), n, b.data_ptr(), m, w, r, offsets.data_ptr(),
            i.data_ptr(), j.data_ptr(), d.data_ptr(), _threads(),
        )
    return i, j, d


def bit_transpose(words: torch.Tensor, n_bits: int) -> torch.Tensor:
    words = _words(words)
    n = words.shape[0]
    out = torch.empty(n_bits, (n + 63) // 64, dtype=torch.int64)
    if out.numel() > 0:
        _C.bit_transpose(words.data_ptr(), n, words.shape[1], n_bits, out.data_ptr(), _threads())
    return out


def count_regions(codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    codes = _words(codes)
    n, w = codes.shape
    if n == 0 or w == 0:
        return reference.count_regions(codes)  # all rows are the same empty code: no kernel needed
    inverse = torch.empty(n, dtype=torch.int64)
    first = torch.empty(n, dtype=torch.int64)
    counts = torch.empty(n, dtype=torch.int64)
    n_unique = _C.count_regions(codes.data_ptr(), n, w, inverse.data_ptr(), first.data_ptr(), counts.data_ptr())
    return codes[first[:n_unique]], inverse, counts[:n_unique].clone()
