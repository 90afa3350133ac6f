"""Backend selection: the device default, the one-time reference fallback, ISA forcing."""
from __future__ import annotations

import logging
import warnings

import pytest
import torch

import fastspline as fs
from fastspline import backends
from cases import cpu_available, make_gen, random_floats, random_words


@pytest.fixture
def cpu_unavailable(monkeypatch):
    """Make the registry believe the cpu extension failed to import (whether or not
    it is built); monkeypatch restores _loaded/_failed/_warned afterwards."""
    monkeypatch.setattr(backends, "_loaded", {k: v for k, v in backends._loaded.items() if k != "cpu"})
    monkeypatch.setattr(backends, "_failed", {**backends._failed, "cpu": "ImportError: simulated missing _C"})
    monkeypatch.setattr(backends, "_warned", set())


def test_fallback_to_reference_warns_exactly_once(cpu_unavailable, caplog):
    gen = make_gen("fallback")
    a = random_words(30, 100, gen)
    x = random_floats((30, 100), torch.float32, 0.0, gen)
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING, logger="fastspline"):
        warnings.simplefilter("always")
        results = [
            fs.popcount(a),
            fs.hamming_cdist(a),
            fs.pack_signs(x),
            fs.hamming_topk(a, a, 3),
            fs.count_regions(a),
        ]
        assert backends.select("cpu") == "reference"
    fallback = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(fallback) == 1, [str(w.message) for w in caught]
    message = str(fallback[0].message)
    assert "'cpu'" in message and "simulated missing _C" in message and "'reference'" in message
    records = [r for r in caplog.records if r.name == "fastspline" and r.levelno == logging.WARNING]
    assert len(records) == 1 and "simulated missing _C" in records[0].getMessage()
    # The fallback computes the reference's answers.
    expected = [
        fs.popcount(a, backend="reference"),
        fs.hamming_cdist(a, backend="reference"),
        fs.pack_signs(x, backend="reference"),
        fs.hamming_topk(a, a, 3, backend="reference"),
        fs.count_regions(a, backend="reference"),
    ]
    for got, want in zip(results, expected):
        for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
            assert torch.equal(g, w)


def test_fallback_does_not_hide_an_explicit_backend(cpu_unavailable):
    """backend='cpu' while it is unavailable raises with the reason: no silent fallback."""
    with pytest.raises(RuntimeError, match=r"fastspline backend 'cpu' is not available: ImportError: simulated"):
        fs.popcount(torch.zeros(2, 1, dtype=torch.int64), backend="cpu")
    assert backends.available()["cpu"] == "ImportError: simulated missing _C"


def test_registry_state_is_restored_after_simulation():
    """Runs after the tests above in file order: the real registry state is back."""
    assert "simulated" not in str(backends.available().get("cpu"))


@pytest.mark.skipif(not cpu_available(), reason="the cpu backend is not built")
def test_cpu_is_the_default_for_cpu_tensors():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning when the extension loads
        assert backends.select("cpu") == "cpu"
        fs.popcount(torch.zeros(2, 1, dtype=torch.int64))


def test_other_devices_use_the_reference_without_warning(monkeypatch):
    monkeypatch.setattr(backends, "_warned", set())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert backends.select("meta") == "reference"


def test_names_and_availability():
    names = backends.names()
    assert "reference" in names and "cpu" in names
    available = backends.available()
    assert set(available) == set(names)
    assert available["reference"] is None
    for name, reason in available.items():
        assert reason is None or isinstance(reason, str) and reason


@pytest.mark.skipif(not cpu_available(), reason="the cpu backend is not built")
def test_forced_isa_sets_and_restores():
    from fastspline.backends import cpu

    supported = cpu.supported_isas()
    assert supported[0] == "scalar"
    before = cpu.isa()
    assert before in supported
    for isa in supported:
        with cpu.forced_isa(isa):
            assert cpu.isa() == isa
        assert cpu.isa() == before
    with pytest.raises(KeyError):
        with cpu.forced_isa("scalar"):
            raise KeyError("inside")
    assert cpu.isa() == before


def test_fallback_warning_points_at_the_caller(cpu_unavailable):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fs.popcount(torch.zeros(2, 1, dtype=torch.int64))
    (warning,) = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert warning.filename == __file__
