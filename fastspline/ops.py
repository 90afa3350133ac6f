"""Kernel ops on bit-packed spline codes: the only entry point to the kernels.

Bit layout (one convention everywhere in fastspline)
----------------------------------------------------
Codes are ``torch.int64`` words whose bits are read as unsigned. Bit ``j`` of
word ``w`` is bit (unit, sample, ...) number ``64*w + j``, least-significant
first; pad bits past ``n_bits`` are zero. A code of ``n_bits`` bits has shape
``[..., W]`` with ``W = ceil(n_bits / 64)``. The little-endian byte view of the
words equals ``numpy.packbits(bits, bitorder="little")``.

- sample-major codes ``[N, W_units]``: a row is one input's region code;
- unit-major (node) codes ``[n_units, W_samples]``: a row is one unit's on/off
  pattern over the probe inputs. :func:`bit_transpose` converts between them.

Every op validates its inputs (a ``TypeError``/``ValueError`` naming the
argument), picks a backend (``backend=`` or by device: CPU tensors use the
C++ ``cpu`` backend, or the pure-torch ``reference`` with one warning when the
extension is missing), and returns results that are identical on every
backend. Each op is a ``torch.library`` custom op ``fastspline::<name>`` with
a fake kernel, so it works under ``torch.compile``. Sizes and indices are
64-bit: rows over 2**31 bits and outputs over 2**31 elements work.
"""
from __future__ import annotations

import math
import numbers
import sys
from collections.abc import Sequence
from fractions import Fraction

import torch
from torch._subclasses.fake_tensor import FakeTensor

from fastspline import backends

__all__ = [
    "pack_signs",
    "unpack_bits",
    "popcount",
    "hamming",
    "hamming_total",
    "hamming_cdist",
    "hamming_topk",
    "hamming_radius",
    "bit_transpose",
    "count_regions",
]

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# hamming_cdist/topk/radius return int32 distances: a code may have at most this many bits.
MAX_INT32_BITS = 2**31 - 1


# ---------------------------------------------------------------- validation helpers


def _require_tensor(op: str, name: str, value: object, *, materialize: bool = True) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(value).__name__}")
    if value.layout != torch.strided or value.is_nested:
        layout = "nested" if value.is_nested else value.layout
        raise TypeError(f"{op}: {name} must be a dense (torch.strided) tensor, got layout {layout}")
    # Autograd's memoryless zeros (data_ptr 0) become real zeros. Not while compiling: Dynamo
    # cannot trace the check (a graph break per op, an error under fullgraph), and the
    # compiled graph's tensors are real ones.
    if materialize and not torch.compiler.is_compiling() and value._is_zerotensor():
        return value.clone()
    return value


def _require_words(op: str, name: str, value: object, ndim: int | None = None) -> torch.Tensor:
    t = _require_tensor(op, name, value)
    if t.dtype != torch.int64:
        raise TypeError(f"{op}: {name} must be packed codes of dtype torch.int64, got {t.dtype}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{op}: {name} must be {ndim}-D [rows, words], got shape {tuple(t.shape)}")
    if t.dim() < 1:
        raise ValueError(f"{op}: {name} must have a words dimension, got a 0-d tensor")
    return t.resolve_neg()  # a lazily negated view as its values: the kernels read raw memory


def _memory_overlaps(x: torch.Tensor, y: torch.Tensor) -> bool:
    """Whether the memory spans of ``x`` and ``y`` (first to last element) intersect:
    conservative for interleaved views, exact for the contiguous ``out`` of an op."""
    if x.device != y.device or x.numel() == 0 or y.numel() == 0:
        return False

    def span(t: torch.Tensor) -> tuple[int, int]:
        start = t.data_ptr()
        last = sum((size - 1) * stride for size, stride in zip(t.shape, t.stride()))
        return start, start + (last + 1) * t.element_size()

    (x0, x1), (y0, y1) = span(x), span(y)
    return x0 < y1 and y0 < x1


def _require_same_device(op: str, a: torch.Tensor, b: torch.Tensor) -> None:
    if a.device != b.device:
        raise ValueError(f"{op}: a and b must be on the same device, got {a.device} and {b.device}")


def _require_same_words(op: str, a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(
            f"{op}: a and b must have the same number of words per code, "
            f"got {a.shape[-1]} and {b.shape[-1]}"
        )


def _require_int(op: str, name: str, value: object, low: int, high: int | None = None) -> int:
    if type(value) is not int and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
        raise TypeError(f"{op}: {name} must be an int, got {type(value).__name__} {value!r}")
    value = int(value)
    if value < low or (high is not None and value > high):
        bound = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{op}: {name} must be {bound}, got {value}")
    return value


def _require_n_bits(op: str, n_bits: object, words: torch.Tensor) -> int:
    n_bits = _require_int(op, "n_bits", n_bits, 0)
    n_words = words.shape[-1]
    if (n_bits + 63) // 64 != n_words:
        raise ValueError(
            f"{op}: n_bits={n_bits} needs ceil(n_bits/64)={(n_bits + 63) // 64} words, "
            f"but words has {n_words} per code (shape {tuple(words.shape)})"
        )
    return n_bits


def _float64_floor(op: str, threshold: object) -> float:
    """The largest float64 <= threshold: for float64 x, x > threshold (as real
    numbers) exactly when x > this float, for any real threshold (ints past 2**53,
    Fractions, values beyond the float64 range)."""
    if type(threshold) is float:
        return threshold
    if type(threshold).__name__ == "ndarray" and getattr(threshold, "shape", None) == () and threshold.dtype.kind in "iuf":
        threshold = threshold[()]  # a 0-d numpy array (what torch.compile passes for a numpy scalar): its scalar
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise TypeError(f"{op}: threshold must be a real number, got {type(threshold).__name__} {threshold!r}")
    if isinstance(threshold, float):
        return float(threshold)  # np.float64 is a float: a plain one (torch.compile made it a tensor)
    if isinstance(threshold, numbers.Rational):
        exact = Fraction(threshold)
    else:  # other real types: numpy floats, whose float() rounds for np.longdouble
        try:
            exact = Fraction(*threshold.as_integer_ratio())
        except (AttributeError, TypeError, ValueError, OverflowError):  # no ratio, NaN, inf
            return float(threshold)
    try:
        value = float(exact)
    except OverflowError:
        return sys.float_info.max if exact > 0 else -math.inf
    return math.nextafter(value, -math.inf) if Fraction(value) > exact else value


def _cpu_fast(backend: str | None) -> bool:
    """Whether eager cpu calls may skip to the cpu backend: ``backend`` None or "cpu", the cpu
    backend loaded, and nothing being compiled. Anything else takes the checked path."""
    return (backend is None or backend == "cpu") and "cpu" in backends._loaded and not torch.compiler.is_compiling()


def _backend_for(op: str, backend: str | None, *tensors: torch.Tensor) -> str:
    device_type = tensors[0].device.type
    if backend is None:
        return _default_backend(device_type)
    if not isinstance(backend, str):
        raise TypeError(f"{op}: backend must be a str or None, got {type(backend).__name__}")
    if backend not in backends.names():
        raise ValueError(f"{op}: backend must be one of {backends.names()} or None, got {backend!r}")
    if not _runs_on(backend, device_type):
        raise ValueError(
            f"{op}: backend {backend!r} runs on {backends.load(backend).DEVICE_TYPES} tensors, got a {device_type} tensor"
        )
    return backend


# Constants to torch.compile: their first call may import a backend, which Dynamo cannot
# trace, so it runs them while tracing instead (fullgraph=True in a fresh process).
@torch.compiler.assume_constant_result
def _default_backend(device_type: str) -> str:
    return backends.select(device_type)


@torch.compiler.assume_constant_result
def _runs_on(backend: str, device_type: str) -> bool:
    return backends.supports(backends.load(backend), device_type)


def _impl(backend: str):
    return backends.load(backend)


def _use_custom_op(*args: object) -> bool:
    """Go through the torch.library op while torch.compile/export traces, or on
    meta tensors (its fake kernel gives their shapes). Plain eager calls go to the
    backend directly: same result, without the dispatcher's ~8 us per call and the
    ~1 s import of torch._dynamo that a custom op's first call costs."""
    if torch.compiler.is_compiling():
        return True
    for t in args:  # a loop, not any(generator): this runs on every eager call
        if isinstance(t, torch.Tensor) and (t.is_meta or isinstance(t, FakeTensor)):
            return True
    return False


def _run(custom_op, name: str, backend: str, *args: object):
    if _use_custom_op(*args):
        return custom_op(*args, backend)
    return getattr(_impl(backend), name)(*args)


# ---------------------------------------------------------------- custom ops
# Each op is defined once here; the implementation forwards to the chosen
# backend, the fake kernel gives shapes for torch.compile / meta tensors.


@torch.library.custom_op("fastspline::pack_signs", mutates_args=())
def _pack_signs_op(x: torch.Tensor, threshold: float, backend: str) -> torch.Tensor:
    return _impl(backend).pack_signs(x, threshold)


@_pack_signs_op.register_fake
def _(x, threshold, backend):
    return x.new_empty((*x.shape[:-1], (x.shape[-1] + 63) // 64), dtype=torch.int64)


@torch.library.custom_op("fastspline::unpack_bits", mutates_args=())
def _unpack_bits_op(words: torch.Tensor, n_bits: int, backend: str) -> torch.Tensor:
    return _impl(backend).unpack_bits(words, n_bits)


@_unpack_bits_op.register_fake
def _(words, n_bits, backend):
    return words.new_empty((*words.shape[:-1], n_bits), dtype=torch.bool)


@torch.library.custom_op("fastspline::popcount", mutates_args=())
def _popcount_op(words: torch.Tensor, backend: str) -> torch.Tensor:
    return _impl(backend).popcount(words)


@_popcount_op.register_fake
def _(words, backend):
    return words.new_empty(words.shape[:-1], dtype=torch.int64)


@torch.library.custom_op("fastspline::hamming", mutates_args=())
def _hamming_op(a: torch.Tensor, b: torch.Tensor, backend: str) -> torch.Tensor:
    return _impl(backend).hamming(a, b)


@_hamming_op.register_fake
def _(a, b, backend):
    return a.new_empty(a.shape[:-1], dtype=torch.int64)


@torch.library.custom_op("fastspline::hamming_total", mutates_args=())
def _hamming_total_op(a: torch.Tensor, b: torch.Tensor, backend: str) -> torch.Tensor:
    return _impl(backend).hamming_total(a, b)


@_hamming_total_op.register_fake
def _(a, b, backend):
    return a.new_empty((), dtype=torch.int64)


@torch.library.custom_op("fastspline::hamming_cdist", mutates_args=())
def _hamming_cdist_op(a: torch.Tensor, b: torch.Tensor, backend: str) -> torch.Tensor:
    return _impl(backend).hamming_cdist(a, b)


@_hamming_cdist_op.register_fake
def _(a, b, backend):
    return a.new_empty((a.shape[0], b.shape[0]), dtype=torch.int32)


@torch.library.custom_op("fastspline::hamming_cdist_out", mutates_args=("out",))
def _hamming_cdist_out_op(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, backend: str) -> None:
    _impl(backend).hamming_cdist(a, b, out)


@_hamming_cdist_out_op.register_fake
def _(a, b, out, backend):
    return None


@torch.library.custom_op("fastspline::hamming_topk", mutates_args=())
def _hamming_topk_op(a: torch.Tensor, b: torch.Tensor, k: int, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    return _impl(backend).hamming_topk(a, b, k)


@_hamming_topk_op.register_fake
def _(a, b, k, backend):
    return (
        a.new_empty((a.shape[0], k), dtype=torch.int32),
        a.new_empty((a.shape[0], k), dtype=torch.int64),
    )


@torch.library.custom_op("fastspline::hamming_radius", mutates_args=())
def _hamming_radius_op(
    a: torch.Tensor, b: torch.Tensor, r: int, backend: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _impl(backend).hamming_radius(a, b, r)


@_hamming_radius_op.register_fake
def _(a, b, r, backend):
    n_pairs = torch.library.get_ctx().new_dynamic_size()
    return (
        a.new_empty((n_pairs,), dtype=torch.int64),
        a.new_empty((n_pairs,), dtype=torch.int64),
        a.new_empty((n_pairs,), dtype=torch.int32),
    )


@torch.library.custom_op("fastspline::bit_transpose", mutates_args=())
def _bit_transpose_op(words: torch.Tensor, n_bits: int, backend: str) -> torch.Tensor:
    return _impl(backend).bit_transpose(words, n_bits)


@_bit_transpose_op.register_fake
def _(words, n_bits, backend):
    return words.new_empty((n_bits, (words.shape[0] + 63) // 64), dtype=torch.int64)


@torch.library.custom_op("fastspline::count_regions", mutates_args=())
def _count_regions_op(codes: torch.Tensor, backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _impl(backend).count_regions(codes)


@_count_regions_op.register_fake
def _(codes, backend):
    n_unique = torch.library.get_ctx().new_dynamic_size()
    return (
        codes.new_empty((n_unique, codes.shape[1]), dtype=torch.int64),
        codes.new_empty((codes.shape[0],), dtype=torch.int64),
        codes.new_empty((n_unique,), dtype=torch.int64),
    )


# ---------------------------------------------------------------- public ops


def pack_signs(x: torch.Tensor, dim: int = -1, threshold: float = 0.0, *, backend: str | None = None) -> torch.Tensor:
    """Pack the bits ``x > threshold`` along ``dim`` into int64 words.

    Args:
        x: float16/bfloat16/float32/float64 tensor ``[..., n, ...]``, any strides
            (read in place: no transposed float copy is made).
        dim: the dimension to pack; it becomes the last (words) dimension.
        threshold: a real number; the comparison is exact (``x`` and
            ``threshold`` compared as real numbers, not after rounding the
            threshold to ``x.dtype``). NaN entries pack as 0. The cpu backend
            stays exact for subnormals under ``torch.set_flush_denormal(True)``,
            which torch's own compares (the reference backend) do not.

    Returns:
        int64 ``[..., ceil(n/64)]``: the other dims in their order, then words.
    """
    x, threshold, name = _pack_args(x, dim, threshold, backend)
    return _run(_pack_signs_op, "pack_signs", name, x, threshold)


def _pack_args(x: object, dim: int, threshold: float, backend: str | None) -> tuple[torch.Tensor, float, str]:
    """pack_signs' checked arguments: ``x`` with the packed dim last, the threshold, the backend."""
    op = "pack_signs"
    x = _require_tensor(op, "x", x)
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: x must be a floating tensor of dtype {[str(d) for d in FLOAT_DTYPES]}, got {x.dtype}")
    if x.dim() == 0:
        raise ValueError(f"{op}: x must have at least one dimension, got a 0-d tensor")
    x = x.resolve_neg()  # a lazily negated view (z.conj().imag) as its values: the kernels read raw memory
    dim = _require_int(op, "dim", dim, -x.dim(), x.dim() - 1)
    x = x if dim in (-1, x.dim() - 1) else x.movedim(dim, -1)  # movedim costs ~1 us even as a no-op
    return x, _float64_floor(op, threshold), _backend_for(op, backend, x)


def _pack_signs_any_nan(x: torch.Tensor, *, backend: str | None = None) -> tuple[torch.Tensor, torch.Tensor | bool]:
    """``pack_signs(x)`` (last dim) and whether ``x`` holds a NaN, for ``codes()``.

    The ``cpu`` backend finds NaN while packing (one read of ``x``); other backends
    add ``isnan(x.amax())``, a 0-d bool tensor on ``x``'s device (no host sync here).
    """
    if _cpu_fast(backend) and backends.plain_cpu(x) and x.dtype in FLOAT_DTYPES and x.dim() > 0:
        return _impl("cpu").pack_signs_any_nan(x, 0.0)  # what the checked path below does with it
    x, threshold, name = _pack_args(x, -1, 0.0, backend)
    if name == "cpu" and not _use_custom_op(x):
        return _impl(name).pack_signs_any_nan(x, threshold)
    words = _run(_pack_signs_op, "pack_signs", name, x, threshold)
    return words, (torch.isnan(x.amax()) if x.numel() else False)


def unpack_bits(words: torch.Tensor, n_bits: int, *, backend: str | None = None) -> torch.Tensor:
    """Inverse of :func:`pack_signs`: int64 ``[..., ceil(n_bits/64)]`` -> bool ``[..., n_bits]``."""
    op = "unpack_bits"
    words = _require_words(op, "words", words)
    n_bits = _require_n_bits(op, n_bits, words)
    return _run(_unpack_bits_op, "unpack_bits", _backend_for(op, backend, words), words, n_bits)


def popcount(words: torch.Tensor, *, backend: str | None = None) -> torch.Tensor:
    """Set bits per code: int64 ``[..., W]`` -> int64 ``[...]``."""
    op = "popcount"
    words = _require_words(op, "words", words)
    return _run(_popcount_op, "popcount", _backend_for(op, backend, words), words)


def _check_pair(op: str, a: object, b: object, ndim: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    a = _require_words(op, "a", a, ndim)
    b = _require_words(op, "b", b, ndim)
    _require_same_device(op, a, b)
    _require_same_words(op, a, b)
    return a, b


def _check_rowwise(op: str, a: object, b: object) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = _check_pair(op, a, b)
    if a.shape != b.shape:
        raise ValueError(f"{op}: a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    return a, b


def hamming(a: torch.Tensor, b: torch.Tensor, *, backend: str | None = None) -> torch.Tensor:
    """Row-wise Hamming distances: int64 ``[..., W]`` twice (same shape) -> int64 ``[...]``."""
    op = "hamming"
    a, b = _check_rowwise(op, a, b)
    return _run(_hamming_op, "hamming", _backend_for(op, backend, a), a, b)


def hamming_total(a: torch.Tensor, b: torch.Tensor, *, backend: str | None = None) -> torch.Tensor:
    """Sum of the row-wise Hamming distances of ``a`` and ``b`` (same shape), fused:
    no per-row buffer. Returns an int64 scalar tensor."""
    op = "hamming_total"
    a, b = _check_rowwise(op, a, b)
    return _run(_hamming_total_op, "hamming_total", _backend_for(op, backend, a), a, b)


def _hamming_totals(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]], *, backend: str | None = None) -> list[int]:
    """:func:`hamming_total` of each ``(a, b)`` pair, as Python ints (``RegionCodes.distance``
    over all its layers). Each pair is checked as ``hamming_total`` checks it; the cpu
    pairs go into the extension in one call (no tensor per total), and device totals come
    back in one host sync."""
    op = "hamming_total"
    if _cpu_fast(backend):  # plain cpu codes (RegionCodes' usual case): one extension call, unchecked
        totals = _impl("cpu").hamming_totals_plain(pairs)
        if totals is not None:
            return totals
    checked = [_check_rowwise(op, a, b) for a, b in pairs]
    chosen: dict[str, str] = {}  # device type -> backend: one choice per device type
    names = []
    for a, _ in checked:
        kind = a.device.type
        if kind not in chosen:
            chosen[kind] = _backend_for(op, backend, a)
        names.append(chosen[kind])
    if _use_custom_op(*(t for pair in checked for t in pair)):
        return [int(_hamming_total_op(a, b, name)) for (a, b), name in zip(checked, names)]
    totals: list[object] = [
        None if name == "cpu" else _impl(name).hamming_total(a, b) for (a, b), name in zip(checked, names)
    ]
    on_cpu = [i for i, name in enumerate(names) if name == "cpu"]
    if on_cpu:  # one call into the extension for every cpu pair
        for i, total in zip(on_cpu, _impl("cpu").hamming_totals_int([checked[i] for i in on_cpu])):
            totals[i] = total
    return [int(t) for t in _host_values(totals)]


def _host_values(values: Sequence[object]) -> list[object]:
    """``values`` with each 0-d tensor replaced by its Python value: one stack and one host
    sync per device, however many tensors (other values pass through)."""
    out = list(values)
    by_device: dict[torch.device, list[int]] = {}
    for i, value in enumerate(out):
        if isinstance(value, torch.Tensor):
            by_device.setdefault(value.device, []).append(i)
    for index in by_device.values():
        for i, value in zip(index, torch.stack([out[i] for i in index]).tolist()):
            out[i] = value
    return out


def _check_pairwise(op: str, a: object, b: object) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = _check_pair(op, a, b, ndim=2)
    if a.shape[1] * 64 > MAX_INT32_BITS:
        raise ValueError(
            f"{op}: codes of {a.shape[1]} words may have distances beyond int32; "
            f"use hamming() on row pairs for codes over {MAX_INT32_BITS} bits"
        )
    return a, b


def hamming_cdist(
    a: torch.Tensor,
    b: torch.Tensor | None = None,
    *,
    out: torch.Tensor | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """All-pairs Hamming distances: a int64 ``[N, W]``, b int64 ``[M, W]``
    (``None``: ``a`` against itself) -> int32 ``[N, M]``.

    ``out``: an optional contiguous int32 ``[N, M]`` tensor on the same device to
    write into (and return), so repeated calls reuse one buffer instead of paying
    for fresh memory each time.
    """
    op = "hamming_cdist"
    a, b = _check_pairwise(op, a, a if b is None else b)
    name = _backend_for(op, backend, a)
    if out is None:
        return _run(_hamming_cdist_op, "hamming_cdist", name, a, b)
    out = _require_tensor(op, "out", out, materialize=False)  # written: never a copy
    shape = (a.shape[0], b.shape[0])
    if out.dtype != torch.int32 or tuple(out.shape) != shape or not out.is_contiguous() or out.device != a.device:
        raise ValueError(
            f"{op}: out must be a contiguous torch.int32 tensor of shape {shape} on {a.device}, "
            f"got {out.dtype} {tuple(out.shape)} on {out.device} (contiguous={out.is_contiguous()})"
        )
    if _use_custom_op(a, b, out):
        _hamming_cdist_out_op(a, b, out, name)
    elif out.is_neg() or _memory_overlaps(out, a) or _memory_overlaps(out, b):
        # The kernels write raw memory (a lazily negated out reads it back negated) and read
        # a and b while they write out: compute apart, then copy.
        out.copy_(_impl(name).hamming_cdist(a, b))
    else:
        _impl(name).hamming_cdist(a, b, out)
    return out


def hamming_topk(
    a: torch.Tensor, b: torch.Tensor, k: int, *, backend: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` rows of ``b`` nearest to each row of ``a``, without an N×M buffer.

    a int64 ``[N, W]``, b int64 ``[M, W]``, ``1 <= k <= M``. Returns
    ``(distances int32 [N, k], indices int64 [N, k])``, nearest first, equal
    distances ordered by lower index of ``b``.
    """
    op = "hamming_topk"
    a, b = _check_pairwise(op, a, b)
    if b.shape[0] == 0:
        raise ValueError(f"{op}: k must be in [1, M] but b has M=0 rows (k={k!r})")
    k = _require_int(op, "k", k, 1, b.shape[0])
    return _run(_hamming_topk_op, "hamming_topk", _backend_for(op, backend, a), a, b, k)


def hamming_radius(
    a: torch.Tensor, b: torch.Tensor, r: int, *, backend: str | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All pairs with Hamming distance ``<= r``, as sparse index pairs.

    a int64 ``[N, W]``, b int64 ``[M, W]``, ``r >= 0``. Returns
    ``(i int64 [P], j int64 [P], d int32 [P])`` sorted by ``(i, j)``.
    """
    op = "hamming_radius"
    a, b = _check_pairwise(op, a, b)
    r = _require_int(op, "r", r, 0)
    # Beyond the code length every pair matches; clamp so the kernels see an int32 radius.
    r = min(r, a.shape[1] * 64)
    return _run(_hamming_radius_op, "hamming_radius", _backend_for(op, backend, a), a, b, r)


def bit_transpose(words: torch.Tensor, n_bits: int, *, backend: str | None = None) -> torch.Tensor:
    """Transpose a bit matrix: int64 ``[N, ceil(n_bits/64)]`` -> int64 ``[n_bits, ceil(N/64)]``.

    Converts sample-major codes to unit-major (node) codes and back: bit ``u``
    of row ``s`` of the input is bit ``s`` of row ``u`` of the output.
    """
    op = "bit_transpose"
    words = _require_words(op, "words", words, ndim=2)
    n_bits = _require_n_bits(op, n_bits, words)
    return _run(_bit_transpose_op, "bit_transpose", _backend_for(op, backend, words), words, n_bits)


def count_regions(
    codes: torch.Tensor, *, backend: str | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Distinct rows of ``codes`` (int64 ``[N, W]``): the number of regions visited.

    Returns ``(unique int64 [U, W], inverse int64 [N], counts int64 [U])``:
    unique rows sorted lexicographically (words compared as signed int64,
    word 0 first, as ``torch.unique(dim=0)``), ``unique[inverse] == codes``.
    """
    op = "count_regions"
    codes = _require_words(op, "codes", codes, ndim=2)
    return _run(_count_regions_op, "count_regions", _backend_for(op, backend, codes), codes)

