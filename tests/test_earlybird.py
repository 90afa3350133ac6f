"""fastspline.earlybird: the spline EB fires on a converging run and not on one
whose codes keep changing; the window/threshold rule exactly; the mask EB on
hand-built masks; state round trips."""
from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from fastspline import data, models, train
from fastspline.earlybird import MaskEarlyBird, SplineEarlyBird, bn_mask, probe_batch_size


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def toy():
    split = data.toy_x(400)
    # The canvas of the X task: the plane through (-5, 5) and (5, 5) covers [-5, 5] x [0, 10].
    probe = data.canvas(torch.tensor([-5.0, 5.0]), torch.tensor([5.0, 5.0]), 16)
    return split, probe


def test_fires_on_a_converging_run(toy) -> None:
    split, probe = toy
    train.seed_everything(0)
    model = models.mlp([2, 16, 16, 2])
    eb = SplineEarlyBird(probe, report_thresholds=(0.05, 0.0))
    history = train.fit(model, split.train, split.test, 12, batch_size=32, progress=False, callbacks=[eb])
    assert eb.found and 4 <= eb.epoch <= 12
    assert eb.distances[eb.epoch] < 0.16 <= eb.distances.get(eb.epoch - 1, 1.0)
    assert eb.fired[0.05] is None or eb.fired[0.05] >= eb.epoch  # a lower threshold fires no earlier
    assert eb.fired[0.0] is None  # strict: nothing is below 0
    assert history[eb.epoch - 1]["spline_found"] and history[eb.epoch - 1]["spline_distance"] == eb.distances[eb.epoch]
    assert history[0]["spline_distance"] is None  # no full window yet
    assert set(eb.layer_history) == {"layers.relu0", "layers.relu1"}
    assert eb.probe_flops == train.count_flops(model, probe)


def test_does_not_fire_when_codes_keep_changing(toy) -> None:
    _, probe = toy
    torch.manual_seed(0)
    model = models.mlp([2, 16, 16, 2])
    eb = SplineEarlyBird(probe, report_thresholds=(0.3,))
    for epoch in range(1, 11):
        models.init_weights(model)  # re-randomised weights: a new partition every epoch
        eb.step(model, epoch)
    assert not eb.found and eb.fired[0.3] is None
    assert min(eb.distances.values()) > 0.3


def test_window_rule_and_history_matrix() -> None:
    torch.manual_seed(0)
    model = models.mlp([3, 8, 2])
    probe = torch.randn(50, 3)
    eb = SplineEarlyBird(probe, threshold=0.5, window=3)
    fired = [eb.step(model, epoch) for epoch in range(1, 6)]
    # The same model every epoch: distance 0, found as soon as the window is full (the 4th step).
    assert fired == [False, False, False, True, True] and eb.epoch == 4
    assert eb.distances == {4: 0.0, 5: 0.0}
    matrix = eb.history
    assert matrix.shape == (6, 6) and torch.isnan(matrix[0]).all()
    assert matrix[5, 2] == 0.0 and torch.isnan(matrix[5, 1])  # only the window band is computed
    assert eb.nbytes == 3 * eb.codes_of(model).nbytes  # only `window` codes are kept

    # A 0 threshold never fires (strictly below); a changed model is seen at distance > 0.
    strict = SplineEarlyBird(probe, threshold=0.0, window=1)
    strict.step(model, 0)
    strict.step(model, 1)
    assert not strict.found and strict.distances[1] == 0.0
    models.init_weights(model)
    strict.step(model, 2)
    assert strict.distances[2] > 0


def test_history_depth_gives_a_wider_heatmap() -> None:
    torch.manual_seed(0)
    model = models.mlp([3, 8, 2])
    eb = SplineEarlyBird(torch.randn(20, 3), window=1, history_depth=10)
    for epoch in range(1, 6):
        models.init_weights(model)
        eb.step(model, epoch)
    assert not torch.isnan(eb.history[1:, 1:]).any()
    assert eb.distances[5] == eb.history[5, 4].item()  # the criterion still uses window=1


def test_state_dict_round_trip() -> None:
    torch.manual_seed(0)
    model = models.mlp([3, 8, 2])
    probe = torch.randn(20, 3)
    eb = SplineEarlyBird(probe, window=2)
    for epoch in (1, 2):
        models.init_weights(model)
        eb.step(model, epoch)
    buffer = io.BytesIO()
    torch.save(eb.state_dict(), buffer)
    buffer.seek(0)
    copy = SplineEarlyBird(probe, window=2)
    copy.load_state_dict(torch.load(buffer, weights_only=True))
    models.init_weights(model)
    assert copy.step(model, 3) == eb.step(model, 3)
    assert copy.distances == eb.distances and copy.layer_names == eb.layer_names
    torch.testing.assert_close(copy.history, eb.history, equal_nan=True)


def _masks(bits: str) -> torch.Tensor:
    return torch.tensor([b == "1" for b in bits])


def test_mask_earlybird_on_hand_built_masks() -> None:
    eb = MaskEarlyBird(ratio=0.5, threshold=0.1, window=5)
    sequence = [
        "1111100000",
        "0111110000",  # 2 of 10 differ from the first
        "0011111000",
        "0011111000",
        "0011111000",  # FIFO full: distances to the newest 0.4, 0.2, 0, 0 -> not yet
        "0011111000",  # 0.2, 0, 0, 0 -> not yet
        "0011110100",  # 0.2 from each earlier one -> not yet
        "0011110100",  # 0.2, 0.2, 0.2, 0 -> not yet
        "0011110100",
        "0011110100",  # 0.2 from the oldest kept -> not yet
        "0011110110",  # 0.1 from each: <= 0.1 fires (inclusive)
    ]
    results = [eb.step_mask(_masks(bits), epoch) for epoch, bits in enumerate(sequence, start=1)]
    assert results.index(True) == 10 and eb.epoch == 11
    assert eb.distances[5] == pytest.approx(0.4) and eb.distances[11] == pytest.approx(0.1)
    assert 1 not in eb.distances and 4 not in eb.distances  # 5 masks are needed
    assert eb.history[11, 7].item() == pytest.approx(0.1) and math.isnan(eb.history[11, 6].item())


def test_bn_mask_global_threshold() -> None:
    model = nn.Sequential(nn.BatchNorm1d(4), nn.ReLU(), nn.BatchNorm1d(2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([0.1, -0.5, 0.3, 0.9]))
        model[2].weight.copy_(torch.tensor([0.2, 0.05]))
    # |gamma| sorted: .05 .1 .2 .3 .5 .9; ratio 0.5 -> the value at position 3 (0.3) is the cut.
    assert bn_mask(model, 0.5).tolist() == [False, True, False, True, False, False]
    assert bn_mask(model, 0.0).sum() == 5
    # As the official code, the channel at the cut position is pruned too: of two channels, p = 0.5 keeps none.
    assert bn_mask(model, 0.5, layers=["2"]).tolist() == [False, False]
    assert bn_mask(model, 0.0, layers=[model[2]]).tolist() == [True, False]
    detector = MaskEarlyBird(0.5, window=2)
    detector.step(model, 1)
    assert detector.step(model, 2) and detector.distances[2] == 0.0


def test_argument_checks() -> None:
    probe = torch.randn(8, 3)
    with pytest.raises(TypeError, match="probe must be a tensor"):
        SplineEarlyBird([[0.0]])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="threshold must be"):
        SplineEarlyBird(probe, threshold=1.5)
    with pytest.raises(ValueError, match="window must be >= 1"):
        SplineEarlyBird(probe, window=0)
    with pytest.raises(ValueError, match="history_depth"):
        SplineEarlyBird(probe, window=3, history_depth=2)
    with pytest.raises(ValueError, match="ratio"):
        MaskEarlyBird(1.0)
    eb = SplineEarlyBird(probe)
    model = models.mlp([3, 4, 2])
    eb.step(model, 2)
    with pytest.raises(ValueError, match="epochs must increase"):
        eb.step(model, 2)
    with pytest.raises(TypeError, match="epoch must be an int"):
        eb.step(model, 3.0)  # type: ignore[arg-type]
    mask = MaskEarlyBird(0.5)
    with pytest.raises(TypeError, match="1-D bool"):
        mask.step_mask(torch.ones(4), 1)
    mask.step_mask(torch.ones(4, dtype=torch.bool), 1)
    with pytest.raises(ValueError, match="entries"):
        mask.step_mask(torch.ones(5, dtype=torch.bool), 2)
    with pytest.raises(ValueError, match="no affine BatchNorm"):
        bn_mask(nn.Linear(2, 2), 0.5)


def test_probe_batch_size_default() -> None:
    # 256 rows (codes()' default) unless the widest layer is narrow: then up to 2**18 values per batch.
    assert [probe_batch_size(u) for u in (0, 1, 64, 256, 1000, 1024, 1280, 65536)] == [4096, 4096, 4096, 1024, 262, 256, 256, 256]
    assert SplineEarlyBird(torch.randn(8, 3), batch_size=5).batch_size == 5
    for bad in (0, -1, 2.0, True, "256"):
        with pytest.raises(ValueError, match=f"SplineEarlyBird: batch_size must be an int >= 1 or None, got {bad!r}"):
            SplineEarlyBird(torch.randn(8, 3), batch_size=bad)  # type: ignore[arg-type]
    # Picked on the first step from the widest coded layer (or the input, if wider), then kept.
    for sizes, expected in (([3, 256, 256, 2], 1024), ([3, 1500, 2], 256), ([600, 8, 2], 436)):
        model = models.mlp(sizes)
        eb = SplineEarlyBird(torch.randn(10, sizes[0]))
        assert eb.batch_size is None
        eb.step(model, 1)
        assert eb.batch_size == expected
        assert eb.probe_flops == train.count_flops(model.eval(), eb.probe)  # the two-input pass is not counted


def test_the_batch_pick_works_with_a_batchnorm_kept_in_training_mode() -> None:
    # The "disabled train" idiom keeps BatchNorm in training mode, where one input is an error.
    torch.manual_seed(0)
    model = models.mlp([3, 8, 2])
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.train = lambda mode=True, m=m: m
    eb = SplineEarlyBird(torch.randn(10, 3), count_flops=False)
    eb.step(model, 1)
    assert eb.batch_size == 4096 and eb.layer_names == ["layers.relu0"]


def test_a_probe_in_one_or_several_batches_gives_the_same_distances(toy) -> None:
    split, _ = toy
    train.seed_everything(0)
    model = models.create("mlp", split.input_shape, split.num_classes)
    probe = data.probe_subset(split.train, 300, seed=0)
    whole, batched = SplineEarlyBird(probe, window=2), SplineEarlyBird(probe, window=2, batch_size=64)
    gen = torch.Generator().manual_seed(0)
    for epoch in range(1, 5):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)
        whole.step(model, epoch)
        batched.step(model, epoch)
    assert whole.batch_size == 1024 > probe.shape[0]  # one pass against five
    assert whole.distances == batched.distances and len(whole.distances) == 2
    assert all(d > 0 for d in whole.distances.values())
    assert torch.equal(whole.history.nan_to_num(-1), batched.history.nan_to_num(-1))


def test_bn_mask_rejects_modules_of_another_model() -> None:
    # Modules of another model (e.g. the detector built on a model later re-created
    # from a checkpoint) were read silently: the mask of the old model, distance 0.
    torch.manual_seed(0)
    model, other = models.mlp([2, 8, 8, 2]), models.mlp([2, 8, 8, 2])
    detector = MaskEarlyBird(0.5, window=2, layers=[model.layers.bn0, model.layers.bn1])
    detector.step(model, 1)
    with pytest.raises(ValueError, match="not part of the model"):
        detector.step(other, 2)
    assert detector.epochs == [1]
    # A single name or module is one layer, as in codes().
    assert bn_mask(model, 0.5, layers="layers.bn0").tolist() == bn_mask(model, 0.5, layers=[model.layers.bn0]).tolist()
    assert bn_mask(model, 0.5, layers=model.layers.bn1).shape == (8,)
    with pytest.raises(TypeError, match="bn_mask: layers must be None"):
        bn_mask(model, 0.5, layers=5)  # type: ignore[arg-type]


def test_mask_earlybird_rejects_an_empty_mask() -> None:
    detector = MaskEarlyBird(0.5, window=2)
    empty = torch.zeros(0, dtype=torch.bool)
    with pytest.raises(ValueError, match="mask is empty"):
        detector.step_mask(empty, 1)
    assert detector.epochs == []


def test_load_state_dict_fires_thresholds_the_state_lacks_on_its_distances() -> None:
    # A run resumed with another threshold (or an added report threshold) started that
    # threshold at None and fired it at the first epoch *after* the resume, though the
    # saved window distances were already below it.
    torch.manual_seed(0)
    model = models.mlp([3, 8, 2])
    probe = torch.randn(20, 3)
    eb = SplineEarlyBird(probe, window=1)
    for epoch in (1, 2, 3):
        eb.step(model, epoch)  # the same model: distance 0 at epochs 2 and 3
    state = eb.state_dict()
    resumed = SplineEarlyBird(probe, threshold=0.1, window=1, report_thresholds=(0.16, 0.01, 0.0))
    resumed.load_state_dict(state)
    assert resumed.fired == {0.1: 2, 0.16: 2, 0.01: 2, 0.0: None} and resumed.epoch == 2
    resumed.step(model, 4)
    assert resumed.epoch == 2 and resumed.fired[0.01] == 2


def test_layers_given_as_a_generator_are_kept_for_every_step() -> None:
    # codes() accepts any iterable of layers; a generator was consumed by the first
    # step, and the second raised "layers is empty".
    torch.manual_seed(0)
    model = models.mlp([3, 8, 8, 2])
    probe = torch.randn(20, 3)
    eb = SplineEarlyBird(probe, window=1, layers=(m for m in model.modules() if isinstance(m, nn.BatchNorm1d)))
    for epoch in (1, 2, 3):
        eb.step(model, epoch)
    assert eb.distances == {2: 0.0, 3: 0.0} and eb.layer_names == ["layers.bn0", "layers.bn1"]


def test_steps_after_one_without_functional_calls_skip_their_search(monkeypatch) -> None:
    import fastspline.earlybird as eb_module

    calls = []
    real = eb_module.codes

    def spy(*args, **kwargs):
        calls.append(kwargs["functional"])
        return real(*args, **kwargs)

    monkeypatch.setattr(eb_module, "codes", spy)
    torch.manual_seed(0)
    probe = torch.randn(20, 3)
    plain, other = models.mlp([3, 8, 8, 2]), models.mlp([3, 8, 8, 2])
    eb = SplineEarlyBird(probe, window=1, count_flops=False)
    for epoch in (1, 2, 3):
        eb.step(plain, epoch)
    eb.codes_of(other)  # another model is searched again
    assert calls == [True, True, False, False, True]  # the first codes two probe inputs: it picks batch_size
    assert eb.distances == {2: 0.0, 3: 0.0} and eb.layer_names == ["layers.relu0", "layers.relu1"]

    class Functional(nn.Module):  # a functional ReLU keeps the search on every step
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 5)

        def forward(self, x):
            return torch.relu(self.fc(x))

    calls.clear()
    eb = SplineEarlyBird(probe, window=1, count_flops=False)
    model = Functional()
    for epoch in (1, 2):
        eb.step(model, epoch)
    assert calls == [True, True, True] and eb.layer_names == [":relu[0]"]  # batch_size picked, then 2 steps


def test_pickles_after_a_step_without_functional_calls() -> None:
    import pickle

    torch.manual_seed(0)
    model = models.mlp([3, 8, 8, 2])
    eb = SplineEarlyBird(torch.randn(20, 3), window=1, count_flops=False)
    eb.step(model, 1)
    restored = pickle.loads(pickle.dumps(eb))
    assert restored.layer_names == eb.layer_names and restored._no_functional is None
    restored.step(model, 2)
    assert restored.distances == {2: 0.0}


def test_probe_of_another_dtype_than_the_model_is_named_and_numpy_epochs_count():
    """A float64 (or float16) probe for a float32 model failed with torch's bare 'mat1 and
    mat2 must have the same dtype'; numpy integer epochs were refused."""
    import numpy as np

    model = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))
    for dtype in (torch.float64, torch.float16):
        detector = SplineEarlyBird(torch.randn(6, 3, dtype=dtype), window=1)
        with pytest.raises(TypeError, match=rf"codes: the model failed on {dtype} inputs; its parameters are torch.float32"):
            detector.step(model, 0)
        assert detector.epochs == []  # nothing recorded: the detector still works
        assert detector.step(model.to(dtype), 0) is False
        model.float()
    detector = SplineEarlyBird(torch.randn(6, 3), window=1)
    detector.step(model, np.int64(0))
    detector.step(model, np.int32(1))
    assert detector.epochs == [0, 1] and all(type(e) is int for e in detector.epochs)
    with pytest.raises(TypeError, match="epoch must be an int, got float64"):
        detector.step(model, np.float64(2))
