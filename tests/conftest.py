"""Shared test matrix (every backend x every instruction set) and hypothesis profiles.

``impl`` is the one parametrized fixture for "run this on every implementation":
it yields ``Impl(backend, isa)`` pairs such as ``("reference", None)``,
``("cpu", "scalar")``, ``("cpu", "avx2")``, ``("cpu", "avx512")``. A backend that
does not load is one skipped case that shows why; for a backend with
instruction sets (``supported_isas()``/``forced_isa()``), each set the CPU runs
is its own case, forced for the whole test. Data helpers live in ``cases.py``,
the numpy oracle in ``oracle.py``.
"""
from __future__ import annotations

import os

# Before anything imports triton: a Triton backend must run (interpreted) without a GPU.
os.environ.setdefault("TRITON_INTERPRET", "1")
# Nothing remembered in the user's cache folder (the CUDA backend's child-process checks).
os.environ.setdefault("FASTSPLINE_CACHE_DIR", "none")

import json
from collections import Counter
from collections.abc import Iterator
from typing import NamedTuple

import pytest
import torch
from hypothesis import HealthCheck, settings

from fastspline import backends

# ---------------------------------------------------------------- hypothesis profiles

# The ``impl`` fixture forces an instruction set for the whole test, which is
# exactly what every example of a property test should run under, so the
# function-scoped-fixture health check does not apply.
_COMMON = dict(
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=50, **_COMMON)
settings.register_profile("ci", max_examples=400, **_COMMON)
# The fuzz step (tests/fuzz.sh): the same examples on every run (derandomize, no
# database), so CI is stable; tests/test_fuzz.py sets the example counts per test.
settings.register_profile("fuzz", max_examples=400, derandomize=True, database=None, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


# ---------------------------------------------------------------- Triton's interpreter

def _scan_triton_builtins_once() -> None:
    """Triton's interpreter (3.x) finds the builtins to patch with inspect.getmembers over
    triton.language, its tensor and math at every launch and at every call of a
    @triton.jit helper: about half of an interpreted op's time in these tests. Those
    modules gain no builtins at run time, so each is scanned once; the members patched,
    and the order, are the same as before. The kernels run unchanged."""
    try:
        import inspect

        import triton.language as tl
        from triton.runtime import interpreter
    except Exception:  # no triton, or one this does not know: left as it is
        return
    if not (hasattr(interpreter, "_patch_builtin") and hasattr(interpreter, "_patch_attr")):
        return
    names: dict = {}

    def patch_builtin(pkg, builder, scope) -> None:
        if pkg not in names:  # the first scan is a launch's, on the unpatched module
            names[pkg] = [name for name, member in inspect.getmembers(pkg) if tl.core.is_builtin(member)]
        for name in names[pkg]:
            member = getattr(pkg, name)
            if tl.core.is_builtin(member):
                interpreter._patch_attr(pkg, name, member, builder, scope)

    interpreter._patch_builtin = patch_builtin


_scan_triton_builtins_once()


# ---------------------------------------------------------------- opt-in markers

# Tests too long (fuzz) or too big (huge) for the normal run: they run only when the
# -m expression names their marker (tests/fuzz.sh: -m "fuzz or huge").
OPT_IN_MARKERS = {
    "fuzz": "many hypothesis examples of every op on every backend (tests/fuzz.sh)",
    "huge": "sizes past 2**31 bits or pairs, GiBs of memory (tests/fuzz.sh)",
}
FUZZ_COUNTS = pytest.StashKey[Counter]()


def pytest_configure(config) -> None:
    for name, what in OPT_IN_MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {what}")
    config.stash[FUZZ_COUNTS] = Counter()


def pytest_collection_modifyitems(config, items) -> None:
    selected = config.getoption("markexpr") or ""
    for name in OPT_IN_MARKERS:
        if name in selected:
            continue
        skip = pytest.mark.skip(reason=f"opt-in: run with -m {name} (tests/fuzz.sh)")
        for item in items:
            if name in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def fuzz_counts(request) -> Counter:
    """Examples run per (op, implementation), summed over the session and reported at its end."""
    return request.config.stash[FUZZ_COUNTS]


def pytest_terminal_summary(terminalreporter, config) -> None:
    counts = config.stash.get(FUZZ_COUNTS, None)
    if not counts:
        return
    per_impl: Counter = Counter()
    for (op, impl), n in counts.items():
        per_impl[impl] += n
    terminalreporter.write_sep("-", "fuzz examples run")
    for impl, n in sorted(per_impl.items()):
        terminalreporter.write_line(f"{impl:16s} {n:7d}")
    terminalreporter.write_line(f"{'total':16s} {sum(counts.values()):7d}")
    path = os.environ.get("FASTSPLINE_FUZZ_COUNTS")
    if path:  # tests/fuzz.sh checks the total from this file
        with open(path, "w") as f:
            json.dump({f"{op}/{impl}": n for (op, impl), n in sorted(counts.items())}, f, indent=1)


# ---------------------------------------------------------------- backend x ISA matrix

# FASTSPLINE_TEST_GPU=1 on a CUDA machine: the matrix also runs the GPU backends
# through CPU-tensor proxies (tests/gpu_proxy.py).
if os.environ.get("FASTSPLINE_TEST_GPU") == "1" and torch.cuda.is_available():
    import gpu_proxy

    for _name in ("cuda", "triton"):
        if backends.available().get(_name) is None:
            gpu_proxy.register(_name)

# The matrix also runs the cuda backend's kernels in the SIMT emulator on CPU tensors
# (tests/cuda_sim.py, built on first use, ~25 s on 2 cores) as ``cuda@sim``, where the emulator
# builds (Linux, g++, pybind11) and fastspline._cuda is built; FASTSPLINE_TEST_SIM=0: not.
if os.environ.get("FASTSPLINE_TEST_SIM", "1") != "0" and backends.available().get("cuda") is None:
    import cuda_sim

    if cuda_sim.can_build() is None:
        cuda_sim.register()

# Instruction sets a backend may offer; the ones this CPU lacks show up as skips.
KNOWN_ISAS = ("scalar", "avx2", "avx512")


class Impl(NamedTuple):
    backend: str
    isa: str | None

    def __str__(self) -> str:
        return self.backend if self.isa is None else f"{self.backend}-{self.isa}"


def _impl_params() -> list:
    params = []
    reasons = backends.available()
    for name in backends.names():
        if reasons[name] is not None:
            params.append(
                pytest.param(
                    Impl(name, None), id=name,
                    marks=pytest.mark.skip(reason=f"backend {name!r} unavailable: {reasons[name]}"),
                )
            )
            continue
        module = backends.load(name)
        if not backends.supports(module, "cpu"):
            # The matrix runs on CPU tensors; GPU backends are checked by tests/test_gpu.py.
            params.append(
                pytest.param(
                    Impl(name, None), id=name,
                    marks=pytest.mark.skip(reason=f"backend {name!r} runs on {module.DEVICE_TYPES} tensors only"),
                )
            )
            continue
        if not hasattr(module, "supported_isas"):
            params.append(pytest.param(Impl(name, None), id=name))
            continue
        supported = list(module.supported_isas())
        for isa in supported:
            params.append(pytest.param(Impl(name, isa), id=f"{name}-{isa}"))
        for isa in KNOWN_ISAS:
            if isa not in supported:
                params.append(
                    pytest.param(
                        Impl(name, isa), id=f"{name}-{isa}",
                        marks=pytest.mark.skip(reason=f"this CPU lacks {isa} (supported: {supported})"),
                    )
                )
    return params


IMPL_PARAMS = _impl_params()


@pytest.fixture(params=IMPL_PARAMS)
def impl(request) -> Iterator[Impl]:
    """One (backend, isa) case; the ISA is forced for the whole test."""
    case: Impl = request.param
    if case.isa is None:
        yield case
        return
    module = backends.load(case.backend)
    with module.forced_isa(case.isa):
        assert module.isa() == case.isa  # the fixture itself must not silently test another ISA
        yield case


@pytest.fixture(params=backends.names())
def backend(request) -> str:
    """Each backend name (no ISA forcing); skipped with the reason when it does not load."""
    reason = backends.available()[request.param]
    if reason is not None:
        pytest.skip(f"backend {request.param!r} unavailable: {reason}")
    module = backends.load(request.param)
    if not backends.supports(module, "cpu"):
        pytest.skip(f"backend {request.param!r} runs on {module.DEVICE_TYPES} tensors only")
    return request.param


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Torch on one thread for a module of tiny models: on a shared 2-core machine
    OpenMP barriers cost more than the work (the ops' threading is tested elsewhere)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
