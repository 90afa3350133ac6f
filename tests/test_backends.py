"""Backend selection: the device default, the one-time reference fallback, ISA forcing."""
from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import tarfile
import warnings
from pathlib import Path

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


@pytest.mark.skipif(not cpu_available(), reason="the cpu backend is not built")
def test_bad_isa_env_is_a_clear_error_and_reported(monkeypatch):
    """FASTSPLINE_ISA=bogus: ops raise (no fallback to the reference), while
    available() and build_info() report it instead of raising."""
    monkeypatch.setenv("FASTSPLINE_ISA", "bogus")
    monkeypatch.delitem(sys.modules, "fastspline.backends.cpu")  # re-run its import-time setting
    monkeypatch.setattr(backends, "_loaded", {k: v for k, v in backends._loaded.items() if k != "cpu"})
    monkeypatch.setattr(backends, "_warned", set())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"backend 'cpu' refused its environment settings: .*'bogus'"):
            fs.popcount(torch.zeros(2, 1, dtype=torch.int64))
    assert "'bogus'" in backends.available()["cpu"]
    info = fs.build_info()
    assert "'bogus'" in info["backends"]["cpu"] and info["cpu_extension"] is True


def test_build_info_keys_without_the_extensions(monkeypatch):
    """The documented keys are there when _C and _cuda cannot be imported."""
    import fastspline

    for module in ("_C", "_cuda"):
        monkeypatch.delattr(fastspline, module, raising=False)
        monkeypatch.setitem(sys.modules, f"fastspline.{module}", None)
    info = fs.build_info()
    documented = {"cpu_extension", "compiler", "openmp", "isa", "supported_isas", "cuda_built", "cuda", "backends"}
    assert documented <= set(info), documented - set(info)
    assert info["cpu_extension"] is False and info["cuda_built"] is False and info["openmp"] is None


ROOT = Path(__file__).resolve().parents[1]


def _tracked_files() -> list[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    return [f for f in files if (ROOT / f).is_file()]


def test_sdist_holds_what_the_build_needs(tmp_path):
    """An sdist of the checkout's files holds CMakeLists.txt and all of csrc/ (else pip
    cannot build it) and the tests with their helpers."""
    src = tmp_path / "src"
    tracked = _tracked_files()
    for name in tracked:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, src / name)
    subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp_path / "dist")], cwd=src,
                   check=True, capture_output=True)
    (archive,) = (tmp_path / "dist").glob("*.tar.gz")
    with tarfile.open(archive) as tar:
        members = {m.split("/", 1)[1] for m in tar.getnames() if "/" in m}
    needed = [f for f in tracked if f == "CMakeLists.txt" or f.startswith(("csrc/", "tests/"))]
    assert "csrc/cpu/ops.cpp" in needed
    assert [f for f in needed if f not in members] == []


def _build_ext_command(tmp_path, monkeypatch):
    """setup.py's build_ext command, building into tmp_path (setup() itself not run)."""
    import runpy

    import setuptools

    pytest.importorskip("pybind11")
    setup_args = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kwargs: setup_args.update(kwargs))
    runpy.run_path(str(ROOT / "setup.py"))
    dist = setuptools.Distribution({"name": "fastspline", **{k: setup_args[k] for k in ("ext_modules", "cmdclass")}})
    cmd = dist.get_command_obj("build_ext")
    cmd.build_lib, cmd.build_temp = str(tmp_path / "lib"), str(tmp_path / "temp")
    cmd.ensure_finalized()
    return cmd


def test_build_refuses_an_unknown_fastspline_cuda_value(tmp_path, monkeypatch):
    """FASTSPLINE_CUDA=ON (CMake's spelling) must not quietly build without CUDA."""
    cmd = _build_ext_command(tmp_path, monkeypatch)
    monkeypatch.setenv("FASTSPLINE_CUDA", "ON")
    monkeypatch.setattr(subprocess, "run", lambda *args, **kwargs: pytest.fail("cmake ran"))
    with pytest.raises(ValueError, match=r"FASTSPLINE_CUDA must be 1 .* or 0 .*, got 'ON'"):
        cmd.build_extension(cmd.extensions[0])


def test_build_drops_a_cuda_module_it_did_not_build(tmp_path, monkeypatch):
    """A _cuda an earlier build left (nvcc found then, FASTSPLINE_CUDA=0 now) is neither
    shipped in the wheel's build folder nor left in an editable install's tree."""
    cmd = _build_ext_command(tmp_path, monkeypatch)
    monkeypatch.setenv("FASTSPLINE_CUDA", "0")
    (ext,) = cmd.extensions
    cuda_name = Path(cmd.get_ext_filename("fastspline._cuda")).name
    built = tmp_path / "lib" / "fastspline"
    tree = tmp_path / "tree"
    for folder in (built, tree / "fastspline"):
        folder.mkdir(parents=True)
        (folder / cuda_name).write_bytes(b"stale")
    monkeypatch.setitem(type(cmd).build_extension.__globals__, "ROOT", tree)
    monkeypatch.chdir(tree)

    def cmake(args, cwd, check):  # configure + build with CUDA off: only _C is written
        if args[:2] == ["cmake", "--build"]:
            (built / Path(cmd.get_ext_filename("fastspline._C")).name).write_bytes(b"C")

    monkeypatch.setattr(subprocess, "run", cmake)
    cmd.build_extension(ext)
    assert not (built / cuda_name).exists()
    cmd.copy_extensions_to_source()
    assert not (tree / "fastspline" / cuda_name).exists()
    assert (tree / "fastspline" / Path(cmd.get_ext_filename("fastspline._C")).name).read_bytes() == b"C"
