"""The Python examples of README.md and docs/*.md run as written.

Every ```python block is found here: it runs on its own, or after a setup that
defines the names the prose around it assumes (SETUP), or is run another way
(the torchrun script) or skipped with a reason (SKIP). A new block that is in
none of these must run on its own, so examples cannot rot unnoticed.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def python_blocks() -> list[tuple[str, str]]:
    """(id, code) of every ```python block, in file order."""
    blocks = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for i, code in enumerate(re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)):
            blocks.append((f"{path.name}-{i}", code))
    return blocks


def viz_setup(tmp: Path) -> dict:
    """A 2-D model, a CNN with two digits, a trained run folder runs/digits and a plan."""
    pytest.importorskip("matplotlib")
    from fastspline import cli, data, models, pruning

    split = data.toy_x(200)
    model = models.mlp([2, 8, 2])
    train_x, test = data.digits()
    cnn = models.vgg("vgg-small", 1, 10, 8, width=0.125)
    img0, img1 = test.tensors[0][0], test.tensors[0][1]
    argv = ["train", "--model", "mlp", "--hidden", "8", "--data", "toy-x", "--epochs", "3", "--eb", "spline",
            "--eb-window", "1", "--probe-size", "64", "--quiet", "--out", str(tmp / "runs" / "digits")]
    assert cli.main(argv) == 0
    plan = pruning.plan(model, split.train.tensors[0][:128], 0.5)
    return {"model": model, "cnn": cnn, "img0": img0, "img1": img1, "plan": plan}


def pruning_setup(tmp: Path) -> dict:
    from fastspline import data, models

    train, test = data.digits()
    model = models.vgg("vgg-small", 1, 10, 8, width=0.25)
    return {"model": model, "probe_x": test.tensors[0][:128], "train_x": train.tensors[0][:256]}


# A block's first line that identifies it -> what it needs.
SETUP = {
    "from fastspline import viz": viz_setup,
    "from fastspline import pruning": pruning_setup,
}
TORCHRUN = "import torch.distributed as dist"
SKIP = {
    "from fastspline import pipeline": "trains 40 epochs x 3 seeds x every method; test_pipeline runs the same calls small",
}


def kind(code: str) -> str:
    if TORCHRUN in code:
        return "torchrun"
    for marker in (*SETUP, *SKIP):
        if code.startswith(marker) or f"\n{marker}" in code:
            return marker
    return "plain"


BLOCKS = python_blocks()


def test_every_doc_has_its_blocks_found() -> None:
    # The README's quick start (ops, codes) and the one torchrun script are here.
    kinds = [kind(code) for _, code in BLOCKS]
    assert kinds.count("plain") >= 2 and kinds.count("torchrun") == 1, kinds


@pytest.mark.parametrize(("name", "code"), BLOCKS, ids=[name for name, _ in BLOCKS])
def test_doc_block_runs(name: str, code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    what = kind(code)
    if what in SKIP:
        pytest.skip(SKIP[what])
    monkeypatch.chdir(tmp_path)  # files the examples write land here
    if what == "torchrun":
        script = tmp_path / "example.py"
        script.write_text(code)
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script)]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
        for _ in range(2):  # gloo on a loaded machine rarely drops a connection: one more try
            done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
            if done.returncode == 0:
                break
        assert done.returncode == 0, done.stderr[-3000:]
        assert "torch.Size([64, 64])" in done.stdout, done.stdout
        return
    namespace: dict = {}
    if what in SETUP:
        namespace.update(SETUP[what](tmp_path))
    torch.manual_seed(0)
    exec(compile(code, name, "exec"), namespace)  # noqa: S102 - the docs' own code


def cli_lines() -> list[str]:
    """Every ``fastspline ...`` command of the docs' bash blocks (not the synopses with [options])."""
    lines = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
            for line in block.splitlines():
                line = line.split("#")[0].strip()
                for part in line.split("&&"):
                    part = part.strip()
                    if part.startswith("fastspline ") and "[" not in part and "_OR_" not in part:
                        lines.append(part)
    return lines


CLI_LINES = cli_lines()


@pytest.mark.parametrize("line", CLI_LINES)
def test_doc_command_parses(line: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The documented commands are accepted by the CLI's parser and its checks (not run)."""
    import shlex

    from fastspline import cli

    monkeypatch.chdir(tmp_path)
    argv = shlex.split(line)[1:]
    if argv[0] == "plot":
        (tmp_path / argv[2]).mkdir(parents=True)  # the run folder it reads
    parser = cli.build_parser()
    args = parser.parse_args(argv)
    check = getattr(args, "check", None)
    if check is not None:
        check(parser, args)
    assert callable(args.func)


def test_doc_commands_are_found() -> None:
    commands = {line.split()[1] for line in CLI_LINES}
    assert {"demo", "train", "run", "plot"} <= commands, commands
