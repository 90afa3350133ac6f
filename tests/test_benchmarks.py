"""Every benchmark script imports and parses its arguments (they are not run here:
timings belong in benchmarks/, never in tests)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("bench_*.py"))


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.stem)
def test_benchmark_script_starts(script: Path) -> None:
    result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout


def test_machine_info() -> None:
    sys.path.insert(0, str(BENCHMARKS[0].parent))
    try:
        from machine import cpu_info
    finally:
        sys.path.pop(0)
    info = cpu_info(("avx2", "no-such-flag"))
    assert info["model"] and info["logical_cpus"] >= 1 and 1 <= info["usable_cpus"] <= info["logical_cpus"]
    assert info["flags"]["no-such-flag"] is False


def test_cli_bench_names_every_script(capfd) -> None:
    """`fastspline bench NAME` exists for each script and passes its arguments on."""
    from fastspline import cli

    assert {f"bench_{name}.py" for name in cli.BENCHMARKS} == {p.name for p in BENCHMARKS}
    for name in cli.BENCHMARKS:
        assert cli.main(["bench", name, "--help"]) == 0
        assert f"usage: bench_{name}.py" in capfd.readouterr().out


def test_cli_bench_writes_results_outside_an_installed_copy(tmp_path, monkeypatch, capfd) -> None:
    """Scripts installed in site-packages (no results/ beside them) write to
    ./fastspline-benchmarks; --results chooses; a failing script's status comes back."""
    from fastspline import cli

    installed = tmp_path / "site" / "benchmarks"
    installed.mkdir(parents=True)
    for path in BENCHMARKS[0].parent.glob("*.py"):
        (installed / path.name).write_text(path.read_text())
    monkeypatch.setattr(cli, "benchmarks_dir", lambda: installed)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert cli.main(["bench", "ops", "--quick", "--only", "rowwise", "--repeats", "1", "--warmup", "0"]) == 0
    assert (work / "fastspline-benchmarks" / "ops-cpu-quick.json").is_file()
    assert cli.main(["bench", "--results", "mine", "ops", "--quick", "--only", "rowwise", "--repeats", "1"]) == 0
    assert (work / "mine" / "ops-cpu-quick.json").is_file()
    assert not (installed / "results").exists()
    assert cli.main(["bench", "ops", "--only", "nothing"]) == 2
    assert "invalid choice: 'nothing'" in capfd.readouterr().err
