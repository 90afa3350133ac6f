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
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


# ---------------------------------------------------------------- backend x ISA matrix

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
