"""fastspline.pipeline and the ``run`` command: tiny end-to-end runs through the
library and the CLI; every stage reported, FLOPs accounting consistent, the
retraining schedule continued, seeds in worker processes equal to in-process
runs, bad arguments rejected with the argument named."""
from __future__ import annotations

import dataclasses
import json
import math

import pytest

from fastspline import cli, pipeline, pruning


pytestmark = pytest.mark.usefixtures("one_thread")

# EB fires at the first epoch it can: spline window 1 -> epoch 2, mask FIFO 2 -> epoch 2.
TINY_DIGITS = dict(
    model="vgg-small", data="digits", width=0.25, epochs=4, eb_threshold=1.0, eb_window=1,
    mask_threshold=1.0, mask_window=2, probe_size=64, policies=("spline-layerwise", "random"),
)


@pytest.fixture(scope="module")
def digits_comparison(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, object]:
    pytest.importorskip("sklearn")
    out = tmp_path_factory.mktemp("compare")
    config = pipeline.PipelineConfig(**TINY_DIGITS)
    return pipeline.compare(config, seeds=[0], out=out, progress=False), out


def test_comparison_reports_every_method_and_stage(digits_comparison) -> None:
    results, out = digits_comparison
    runs = results["runs"]["0"]["runs"]
    expected = [
        "dense", "mask.slimming.affine", "spline.spline-layerwise.affine", "spline.random.affine", "end.slimming.affine",
    ]
    assert list(runs) == expected == [m["key"] for m in results["methods"]]
    assert runs["dense"]["accuracy"]["final"] is not None
    assert all(runs["dense"]["accuracy"][s] is None for s in pipeline.STAGES if s != "final")
    dense_records = json.loads((out / "seed-0" / "dense.json").read_text())["records"]
    assert len(dense_records) == 4  # the dense baseline trains to the end
    for key in expected[1:]:
        run = runs[key]
        assert set(run["accuracy"]) == set(pipeline.STAGES)
        assert all(0.0 <= run["accuracy"][s] <= 100.0 for s in pipeline.STAGES), run["accuracy"]
        # Same seed, same dense run: the accuracy before pruning is the dense run's at that epoch.
        assert run["accuracy"]["dense_at_prune"] == dense_records[run["prune_epoch"] - 1]["test_acc"]
        assert run["params"] < runs["dense"]["params"]
        assert run["inference_flops"] < runs["dense"]["inference_flops"]
        detail = json.loads((out / run["history"]).read_text())
        assert detail["plan"] == json.loads(json.dumps(detail["plan"]))  # JSON-able plan summary
        assert detail["records"][0]["test_acc"] == run["accuracy"]["retrain_1"]
        assert detail["records"][-1]["test_acc"] == run["accuracy"]["final"]
    assert runs["spline.spline-layerwise.affine"]["eb_epoch"] == runs["mask.slimming.affine"]["eb_epoch"] == 2
    assert runs["end.slimming.affine"]["eb_epoch"] is None and runs["end.slimming.affine"]["prune_epoch"] == 4

    summary = results["summary"]["spline.spline-layerwise.affine"]
    assert summary["accuracy.final"]["values"] == [runs["spline.spline-layerwise.affine"]["accuracy"]["final"]]
    assert summary["accuracy.final"]["std"] is None  # one seed
    table = (out / "results.md").read_text()
    for method in results["methods"]:
        assert method["label"] in table
    assert json.loads((out / "results.json").read_text())["summary"] == json.loads(json.dumps(results["summary"]))


def test_flops_accounting_is_consistent(digits_comparison) -> None:
    results, out = digits_comparison
    runs = results["runs"]["0"]["runs"]
    dense = json.loads((out / "seed-0" / "dense.json").read_text())
    dense_epoch = dense["records"][0]["flops"]
    assert runs["dense"]["flops"]["total"] == dense["full_flops"] == 4 * dense_epoch
    probe_pass = dense["earlybird"]["spline"]["probe_flops"]
    assert probe_pass > 0
    for key, run in runs.items():
        flops = run["flops"]
        assert flops["total"] == flops["dense"] + flops["probe"] + flops["prune"] + flops["retrain"]
        assert math.isclose(run["saving"], dense["full_flops"] / flops["total"])
        if key == "dense":
            continue
        detail = json.loads((out / run["history"]).read_text())
        assert flops["dense"] == run["prune_epoch"] * dense_epoch
        assert flops["prune"] > 0  # the plan's probe pass and the BN re-estimation are paid for
        assert 0 < detail["records"][0]["flops"] < dense_epoch  # a slim epoch costs less than a dense one
        assert flops["retrain"] == sum(r["flops"] for r in detail["records"])
        assert flops["probe"] == (2 * probe_pass if key.startswith("spline.") else 0)
    assert runs["spline.spline-layerwise.affine"]["saving"] > 1.0  # EB at epoch 2 of 4, half the channels
    assert runs["end.slimming.affine"]["saving"] < 1.0  # full training plus a fine-tune costs more than dense


def test_retraining_continues_the_dense_schedule(digits_comparison) -> None:
    results, out = digits_comparison
    runs = results["runs"]["0"]["runs"]
    # 4 epochs: lr x0.1 after epochs 2 and 3. Pruned at 2: retraining epochs 3, 4 -> 0.01, 0.001.
    early = json.loads((out / runs["spline.random.affine"]["history"]).read_text())
    assert early["retrain_lr"] == pytest.approx(0.01) and early["retrain_milestones"] == [1]
    assert [r["lr"] for r in early["records"]] == pytest.approx([0.01, 0.001])
    # After full training: fine-tune at the final lr for epochs // 4 = 1 epoch.
    late = json.loads((out / runs["end.slimming.affine"]["history"]).read_text())
    assert [r["lr"] for r in late["records"]] == pytest.approx([0.001])
    assert runs["end.slimming.affine"]["retrain_epochs"] == 1


def test_workers_give_the_same_results_and_an_eb_that_never_fires_prunes_at_the_end(tmp_path) -> None:
    config = pipeline.PipelineConfig(
        model="mlp", data="toy-x", hidden=(16, 16), epochs=3, eb_threshold=0.0, probe_size=32, retrain_epochs=2,
    )
    one = pipeline.run_pipeline(config, seeds=[0, 1], progress=False)
    seen = []
    two = pipeline.run_methods(
        config, pipeline.methods_for(config), [0, 1], out=tmp_path, progress=False, workers=2,
        on_seed=lambda folder, seed, payload: seen.append((seed, (folder / "dense.json").exists(), list(payload["runs"]))),
    )
    assert sorted(seen) == [(0, True, ["spline.spline-layerwise.affine"]), (1, True, ["spline.spline-layerwise.affine"])]
    for seed in ("0", "1"):
        a, b = one["runs"][seed]["runs"], two["runs"][seed]["runs"]
        assert list(a) == list(b) == ["spline.spline-layerwise.affine"]
        run_a, run_b = a["spline.spline-layerwise.affine"], b["spline.spline-layerwise.affine"]
        assert run_a["accuracy"] == run_b["accuracy"] and run_a["flops"] == run_b["flops"]
        # Threshold 0 never fires: pruned after the 3 dense epochs, the probe passes of all 3 paid.
        assert run_a["eb_epoch"] is None and run_a["prune_epoch"] == 3 and run_a["retrain_epochs"] == 2
        dense = json.loads((tmp_path / f"seed-{seed}" / "dense.json").read_text())
        assert run_b["flops"]["probe"] == 3 * dense["earlybird"]["spline"]["probe_flops"] > 0
        assert (tmp_path / run_b["history"]).exists()
    assert one["runs"]["0"]["runs"] != one["runs"]["1"]["runs"]  # seeds differ
    assert two["summary"]["spline.spline-layerwise.affine"]["accuracy.final"]["n"] == 2
    assert "3, 3 (no EB in 2: pruned at the end)" in pipeline.markdown(two)


def test_run_command_end_to_end(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("sklearn")
    out = tmp_path / "run"
    argv = [
        "run", "--model", "vgg-small", "--width", "0.25", "--data", "digits", "--epochs", "3", "--ratio", "0.5",
        "--policy", "spline-layerwise", "--eb", "spline", "--eb-window", "1", "--eb-threshold", "1.0",
        "--probe-size", "64", "--retrain-lr", "0.05", "--out", str(out), "--quiet",
    ]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "spline EB + spline-layerwise + affine merge" in printed and f"wrote {out / 'results.json'}" in printed
    results = json.loads((out / "results.json").read_text())
    run = results["runs"]["0"]["runs"]["spline.spline-layerwise.affine"]
    assert run["eb_epoch"] == 2 and run["retrain_epochs"] == 1
    assert all(run["accuracy"][s] is not None for s in pipeline.STAGES)
    dense = json.loads((out / "seed-0" / "dense.json").read_text())
    assert dense["stopped_at"] == 2  # a single EB method stops dense training at EB
    assert dense["full_flops"] == 3 * dense["records"][0]["flops"]  # saving is against all 3 dense epochs
    assert run["saving"] == pytest.approx(dense["full_flops"] / run["flops"]["total"])
    assert results["config"]["ratio"] == 0.5 and results["config"]["policies"] == ["spline-layerwise"]
    # Pruned after epoch 2 of 3 (dense lr 0.01 there): --retrain-lr replaces it.
    detail = json.loads((out / run["history"]).read_text())
    assert [r["lr"] for r in detail["records"]] == pytest.approx([0.05])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--ratio", "1.5"], "--ratio must be in (0, 1)"),
        (["--ratio", "0"], "--ratio must be in (0, 1)"),
        (["--policy", "magnitude"], "--policy must be among"),
        (["--merge", "average"], "--merge: invalid choice"),
        (["--seeds", "0"], "--seeds must be >= 1"),
        (["--workers", "0"], "--workers must be >= 1"),
        (["--retrain-epochs", "0"], "--retrain-epochs must be >= 1"),
        (["--eb-threshold", "2"], "--eb-threshold must be in [0, 1]"),
        (["--epochs", "0"], "--epochs must be >= 1"),
        (["--eb", "canvas"], "--eb: invalid choice"),
        (["--retrain-lr", "0"], "--retrain-lr must be in (0, inf)"),
        (["--pair-rule", "gamma"], "--pair-rule: invalid choice"),
    ],
)
def test_run_usage_errors(extra: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", "--model", "vgg-small", "--data", "digits", *extra])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_pair_rules_add_spline_methods_only(tmp_path) -> None:
    config = pipeline.PipelineConfig(**{**TINY_DIGITS, "pair_rules": ("importance", "merge-error"), "epochs": 3})
    methods = pipeline.methods_for(config, compare=True)
    keys = [m.key for m in methods]
    assert "spline.spline-layerwise.affine" in keys and "spline.spline-layerwise.affine.merge-error" in keys
    assert "spline.random.affine" in keys and not any(k.startswith("spline.random") and "merge-error" in k for k in keys)
    assert "spline-layerwise (merge-error order) + affine merge" in methods[keys.index("spline.spline-layerwise.affine.merge-error")].label
    results = pipeline.run_methods(config, [m for m in methods if m.policy == "spline-layerwise"], [0], out=tmp_path, progress=False)
    runs = results["runs"]["0"]["runs"]
    plain, ordered = runs["spline.spline-layerwise.affine"], runs["spline.spline-layerwise.affine.merge-error"]
    plans = [json.loads((tmp_path / run["history"]).read_text())["plan"] for run in (plain, ordered)]
    assert [p["pair_rule"] for p in plans] == ["importance", "merge-error"]
    assert all(ordered["accuracy"][s] is not None for s in pipeline.STAGES)
    with pytest.raises(ValueError, match="pair_rules must be among"):
        pipeline.PipelineConfig(pair_rules=("gamma",)).check()


def test_library_errors_name_the_argument() -> None:
    with pytest.raises(ValueError, match=r"ratio must be in \(0, 1\), got 1"):
        pipeline.PipelineConfig(ratio=1).check()
    with pytest.raises(ValueError, match="policies must be among"):
        pipeline.PipelineConfig(policies=("spline",)).check()
    with pytest.raises(ValueError, match="policies must be a non-empty tuple"):
        pipeline.PipelineConfig(policies="random").check()
    with pytest.raises(TypeError, match="epochs must be an int"):
        pipeline.PipelineConfig(epochs=4.0).check()
    with pytest.raises(ValueError, match="needs data_root"):
        pipeline.PipelineConfig(data="cifar10").check()
    config = pipeline.PipelineConfig(model="mlp", data="toy-x", epochs=1)
    with pytest.raises(ValueError, match="seeds must be a non-empty sequence"):
        pipeline.run_pipeline(config, seeds=[], progress=False)
    with pytest.raises(ValueError, match="seeds must be distinct"):
        pipeline.run_pipeline(config, seeds=[1, 1], progress=False)
    with pytest.raises(ValueError, match="workers must be >= 1"):
        pipeline.run_pipeline(config, seeds=[0], workers=0, progress=False)
    assert set(pipeline.PipelineConfig().policies) <= set(pruning.POLICIES)


def test_eb_none_plots_the_full_training_method(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    # --eb none prunes after full training ("end"): its plots show that method, not the mask EB one.
    pytest.importorskip("matplotlib")
    from fastspline import viz

    plotted = []
    write_run_plots, pruning_report = viz.write_run_plots, viz.pruning_report

    def spy_run_plots(folder, **kwargs):
        plotted.append(kwargs["plan"].policy)
        return write_run_plots(folder, **kwargs)

    def spy_report(plan, model=None, **kwargs):
        plotted.append(kwargs.get("title"))
        return pruning_report(plan, model, **kwargs)

    monkeypatch.setattr(viz, "write_run_plots", spy_run_plots)
    monkeypatch.setattr(viz, "pruning_report", spy_report)
    argv = [
        "run", "--model", "mlp", "--hidden", "8", "--data", "toy-x", "--epochs", "2", "--eb", "none", "--compare",
        "--policy", "random", "--probe-size", "32", "--quiet", "--out", str(tmp_path),
    ]
    assert cli.main(argv) == 0
    assert cli.main(["plot", "pruning", str(tmp_path), "--out-dir", str(tmp_path / "plots")]) == 0
    assert plotted[0] == "random" and plotted[-1] == "full training + random + affine merge"


def test_run_methods_checks_the_methods_before_training() -> None:
    config = pipeline.PipelineConfig(model="mlp", data="toy-x", hidden=(4,), epochs=1, probe_size=16)
    with pytest.raises(ValueError, match=r"methods\[\].prune_at must be never, spline, mask or end"):
        pipeline.run_methods(config, [pipeline.Method("foo", "random", "affine")], progress=False)
    for method in (pipeline.Method("end"), pipeline.Method("spline", "magic", "affine"), pipeline.Method("mask", "random", "blend")):
        with pytest.raises(ValueError, match=r"methods\[\] pruning needs a policy"):
            pipeline.run_methods(config, [method], progress=False)
    with pytest.raises(ValueError, match=r"hidden\[\] must be >= 1, got 0"):
        pipeline.PipelineConfig(model="mlp", data="toy-x", hidden=(4, 0)).check()


def test_bad_config_seeds_and_repeated_methods_are_refused_before_training() -> None:
    # milestones=20 failed with "'int' object is not iterable"; image-folder without data_root
    # passed check(); a seed >= 2**32 failed in numpy; repeated methods trained twice.
    with pytest.raises(TypeError, match="PipelineConfig: milestones must be a tuple of ints or None, got 20"):
        pipeline.PipelineConfig(milestones=20).check()
    with pytest.raises(ValueError, match="PipelineConfig: data 'image-folder' needs data_root"):
        pipeline.PipelineConfig(data="image-folder").check()
    config = pipeline.PipelineConfig(model="mlp", data="toy-x", hidden=(4,), epochs=1, probe_size=16)
    with pytest.raises(ValueError, match=r"run_methods: seeds\[\] must be < 2\*\*32, got 4294967296"):
        pipeline.run_methods(config, [pipeline.Method("never")], [2**32], progress=False)
    method = pipeline.Method("end", "random", "affine")
    with pytest.raises(ValueError, match="run_methods: methods must be distinct"):
        pipeline.run_methods(config, [method, method], progress=False)
    twice = dataclasses.replace(config, policies=("random", "random"), merges=("none", "none"))
    assert pipeline.methods_for(twice) == [pipeline.Method("spline", "random", "none")]
