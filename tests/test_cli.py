"""The fastspline command line: a 2-epoch smoke run on digits into a tmp folder."""
from __future__ import annotations

import json

import pytest
import torch

from fastspline import cli, models, train


pytestmark = pytest.mark.usefixtures("one_thread")


def test_train_smoke_run_on_digits(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("sklearn")
    out = tmp_path / "run"
    argv = [
        "train", "--model", "vgg11", "--width", "0.125", "--data", "digits", "--epochs", "2",
        "--eb", "spline", "mask", "--eb-window", "1", "--eb-threshold", "1.0", "0.0", "--mask-window", "2",
        "--probe-size", "64", "--out", str(out),
    ]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "epoch   1/2" in printed and "d_spline" in printed and "GFLOPs" in printed
    assert "spline EB found at epoch 2 (threshold 1)" in printed
    assert "spline EB: 1 -> epoch 2, 0 -> never" in printed

    result = json.loads((out / "history.json").read_text())
    assert [r["epoch"] for r in result["records"]] == [1, 2]
    assert result["records"][1]["cumulative_flops"] == 2 * result["records"][0]["flops"] > 0
    spline = result["earlybird"]["spline"]
    assert spline["fired"] == {"1.0": 2, "0.0": None} and spline["epoch"] == 2
    assert spline["history"][2][1] == pytest.approx(spline["distances"]["2"], abs=1e-6)
    assert "mask" in result["earlybird"] and result["model_config"]["arch"] == "vgg"

    saved = torch.load(out / "eb-spline.pt", weights_only=True)
    rebuilt = models.build(saved["model_config"])
    rebuilt.load_state_dict(saved["model"])  # the checkpoint at EB rebuilds the model
    assert saved["epoch"] == 2
    assert train.load_checkpoint(out / "checkpoint.pt")["epoch"] == 2

    # Resuming a finished run trains nothing more and gives the same records.
    assert cli.main([*argv, "--resume", "--quiet"]) == 0
    again = json.loads((out / "history.json").read_text())
    assert again["records"] == result["records"]


def test_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--model", "vgg11", "--data", "digits", "--epochs", "0"])
    assert exit_info.value.code == 2 and "--epochs must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["train", "--model", "vgg11", "--data", "digits", "--eb", "none", "spline"])
    with pytest.raises(SystemExit):
        cli.main(["train", "--model", "alexnet", "--data", "digits"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0 and "train" in capsys.readouterr().out
