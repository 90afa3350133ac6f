"""fastspline.viz and `fastspline plot`: every plot is written and is not blank; the
partition's region count is the codes' count on the same grid and drops when a unit goes."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("matplotlib")

from fastspline import cli, codes, data, models, train, viz  # noqa: E402
from fastspline.earlybird import SplineEarlyBird  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def assert_not_blank(path: Path, coloured: float = 0.3) -> None:
    """The PNG decodes and at least a fraction ``coloured`` of its pixels is coloured (not
    white, grey or black: axes, ticks and text alone give 0; region and heatmap plots
    are mostly colour, line plots a few percent)."""
    from matplotlib.image import imread

    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    rgb = (image[..., :3] * 255).astype(np.int16).reshape(-1, 3)
    saturated = (rgb.max(axis=1) - rgb.min(axis=1) > 20).mean()
    assert saturated > coloured, f"{path.name}: {saturated:.1%} of the pixels are coloured"


def title_count(fig) -> int:
    match = re.search(r"(\d+) regions", fig.axes[0].get_title())
    assert match, fig.axes[0].get_title()
    return int(match.group(1))


def lines_model(lines: list[tuple[float, float, float]]) -> models.MLP:
    """2 -> len(lines) -> 2 ReLU MLP whose hidden unit k is a*x + b*y + c (zero set: a line)."""
    model = models.mlp([2, len(lines), 2], batch_norm=False)
    with torch.no_grad():
        fc = model.layers.fc0
        fc.weight.copy_(torch.tensor([[a, b] for a, b, _ in lines]))
        fc.bias.copy_(torch.tensor([c for _, _, c in lines]))
        model.classifier.weight.copy_(torch.tensor([[1.0] * len(lines), [-1.0] * len(lines)]))
        model.classifier.bias.copy_(torch.tensor([-1.0, 0.0]))
    return model


def grid_count(model: nn.Module, bound: float, resolution: int) -> int:
    """Regions on the documented grid, computed independently of viz."""
    xs = torch.linspace(-bound, bound, resolution)
    y, x = torch.meshgrid(xs, xs, indexing="ij")
    points = torch.stack([x.reshape(-1), y.reshape(-1)], dim=1)
    return codes(model, points, progress=False).count_regions()


# ---------------------------------------------------------------- partition_2d


def test_partition_counts_the_line_arrangement_and_drops_when_a_unit_is_removed(tmp_path: Path) -> None:
    # x = 0, y = 0 and x + y = 1 cross pairwise inside [-5, 5]^2: 1 + 3 + 3 = 7 regions.
    three = lines_model([(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (1.0, 1.0, -1.0)])
    fig = viz.partition_2d(three, 5.0, 101, path=tmp_path / "three.png")
    assert title_count(fig) == grid_count(three, 5.0, 101) == 7
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["layers.relu0 (3/3 units)", "decision boundary"]
    assert_not_blank(tmp_path / "three.png")
    # Unit and decision boundary both off the view (x = 10): neither is listed as drawn.
    off = viz.partition_2d(lines_model([(1.0, 0.0, -10.0)]), 5.0, 33)
    assert [t.get_text() for t in off.axes[0].get_legend().get_texts()] == ["layers.relu0 (0/1 units)"]

    # Node pruning: unit 2 removed (the smaller model keeps the other units' weights).
    two = models.mlp([2, 2, 2], batch_norm=False)
    with torch.no_grad():
        two.layers.fc0.weight.copy_(three.layers.fc0.weight[:2])
        two.layers.fc0.bias.copy_(three.layers.fc0.bias[:2])
        two.classifier.weight.copy_(three.classifier.weight[:, :2])
        two.classifier.bias.copy_(three.classifier.bias)
    fig = viz.partition_2d(two, 5.0, 101)
    assert title_count(fig) == grid_count(two, 5.0, 101) == 4


def test_partition_of_a_two_layer_network_matches_count_regions() -> None:
    train.seed_everything(0)
    model = models.mlp([2, 12, 12, 3])
    model.eval()
    fig = viz.partition_2d(model, (-3.0, 4.0, -2.0, 2.5), 64, title="init")
    count = title_count(fig)
    xs = torch.linspace(-3.0, 4.0, 64)
    ys = torch.linspace(-2.0, 2.5, 64)
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    expected = codes(model, torch.stack([x.reshape(-1), y.reshape(-1)], 1), progress=False).count_regions()
    assert count == expected > 12
    assert fig.axes[0].get_title().startswith("init: ")
    points, grid_x, grid_y = viz.grid_2d((-3.0, 4.0, -2.0, 2.5), 64)
    assert torch.equal(points[65], torch.tensor([grid_x[1], grid_y[1]]))
    # Two layers: the newest is darker than the first.
    lines = fig.axes[0].get_legend().get_lines()
    assert float(lines[0].get_color()) > float(lines[1].get_color())


def test_partition_rejects_bad_arguments() -> None:
    model = lines_model([(1.0, 0.0, 0.0)])
    with pytest.raises(ValueError, match="bounds"):
        viz.partition_2d(model, (1.0, -1.0, 0.0, 1.0), 16)
    with pytest.raises(ValueError, match="bounds"):
        viz.partition_2d(model, (0.0, 1.0, 0.0), 16)
    with pytest.raises(ValueError, match="resolution"):
        viz.partition_2d(model, 1.0, 1)
    with pytest.raises(TypeError, match="model"):
        viz.partition_2d("model", 1.0, 16)
    with pytest.raises(ValueError, match="could not run on inputs of shape \\(2,\\)"):
        viz.partition_2d(models.mlp([3, 4, 2]), 1.0, 16)


# ---------------------------------------------------------------- canvas


def test_canvas_counts_regions_of_the_canvas(tmp_path: Path) -> None:
    train.seed_everything(0)
    model = models.vgg("vgg-small", 1, 10, 8, width=0.125)
    generator = torch.Generator().manual_seed(0)
    img0, img1 = torch.randn(1, 8, 8, generator=generator), torch.randn(1, 8, 8, generator=generator)
    fig = viz.canvas_contours(model, img0, img1, [0, "features.relu1"], n=24, channels=3, labels=(3, 5), path=tmp_path / "c.png")
    expected = codes(model, data.canvas(img0, img1, 24), progress=False).count_regions()
    assert title_count(fig) == expected
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any(t.startswith("features.relu0: 3 of 8 channels at center") for t in legend)
    assert any(t.startswith("features.relu1: ") for t in legend)  # no decision boundary: classes 0 and 9 only tie
    assert_not_blank(tmp_path / "c.png")
    with pytest.raises(ValueError, match="not a coded layer"):
        viz.canvas_contours(model, img0, img1, ["features.conv0"], n=8)
    with pytest.raises(ValueError, match="out of range"):
        viz.canvas_contours(model, img0, img1, [0], n=8, channels=[99])
    with pytest.raises(ValueError, match="same shape|one shape"):
        viz.canvas_contours(model, img0, img1[:, :4], n=8)


# ---------------------------------------------------------------- early bird and training


def run_payload(epochs: int = 6, eb: int = 4) -> dict:
    """A history.json payload in the format `fastspline train` writes."""
    matrix = [[None] * (epochs + 1) for _ in range(epochs + 1)]
    for t in range(1, epochs + 1):
        for s in range(1, epochs + 1):
            matrix[t][s] = 0.0 if t == s else round(0.3 / min(t, s), 6)
    records = [
        {"epoch": e, "train_acc": 50.0 + 5 * e, "test_acc": 48.0 + 5 * e, "cumulative_flops": e * 2_000_000,
         "flops": 2_000_000, "probe_flops": e * 100_000, "spline_distance": None if e < 4 else 0.3 / (e - 3)}
        for e in range(1, epochs + 1)
    ]
    return {"records": records, "earlybird": {"spline": {"threshold": 0.16, "epoch": eb, "history": matrix,
                                                         "distances": {"4": 0.3, "5": 0.15}}}}


def test_earlybird_heatmap_and_curves_from_a_run_payload(tmp_path: Path) -> None:
    payload = run_payload()
    (tmp_path / "history.json").write_text(json.dumps(payload))
    fig = viz.earlybird_heatmap(tmp_path, path=tmp_path / "eb.png")
    assert fig.axes[0].get_title() == "spline EB at epoch 4, threshold 0.16"
    image = fig.axes[0].get_images()[0].get_array()
    assert image.shape == (6, 6) and float(image[0, 5]) == pytest.approx(0.3)  # epoch 0 never stepped: cropped
    assert_not_blank(tmp_path / "eb.png")
    fig = viz.training_curves(tmp_path / "history.json", path=tmp_path / "curves.png")
    assert [ax.get_title() for ax in fig.axes] == ["accuracy", "early-bird distance", "training FLOPs"]
    assert "spline EB (epoch 4)" in [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert_not_blank(tmp_path / "curves.png", coloured=0.003)
    with pytest.raises(ValueError, match="detectors names 'mask'"):
        viz.earlybird_heatmap(payload, detectors=["mask"])
    with pytest.raises(TypeError, match="history must be"):
        viz.earlybird_heatmap(42)
    with pytest.raises(FileNotFoundError, match="history.json"):
        viz.training_curves(tmp_path / "nowhere")


def test_earlybird_heatmap_from_a_detector_and_curves_from_a_history() -> None:
    split = data.toy_x(200)
    train.seed_everything(0)
    model = models.mlp([2, 8, 2])
    detector = SplineEarlyBird(split.train.tensors[0][:64], threshold=0.5, window=1, history_depth=2)
    history = train.fit(model, split.train, split.test, 4, lr=0.05, callbacks=[detector], progress=False)
    assert detector.found
    fig = viz.earlybird_heatmap(detector)
    assert fig.axes[0].get_title().startswith(f"spline EB at epoch {detector.epoch}, threshold 0.5")
    shown = fig.axes[0].get_images()[0].get_array()
    assert shown.shape == (4, 4) and shown.mask[0, 3]  # depth 2: epochs 1 and 4 were never compared
    fig = viz.training_curves(history, eb_epochs={"spline": detector.epoch})
    assert len(fig.axes) == 3
    bare = viz.earlybird_heatmap(torch.tensor([[0.0, 0.2], [0.2, 0.0]]), eb_epoch=1)
    assert bare.axes[0].get_title() == "distance EB at epoch 1"
    rows = viz.earlybird_heatmap([[0.0, 0.2], [0.2, None]], eb_epoch=0)  # a plain list of rows, as in history.json
    assert rows.axes[0].get_images()[0].get_array().shape == (1, 1)  # epoch 1 was never stepped (None)


# ---------------------------------------------------------------- run folders and the CLI


def test_write_run_plots_of_a_2d_run(tmp_path: Path) -> None:
    (tmp_path / "history.json").write_text(json.dumps(run_payload()))
    model = lines_model([(1.0, 0.0, 0.0), (0.0, 1.0, 0.5)])
    written = viz.write_run_plots(tmp_path, model=model, resolution=64)
    assert [p.name for p in written] == ["eb-heatmap.png", "training-curves.png", "partition.png"]
    for path in written:
        assert_not_blank(path, coloured=0.003 if path.name == "training-curves.png" else 0.3)
    assert viz.takes_points(model) and not viz.takes_points(models.vgg("vgg-small", 1, 10, 8, width=0.125))


def test_plot_commands_on_a_train_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    argv = ["train", "--model", "mlp", "--hidden", "8", "8", "--data", "toy-x", "--epochs", "5", "--lr", "0.05",
            "--eb", "spline", "mask", "--eb-threshold", "1.0", "--eb-window", "1", "--history-depth", "4",
            "--probe-size", "64", "--quiet", "--out", str(run)]
    assert cli.main(argv) == 0
    assert cli.main(["plot", "eb", str(run)]) == 0
    assert cli.main(["plot", "partition", str(run), "--resolution", "96", "--points"]) == 0
    out = tmp_path / "pictures"
    assert cli.main(["plot", "partition", str(run / "eb-spline.pt"), "--bounds", "-2", "2", "-1", "3",
                     "--resolution", "64", "--out-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    for path in (run / "eb-heatmap.png", run / "training-curves.png", run / "partition.png", out / "partition.png"):
        assert f"wrote {path}" in printed
        assert_not_blank(path, coloured=0.003 if path.name == "training-curves.png" else 0.3)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["plot", "partition", str(run), "--bounds", "1", "2"])
    assert exit_info.value.code == 2 and "--bounds takes 1 or 4 numbers" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["plot", "eb", str(tmp_path / "missing")])
    assert exit_info.value.code == 2 and "does not exist" in capsys.readouterr().err


def test_plot_canvas_of_a_model_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("sklearn")
    train.seed_everything(0)
    model = models.vgg("vgg-small", 1, 10, 8, width=0.125)
    train.atomic_save({"model": model.state_dict(), "model_config": model.config()}, tmp_path / "cnn.pt")
    assert cli.main(["plot", "canvas", str(tmp_path / "cnn.pt"), "--data", "digits", "--size", "20", "--layers", "0", "-1"]) == 0
    assert f"wrote {tmp_path / 'canvas.png'}" in capsys.readouterr().out
    assert_not_blank(tmp_path / "canvas.png")
    with pytest.raises(ValueError, match="lacks 'model'"):
        torch.save({"weights": {}}, tmp_path / "other.pt")
        viz.load_model(tmp_path / "other.pt")


# ---------------------------------------------------------------- pruning


def test_pruning_report_shows_fewer_regions_after_node_pruning(tmp_path: Path) -> None:
    from fastspline import pruning

    # One hidden layer: the partition is the arrangement of its units' lines, so removing
    # units (the merge changes only the classifier) must remove regions.
    train.seed_everything(1)
    model = models.mlp([2, 12, 2], batch_norm=False).eval()
    with torch.no_grad():
        model.layers.fc0.bias.normal_(0.0, 1.0)
    probe, _, _ = viz.grid_2d(3.0, 32)
    plan = pruning.plan(model, probe, 0.5, recalibrate=False)
    fig = viz.pruning_report(plan, model, bounds=3.0, resolution=96, path=tmp_path / "pruning.png")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[:2] == ["kept vs removed units per layer", "units by index"]
    before, after = (int(re.search(r"(\d+) regions", t).group(1)) for t in titles[2:])
    assert before == grid_count(model, 3.0, 96)
    assert after == grid_count(pruning.mask(plan, model), 3.0, 96) < before
    assert "layers.relu0 (6/12 units)" in [t.get_text() for t in fig.axes[3].get_legend().get_texts()]
    assert_not_blank(tmp_path / "pruning.png")
    # The physically smaller model has the same partition as the masked one.
    slim = viz.partition_2d(pruning.apply(plan, model), 3.0, 96)
    assert title_count(slim) == after

    summary = viz.pruning_report(plan.summary())  # counts and indices only
    assert len(summary.axes) == 2 and "6 of 12 units kept" in summary.get_suptitle()
    assert viz.pruning_report(plan.to_dict(), model, resolution=32).axes[3].get_title().startswith("after pruning: ")
    with pytest.raises(ValueError, match="needs the PrunePlan"):
        viz.pruning_report(plan.summary(), model)
    with pytest.raises(TypeError, match="plan must be"):
        viz.pruning_report([1, 2])


def test_run_writes_plots_and_plot_pruning_reads_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    argv = ["run", "--model", "mlp", "--hidden", "8", "8", "--data", "toy-x", "--epochs", "4", "--lr", "0.05",
            "--eb-threshold", "1.0", "--eb-window", "1", "--probe-size", "64", "--save-models", "--quiet", "--out", str(run)]
    assert cli.main(argv) == 0
    seed = run / "seed-0"
    for name in ("eb-heatmap.png", "training-curves.png", "partition.png", "pruning.png"):
        assert_not_blank(seed / name, coloured=0.003 if name == "training-curves.png" else 0.3)
    out = tmp_path / "again"
    assert cli.main(["plot", "pruning", str(run), "--out-dir", str(out)]) == 0
    assert f"wrote {out / 'pruning.png'}" in capsys.readouterr().out
    assert_not_blank(out / "pruning.png")
    with pytest.raises(SystemExit, match="--method must be one of"):
        cli.main(["plot", "pruning", str(run), "--method", "dense"])


# ---------------------------------------------------------------- regressions


def test_partition_and_canvas_of_a_compiled_model() -> None:
    # codes runs a torch.compile'd model's original module: the logits hook must be on it.
    train.seed_everything(0)
    model = models.mlp([2, 6, 3], batch_norm=False)
    fig = viz.partition_2d(torch.compile(model), 2.0, 24)
    assert title_count(fig) == grid_count(model, 2.0, 24)
    cnn = models.vgg("vgg-small", 1, 10, 8, width=0.125)
    img0, img1 = torch.randn(1, 8, 8), torch.randn(1, 8, 8)
    fig = viz.canvas_contours(torch.compile(cnn), img0, img1, n=8)
    assert title_count(fig) == codes(cnn, data.canvas(img0, img1, 8), progress=False).count_regions()


def test_canvas_of_a_single_output_model_colours_the_logit_sign() -> None:
    # One logit: class 1 where it is positive, as the decision boundary drawn (its zero set).
    train.seed_everything(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(48, 1))
    img0, img1 = torch.randn(1, 4, 4), torch.randn(1, 4, 4)
    with torch.no_grad():
        logit = model(data.canvas(img0, img1, 12))[:, 0]
    assert logit.min() < 0 < logit.max()
    fig = viz.canvas_contours(model, img0, img1, n=12)
    shown = np.asarray(fig.axes[0].get_images()[0].get_array())
    assert np.array_equal(shown, (logit > 0).numpy().reshape(12, 12))
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "predicted class 0" in legend and "predicted class 1" in legend


def test_partition_bounds_accept_numpy_numbers() -> None:
    model = lines_model([(1.0, 0.0, 0.0), (0.0, 1.0, 0.0)])
    r = np.abs(np.array([[-1.5, 2.0]], dtype=np.float32)).max()  # np.float32
    assert title_count(viz.partition_2d(model, r, 16)) == grid_count(model, 2.0, 16) == 4
    box = tuple(np.array([-2.0, 2.0, -2.0, 2.0], dtype=np.float32))
    assert title_count(viz.partition_2d(model, box, 16)) == 4
    assert title_count(viz.partition_2d(model, np.int64(2), 16)) == 4


def test_training_curves_eb_epochs_and_thresholds_values() -> None:
    records = [{"epoch": e, "train_acc": 10.0 * e, "cumulative_flops": e, "spline_distance": 0.1 * e} for e in (1, 2, 3)]
    # A detector that has not fired: eb_epochs={"spline": detector.epoch} is None, no mark.
    fig = viz.training_curves(records, eb_epochs={"spline": None}, thresholds={"spline": None})
    assert [t.get_text() for t in fig.axes[1].get_legend().get_texts()] == ["spline distance"]
    # None also removes the run's own mark.
    fig = viz.training_curves(run_payload(), eb_epochs={"spline": None})
    assert [t.get_text() for t in fig.axes[1].get_legend().get_texts()] == ["spline distance", "spline threshold 0.16"]
    with pytest.raises(TypeError, match=r"eb_epochs\['spline'\]"):
        viz.training_curves(records, eb_epochs={"spline": 2.5})
    with pytest.raises(TypeError, match=r"thresholds\['spline'\]"):
        viz.training_curves(records, thresholds={"spline": "0.1"})


def test_training_curves_without_optional_keys_warns_nothing() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = viz.training_curves([{"epoch": 1, "spline_distance": None}, {"epoch": 2, "test_acc": float("nan")}])
    assert [ax.get_title() for ax in fig.axes] == ["accuracy", "early-bird distance", "training FLOPs"]
    assert fig.axes[2].get_legend() is None


def test_plots_of_float64_models_and_of_a_one_unit_activation(tmp_path):
    """The grid and canvas were float32 whatever the model (a float64 model could not be
    drawn); canvas_contours failed on a layer coded from an [N] activation (unit_shape ())."""

    class Gate(nn.Module):
        def forward(self, x):
            h = torch.relu(x.sum(1))
            return torch.stack([h, -h], 1)

    torch.manual_seed(0)
    viz.canvas_contours(Gate(), torch.randn(2), torch.randn(2), n=8, path=tmp_path / "gate.png")
    model = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 2)).double()
    viz.partition_2d(model, resolution=16, path=tmp_path / "partition.png")
    viz.canvas_contours(model, torch.randn(2, dtype=torch.float64), torch.randn(2, dtype=torch.float64), n=8,
                        path=tmp_path / "canvas.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["canvas.png", "gate.png", "partition.png"]
