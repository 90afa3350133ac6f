"""fastspline.train: FLOPs equal the closed form, the recipe's schedule, the
BN-L1 penalty, seeded reproducibility, atomic checkpoints and exact resume."""
from __future__ import annotations

import os

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from fastspline import data, models, train
from fastspline.earlybird import MaskEarlyBird, SplineEarlyBird


pytestmark = pytest.mark.usefixtures("one_thread")


def test_flops_of_a_linear_layer_match_the_closed_form() -> None:
    n, fan_in, fan_out = 8, 5, 3
    x, y = torch.randn(n, fan_in), torch.randint(0, fan_out, (n,))
    model = nn.Sequential(nn.Linear(fan_in, fan_out))
    assert train.count_flops(model, x) == 2 * n * fan_in * fan_out
    # Backward: the weight gradient only (the input needs no gradient).
    assert train.count_flops(model, x, y) == 4 * n * fan_in * fan_out
    hidden = 7
    deeper = nn.Sequential(nn.Linear(fan_in, hidden), nn.ReLU(), nn.Linear(hidden, fan_out))
    # The second layer also passes the gradient to its input: forward + 2 backward matmuls.
    assert train.count_flops(deeper, x, y) == 4 * n * fan_in * hidden + 6 * n * hidden * fan_out


def test_flops_of_a_conv_layer_match_the_closed_form() -> None:
    n, c_in, c_out, side, k = 4, 2, 3, 6, 3
    x = torch.randn(n, c_in, side, side)
    model = nn.Sequential(nn.Conv2d(c_in, c_out, k, padding=1, bias=False), nn.Flatten())
    forward = 2 * n * c_out * side * side * c_in * k * k
    assert train.count_flops(model, x) == forward
    assert train.count_flops(model, x, torch.randint(0, 10, (n,))) == 2 * forward


@pytest.mark.parametrize("transposed", [False, True])
def test_flops_of_a_grouped_conv_backward_match_the_closed_form(transposed: bool) -> None:
    # torch's counter takes the weight gradient of a grouped conv for a dense one (x groups);
    # each gradient of a conv costs what its forward does.
    n, c, side, groups = 2, 8, 5, 4
    x, y = torch.randn(n, 3, side, side), torch.randint(0, c, (n,))
    first = nn.Conv2d(3, c, 1, bias=False)
    if transposed:  # a transposed conv's FLOPs go by its input's positions
        grouped = nn.ConvTranspose2d(c, c, 3, stride=2, groups=groups, bias=False)
    else:
        grouped = nn.Conv2d(c, c, 3, padding=1, groups=groups, bias=False)
    grouped_forward = 2 * n * side * side * c * (c // groups) * 9
    model = nn.Sequential(first, nn.ReLU(), grouped, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    first_forward = 2 * n * side * side * c * 3
    assert train.count_flops(model, x) == first_forward + grouped_forward
    assert train.count_flops(model, x, y) == 2 * first_forward + 3 * grouped_forward
    history = train.fit(model, TensorDataset(x, y), None, 1, batch_size=n, progress=False)
    assert history[0]["flops"] == 2 * first_forward + 3 * grouped_forward


def test_fit_counts_flops_once_per_batch_shape() -> None:
    fan_in, fan_out = 5, 3
    x, y = torch.randn(20, fan_in), torch.randint(0, fan_out, (20,))
    model = nn.Sequential(nn.Linear(fan_in, fan_out))
    history = train.fit(model, TensorDataset(x, y), None, 2, batch_size=8, progress=False)
    per_epoch = 4 * (8 + 8 + 4) * fan_in * fan_out  # batches of 8, 8 and 4
    assert history.column("flops") == [per_epoch, per_epoch]
    assert history.column("cumulative_flops") == [per_epoch, 2 * per_epoch]
    assert history[0]["test_acc"] is None


def test_schedule_learning_and_reproducibility() -> None:
    split = data.toy_x(400)

    def run() -> train.History:
        train.seed_everything(0)
        model = models.mlp([2, 16, 16, 2])
        return train.fit(model, split.train, split.test, 4, batch_size=32, progress=False, sparsity=1e-4)

    first, second = run(), run()
    assert first.column("lr") == pytest.approx([0.1, 0.1, 0.01, 0.001])  # x0.1 after epochs 2 and 3
    assert first.column("epoch") == [1, 2, 3, 4]
    assert first[-1]["train_loss"] < first[0]["train_loss"]
    assert first[-1]["test_acc"] > 80
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(first) == strip(second)


@pytest.mark.parametrize(
    "epochs,lrs",
    [(1, [0.1]), (2, [0.1, 0.01]), (3, [0.1, 0.01, 0.001]), (4, [0.1, 0.1, 0.01, 0.001]),
     (40, [0.1] * 20 + [0.01] * 10 + [0.001] * 10)],
)  # fmt: skip
def test_default_milestones_are_distinct_for_few_epochs(epochs: int, lrs: list[float]) -> None:
    # 2 epochs gave milestones [1, 1]: lr x0.01 after epoch 1.
    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    history = train.fit(nn.Linear(3, 2), TensorDataset(x, y), None, epochs, batch_size=8, progress=False)
    assert history.column("lr") == pytest.approx(lrs)


def test_bn_l1_penalty_adds_s_sign_gamma() -> None:
    model = models.mlp([3, 4, 2])
    bn = model.layers.bn0
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([0.5, -0.2, 0.0, 1.0]))
    bn.weight.grad = torch.zeros(4)
    train.bn_l1_penalty(model, 0.01)
    assert torch.equal(bn.weight.grad, torch.tensor([0.01, -0.01, 0.0, 0.01]))


class _Crash(Exception):
    pass


def test_resume_gives_the_same_history(tmp_path) -> None:
    split = data.toy_x(300)
    probe = data.probe_subset(split.train, 64)
    epochs = 5

    def run(checkpoint, crash_at: int | None = None, resume: bool = False):
        train.seed_everything(1)
        model = models.mlp([2, 12, 12, 2])
        spline = SplineEarlyBird(probe, window=2, report_thresholds=(0.05,))
        mask = MaskEarlyBird(0.5, window=3)

        def crash(model: nn.Module, epoch: int, record: dict) -> None:
            if epoch == crash_at:
                raise _Crash

        history = train.fit(
            model, split.train, split.test, epochs, batch_size=32, progress=False, sparsity=1e-4, seed=3,
            callbacks=[spline, mask, crash], checkpoint=checkpoint, resume=resume, checkpoint_every=1,
        )
        return history, model, spline, mask

    straight, model_a, spline_a, mask_a = run(tmp_path / "a.pt")
    with pytest.raises(_Crash):
        run(tmp_path / "b.pt", crash_at=4)  # the checkpoint holds epoch 3
    assert train.load_checkpoint(tmp_path / "b.pt")["epoch"] == 3
    resumed, model_b, spline_b, mask_b = run(tmp_path / "b.pt", resume=True)

    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(resumed) == strip(straight)
    for name, tensor in model_a.state_dict().items():
        assert torch.equal(tensor, model_b.state_dict()[name]), name
    assert spline_b.distances == spline_a.distances and spline_b.fired == spline_a.fired
    assert mask_b.distances == mask_a.distances
    torch.testing.assert_close(spline_b.history, spline_a.history, equal_nan=True)
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]  # atomic writes left no temp files


def test_resume_without_a_checkpoint_starts_fresh(tmp_path) -> None:
    split = data.toy_x(100)
    history = train.fit(models.mlp([2, 4, 2]), split.train, None, 1, progress=False, checkpoint=tmp_path / "c.pt", resume=True)
    assert len(history) == 1 and (tmp_path / "c.pt").exists()


def test_callback_can_stop_training() -> None:
    split = data.toy_x(100)
    history = train.fit(
        models.mlp([2, 4, 2]), split.train, None, 5, progress=False, callbacks=[lambda m, e, r: e == 2]
    )
    assert len(history) == 2 and history.stopped_early


def test_fit_argument_checks(tmp_path) -> None:
    split = data.toy_x(100)
    model = models.mlp([2, 4, 2])
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        train.fit(model, split.train, None, 0)
    with pytest.raises(ValueError, match="lr must be > 0"):
        train.fit(model, split.train, None, 1, lr=0.0)
    with pytest.raises(TypeError, match="train must be"):
        train.fit(model, "digits", None, 1)
    with pytest.raises(ValueError, match="resume=True needs checkpoint"):
        train.fit(model, split.train, None, 1, resume=True)
    with pytest.raises(TypeError, match=r"callbacks\[0\]"):
        train.fit(model, split.train, None, 1, callbacks=[3])
    with pytest.raises(TypeError, match="labels must be int64"):
        train.fit(model, (torch.randn(4, 2), torch.zeros(4)), None, 1)
    path = tmp_path / "foreign.pt"
    torch.save({"x": 1}, path)
    with pytest.raises(ValueError, match="not a fastspline training checkpoint"):
        train.load_checkpoint(path)


def test_failed_resume_leaves_the_callbacks_as_they_were(tmp_path) -> None:
    split = data.toy_x(200)
    probe = data.probe_subset(split.train, 32)
    path = tmp_path / "c.pt"
    train.fit(
        models.mlp([2, 8, 2]), split.train, None, 3, batch_size=32, progress=False, checkpoint=path,
        callbacks=[SplineEarlyBird(probe, window=1), MaskEarlyBird(0.5, window=2)],
    )
    # The second callback cannot take the mask detector's state: the resume fails, and
    # the first one, already loaded, must be rolled back (not left at epoch 3).
    first, second = SplineEarlyBird(probe, window=1), SplineEarlyBird(probe, window=1)
    with pytest.raises(ValueError, match="cannot resume"):
        train.fit(models.mlp([2, 8, 2]), split.train, None, 5, progress=False, checkpoint=path, resume=True, callbacks=[first, second])
    assert first.epochs == [] and first.distances == {} and second.epochs == []


def test_evaluate_checks_batch_size() -> None:
    x, y = torch.randn(6, 2), torch.randint(0, 2, (6,))
    with pytest.raises(ValueError, match="evaluate: batch_size must be >= 1, got 0"):
        train.evaluate(models.mlp([2, 4, 2]), (x, y), batch_size=0)
    with pytest.raises(TypeError, match="evaluate: batch_size must be an int"):
        train.evaluate(models.mlp([2, 4, 2]), (x, y), batch_size=2.5)  # type: ignore[arg-type]


def test_resume_is_exact_for_a_model_with_dropout(tmp_path) -> None:
    # Dropout draws from torch's global generator: a resumed run must continue its
    # state, not the one left by the new process's seed_everything + model build.
    split = data.toy_x(200)

    def run(path, crash_at: int | None = None, resume: bool = False) -> train.History:
        train.seed_everything(0)
        model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 2))

        def crash(model: nn.Module, epoch: int, record: dict) -> None:
            if epoch == crash_at:
                raise _Crash

        return train.fit(model, split.train, split.test, 4, batch_size=32, progress=False, checkpoint=path, resume=resume, callbacks=[crash])

    straight = run(tmp_path / "a.pt")
    with pytest.raises(_Crash):
        run(tmp_path / "b.pt", crash_at=3)
    resumed = run(tmp_path / "b.pt", resume=True)
    assert resumed.column("train_loss") == straight.column("train_loss")
    assert resumed.column("test_acc") == straight.column("test_acc")
