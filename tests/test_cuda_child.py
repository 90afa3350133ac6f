"""The wgmma kernels' first self-check in a child process (fastspline.backends.cuda,
FASTSPLINE_CUDA_WGMMA_AUTO=isolated), run here without a GPU: the child's report is
parsed per kernel, a crash, hang or failed start turns the unreported kernels off with
why, and passes are remembered on disk per module build, card and driver."""
from __future__ import annotations

import contextlib
import json
import logging
import sys
import types

import pytest
import torch

cuda = pytest.importorskip("fastspline.backends.cuda", reason="fastspline._cuda not built")

MARK = cuda._CHILD_MARK


@pytest.fixture
def child(monkeypatch):
    """Run ``code`` as the child (the parent's device UUID unknown here: no CUDA)."""
    monkeypatch.setattr(cuda, "_device_uuid", lambda index: "")

    def run(code: str, codes=(4, 5)):
        monkeypatch.setattr(cuda, "_CHILD_CODE", code)
        return cuda._run_child(0, list(codes))

    return run


def test_child_reports_each_kernel(child):
    got = child(f"import json\nprint({MARK!r}, json.dumps([4, None, False]))\n"
                f"print('noise')\nprint({MARK!r}, json.dumps([5, 'disagreed with the popc kernel', False]))\n")
    assert got == {4: None, 5: "disagreed with the popc kernel"}
    assert not isinstance(got[5], cuda._Unsupported)
    got = child(f"import json\nprint({MARK!r}, json.dumps([4, 'no sm_90a code', True]))\n", codes=(4,))
    assert got == {4: "no sm_90a code"} and isinstance(got[4], cuda._Unsupported)


def test_a_crash_turns_off_only_the_kernels_not_reported(child):
    got = child(f"import json, os\nprint({MARK!r}, json.dumps([4, None, False]), flush=True)\nos.abort()\n")
    assert got[4] is None
    assert got[5] == "its self-check in a child process did not finish (signal 6)"
    got = child("import sys\nsys.exit('RuntimeError: cdist_wgmma_kernel: an illegal instruction was encountered')\n")
    want = ("its self-check in a child process did not finish (exit code 1): "
            "RuntimeError: cdist_wgmma_kernel: an illegal instruction was encountered")
    assert got == {4: want, 5: want}


def test_malformed_reports_count_as_not_reported(child):
    got = child(f"print({MARK!r}, '[4, None')\nprint({MARK!r}, '[7, null, false]')\n"
                f"print({MARK!r}, '[4, 123, false]')\nprint({MARK!r}, '[5]')\nprint('{MARK}x [5, null, false]')\n")
    assert got == {c: "its self-check in a child process did not finish (exit code 0)" for c in (4, 5)}


def test_a_hung_child_is_stopped(child, monkeypatch):
    monkeypatch.setattr(cuda, "_CHILD_TIMEOUT_S", 1.0)
    got = child(f"import json, time\nprint({MARK!r}, json.dumps([4, None, False]), flush=True)\ntime.sleep(60)\n")
    assert got == {4: None, 5: "its self-check in a child process did not finish (no answer in 1 s)"}


def test_a_child_that_cannot_start(child, monkeypatch):
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    got = child("pass\n", codes=(5,))
    assert got[5].startswith("its self-check in a child process did not finish (it could not start: ")


def test_the_real_child_finds_the_package_and_fails_without_cuda(child, monkeypatch, tmp_path):
    """The child imports this fastspline from any working folder; without CUDA (here) its
    first CUDA call fails, and that is its report."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fastspline").mkdir()  # another package of that name, first on the child's path if it ran here
    (tmp_path / "fastspline" / "__init__.py").write_text("raise ImportError('the wrong fastspline')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no card in the child, even on a GPU machine
    got = child(cuda._CHILD_CODE.replace("fastspline-child-check", MARK))
    assert set(got) == {4, 5}
    for reason in got.values():
        assert reason.startswith("its self-check in a child process did not finish (exit code 1): ")
        assert "ModuleNotFoundError" not in reason and "ImportError" not in reason


class FakeModule:
    def __init__(self, path: str, cc: int = 90) -> None:
        self.__file__, self.cc = path, cc

    def compute_capability(self) -> int:
        return self.cc

    def build_info(self) -> str:
        return "CUDA 13.0"


@pytest.fixture
def checks(monkeypatch, tmp_path):
    """_child_checks over a fake module file and card, children recorded, the cache in tmp_path;
    two wgmma kernels (4, 5) stand for all of them."""
    monkeypatch.setattr(cuda, "_WGMMA_STAGINGS", (4, 5))
    module = FakeModule(str(tmp_path / "_cuda.so"))
    (tmp_path / "_cuda.so").write_bytes(b"build 1")
    monkeypatch.setattr(cuda, "_cuda", module)
    props = types.SimpleNamespace(name="NVIDIA H200", uuid="GPU-1234")
    monkeypatch.setattr(cuda.torch.cuda, "get_device_properties", lambda index: props)
    monkeypatch.setenv("FASTSPLINE_CACHE_DIR", str(tmp_path / "cache"))
    runs, answers = [], {4: None, 5: "disagreed"}

    def run_child(index, codes):
        runs.append(list(codes))
        return {code: answers[code] for code in codes}

    monkeypatch.setattr(cuda, "_run_child", run_child)
    return types.SimpleNamespace(module=module, props=props, runs=runs, answers=answers,
                                 cache=tmp_path / "cache" / "cuda-checks.json", path=tmp_path / "_cuda.so")


def test_passes_are_remembered_per_build_card_and_driver(checks):
    assert cuda._child_checks(0) == {4: None, 5: "disagreed"} and checks.runs == [[4, 5]]
    saved = json.loads(checks.cache.read_text())
    assert [entry["results"] for entry in saved.values()] == [{"4": None}]
    assert cuda._child_checks(0) == {4: None, 5: "disagreed"} and checks.runs == [[4, 5], [5]]  # only 5 again
    checks.answers[5] = None
    assert cuda._child_checks(0) == {4: None, 5: None} and checks.runs[-1] == [5]
    assert cuda._child_checks(0) == {4: None, 5: None} and len(checks.runs) == 3  # no child at all
    checks.path.write_bytes(b"build 2, longer")  # a rebuilt module
    assert cuda._child_checks(0) == {4: None, 5: None} and checks.runs[-1] == [4, 5]
    checks.props.uuid = "GPU-5678"  # another card
    cuda._child_checks(0)
    assert checks.runs[-1] == [4, 5] and len(json.loads(checks.cache.read_text())) == 3


def test_failures_are_never_remembered(checks):
    checks.answers[4] = "its self-check in a child process did not finish (signal 4)"
    for _ in range(2):
        cuda._child_checks(0)
    assert checks.runs == [[4, 5], [4, 5]] and not checks.cache.exists()


def test_unsupported_answers_are_remembered(checks):
    """A launcher's refusal (no sm_90a code in this build) holds for the key: no new child."""
    checks.answers.update({4: cuda._Unsupported("no sm_90a code"), 5: cuda._Unsupported("no sm_90a code")})
    for _ in range(2):
        got = cuda._child_checks(0)
        assert got == {4: "no sm_90a code", 5: "no sm_90a code"}
        assert all(isinstance(r, cuda._Unsupported) for r in got.values())
    assert checks.runs == [[4, 5]]


def test_a_bad_or_unwritable_cache_is_ignored(checks, monkeypatch, tmp_path):
    checks.cache.parent.mkdir()
    key = cuda._child_cache_key(0)
    for text in ("{not json", "[1, 2]", "\xff", json.dumps({key: {"passed": [4, 5]}}), json.dumps({key: [4, 5]}),
                 json.dumps({key: {"results": {"4": None, "5": None}}}),
                 json.dumps({key: {"results": {"4": None, "5": None}, "when": "x"}, "k2": {"results": {}, "when": 1}}),
                 json.dumps({key: {"results": {"4": [4], "5": None}, "when": 1}}),
                 json.dumps({key: {"results": {"x": None, "5": None}, "when": 1}}),
                 json.dumps({key: {"results": [None], "when": 1}})):
        checks.cache.write_text(text)
        assert cuda._child_checks(0) == {4: None, 5: "disagreed"} and checks.runs[-1] == [4, 5], text
        saved = json.loads(checks.cache.read_text())
        assert saved[key]["results"] == {"4": None} and set(saved) <= {key, "k2"}
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("FASTSPLINE_CACHE_DIR", str(tmp_path / "file" / "cache"))
    assert cuda._child_checks(0) == {4: None, 5: "disagreed"}
    monkeypatch.setenv("FASTSPLINE_CACHE_DIR", "none")
    cuda._child_checks(0)
    cuda._child_checks(0)
    assert checks.runs[-2:] == [[4, 5], [4, 5]]


def test_the_cache_keeps_the_newest_entries(checks, monkeypatch):
    monkeypatch.setattr(cuda, "_CHILD_CACHE_ENTRIES", 3)
    for i in range(5):
        checks.props.uuid = f"GPU-{i}"
        cuda._child_checks(0)
    assert [json.loads(key)[2] for key in json.loads(checks.cache.read_text())] == ["GPU-2", "GPU-3", "GPU-4"]


def test_no_child_on_other_cards(checks):
    checks.module.cc = 80
    got = cuda._child_checks(0)
    assert checks.runs == [] and set(got) == {4, 5}
    assert all(isinstance(r, cuda._Unsupported) and r == "compute capability 8.0, not 9.0" for r in got.values())


def test_child_status_runs_once_per_device_and_warns_on_failure(monkeypatch, caplog):
    monkeypatch.setattr(cuda, "_checks", {})
    monkeypatch.setattr(cuda, "_child_results", {})
    monkeypatch.setattr(cuda, "_index", lambda device: 0)
    monkeypatch.setattr(cuda, "_capturing", lambda: False)
    monkeypatch.setattr(cuda.torch.cuda, "device", lambda *a, **k: contextlib.nullcontext())
    monkeypatch.setattr(cuda, "mma_status", lambda device: None)
    crash = "its self-check in a child process did not finish (signal 4)"
    runs = []
    monkeypatch.setattr(cuda, "_child_checks", lambda index: runs.append(index) or {4: crash, 5: None})
    dev = torch.device("cuda", 0)
    with caplog.at_level(logging.WARNING, logger="fastspline"):
        assert cuda._child_status(dev, 4) == crash and cuda._child_status(dev, 5) is None
        assert cuda._child_status(dev, 4) == crash and runs == [0]
    assert [r.getMessage() for r in caplog.records] == [
        f"fastspline: wgmma tensor-core cdist (in a child process) disabled on cuda:0: {crash}; "
        "using the kernel it replaces"]
    monkeypatch.setenv("FASTSPLINE_CUDA_DISABLE", "wgmma")
    assert cuda._child_status(dev, 5) == "disabled by FASTSPLINE_CUDA_DISABLE=wgmma"
    monkeypatch.setattr(cuda, "mma_status", lambda device: "compute capability 7.5 < 8.0")
    monkeypatch.delenv("FASTSPLINE_CUDA_DISABLE")
    assert cuda._child_status(dev, 5) == "compute capability 7.5 < 8.0"


def test_the_child_refuses_another_build(child, monkeypatch):
    """A child that imported another build of the module (not the caller's) reports nothing."""
    monkeypatch.setattr(cuda, "_cuda", FakeModule("/elsewhere/_cuda.so"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    got = child(cuda._CHILD_CODE)
    for reason in got.values():
        assert reason.startswith("its self-check in a child process did not finish (exit code 1): the child imported ")
        assert reason.endswith(", not the caller's /elsewhere/_cuda.so")
