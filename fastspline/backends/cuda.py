"""CUDA backend: the ``fastspline._cuda`` extension on CUDA tensors.

The extension takes device pointers and the current torch stream; this module
allocates outputs with torch on the input's device. ``hamming_cdist`` has two
kernels: XOR + popc on the CUDA cores, and binary tensor cores (``mma.sync``
b1, sm_80+, synchronous or cp.async-pipelined staging in 128 x 128 or 256 x 128
tiles; Hopper ``wgmma`` from the same pipeline in 128 x 128 or 128 x 256 tiles, offered to
auto once its self-check passed in a child process); :func:`cdist_method` says which one a call uses, and for large calls the
staging is timed once per device and shape class (:func:`tuned_staging`). Each
tensor-core kernel, and the ``stream`` pack kernel, is checked once per device against the kernel it replaces before first
use and is not used (with a logged warning) if it disagrees. ``hamming_topk`` (k <= 32)
and ``hamming_radius`` have fused tensor-core kernels (per-block candidate lists
merged by torch; count, scan, fill), else run the cdist kernel over row blocks
of ``a`` (never an N×M buffer) and select with torch on the device; ``count_regions`` is
``torch.unique`` on the device, which orders rows as the reference does.
Without a GPU the module still imports; a call raises the CUDA error.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import time

import torch

from fastspline import _cuda  # ImportError here marks the backend unavailable
from fastspline._files import atomic_write_json

NAME = "cuda"
DEVICE_TYPES = ("cuda",)

_DTYPE_CODES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}
_BLOCK_BYTES = 1 << 28  # int32 distances held at once by topk / radius (256 MiB)

CDIST_METHODS = ("auto", "popc", "mma-xor", "mma-and")
# How the tensor-core kernel stages its K slices in shared memory: synchronous loads, or
# a cp.async pipeline with 128 x 128 or 256 x 128 tiles (mma.sync), or that pipeline
# feeding Hopper wgmma with 128 x 128 or 128 x 256 tiles, the latter loaded 2 or 3 slices
# ahead, or wide tiles in clusters of 2 x 1 or 2 x 2 CTAs fed by multicast bulk copies from
# packed panels (auto: _auto_staging).
MMA_STAGINGS = {"auto": 0, "sync": 1, "async": 2, "wide": 3, "wgmma": 4, "wgmma-wide": 5, "wgmma-deep": 6,
                "wgmma-cluster": 7, "wgmma-cluster4": 8}
_WGMMA_STAGINGS = (4, 5, 6, 7, 8)
_WGMMA_KINDS = {4: "wgmma tensor-core cdist", 5: "wide-tile wgmma tensor-core cdist",
                6: "deep-ring wgmma tensor-core cdist", 7: "clustered wgmma tensor-core cdist",
                8: "2x2-clustered wgmma tensor-core cdist"}  # their self-checks' names
# Codes of at least this many words (2,048 bits) take a pipelined kernel when not timed.
_ASYNC_MIN_WORDS = 32
# The tensor-core kernel's 128x128 tiles pay off once both sides have this many rows.
_MMA_MIN_ROWS = 128
_checks: dict[tuple[str, int], str | None] = {}  # (kernel, device index) -> why unused (None: used)
logger = logging.getLogger("fastspline")


def _env(name: str, choices, default: str = "auto") -> str:
    value = os.environ.get(name, default)
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def _env_method() -> str:
    return _env("FASTSPLINE_CUDA_CDIST", CDIST_METHODS)


def _index(device: torch.device) -> int:
    index = torch.device(device).index
    return torch.cuda.current_device() if index is None else index


class _Unsupported(str):
    """A reason a kernel is off that is the card's, not a failed check: no warning."""


# FASTSPLINE_CUDA_DISABLE: comma-separated kernels never to use (mma, async, wide, wgmma:
# every wgmma kernel, cluster: the two clustered wgmma kernels only, stream, columns16,
# fused), e.g. to work around a driver fault; they count as unsupported, without a check.
DISABLE_NAMES = ("mma", "async", "wide", "wgmma", "cluster", "stream", "columns16", "fused")


def _disabled() -> set[str]:
    names = {n.strip() for n in os.environ.get("FASTSPLINE_CUDA_DISABLE", "").split(",") if n.strip()}
    if unknown := names - set(DISABLE_NAMES):
        raise ValueError(f"FASTSPLINE_CUDA_DISABLE takes names from {DISABLE_NAMES}, got {sorted(unknown)}")
    return names


def _self_check(kind: str, device: torch.device, check, switch: str | tuple[str, ...] | None = None) -> str | None:
    """Run ``check(index)`` once per device (None: the kernel agrees; else why not) and
    log a warning when a kernel is turned off by a failed check. ``switch``: the
    kernel's names in ``FASTSPLINE_CUDA_DISABLE`` (read on every call, not cached)."""
    switches = (switch,) if isinstance(switch, str) else switch or ()
    if not _disabled().isdisjoint(switches):
        return f"disabled by FASTSPLINE_CUDA_DISABLE={os.environ['FASTSPLINE_CUDA_DISABLE']}"
    index = _index(device)
    key = (kind, index)
    if key not in _checks:
        with torch.cuda.device(index):
            if _capturing():  # a check reads results on the host: never inside a CUDA graph capture
                return "not self-checked yet (a CUDA graph is being captured): the kernel it replaces until then"
            reason = check(index)
        if reason is not None and not isinstance(reason, _Unsupported):
            logger.warning("fastspline: %s disabled on cuda:%d: %s; using the kernel it replaces", kind, index, reason)
        _checks[key] = reason if reason is None or isinstance(reason, str) else str(reason)  # _Unsupported kept
    return _checks[key]


def _check_device(index: int) -> torch.device:
    """Where the self-checks make their inputs (tests/test_cuda_sim.py: the CPU)."""
    return torch.device("cuda", index)


def _random_words(shape: tuple[int, int], gen: torch.Generator, index: int) -> torch.Tensor:
    return torch.randint(-(2**63), 2**63 - 1, shape, generator=gen, device=_check_device(index), dtype=torch.int64)


def _compare_cdist(index: int, method: str, staging: int, shapes) -> str | None:
    gen = torch.Generator(device=_check_device(index)).manual_seed(12345)
    for n, m, w in shapes:
        a, b = _random_words((n, w), gen, index), _random_words((m, w), gen, index)
        a[: n // 4] = -1  # all-ones rows: the largest distances and popcounts
        want = _cdist(a, b, None, "popc")
        if not torch.equal(_cdist(a, b, None, method, staging), want):
            return f"{method} kernel disagreed with the popc kernel in its self-check ({n}x{m}x{w} words)"
    return None


def mma_status(device: torch.device) -> str | None:
    """None when the binary tensor-core kernel is usable on ``device``, else why not.

    Checked once per device: compute capability >= 8.0, then both MMA variants
    (synchronous staging) against the popc kernel on random codes with ragged
    tiles and word counts.
    """

    def check(index: int) -> str | None:
        cc = _cuda.compute_capability()
        if cc < 80:
            return _Unsupported(f"compute capability {cc / 10:.1f} < 8.0")
        shapes = ((200, 131, 13), (129, 257, 4), (1, 300, 1))
        return _compare_cdist(index, "mma-xor", 1, shapes) or _compare_cdist(index, "mma-and", 1, shapes)

    return _self_check("binary tensor-core cdist", device, check, "mma")


def _pipelined_status(device: torch.device, kind: str, staging: int, switch: str | tuple[str, ...],
                      methods: tuple[str, ...] = ("mma-and", "mma-xor")) -> str | None:
    if (reason := mma_status(device)) is not None:  # every call: FASTSPLINE_CUDA_DISABLE=mma
        return reason

    def check(index: int) -> str | None:
        shapes = ((200, 131, 40), (129, 257, 2), (300, 140, 64), (1, 129, 34), (257, 129, 18))
        try:
            for method in methods:
                if (reason := _compare_cdist(index, method, staging, shapes)) is not None:
                    return reason
            return None
        except ValueError as exc:  # the card cannot run it: too little shared memory, no sm_90a code
            return _Unsupported(str(exc))

    return _self_check(kind, device, check, switch)


def mma_async_status(device: torch.device) -> str | None:
    """None when the cp.async pipelined tensor-core kernel (128 x 128 tiles) is usable
    on ``device`` (the tensor cores pass :func:`mma_status`, the card has the shared
    memory, and both variants agree with the popc kernel over several K slices, ragged
    ones included), else why not. Checked once per device."""
    return _pipelined_status(device, "pipelined (cp.async) tensor-core cdist", 2, "async")


def mma_wide_status(device: torch.device) -> str | None:
    """As :func:`mma_async_status`, for the pipelined kernel with 256 x 128 tiles (64 x 64
    per warp; 148 KB of shared memory, so sm_80 / sm_90 class cards)."""
    return _pipelined_status(device, "pipelined wide-tile tensor-core cdist", 3, "wide")


def _wgmma_switches(code: int) -> tuple[str, ...]:
    """The FASTSPLINE_CUDA_DISABLE names that turn wgmma kernel ``code`` off."""
    return ("wgmma", "cluster") if code in (7, 8) else ("wgmma",)


def _wgmma_pipelined_status(device: torch.device, code: int) -> str | None:
    """The self-check of wgmma kernel ``code`` (AND only) in this process."""
    return _pipelined_status(device, _WGMMA_KINDS[code], code, _wgmma_switches(code), ("mma-and",))


def wgmma_status(device: torch.device) -> str | None:
    """As :func:`mma_async_status`, for the wgmma kernel (the same cp.async ring and 128 x
    128 tiles, each warpgroup's 64 x 128 by wgmma m64n128k256 from shared memory): AND
    only, on sm_90 cards (H100 / H200) with this module's sm_90a code (else the launcher
    refuses it, which counts as unsupported)."""
    return _wgmma_pipelined_status(device, 4)


def wgmma_wide_status(device: torch.device) -> str | None:
    """As :func:`wgmma_status`, for the wgmma kernel with 128 x 256 tiles (each warpgroup's
    64 x 256 by wgmma m64n256k256, a 4-stage ring of 48 KB stages, each slice's wgmma left
    in flight over the next slice's loads; one block per SM)."""
    return _wgmma_pipelined_status(device, 5)


def wgmma_deep_status(device: torch.device) -> str | None:
    """As :func:`wgmma_wide_status`, for its twin that refills a ring stage after the
    slice's wgmma and a second barrier, so 3 slices ahead instead of 2 (half as many bytes
    again in flight per SM, for one more barrier a slice)."""
    return _wgmma_pipelined_status(device, 6)


def wgmma_cluster_status(device: torch.device) -> str | None:
    """As :func:`wgmma_wide_status`, for the kernel that runs wide tiles in clusters of two
    CTAs: a and b packed into 128-row panels first, each CTA's thread 0 bulk-copying its A
    panel and (multicast to both) half of B per slice, mbarriers for full and empty stages."""
    return _wgmma_pipelined_status(device, 7)


def wgmma_cluster4_status(device: torch.device) -> str | None:
    """As :func:`wgmma_cluster_status`, in clusters of 2 x 2 CTAs (256 x 512 pairs): each CTA
    multicasts half of its A panel to the CTA beside it and its B panel to the one below."""
    return _wgmma_pipelined_status(device, 8)


# Whether auto calls time the wgmma kernels (FASTSPLINE_CUDA_WGMMA_AUTO): "isolated" (the
# default) once their self-checks have passed in a child process on this card, "1" with
# their self-checks in this process, "0" never. Written in sessions 10 and 11 without a
# GPU, a wgmma kernel's first run on a card could trap (a wrong descriptor), and a trap
# breaks the CUDA context of the process it happens in: a child's crash only turns the
# kernel off. The child runs once per device and build (passes are remembered on disk,
# see _child_cache_path) and only for calls large enough to be timed; forced stagings and
# the tests run the kernels directly.
WGMMA_AUTO_MODES = ("isolated", "1", "0")
_WGMMA_STATUS_NAMES = {4: "wgmma_status", 5: "wgmma_wide_status", 6: "wgmma_deep_status",
                       7: "wgmma_cluster_status", 8: "wgmma_cluster4_status"}  # looked up when called (tests swap them)
_CHILD_TIMEOUT_S = 180.0
_CHILD_CACHE_ENTRIES = 32  # builds x cards remembered
_CHILD_MARK = "fastspline-child-check"
_CHILD_CODE = """\
import json, sys
import torch
from fastspline.backends import cuda
index, uuid, module = int(sys.argv[1]), sys.argv[2], sys.argv[3]
if cuda._cuda.__file__ != module:
    sys.exit(f"the child imported {cuda._cuda.__file__}, not the caller's {module}")
if uuid and cuda._device_uuid(index) != uuid:
    sys.exit(f"cuda:{index} in the child is not the caller's device {uuid}")
for code in map(int, sys.argv[4:]):
    reason = cuda._wgmma_status(code)(torch.device("cuda", index))
    print(cuda._CHILD_MARK, json.dumps([code, reason, isinstance(reason, cuda._Unsupported)]), flush=True)
"""
_child_results: dict[int, dict[int, str | None]] = {}  # device index -> staging code -> why not (None: passed)
_child_lock = threading.Lock()


def _wgmma_status(code: int):
    """wgmma_status (4), wgmma_wide_status (5), wgmma_deep_status (6), wgmma_cluster_status (7)
    or wgmma_cluster4_status (8), looked up when called."""
    return globals()[_WGMMA_STATUS_NAMES[code]]


def _wgmma_auto_mode() -> str:
    return _env("FASTSPLINE_CUDA_WGMMA_AUTO", WGMMA_AUTO_MODES, "isolated")


def _device_uuid(index: int) -> str:
    return str(getattr(torch.cuda.get_device_properties(index), "uuid", ""))


def _child_cache_path() -> str | None:
    """Where passed child checks are remembered: FASTSPLINE_CACHE_DIR (``none``: nowhere),
    else $XDG_CACHE_HOME/fastspline or ~/.cache/fastspline; ``cuda-checks.json`` there."""
    folder = os.environ.get("FASTSPLINE_CACHE_DIR")
    if folder is None:
        folder = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "fastspline")
    return None if folder.lower() == "none" or not folder else os.path.join(folder, "cuda-checks.json")


def _child_cache_key(index: int) -> str:
    """This build of the module and of this file (path, size, mtime), the card (name, UUID),
    the driver and the CUDA toolkit the module was built with: a rebuilt module, a new
    driver or another card is checked again."""
    driver = "?"
    with contextlib.suppress(Exception):
        driver = str(torch._C._cuda_getDriverVersion())
    if driver == "?":
        with contextlib.suppress(OSError, IndexError):
            with open("/proc/driver/nvidia/version") as f:
                driver = f.readline().strip()
    files = [(path, st.st_size, st.st_mtime_ns) for path in (_cuda.__file__, __file__) for st in [os.stat(path)]]
    name = torch.cuda.get_device_properties(index).name
    return json.dumps([files, name, _device_uuid(index), driver, _cuda.build_info()])


def _read_child_cache(path: str) -> dict[str, dict]:
    """The remembered entries, each {"results": {code: None or unsupported reason}, "when":
    seconds}; anything else in the file (or an unreadable file) is left out."""
    with contextlib.suppress(OSError, ValueError):
        with open(path) as f:
            cache = json.load(f)
        if isinstance(cache, dict):
            return {key: entry for key, entry in cache.items() if isinstance(entry, dict)
                    and isinstance(entry.get("when"), (int, float)) and isinstance(entry.get("results"), dict)
                    and all(code.isdigit() and (r is None or isinstance(r, str)) for code, r in entry["results"].items())}
    return {}


def _run_child(index: int, codes: list[int]) -> dict[int, str | None]:
    """The wgmma self-checks ``codes`` on cuda:``index`` in a child process: each code's
    reason (None: passed); one the child did not report (it crashed, hung or could not
    start) gets why."""
    # From the package's parent folder, so that the child imports this same fastspline
    # (python -c puts the working folder first on sys.path); it checks the module's path.
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(sys.modules["fastspline"].__file__)))
    argv = [sys.executable, "-c", _CHILD_CODE, str(index), _device_uuid(index), _cuda.__file__, *map(str, codes)]
    logger.info("fastspline: self-checking wgmma kernels %s on cuda:%d in a child process", codes, index)
    results: dict[int, str | None] = {}
    try:
        done = subprocess.run(argv, cwd=package_root, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=_CHILD_TIMEOUT_S)
        out, err, why = done.stdout, done.stderr, f"exit code {done.returncode}"
        if done.returncode < 0:
            why = f"signal {-done.returncode}"
    except subprocess.TimeoutExpired as exc:
        out, err, why = _text(exc.stdout), _text(exc.stderr), f"no answer in {_CHILD_TIMEOUT_S:g} s"
    except OSError as exc:
        out, err, why = "", "", f"it could not start: {exc}"
    for line in out.splitlines():
        if line.startswith(_CHILD_MARK + " "):
            with contextlib.suppress(ValueError, TypeError):
                code, reason, unsupported = json.loads(line[len(_CHILD_MARK) + 1:])
                if code in codes and (reason is None or isinstance(reason, str)):
                    results[code] = None if reason is None else (_Unsupported if unsupported else str)(reason)
    last = next((line.strip() for line in reversed(err.splitlines()) if line.strip()), "")
    for code in codes:
        if code not in results:
            results[code] = f"its self-check in a child process did not finish ({why}){': ' + last if last else ''}"
    return results


def _text(data) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else data or ""


def _child_status(device: torch.device, code: int) -> str | None:
    """None when the wgmma kernel ``code`` (4, 5, 6) passed its self-check in a child process
    on ``device`` (now or, remembered on disk, for this build, card and driver), else why
    not. Checked once per device; the child runs only after the mma.sync kernels passed
    theirs, on compute capability 9.0."""
    if (reason := mma_status(device)) is not None:
        return reason

    def check(index: int) -> str | None:
        with _child_lock:  # one child per device, whichever thread asks first
            if index not in _child_results:
                _child_results[index] = _child_checks(index)
        return _child_results[index][code]

    return _self_check(f"{_WGMMA_KINDS[code]} (in a child process)", device, check, _wgmma_switches(code))


def _child_checks(index: int) -> dict[int, str | None]:
    """Each wgmma kernel's child-process check on cuda:``index`` (the current device):
    remembered passes and unsupported answers for this key are reused, the rest run in one
    child; crashes, hangs and disagreements are never remembered."""
    codes = list(_WGMMA_STAGINGS)
    cc = _cuda.compute_capability()
    if cc != 90:
        return {code: _Unsupported(f"compute capability {cc / 10:.1f}, not 9.0") for code in codes}
    path = _child_cache_path()
    key = _child_cache_key(index) if path else ""
    known = _read_child_cache(path).get(key, {}).get("results", {}) if path else {}
    results: dict[int, str | None] = {
        code: None if known[str(code)] is None else _Unsupported(known[str(code)]) for code in codes if str(code) in known}
    if todo := [code for code in codes if code not in results]:
        results.update(_run_child(index, todo))
        keep = {str(code): r for code, r in results.items() if r is None or isinstance(r, _Unsupported)}
        if path and any(str(code) in keep for code in todo):
            with contextlib.suppress(OSError):
                cache = _read_child_cache(path)
                cache[key] = {"results": keep, "when": time.time()}
                newest = sorted(cache, key=lambda k: cache[k]["when"])[-_CHILD_CACHE_ENTRIES:]
                atomic_write_json(path, {k: cache[k] for k in newest})
    return results


def _wgmma_cleared(device: torch.device, code: int) -> bool:
    """Whether auto calls may time wgmma kernel ``code`` (see WGMMA_AUTO_MODES); its own
    self-check in this process still has to pass."""
    mode = _wgmma_auto_mode()
    return mode == "1" or (mode == "isolated" and _child_status(device, code) is None)


def mma_staging(device: torch.device) -> int:
    """``FASTSPLINE_CUDA_MMA_STAGING`` (auto, sync, async, wide, wgmma, wgmma-wide, wgmma-deep,
    wgmma-cluster, wgmma-cluster4) as the extension's code; a forced pipelined kernel that failed its check raises. Auto stays 0 here and
    is resolved per call by :func:`_auto_staging`."""
    name = _env("FASTSPLINE_CUDA_MMA_STAGING", MMA_STAGINGS)
    code = MMA_STAGINGS[name]
    status = _wgmma_status(code) if code in _WGMMA_STAGINGS else {2: mma_async_status, 3: mma_wide_status}.get(code)
    if status is not None:
        if (reason := status(device)) is not None:
            raise RuntimeError(f"FASTSPLINE_CUDA_MMA_STAGING={name}: the pipelined kernel is unavailable: {reason}")
    return code


def _cp_async_layout(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether the pipelined (cp.async) kernels can stage ``a`` and ``b``: they move 16-byte
    pieces, so an even word count and 16-byte aligned rows."""
    return a.shape[1] % 2 == 0 and a.data_ptr() % 16 == 0 and b.data_ptr() % 16 == 0


def staging_candidates(a: torch.Tensor, b: torch.Tensor, method: str = "mma-and", wgmma: bool = True) -> list[int]:
    """The tensor-core stagings that can run ``a`` against ``b`` on their device: sync
    always; the pipelined ones for even word counts and 16-byte aligned rows, where
    their checks passed (wgmma: AND only, when ``wgmma`` and :func:`_wgmma_cleared`)."""
    out = [1]
    if _cp_async_layout(a, b):
        out += [code for code, status in ((2, mma_async_status), (3, mma_wide_status)) if status(a.device) is None]
        if method == "mma-and" and wgmma:
            out += [code for code in _WGMMA_STAGINGS
                    if _wgmma_cleared(a.device, code) and _wgmma_status(code)(a.device) is None]
    return out


# Auto choices between kernels that give the same bits (the cdist staging; fused top-k /
# radius staging) are timed on the card for calls of at least this many word pairs (n m w;
# FASTSPLINE_CUDA_AUTOTUNE=0: never), once per device, op and shape class, on random codes
# of at most 4,096 x 4,096 rows and 512 words; smaller calls use the static rules.
_AUTOTUNE_MIN_WORD_PAIRS = 1 << 33
_AUTOTUNE_ROWS, _AUTOTUNE_WORDS = 4096, 512
_tuned: dict[tuple, str] = {}


def _time_ms(fn, reps: int = 3, calls: int = 4) -> float:
    """Milliseconds per call of ``fn``: the fastest of ``reps`` timings, by CUDA events, of
    ``calls`` back-to-back calls each, after one warm-up (a call on a sample can take tens
    of microseconds, near the host's launch gap). Timed one call at a time, the cdist
    staging chosen for 1,024-bit codes on an H200 differed between three runs (async,
    sync, wide), once costing 7.5 ms at full size against 6.0 for wide."""
    fn()
    best = float("inf")
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end) / calls)
    return best


def _capturing() -> bool:
    """Whether the current stream is being captured into a CUDA graph (no timing then)."""
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def _timing_on() -> bool:
    """FASTSPLINE_CUDA_AUTOTUNE is not 0 and no CUDA graph is being captured."""
    return _env("FASTSPLINE_CUDA_AUTOTUNE", ("0", "1"), "1") == "1" and not _capturing()


def _timed_size(n: int, m: int, w: int) -> bool:
    """Whether a call of ``n`` x ``m`` x ``w`` words is large enough to time choices for."""
    return n * m * w >= _AUTOTUNE_MIN_WORD_PAIRS and _timing_on()


def _worth_timing(n: int, m: int, w: int, candidates: list[str]) -> bool:
    return len(candidates) > 1 and _timed_size(n, m, w)


def _fastest(key: tuple, candidates: list[str], make_run, fallback: str, what: str) -> str:
    """The fastest of ``candidates``, timed once per ``key`` (its first item the device
    index): ``make_run()`` prepares the inputs and returns ``run(candidate)``; a candidate
    whose run raises ValueError (it does not take the input) is left out; ``fallback`` when
    none ran or there is no memory to time (for good). Every candidate gives the same
    bits, so only speed is at stake."""
    if key not in _tuned:
        times: dict[str, float] = {}
        try:
            with torch.cuda.device(key[0]):  # the events time the current device's stream
                run = make_run()
                for c in candidates:
                    try:
                        times[c] = _time_ms(lambda c=c: run(c))
                    except ValueError:
                        continue
        except torch.cuda.OutOfMemoryError:  # no room to time: the static rule
            times = {}
        _tuned[key] = min(times, key=lambda c: (times[c], candidates.index(c))) if times else fallback
        logger.info("fastspline: %s on cuda:%d: %s (%s)", what, key[0], _tuned[key],
                    ", ".join(f"{c} {t:.3f} ms" for c, t in times.items()) or "not timed")
    return _tuned[key]


def _timed_choice(op: str, n: int, m: int, w: int, device: torch.device, candidates: list[str], run,
                  fallback: str) -> str:
    """:func:`_fastest` of ``run(candidate, a, b)`` for ``op`` on ``device``, once per shape
    class (rows up to 4,096 by powers of two, words up to 512, the candidates), on random
    codes of that class."""
    ns, ms, ws = min(n, _AUTOTUNE_ROWS), min(m, _AUTOTUNE_ROWS), min(w, _AUTOTUNE_WORDS)
    key = (_index(device), op, ws, ns.bit_length(), ms.bit_length(), tuple(candidates))

    def make_run():
        gen = torch.Generator(device=device).manual_seed(99)
        a, b = _random_words((ns, ws), gen, _index(device)), _random_words((ms, ws), gen, _index(device))
        return lambda c: run(c, a, b)

    return _fastest(key, candidates, make_run, fallback, f"{op} for ~{ns}x{ms}x{ws} words")


_STAGING_NAMES = {code: name for name, code in MMA_STAGINGS.items()}


def tuned_staging(n: int, m: int, w: int, method: str, device: torch.device, candidates: list[int]) -> int:
    """The fastest of the staging codes ``candidates`` for cdist ``method`` (see
    :func:`_timed_choice`)."""
    name = _timed_choice(
        f"cdist {method} staging", n, m, w, device, [_STAGING_NAMES[c] for c in candidates],
        lambda c, a, b: _cdist(a, b, None, method, MMA_STAGINGS[c]), _STAGING_NAMES[_static_staging(w, candidates)],
    )
    return MMA_STAGINGS[name]


def _auto_staging(a: torch.Tensor, b: torch.Tensor, method: str) -> int:
    """Staging for an auto call: timed (:func:`tuned_staging`) for large calls with a
    choice to make, else wide, then square pipelined tiles from 2,048-bit codes, else sync.
    The wgmma kernels are only ever timed, so only calls that may be timed consider them
    (and, by default, start their child-process check)."""
    n, m, w = a.shape[0], b.shape[0], a.shape[1]
    timed = _timed_size(n, m, w)
    candidates = staging_candidates(a, b, method, wgmma=timed)
    if timed and len(candidates) > 1:
        return tuned_staging(n, m, w, method, a.device, candidates)
    return _static_staging(w, candidates)


def _static_staging(w: int, candidates: list[int]) -> int:
    """Untimed: the widest mma.sync pipelined kernel from 2,048-bit codes, else synchronous
    (wgmma only where timing picks it)."""
    return max(c for c in candidates if c not in _WGMMA_STAGINGS) if w >= _ASYNC_MIN_WORDS else 1


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


PACK_KERNELS = {"auto": 0, "rows": 1, "columns": 2, "stream": 3, "columns16": 4}


def pack_kernel() -> int:
    """``FASTSPLINE_CUDA_PACK`` (auto, rows, columns, stream, columns16) as the extension's
    code; a kernel that does not apply to an input raises ValueError (benchmarks and tests)."""
    return PACK_KERNELS[_env("FASTSPLINE_CUDA_PACK", PACK_KERNELS)]


def _pack(x: torch.Tensor, threshold: float, kernel: int, allow: int = 3) -> torch.Tensor:
    n = x.shape[-1]
    out = torch.empty(*x.shape[:-1], (n + 63) // 64, dtype=torch.int64, device=x.device)
    if out.numel() > 0:
        if x.dim() > 9:  # the kernel takes up to 8 leading dims; merging them may copy (not when empty:
            x = x.reshape(-1, n)  # reshape(-1, 0) is ambiguous and raises)
        with torch.cuda.device(x.device):
            _cuda.pack_signs(
                x.data_ptr(), _DTYPE_CODES[x.dtype], list(x.shape), list(x.stride()), threshold,
                out.data_ptr(), _stream(x), kernel, allow,
            )
    return out


def _special_values(x: torch.Tensor) -> torch.Tensor:
    """``x`` with NaN, +-inf, +-0 and values at the threshold 0.25 written into its start."""
    flat = x.view(-1)
    flat[:7] = float("nan")
    flat[7:9] = float("inf")
    flat[9:11] = -float("inf")
    flat[11:13] = 0.0
    flat[13:15] = -0.0
    flat[15:40] = 0.25
    return x


def _compare_pack(kernel: str, baseline: str, views) -> str | None:
    """None when pack kernel ``kernel`` gives ``baseline``'s words on every view at three
    thresholds, else which view differed."""
    for v in views:
        for threshold in (0.0, 0.25, -0.5):
            if not torch.equal(_pack(v, threshold, PACK_KERNELS[kernel]), _pack(v, threshold, PACK_KERNELS[baseline])):
                return (f"{kernel} pack kernel disagreed with the {baseline} kernel "
                        f"({v.dtype}, {tuple(v.shape)}, strides {v.stride()}, threshold {threshold})")
    return None


def pack_stream_status(device: torch.device) -> str | None:
    """None when the ``stream`` pack kernel (16-byte loads) agrees with the ``rows``
    kernel on ``device`` for every dtype, on whole-word and padded rows, a row-strided
    view and a ragged last step, with NaN, +-inf, +-0 and values at the threshold;
    else why not. Checked once per device; auto packing uses ``stream`` only when
    this passes."""

    def check(index: int) -> str | None:
        gen = torch.Generator(device=_check_device(index)).manual_seed(2024)
        for dtype in _DTYPE_CODES:
            for shape in ((3, 192), (37, 64), (2, 5, 4160), (7, 104), (1, 8), (5, 200)):
                x = _special_values(torch.randn(shape, generator=gen, device=_check_device(index)).to(dtype))
                views = (x, x[:, :96]) if shape == (5, 200) else (x,)  # rows 200 apart, 96 long
                if (reason := _compare_pack("stream", "rows", views)) is not None:
                    return reason
        return None

    return _self_check("stream pack kernel", device, check, "stream")


def pack_columns16_status(device: torch.device) -> str | None:
    """None when the ``columns16`` pack kernel (16-byte loads across neighbouring rows)
    agrees with the ``columns`` kernel on ``device`` for every dtype: NCHW channels with
    whole and ragged last words, a batch slice, a channel-strided view, several 16-byte
    vectors per row run, special values; else why not. Checked once per device; auto
    packing uses ``columns16`` only when this passes."""

    def check(index: int) -> str | None:
        gen = torch.Generator(device=_check_device(index)).manual_seed(2025)
        for dtype in _DTYPE_CODES:
            for shape in ((2, 64, 2, 8), (3, 130, 1, 16), (1, 65, 3, 8), (5, 7, 2, 24)):  # W: whole vectors
                x = _special_values(torch.randn(shape, generator=gen, device=_check_device(index)).to(dtype))
                views = [x.movedim(1, -1), x[1:].movedim(1, -1)]
                if shape[1] > 64:
                    views.append(x[:, ::2].movedim(1, -1))  # channels two apart
                if (reason := _compare_pack("columns16", "columns", views)) is not None:
                    return reason
        return None

    return _self_check("columns16 pack kernel", device, check, "columns16")


# Auto packing of inputs from 256 MiB on times the kernels that take the input's layout
# (stream or columns16 where their checks passed, columns, rows) once per layout, on its
# first 256 MiB or 4x the L2 cache, whichever is more, and keeps the fastest
# (FASTSPLINE_CUDA_AUTOTUNE=0: never). A sample that fits in L2 times cache hits, not
# memory: on an H200 (60 MB L2), a 64 MiB sample picked rows for 1 GiB float32 rows,
# which then ran at 46% of copy bandwidth against stream's 84%.
_PACK_TIME_BYTES, _PACK_SAMPLE_BYTES = 1 << 28, 1 << 28


def _pack_sample_bytes(device: torch.device) -> int:
    if device.type != "cuda":  # the CPU emulator (tests)
        return _PACK_SAMPLE_BYTES
    return max(_PACK_SAMPLE_BYTES, 4 * torch.cuda.get_device_properties(device).L2_cache_size)


def tuned_pack(x: torch.Tensor, threshold: float, allow: int) -> int:
    """The fastest pack kernel for ``x``'s layout (dtype, trailing shape, strides, 16-byte
    alignment) among those ``allow`` lets auto use, timed on a slice of ``x`` along its
    first dim (same layout); 0 (auto's own rule) when none takes it."""
    names = [name for name, bit in (("stream", 1), ("columns16", 2)) if allow & bit] + ["columns", "rows"]
    # The first dim's size enters the kernels' layout rules too: whether it is 1 (a dim of
    # size 1 has no stride to keep) and, where the kernel sees [rows, n], its count mod 8
    # (columns16: whole 16-byte vectors of rows). Sample and key keep both.
    first, flat = x.shape[0], x.dim() == 2 or x.dim() > 9  # _pack views > 9 dims as [rows, n]
    key = (_index(x.device), "pack", x.dtype, tuple(x.shape[1:]), tuple(x.stride()), x.data_ptr() % 16, allow,
           first > 1, first % 8 if flat else 0)

    def make_run():
        rows = max(min(2, first), min(first, first * _pack_sample_bytes(x.device) // (x.numel() * x.element_size())))
        if flat:
            rows += (first - rows) % 8  # the same count mod 8, at most first
        sample = x.narrow(0, 0, rows)
        return lambda name: _pack(sample, threshold, PACK_KERNELS[name], allow)

    what = f"pack_signs of {x.dtype} {tuple(x.shape)} strides {x.stride()}"
    return PACK_KERNELS[_fastest(key, names, make_run, "auto", what)]


def pack_signs(x: torch.Tensor, threshold: float) -> torch.Tensor:
    kernel = pack_kernel()
    for name, status in (("stream", pack_stream_status), ("columns16", pack_columns16_status)):
        if kernel == PACK_KERNELS[name] and (reason := status(x.device)) is not None:
            raise RuntimeError(f"FASTSPLINE_CUDA_PACK={name}: the kernel is unavailable: {reason}")
    allow = 0
    if kernel == 0:
        allow = (pack_stream_status(x.device) is None) | (pack_columns16_status(x.device) is None) << 1
        if x.dim() >= 2 and x.numel() * x.element_size() >= _PACK_TIME_BYTES and _timing_on():
            kernel = tuned_pack(x, threshold, allow)
    return _pack(x, threshold, kernel, allow)


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


def _cdist(
    a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None, method: str, staging: int | None = None
) -> torch.Tensor:
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
                    if staging is None:
                        staging = mma_staging(a.device) or _auto_staging(a, b, method)
                    # The pipelined AND kernels take row popcounts counted beforehand (n + m
                    # int64; stagings 7 and 8 also a's and b's panels after them).
                    words = _cuda.cdist_mma_workspace(a.shape[0], b.shape[0], a.shape[1], method == "mma-xor", staging)
                    pops = torch.empty(words, dtype=torch.int64, device=a.device) if words else None
                    _cuda.hamming_cdist_mma(
                        *args, method == "mma-xor", _stream(a), staging, 0 if pops is None else pops.data_ptr()
                    )
    return out


def hamming_cdist(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    a, b = _words(a), _words(b)
    return _cdist(a, b, out, cdist_method(a.shape[0], b.shape[0], a.device))


def _row_blocks(n: int, m: int, bytes_per_pair: int = 4, multiple: int = 1):
    step = max(1, _BLOCK_BYTES // max(1, bytes_per_pair * m))
    step = max(multiple, step // multiple * multiple)
    for lo in range(0, n, step):
        yield lo, min(n, lo + step)


# hamming_topk (k <= 32) and hamming_radius: "fused" kernels on the tensor-core tiles (no
# distance matrix in global memory) with synchronous staging, "pipelined" ones whose tiles
# run through the cp.async ring as one stream per block (sm_90 class shared memory; w even,
# rows 16-byte aligned), or "blocks": the cdist kernel over row blocks of a, then torch
# sort / nonzero on each block.
SEARCH_METHODS = ("auto", "fused", "pipelined", "blocks")
_TOPK_FUSED_MAX_K = 32


def _popc_cdist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The popc kernel whatever the switches say: the fused kernels' self-checks compare
    with it, so FASTSPLINE_CUDA_CDIST / _MMA_STAGING cannot fail them (cached per device)."""
    return _cdist(a, b, None, "popc")


def _topk_blocks(a: torch.Tensor, b: torch.Tensor, k: int, cdist=None) -> tuple[torch.Tensor, torch.Tensor]:
    dist = torch.empty(a.shape[0], k, dtype=torch.int32, device=a.device)
    index = torch.empty(a.shape[0], k, dtype=torch.int64, device=a.device)
    for lo, hi in _row_blocks(a.shape[0], b.shape[0]):
        block = (cdist or hamming_cdist)(a[lo:hi], b)
        values, order = torch.sort(block, dim=1, stable=True)  # stable: ties keep the lower index
        dist[lo:hi] = values[:, :k]
        index[lo:hi] = order[:, :k]
    return dist, index


def _topk_splits(n: int, m: int, sms: int) -> int:
    """Column ranges for the fused top-k: enough blocks for every SM twice when there are
    few row tiles, each range whole 128-column tiles and none empty."""
    row_tiles, col_tiles = -(-n // 128), -(-m // 128)
    splits = max(1, min(col_tiles, -(-2 * sms // row_tiles)))
    return -(-col_tiles // -(-col_tiles // splits))  # tiles per range, then ranges that use them


def _workspace(pipelined: bool, rows: int, device: torch.device) -> torch.Tensor | None:
    """The pipelined fused kernels' row popcounts (n + m int64), else None."""
    return torch.empty(rows, dtype=torch.int64, device=device) if pipelined else None


def _topk_fused(
    a: torch.Tensor, b: torch.Tensor, k: int, splits: int | None = None, pipelined: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    n, m, w = a.shape[0], b.shape[0], a.shape[1]
    if n == 0:
        return torch.empty(0, k, dtype=torch.int32, device=a.device), torch.empty(0, k, dtype=torch.int64, device=a.device)
    if splits is None:
        splits = _topk_splits(n, m, torch.cuda.get_device_properties(a.device).multi_processor_count)
    cand = torch.empty(n, splits, k, dtype=torch.int64, device=a.device)
    pops = _workspace(pipelined, n + m, a.device)
    with torch.cuda.device(a.device):
        _cuda.hamming_topk_mma(a.data_ptr(), n, b.data_ptr(), m, w, k, splits, cand.data_ptr(), _stream(a),
                               0 if pops is None else pops.data_ptr())
    keys = cand.view(n, splits * k)
    if splits > 1:  # keys are distinct (they hold the index): no ties to order
        keys = torch.topk(keys, k, dim=1, largest=False, sorted=True).values
    return (keys >> 32).to(torch.int32), keys & 0xFFFFFFFF


def _radius_blocks(
    a: torch.Tensor, b: torch.Tensor, r: int, cdist=None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rows, cols, dists = [], [], []
    for lo, hi in _row_blocks(a.shape[0], b.shape[0]):
        block = (cdist or hamming_cdist)(a[lo:hi], b)
        i, j = torch.nonzero(block <= r, as_tuple=True)  # row-major: sorted by (i, j)
        rows.append(i + lo)
        cols.append(j)
        dists.append(block[i, j])
    return _cat_pairs(rows, cols, dists, a.device)


def _cat_pairs(rows, cols, dists, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if not rows:
        return tuple(torch.empty(0, dtype=t, device=device) for t in (torch.int64, torch.int64, torch.int32))
    return torch.cat(rows), torch.cat(cols), torch.cat(dists)


def _radius_fused(
    a: torch.Tensor, b: torch.Tensor, r: int, pipelined: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n, m, w = a.shape[0], b.shape[0], a.shape[1]
    col_tiles = -(-m // 128)
    rows, cols, dists = [], [], []
    # Row blocks bound the per-(row, column tile) counts and offsets (12 bytes each).
    for lo, hi in _row_blocks(n, col_tiles, bytes_per_pair=12, multiple=128):
        part = a[lo:hi]
        counts = torch.empty(hi - lo, col_tiles, dtype=torch.int32, device=a.device)
        pops = _workspace(pipelined, hi - lo + m, a.device)
        space = 0 if pops is None else pops.data_ptr()
        with torch.cuda.device(a.device):
            _cuda.hamming_radius_mma(part.data_ptr(), hi - lo, b.data_ptr(), m, w, r, counts.data_ptr(), 0, 0, 0, 0,
                                     False, _stream(a), space)
            flat = counts.view(-1).to(torch.int64)
            ends = torch.cumsum(flat, 0)
            total = int(ends[-1]) if ends.numel() else 0
            i = torch.empty(total, dtype=torch.int64, device=a.device)
            j = torch.empty(total, dtype=torch.int64, device=a.device)
            d = torch.empty(total, dtype=torch.int32, device=a.device)
            if total:
                offsets = ends - flat
                _cuda.hamming_radius_mma(part.data_ptr(), hi - lo, b.data_ptr(), m, w, r, 0, offsets.data_ptr(),
                                         i.data_ptr(), j.data_ptr(), d.data_ptr(), True, _stream(a), space)
        rows.append(i + lo)
        cols.append(j)
        dists.append(d)
    return _cat_pairs(rows, cols, dists, a.device)


_TOPK_CASES = ((200, 300, 3, 5, None), (129, 1000, 1, 32, None), (1, 129, 17, 1, None), (300, 4100, 2, 7, None),
               (130, 50, 4, 32, None), (70, 500, 2, 32, None), (200, 600, 3, 5, 1), (200, 600, 3, 5, 3),
               (200, 600, 3, 12, 7))  # splits 7 over 5 tiles: two empty ranges
_RADIUS_CASES = ((200, 300, 3), (129, 1000, 1), (1, 129, 17), (300, 4100, 2), (130, 50, 4))


def _check_topk(index: int, pipelined: bool) -> str | None:
    gen = torch.Generator(device=_check_device(index)).manual_seed(777)
    try:
        for n, m, w, k, splits in _TOPK_CASES:
            w += w % 2 if pipelined else 0  # the pipelined kernel takes even word counts
            a, b = _random_words((n, w), gen, index), _random_words((m, w), gen, index)
            b[::3] = b[0]  # ties
            if m == 500:
                b[:] = b[0]  # every distance equal: the order is the index order
            got, want = _topk_fused(a, b, k, splits, pipelined), _topk_blocks(a, b, k, _popc_cdist)
            if not all(torch.equal(x, y) for x, y in zip(got, want)):
                kind = "pipelined fused" if pipelined else "fused"
                return f"{kind} top-k disagreed with the row-block path ({n}x{m}x{w} words, k={k}, splits={splits})"
    except ValueError as exc:  # too little shared memory on this card
        return _Unsupported(str(exc))
    return None


def _check_radius(index: int, pipelined: bool) -> str | None:
    gen = torch.Generator(device=_check_device(index)).manual_seed(778)
    try:
        for n, m, w in _RADIUS_CASES:
            w += w % 2 if pipelined else 0
            a, b = _random_words((n, w), gen, index), _random_words((m, w), gen, index)
            b[::3] = b[0]
            b[1] = a[0]  # a pair at distance 0
            for r in (0, 32 * w - 4, 64 * w):
                want = _radius_blocks(a, b, r, _popc_cdist)
                if not all(torch.equal(x, y) for x, y in zip(_radius_fused(a, b, r, pipelined), want)):
                    kind = "pipelined fused" if pipelined else "fused"
                    return f"{kind} radius disagreed with the row-block path ({n}x{m}x{w} words, r={r})"
    except ValueError as exc:  # too little shared memory on this card
        return _Unsupported(str(exc))
    return None


def topk_status(device: torch.device) -> str | None:
    """None when the fused top-k kernel is usable on ``device`` (the tensor cores pass
    :func:`mma_status`, the card has the shared memory, and it agrees with the row-block
    path on ties, all-equal rows, ragged tiles, several tiles per column range, empty
    ranges and one range per tile), else why not. Checked once per device."""
    if (reason := mma_status(device)) is not None:
        return reason
    return _self_check("fused top-k kernel", device, lambda index: _check_topk(index, False), "fused")


def radius_status(device: torch.device) -> str | None:
    """None when the fused radius kernels are usable on ``device`` (as for
    :func:`topk_status`: radius 0, in between and past every distance, ties, ragged
    tiles), else why not. Checked once per device."""
    if (reason := mma_status(device)) is not None:
        return reason
    return _self_check("fused radius kernels", device, lambda index: _check_radius(index, False), "fused")


def topk_pipelined_status(device: torch.device) -> str | None:
    """As :func:`topk_status` for the pipelined fused top-k kernel (the same cases with
    even word counts); off with the fused kernels or the pipelined cdist (its main loop)."""
    if (reason := topk_status(device) or mma_async_status(device)) is not None:
        return reason
    return _self_check("pipelined fused top-k kernel", device, lambda index: _check_topk(index, True), "fused")


def radius_pipelined_status(device: torch.device) -> str | None:
    """As :func:`radius_status` for the pipelined (persistent) fused radius kernels."""
    if (reason := radius_status(device) or mma_async_status(device)) is not None:
        return reason
    return _self_check("pipelined fused radius kernels", device, lambda index: _check_radius(index, True), "fused")


def search_method(op: str, device: torch.device, a: torch.Tensor | None = None, b: torch.Tensor | None = None) -> str:
    """``FASTSPLINE_CUDA_SEARCH`` (auto, fused, pipelined, blocks) resolved for ``op``
    ("topk" or "radius") on ``device``. Auto, among the fused kernels whose checks pass
    (pipelined only for even word counts and aligned rows of ``a``, ``b``): timed for
    large calls (as the cdist staging), else pipelined for codes of 2,048+ bits, else
    fused; blocks when neither passes."""
    method = _env("FASTSPLINE_CUDA_SEARCH", SEARCH_METHODS)
    if method == "blocks":
        return method
    statuses = {"fused": topk_status, "pipelined": topk_pipelined_status} if op == "topk" else \
        {"fused": radius_status, "pipelined": radius_pipelined_status}
    if method != "auto":
        if (reason := statuses[method](device)) is not None:
            raise RuntimeError(f"FASTSPLINE_CUDA_SEARCH={method}: the {method} {op} kernel is unavailable: {reason}")
        return method
    candidates = [c for c in ("pipelined", "fused") if statuses[c](device) is None]
    if "pipelined" in candidates and not (a is not None and b is not None and _cp_async_layout(a, b)):
        candidates.remove("pipelined")
    if not candidates:
        return "blocks"
    n, m, w = (0, 0, 0) if a is None or b is None else (a.shape[0], b.shape[0], a.shape[1])
    static = "pipelined" if "pipelined" in candidates and w >= _ASYNC_MIN_WORDS else candidates[-1]
    if _worth_timing(n, m, w, candidates):

        def run(c: str, sa: torch.Tensor, sb: torch.Tensor):
            if op == "topk":
                return _topk_fused(sa, sb, min(10, sb.shape[0]), pipelined=c == "pipelined")
            return _radius_fused(sa, sb, 0, pipelined=c == "pipelined")

        return _timed_choice(f"fused {op} staging", n, m, w, device, candidates, run, static)
    return static


def hamming_topk(a: torch.Tensor, b: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = _words(a), _words(b)
    if k <= _TOPK_FUSED_MAX_K and b.shape[0] < 2**31:
        method = search_method("topk", a.device, a, b)
        if method != "blocks":
            return _topk_fused(a, b, k, pipelined=method == "pipelined")
    return _topk_blocks(a, b, k)


def hamming_radius(a: torch.Tensor, b: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    a, b = _words(a), _words(b)
    if a.shape[0] and b.shape[0] and r < 2**31:
        method = search_method("radius", a.device, a, b)
        if method != "blocks":
            return _radius_fused(a, b, r, pipelined=method == "pipelined")
    return _radius_blocks(a, b, r)


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
