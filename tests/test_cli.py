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


def test_stop_at_eb_stops_at_the_first_detector_given(tmp_path) -> None:
    # --eb mask spline: the mask EB (fires at epoch 2) stops training, not the spline one (never fires).
    out = tmp_path / "run"
    argv = [
        "train", "--model", "mlp", "--hidden", "8", "--data", "toy-x", "--epochs", "4", "--eb", "mask", "spline",
        "--eb-threshold", "0", "--mask-threshold", "1", "--mask-window", "2", "--probe-size", "32", "--stop-at-eb",
        "--quiet", "--out", str(out),
    ]
    assert cli.main(argv) == 0
    result = json.loads((out / "history.json").read_text())
    assert result["earlybird"]["mask"]["epoch"] == 2 and result["earlybird"]["spline"]["epoch"] is None
    assert len(result["records"]) == 2 and result["stopped_early"]


def test_train_rejects_an_infinite_width_and_empty_hidden_layers(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["train", "--model", "mlp", "--data", "toy-x", "--out", str(tmp_path / "run")]
    for flags, message in ((["--width", "inf"], "--width must be finite, got inf"), (["--hidden", "8", "0"], "--hidden sizes must be >= 1")):
        with pytest.raises(SystemExit) as info:
            cli.main([*base, *flags])
        err = capsys.readouterr().err
        assert info.value.code == 2 and message in err and "Traceback" not in err
    with pytest.raises(SystemExit) as info:
        cli.main(["run", "--model", "mlp", "--data", "toy-x", "--hidden", "0", "--out", str(tmp_path / "run")])
    assert info.value.code == 2 and "--hidden must be >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_plot_of_a_model_that_does_not_fit_ends_without_a_traceback(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    cnn = models.create("vgg-small", (1, 8, 8), 10, width=0.125)
    torch.save({"model": cnn.state_dict(), "model_config": cnn.config()}, tmp_path / "cnn.pt")
    with pytest.raises(SystemExit, match=r"fastspline plot partition: partition_2d: VGG could not run on inputs of shape \(2,\)"):
        cli.main(["plot", "partition", str(tmp_path / "cnn.pt"), "--resolution", "4"])
    with pytest.raises(SystemExit, match="fastspline plot canvas: canvas_contours: layer index 7 is out of range"):
        cli.main(["plot", "canvas", str(tmp_path / "cnn.pt"), "--data", "digits", "--size", "3", "--layers", "7"])
    with pytest.raises(SystemExit) as info:
        cli.main(["plot", "canvas", str(tmp_path / "cnn.pt"), "--data", "imagenet"])
    assert info.value.code == 2  # a usage error
    assert [p.name for p in tmp_path.iterdir()] == ["cnn.pt"]


def test_resume_refuses_another_run_and_trains_on_after_a_stop_at_eb(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    """--resume continued a checkpoint whatever the new settings: another seed mixed two
    runs silently, another probe size or detector list failed with a traceback; and a run
    stopped at its EB never trained on, even without --stop-at-eb."""
    out = tmp_path / "run"

    def argv(epochs: int, *flags: str, hidden: tuple[str, ...] = ("8", "8")) -> list[str]:
        return ["train", "--model", "mlp", "--hidden", *hidden, "--data", "toy-x", "--eb-window", "1", "--quiet",
                "--out", str(out), "--epochs", str(epochs), *flags]

    assert cli.main(argv(2)) == 0
    for flags, hidden, message in (
        (["--seed", "3"], ("8", "8"), "seed 0 there, 3 now"),
        (["--probe-size", "100"], ("8", "8"), "probe_size 512 there, 100 now"),
        (["--eb", "mask"], ("8", "8"), "eb ['spline'] there, ['mask'] now"),
        ([], ("16",), "hidden [8, 8] there, [16] now"),
    ):
        with pytest.raises(SystemExit, match="fastspline train: --resume: fit: cannot resume from .*it is another run") as info:
            cli.main(argv(3, "--resume", *flags, hidden=hidden))
        assert message in str(info.value)
        assert train.load_checkpoint(out / "checkpoint.pt")["epoch"] == 2  # untouched
    assert cli.main(argv(3, "--resume", "--threads", "1")) == 0  # more epochs and other threads: the same run
    assert [r["epoch"] for r in json.loads((out / "history.json").read_text())["records"]] == [1, 2, 3]

    stopped = tmp_path / "stopped"
    eb = ["train", "--model", "mlp", "--hidden", "8", "--data", "toy-x", "--epochs", "6", "--eb-threshold", "1",
          "--eb-window", "1", "--probe-size", "32", "--quiet", "--out", str(stopped)]
    assert cli.main([*eb, "--stop-at-eb"]) == 0
    first = json.loads((stopped / "history.json").read_text())
    assert first["stopped_early"] and len(first["records"]) == 2
    capsys.readouterr()
    assert cli.main([*eb, "--stop-at-eb", "--resume"]) == 0  # the same command again: nothing to do, and it says why
    assert "nothing to train" in (printed := capsys.readouterr().out) and "drop --stop-at-eb to train on" in printed
    assert json.loads((stopped / "history.json").read_text())["records"] == first["records"]
    assert cli.main([*eb, "--resume"]) == 0  # without --stop-at-eb: trains on to --epochs
    after = json.loads((stopped / "history.json").read_text())
    assert [r["epoch"] for r in after["records"]] == [1, 2, 3, 4, 5, 6] and not after["stopped_early"]
    assert after["records"][:2] == first["records"]


def test_a_model_that_cannot_take_the_data_ends_with_one_line(tmp_path) -> None:
    for command, model, data in (("train", "vgg11", "toy-x"), ("train", "cnn1d", "digits"), ("run", "preresnet20", "toy-x")):
        if data == "digits":
            pytest.importorskip("sklearn")
        with pytest.raises(SystemExit, match=f"fastspline: --model {model} does not fit --data {data}: create: {model} needs"):
            cli.main([command, "--model", model, "--data", data, "--epochs", "1", "--quiet", "--out", str(tmp_path / model)])


def test_options_that_would_be_ignored_are_refused(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    """--hidden with a model other than mlp, and --pair-rule merge-error with no spline
    policy, were silently ignored."""
    out = ["--out", str(tmp_path / "run"), "--epochs", "1"]
    for argv, message in (
        (["train", "--model", "vgg-small", "--hidden", "5", "--data", "digits"], "--hidden sets the hidden sizes of --model mlp"),
        (["run", "--model", "cnn1d", "--hidden", "5", "--data", "mnist1d"], "--hidden sets the hidden sizes of --model mlp"),
        (["run", "--model", "mlp", "--data", "toy-x", "--policy", "l1", "--pair-rule", "merge-error"],
         "--pair-rule ['merge-error'] order the spline policies' removals, and policies ['l1'] has none"),
    ):
        with pytest.raises(SystemExit) as info:
            cli.main([*argv, *out])
        err = capsys.readouterr().err
        assert info.value.code == 2 and message in err, err
    assert not (tmp_path / "run").exists()
