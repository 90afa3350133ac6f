"""Test data: random codes over the full int64 range, near-duplicates, non-contiguous views."""
from __future__ import annotations

import torch

from fastspline import backends


def cpu_available() -> bool:
    """Whether the C++ ``cpu`` backend loads (the extension is built)."""
    return backends.available().get("cpu") is None

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def make_gen(*key: object) -> torch.Generator:
    """A generator seeded from a test's parameters: reproducible and distinct per case."""
    seed = 0
    for part in key:
        for ch in repr(part):
            seed = (seed * 1000003 + ord(ch)) % (2**61 - 1)
    return torch.Generator().manual_seed(seed)


def pad_mask(n_bits: int) -> int:
    """The int64 mask of the valid bits of the last word of an n_bits code."""
    rem = n_bits % 64
    if rem == 0:
        return -1
    mask = (1 << rem) - 1
    return mask - (1 << 64) if mask >= 2**63 else mask


def random_words(rows: tuple[int, ...] | int, n_bits: int, gen: torch.Generator) -> torch.Tensor:
    """Uniform random codes over the full int64 range (bit 63 set in about half
    the words, so negative words are common), pad bits past n_bits zero."""
    rows = (rows,) if isinstance(rows, int) else tuple(rows)
    w = (n_bits + 63) // 64
    words = torch.randint(INT64_MIN, INT64_MAX, (*rows, w), generator=gen, dtype=torch.int64)
    if w:
        # randint's high is exclusive: put the all-ones and sign-only words back in play.
        flip = torch.rand(words.shape, generator=gen) < 0.02
        words[flip] = -1
        sign_only = torch.rand(words.shape, generator=gen) < 0.02
        words[sign_only] = INT64_MIN
        words[..., -1] &= pad_mask(n_bits)
    return words


def near_copies(base: torch.Tensor, rows: int, n_bits: int, gen: torch.Generator, max_flips: int = 3) -> torch.Tensor:
    """``rows`` codes drawn from ``base`` rows (with repeats) with 0..max_flips bits
    flipped: many exact duplicates and small distances, for ties and radius hits."""
    if base.shape[0] == 0 or n_bits == 0:
        return random_words(rows, n_bits, gen)
    pick = torch.randint(0, base.shape[0], (rows,), generator=gen)
    out = base[pick].clone()
    for row in range(rows):
        n_flips = int(torch.randint(0, max_flips + 1, (), generator=gen))
        for _ in range(n_flips):
            bit = int(torch.randint(0, n_bits, (), generator=gen))
            word, offset = divmod(bit, 64)
            out[row, word] ^= torch.tensor(1, dtype=torch.int64) << offset
    return out


def noncontiguous_copy(words: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values as ``words`` (2-D) in a non-contiguous view.

    ``transposed``: column-major storage; ``strided``: every other row and word of
    a bigger buffer; ``negative_space``: a slice with a storage offset.
    """
    n, w = words.shape
    if layout == "contiguous":
        return words.clone()
    if layout == "transposed":
        view = words.t().contiguous().t()
    elif layout == "strided":
        buf = torch.full((2 * n + 1, 2 * w + 1), 0x5A5A5A5A5A5A5A5A, dtype=torch.int64)
        buf[1::2, 1::2] = words
        view = buf[1::2, 1::2]
    elif layout == "offset_transposed":
        buf = torch.full((w + 3, n + 5), -1, dtype=torch.int64)
        buf[3:, 5:] = words.t()
        view = buf[3:, 5:].t()
    else:
        raise ValueError(layout)
    assert torch.equal(view, words)
    if n > 1 and w > 1:
        assert not view.is_contiguous()
    return view


NONCONTIGUOUS_LAYOUTS = ("transposed", "strided", "offset_transposed")


# ---------------------------------------------------------------- float data for pack_signs

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
_INT_VIEW = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def dtype_neighbors(value: float, dtype: torch.dtype, radius: int = 2) -> list[float]:
    """``value`` rounded to ``dtype`` and its ``radius`` nearest representable
    neighbours on each side (stepping the bit pattern), as Python floats."""
    if value != value or value in (float("inf"), float("-inf")):
        return []
    center = torch.tensor([value], dtype=dtype)
    bits = center.view(_INT_VIEW[center.element_size()])
    steps = torch.arange(-radius, radius + 1, dtype=bits.dtype)
    return [float(v) for v in (bits + steps).view(dtype).to(torch.float64) if v == v]


def special_values(dtype: torch.dtype, threshold: float) -> list[float]:
    """Values where a wrong comparison shows: NaN, infinities, signed zeros,
    extremes, subnormals, and the representable values around the threshold."""
    fi = torch.finfo(dtype)
    smallest_subnormal = fi.tiny * fi.eps
    values = [
        float("nan"), float("inf"), float("-inf"), 0.0, -0.0, 1.0, -1.0,
        fi.max, -fi.max, fi.tiny, -fi.tiny, smallest_subnormal, -smallest_subnormal,
    ]
    values += dtype_neighbors(threshold, dtype)
    values += dtype_neighbors(-threshold, dtype)
    return values


def random_floats(
    shape: tuple[int, ...], dtype: torch.dtype, threshold: float, gen: torch.Generator, special_fraction: float = 0.25
) -> torch.Tensor:
    """Contiguous ``x`` with about half its entries above ``threshold`` and a
    ``special_fraction`` of :func:`special_values` scattered in."""
    center = threshold if threshold == threshold and abs(threshold) < 1e4 else 0.0
    x = (torch.randn(shape, generator=gen, dtype=torch.float64) + center).to(dtype)
    flat = x.view(-1)
    if flat.numel():
        specials = torch.tensor(special_values(dtype, threshold), dtype=torch.float64).to(dtype)
        where = torch.rand(flat.shape, generator=gen) < special_fraction
        pick = torch.randint(0, specials.numel(), (int(where.sum()),), generator=gen)
        flat[where] = specials[pick]
    return x


def pack_kernel_views(x: torch.Tensor, whole: int) -> list[tuple[torch.Tensor, int]]:
    """``(view, dim)`` layouts of a 4-D ``x`` (dims 1 and 2 at least 4, last dim past
    ``whole``, a multiple of 64) for the forced CUDA pack kernels, each taking some and
    refusing the rest: rows, channels (dim 1), strided and sliced views, one element,
    ``x[..., :whole]`` made contiguous (one bit stream) whole, offset by a row, reshaped,
    and at an address 1 element past 16-byte alignment. Built on ``x``'s device, so the
    same call on a CPU copy gives the reference's inputs."""
    xc = x[..., :whole].contiguous()
    buf = torch.empty(xc.numel() + 1, dtype=x.dtype, device=x.device)
    buf[1:] = xc.flatten()
    return [
        (x, -1), (x, 1), (x, 0), (x[..., :whole], -1), (x[:, 3:, :, 4:], -1), (x[..., :1], -1), (x[:, :1], 1),
        (x.permute(0, 2, 3, 1), 3), (x[:, ::2], 1), (xc, -1), (xc[1:], -1), (xc.reshape(-1, 64), -1),
        (buf[1:].view(xc.shape), -1),  # not 16-byte aligned
    ]
