"""``fastspline.codes`` and ``RegionCodes`` against an independent oracle.

The oracle never uses fastspline: each test model has a ``preacts(x)`` method
that recomputes every pre-activation by calling its submodules step by step
(no hooks), and the signs are packed with ``numpy.packbits(bitorder="little")``
padded to whole 8-byte words and viewed as int64 (the layout documented in
``fastspline/ops.py``). Codes are compared with ``torch.equal``, never a
tolerance. Models mix unit counts that are and are not multiples of 64, so pad
bits and multi-word codes are exercised.
"""
from __future__ import annotations

import copy
import math
import os
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fastspline as fs
from fastspline.codes import ACTIVATIONS, LayerCodes, RegionCodes


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- oracle


def np_pack(bits: np.ndarray) -> np.ndarray:
    """bool [N, n] -> int64 [N, ceil(n/64)], bit j of word w = unit 64*w + j."""
    bits = np.asarray(bits, dtype=bool)
    n_bytes = -(-bits.shape[1] // 64) * 8
    packed = np.packbits(bits, axis=1, bitorder="little")
    padded = np.zeros((bits.shape[0], n_bytes), dtype=np.uint8)
    padded[:, : packed.shape[1]] = packed
    return padded.view("<i8")


def sign_bits(z: torch.Tensor) -> np.ndarray:
    """bool [N, units]: z > 0 over the C-order flattening of each sample."""
    return (z.detach().reshape(z.shape[0], -1) > 0).numpy()


def expected_codes(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    model_was_training = model.training
    model.eval()
    with torch.no_grad():
        pre = model.preacts(x)
    model.train(model_was_training)
    return {name: torch.from_numpy(np_pack(sign_bits(z))) for name, z in pre.items()}


def assert_codes_equal(rc: RegionCodes, expected: dict[str, torch.Tensor], n: int) -> None:
    assert rc.names == list(expected)
    assert rc.n_samples == n
    for name, words in expected.items():
        got = rc[name].words
        assert got.dtype == torch.int64 and got.device.type == "cpu"
        assert torch.equal(got, words), f"layer {name!r} differs"


# ---------------------------------------------------------------- models
# Each model's preacts(x) recomputes the inputs of its activations by hand.


def _scramble_bn(bn: nn.BatchNorm2d | nn.BatchNorm1d, gen: torch.Generator) -> None:
    """Non-trivial eval-mode statistics, so BN's affine really moves the signs."""
    c = bn.num_features
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(c, generator=gen) * 0.3)
        bn.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
        bn.weight.copy_(torch.randn(c, generator=gen))
        bn.bias.copy_(torch.randn(c, generator=gen) * 0.3)


class MLP(nn.Sequential):
    """70 and 65 units: one full word plus a partial one."""

    def __init__(self) -> None:
        super().__init__(nn.Linear(10, 70), nn.ReLU(), nn.Linear(70, 65), nn.LeakyReLU(0.1), nn.Linear(65, 3))

    def preacts(self, x):
        z1 = self[0](x)
        z2 = self[2](torch.relu(z1))
        return {"1": z1, "3": z2}


class AllActivations(nn.Sequential):
    """ReLU6, Hardtanh, PReLU: the code is the sign of their input."""

    def __init__(self) -> None:
        super().__init__(
            nn.Linear(5, 9), nn.ReLU6(), nn.Linear(9, 130), nn.Hardtanh(), nn.Linear(130, 9), nn.PReLU(), nn.Linear(9, 2)
        )

    def preacts(self, x):
        z1 = self[0](x)
        z2 = self[2](self[1](z1))
        z3 = self[4](self[3](z2))
        return {"1": z1, "3": z2, "5": z3}


class CNN(nn.Sequential):
    """Conv-BN-ReLU(inplace) twice: 8*8*8 = 512 and 16*4*4 = 256 units."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
            nn.Flatten(), nn.Linear(16 * 4 * 4, 5),
        )
        gen = torch.Generator().manual_seed(seed)
        _scramble_bn(self[1], gen)
        _scramble_bn(self[5], gen)

    def preacts(self, x):
        z1 = self[1](self[0](x))
        z2 = self[5](self[4](F.max_pool2d(torch.relu(z1), 2)))
        return {"2": z1, "6": z2}


class Block(nn.Module):
    """A residual block that builds only one nn.ReLU and uses it twice, plus
    F.relu, torch.relu and an in-place x.relu_() in its forward."""

    def __init__(self, c: int, gen: torch.Generator) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv3, self.bn3 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.act = nn.ReLU(inplace=True)
        for bn in (self.bn1, self.bn2, self.bn3):
            _scramble_bn(bn, gen)

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))  # :relu[0]
        h = self.act(self.bn2(self.conv2(h)))  # act
        h = self.act(self.bn3(self.conv3(h)) + x)  # act#1
        e = torch.relu(h * 2 - 1)  # :relu[1]
        return (e - 0.5).relu_()  # :relu[2]

    def preacts(self, x, prefix: str):
        a = self.bn1(self.conv1(x))
        b = self.bn2(self.conv2(torch.clamp(a, min=0)))
        c = self.bn3(self.conv3(torch.clamp(b, min=0))) + x
        d = torch.clamp(c, min=0) * 2 - 1
        e = torch.clamp(d, min=0) - 0.5
        return {
            f"{prefix}:relu[0]": a, f"{prefix}.act": b, f"{prefix}.act#1": c,
            f"{prefix}:relu[1]": d, f"{prefix}:relu[2]": e,
        }, torch.clamp(e, min=0)


class ResNetish(nn.Module):
    """No nn.ReLU outside the blocks: the stem's F.relu is a top-level functional call."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.blocks = nn.Sequential(Block(6, gen), Block(6, gen))
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        h = self.blocks(F.relu(self.stem(x)))
        return self.fc(h.mean(dim=(2, 3)))

    def preacts(self, x):
        z = self.stem(x)
        out = {":relu[0]": z}
        h = torch.clamp(z, min=0)
        for i, block in enumerate(self.blocks):
            pre, h = block.preacts(h, f"blocks.{i}")
            out.update(pre)
        return out


def make_inputs(model_name: str, n: int, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    shape = {"mlp": (10,), "all": (5,), "cnn": (3, 8, 8), "resnet": (3, 5, 5)}[model_name]
    return torch.randn(n, *shape, generator=gen) * 2


def make_model(model_name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = {"mlp": MLP, "all": AllActivations, "cnn": lambda: CNN(seed), "resnet": lambda: ResNetish(seed)}[model_name]()
    return model


MODELS = ["mlp", "all", "cnn", "resnet"]


def fresh_state(model: nn.Module) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_clean(model: nn.Module) -> None:
    """No hook of any kind left on any module, and no TorchFunctionMode left active."""
    for name, module in model.named_modules():
        for attr in (
            "_forward_hooks", "_forward_pre_hooks", "_forward_hooks_with_kwargs",
            "_forward_pre_hooks_with_kwargs", "_forward_hooks_always_called",
        ):
            assert not getattr(module, attr), f"{name or 'model'}.{attr} = {getattr(module, attr)}"
    assert torch._C._len_torch_function_stack() == 0


# ---------------------------------------------------------------- codes == oracle


@pytest.mark.parametrize("model_name", MODELS)
def test_codes_match_independent_oracle(model_name):
    model = make_model(model_name)
    x = make_inputs(model_name, 50)
    rc = fs.codes(model, x, progress=False, batch_size=16)
    assert_codes_equal(rc, expected_codes(model, x), 50)
    for name, layer in rc.items():
        assert layer.n_units == math.prod(layer.unit_shape)
        assert layer.words.shape == (50, (layer.n_units + 63) // 64)
    assert_clean(model)


def test_layer_names_and_shapes_of_resnet():
    rc = fs.codes(make_model("resnet"), make_inputs("resnet", 3), progress=False)
    block = ["{}:relu[0]", "{}.act", "{}.act#1", "{}:relu[1]", "{}:relu[2]"]
    assert rc.names == [":relu[0]"] + [n.format(f"blocks.{i}") for i in range(2) for n in block]
    assert all(rc[n].unit_shape == (6, 5, 5) for n in rc)


@pytest.mark.parametrize("model_name", MODELS)
def test_codes_identical_on_every_backend(impl, model_name):
    model = make_model(model_name)
    x = make_inputs(model_name, 70)
    rc = fs.codes(model, x, progress=False, batch_size=32, backend=impl.backend)
    assert_codes_equal(rc, expected_codes(model, x), 70)


def test_layers_given_as_batchnorm_outputs():
    model = make_model("cnn")
    x = make_inputs("cnn", 40)
    rc = fs.codes(model, x, layers=["1", model[5]], progress=False, batch_size=9)
    with torch.no_grad():
        model.eval()
        bn1 = model[1](model[0](x))
        bn2 = model[5](model[4](model[3](model[2](bn1.clone()))))
    assert rc.names == ["1", "5"]
    assert torch.equal(rc["1"].words, torch.from_numpy(np_pack(sign_bits(bn1))))
    assert torch.equal(rc["5"].words, torch.from_numpy(np_pack(sign_bits(bn2))))
    assert rc["5"].unit_shape == (16, 4, 4)
    assert_clean(model)


def test_layers_given_in_a_resnet_and_a_single_name():
    model = make_model("resnet")
    x = make_inputs("resnet", 12)
    pre = expected_codes(model, x)
    rc = fs.codes(model, x, layers=["blocks.0.bn2", "blocks.1.bn1"], progress=False)
    # bn2's output is act's input; bn1's output is the first F.relu's input.
    assert torch.equal(rc["blocks.0.bn2"].words, pre["blocks.0.act"])
    assert torch.equal(rc["blocks.1.bn1"].words, pre["blocks.1:relu[0]"])
    single = fs.codes(model, x, layers="blocks.0.bn2", progress=False)
    assert single.names == ["blocks.0.bn2"]


def test_layers_by_a_second_name_of_a_module():
    # A module registered under two attribute names: either name picks it (named by its first).
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.act = nn.Linear(3, 5), nn.ReLU()
            self.alias = self.act

        def forward(self, x):
            return self.act(self.fc(x))

    model, x = Net(), torch.randn(7, 3)
    by_first = fs.codes(model, x, layers=["act"], progress=False)
    by_alias = fs.codes(model, x, layers=["alias"], progress=False)  # was: "not a module of the model"
    assert by_alias.names == by_first.names == ["act"]
    assert torch.equal(by_alias["act"].words, by_first["act"].words)


def test_where_post_codes_the_output():
    class Shift(nn.Module):  # a registered activation whose output sign differs from its input's
        def forward(self, x):
            return x - 1.0

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 6)
            self.shift = Shift()

        def forward(self, x):
            z = self.lin(x)
            return F.hardtanh(self.shift(z), 0.5, 1.0)  # output always > 0

    model, x = Net(), torch.randn(30, 4) * 3
    original = list(ACTIVATIONS)
    try:
        fs.register_activation(Shift)
        pre = fs.codes(model, x, progress=False)
        post = fs.codes(model, x, progress=False, where="post")
    finally:
        ACTIVATIONS[:] = original
    with torch.no_grad():
        z = model.lin(x)
    assert pre.names == post.names == ["shift", ":relu[0]"]
    assert torch.equal(pre["shift"].words, torch.from_numpy(np_pack(sign_bits(z))))
    assert torch.equal(post["shift"].words, torch.from_numpy(np_pack(sign_bits(z - 1))))
    assert torch.equal(pre[":relu[0]"].words, torch.from_numpy(np_pack(sign_bits(z - 1))))
    assert torch.equal(post[":relu[0]"].words, torch.from_numpy(np_pack(np.ones((30, 6), dtype=bool))))
    assert pre.meta["where"] == "pre" and post.meta["where"] == "post"


def test_registered_activation_calling_relu_inside_is_one_layer():
    class MyAct(nn.Module):
        def forward(self, x):
            return F.relu(x) + 0.0

    model = nn.Sequential(nn.Linear(3, 5), MyAct(), nn.Linear(5, 2))
    x = torch.randn(20, 3)
    original = list(ACTIVATIONS)
    try:
        assert fs.register_activation(MyAct) is MyAct
        rc = fs.codes(model, x, progress=False)
    finally:
        ACTIVATIONS[:] = original
    assert rc.names == ["1"]
    with torch.no_grad():
        assert torch.equal(rc["1"].words, torch.from_numpy(np_pack(sign_bits(model[0](x)))))
    with pytest.raises(TypeError, match="nn.Module subclass"):
        fs.register_activation(int)


def test_functional_calls_on_non_batch_tensors_are_ignored():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(5, 3))

        def forward(self, x):
            return F.relu(x @ torch.relu(self.w).t())  # relu of a [5, 3] weight: not a layer

    model, x = Net(), torch.randn(8, 3)
    rc = fs.codes(model, x, progress=False)
    assert rc.names == [":relu[0]"]  # ignored calls are not counted
    with torch.no_grad():
        z = x @ torch.relu(model.w).t()
    assert torch.equal(rc[":relu[0]"].words, torch.from_numpy(np_pack(sign_bits(z))))


class _ModeDepth(nn.Module):
    """Identity that records how many torch-function modes are active at each call."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[int] = []

    def forward(self, x):
        self.seen.append(torch._C._len_torch_function_stack())
        return x


def test_model_without_functional_calls_drops_the_interception_after_one_batch():
    probe = _ModeDepth()
    model = nn.Sequential(nn.Linear(4, 4), probe, nn.ReLU())
    fs.codes(model, torch.randn(10, 4), progress=False, batch_size=3)
    assert probe.seen == [1, 0, 0, 0]
    assert_clean(model)


def test_functional_false_hooks_activation_modules_only():
    model = ResNetish(seed=3).eval()
    x = torch.randn(12, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    found = fs.codes(model, x, progress=False, batch_size=5)
    modules_only = fs.codes(model, x, progress=False, batch_size=5, functional=False)
    assert found.meta["functional_layers"] == 7 and modules_only.meta["functional_layers"] is None
    assert modules_only.names == [n for n in found.names if ":" not in n] == [f"blocks.{i}.{a}" for i in range(2) for a in ("act", "act#1")]
    for name in modules_only.names:
        assert torch.equal(modules_only[name].words, found[name].words)
    probe = _ModeDepth()
    plain = nn.Sequential(nn.Linear(4, 4), probe, nn.ReLU())
    assert fs.codes(plain, torch.randn(6, 4), progress=False, batch_size=3).meta["functional_layers"] == 0
    fs.codes(plain, torch.randn(6, 4), progress=False, batch_size=3, functional=False)
    assert probe.seen == [1, 0, 0, 0]  # no interception at all with functional=False
    assert fs.codes(plain, torch.randn(6, 4), layers=["2"], progress=False).meta["functional_layers"] is None
    only_functional = nn.Sequential(nn.Linear(4, 4), _FunctionalReLU())
    with pytest.raises(ValueError, match="functional=False left functional calls unsearched"):
        fs.codes(only_functional, torch.randn(6, 4), progress=False, functional=False)
    with pytest.raises(TypeError, match="functional must be a bool, got int 1"):
        fs.codes(plain, torch.randn(6, 4), progress=False, functional=1)
    assert_clean(plain)


class _FunctionalReLU(nn.Module):
    def forward(self, x):
        return F.relu(x)


# ---------------------------------------------------------------- streaming and data forms


@pytest.mark.parametrize("model_name", ["cnn", "resnet"])
def test_same_codes_for_every_batch_size(model_name):
    model = make_model(model_name)
    x = make_inputs(model_name, 100)
    expected = expected_codes(model, x)
    for batch_size in (1, 7, 64, 100):
        rc = fs.codes(model, x, progress=False, batch_size=batch_size)
        assert_codes_equal(rc, expected, 100)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.zeros(100)), batch_size=7)
    assert_codes_equal(fs.codes(model, loader, progress=False), expected, 100)


def test_batch_forms():
    model = make_model("mlp")
    x = make_inputs("mlp", 30)
    y = torch.arange(30)
    expected = expected_codes(model, x)
    forms = {
        "tensors": list(x.split(8)),
        "tuples": list(zip(x.split(8), y.split(8))),
        "lists": [[a, b] for a, b in zip(x.split(8), y.split(8))],
        "dict x": [{"x": a, "y": b} for a, b in zip(x.split(8), y.split(8))],
        "dict input": [{"input": a, "label": b} for a, b in zip(x.split(8), y.split(8))],
        "generator": (a for a in x.split(11)),
        "tensor": x,
    }
    for label, data in forms.items():
        rc = fs.codes(model, data, progress=False)
        assert_codes_equal(rc, expected, 30)
    # progress bar on, keep_on="device" on a CPU model: the same codes
    assert_codes_equal(fs.codes(model, x, progress=True, keep_on="device", device="cpu"), expected, 30)


def test_max_samples_stops_early():
    model = make_model("cnn")
    x = make_inputs("cnn", 100)
    full = expected_codes(model, x)
    consumed = []

    def batches():
        for i, chunk in enumerate(x.split(7)):
            consumed.append(i)
            yield chunk, torch.zeros(len(chunk))

    rc = fs.codes(model, batches(), max_samples=23, progress=False)
    assert rc.n_samples == 23 and rc.meta["n_samples"] == 23
    assert consumed == [0, 1, 2, 3]  # 4 batches of 7 cover 23 inputs; the 5th is never read
    assert_codes_equal(rc, {n: w[:23] for n, w in full.items()}, 23)
    assert fs.codes(model, x, max_samples=64, batch_size=64, progress=False).n_samples == 64
    assert fs.codes(model, x, max_samples=500, progress=False).n_samples == 100


def test_data_dependent_layers_are_an_error():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 3)
            self.act = nn.ReLU()

        def forward(self, x):
            z = self.lin(x)
            return self.act(z) if x[0, 0] > 0 else z

    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [1.0, 1.0]])
    with pytest.raises(ValueError, match="reached for 2 of 3 inputs"):
        fs.codes(Branchy(), x, batch_size=1, progress=False)


# ---------------------------------------------------------------- state restored


class Boom(nn.Module):
    """Raises on its ``fail_on``-th call (1-based)."""

    def __init__(self, fail_on: int):
        super().__init__()
        self.fail_on, self.calls = fail_on, 0

    def forward(self, x):
        self.calls += 1
        if self.calls == self.fail_on:
            raise RuntimeError("boom")
        return x


@pytest.mark.parametrize("fail_on", [1, 3])
@pytest.mark.parametrize("layers", [None, ["bn"]])
def test_state_restored_when_forward_raises(fail_on, layers):
    model = nn.Sequential()
    model.add_module("lin", nn.Linear(4, 6))
    model.add_module("bn", nn.BatchNorm1d(6))
    model.add_module("act", nn.ReLU())
    model.add_module("boom", Boom(fail_on))
    model.add_module("out", nn.Linear(6, 2))
    model.train()
    model.bn.eval()  # a mixed mode, as when fine-tuning with frozen BN: must come back as it was
    model.out.weight.requires_grad_(False)
    before = fresh_state(model)
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    with pytest.raises(RuntimeError, match="boom"):
        fs.codes(model, torch.randn(20, 4), layers=layers, batch_size=5, progress=False)
    assert model.training and model.lin.training and not model.bn.training and model.out.training
    assert {n: p.requires_grad for n, p in model.named_parameters()} == grads
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert_clean(model)


def test_state_restored_when_the_loader_or_a_batch_fails():
    model = make_model("resnet")
    model.train()
    before = fresh_state(model)

    def failing():
        yield make_inputs("resnet", 4)
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        fs.codes(model, failing(), progress=False)
    with pytest.raises(TypeError, match="each batch must be"):
        fs.codes(model, [make_inputs("resnet", 4), "not a batch"], progress=False)
    with pytest.raises(ValueError, match="'x' or 'input'"):
        fs.codes(model, [{"image": make_inputs("resnet", 4)}], progress=False)
    assert all(m.training for m in model.modules())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN statistics untouched
    assert_clean(model)


def test_codes_run_in_eval_mode_and_leave_bn_statistics_alone():
    model = make_model("cnn")
    model.train()
    x = make_inputs("cnn", 20)
    before = fresh_state(model)
    rc = fs.codes(model, x, progress=False)
    assert_codes_equal(rc, expected_codes(model, x), 20)  # expected_codes uses eval mode
    assert model.training
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert_clean(model)


class _SeesModes(nn.Module):
    """Records the training flag of every module of ``root`` each time it runs."""

    def __init__(self) -> None:
        super().__init__()
        self.root: list[nn.Module] = []  # a list, so root is not a submodule
        self.seen: list[list[bool]] = []

    def forward(self, x):
        self.seen.append([m.training for m in self.root[0].modules()])
        return x


class _OwnTrain(nn.Linear):
    def train(self, mode=True):
        self.calls.append(mode)
        return super().train(mode)


class _OwnSetattr(nn.Linear):
    def __setattr__(self, name, value):
        if name == "training":
            self.__dict__.setdefault("flags", []).append(value)
        super().__setattr__(name, value)


@pytest.mark.parametrize("special", [None, _OwnTrain, _OwnSetattr])
def test_codes_run_every_module_in_eval_mode_and_restore_mixed_modes(special):
    seer = _SeesModes()
    first = special(4, 6) if special else nn.Linear(4, 6)
    first.calls = []
    model = nn.Sequential(first, nn.ReLU(), nn.Sequential(nn.Linear(6, 6), nn.BatchNorm1d(6)), seer, nn.ReLU())
    seer.root.append(model)
    model.train()
    model[2].eval()
    model[2][1].train()  # mixed: a train-mode BN inside an eval-mode block
    before = [m.training for m in model.modules()]
    first.calls.clear()
    fs.codes(model, torch.randn(10, 4), progress=False, batch_size=4)
    assert seer.seen == [[False] * len(before)] * 3
    assert [m.training for m in model.modules()] == before
    if special is _OwnTrain:
        assert first.calls == [False]  # an overridden train() is called, as model.eval() would
    if special is _OwnSetattr:
        assert first.flags[-2:] == [False, True]  # and an overridden __setattr__ sees both changes
    assert_clean(model)


# ---------------------------------------------------------------- errors


def test_empty_data_is_an_error():
    model = make_model("mlp")
    empty_loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(0, 10)), batch_size=4)
    for data in ([], iter([]), empty_loader, torch.zeros(0, 10), [torch.zeros(0, 10)]):
        with pytest.raises(ValueError, match="yielded no samples"):
            fs.codes(model, data, progress=False)
    assert model.training
    assert_clean(model)


def test_model_without_layers_is_an_error():
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"no piecewise-linear layer in Sequential.*ReLU.*functional.*layers="):
        fs.codes(model, torch.randn(5, 3), progress=False)
    assert_clean(model)
    class Unused(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin, self.spare = nn.Linear(3, 3), nn.BatchNorm1d(3)  # spare: never called

        def forward(self, x):
            return self.lin(x)

    unused = Unused()
    with pytest.raises(ValueError, match="not called by the forward pass"):
        fs.codes(unused, torch.randn(5, 3), layers=["spare"], progress=False)
    assert_clean(unused)


BAD_ARGUMENTS = [
    (dict(model="not a model"), TypeError, "model must be an nn.Module"),
    (dict(data=5), TypeError, "data must be"),
    (dict(data="inputs"), TypeError, "data must be"),
    (dict(data={"x": torch.zeros(2, 10)}), TypeError, "data must be"),
    (dict(data=torch.tensor(1.0)), ValueError, "batch dimension"),
    (dict(where="mid"), ValueError, "where must be 'pre' or 'post', got 'mid'"),
    (dict(keep_on="gpu"), ValueError, "keep_on must be 'cpu' or 'device', got 'gpu'"),
    (dict(batch_size=0), ValueError, "batch_size must be >= 1, got 0"),
    (dict(batch_size=2.0), TypeError, "batch_size must be an int"),
    (dict(batch_size=True), TypeError, "batch_size must be an int"),
    (dict(max_samples=0), ValueError, "max_samples must be >= 1, got 0"),
    (dict(max_samples=-3), ValueError, "max_samples must be >= 1, got -3"),
    (dict(max_samples=2.5), TypeError, "max_samples must be an int or None"),
    (dict(layers=["nope"]), ValueError, "'nope', which is not a module of the model"),
    (dict(layers=["0", nn.ReLU()]), ValueError, "ReLU that is not part of the model"),
    (dict(layers=[3]), TypeError, "module names or modules"),
    (dict(layers=[]), ValueError, "layers is empty"),
    (dict(layers=5), TypeError, "layers must be None"),
    (dict(device=3), TypeError, "device must be"),
    (dict(backend="nope"), ValueError, "backend must be one of"),
    (dict(data=[torch.zeros(4, 10, dtype=torch.int64)]), TypeError, "the model failed on torch.int64 inputs; its parameters are torch.float32"),
]


@pytest.mark.parametrize("kwargs, error, message", BAD_ARGUMENTS, ids=[str(list(a[0])) + str(i) for i, a in enumerate(BAD_ARGUMENTS)])
def test_bad_arguments(kwargs, error, message):
    model = make_model("mlp")
    args = dict(model=model, data=make_inputs("mlp", 6), progress=False) | kwargs
    with pytest.raises(error, match=message.replace("(", r"\(").replace("[", r"\[")):
        fs.codes(**args)
    assert model.training
    assert_clean(model)


def test_integer_activations_are_rejected():
    class IntAct(nn.Module):
        def forward(self, x):
            return x.long()

    model = nn.Sequential(nn.Linear(3, 3), IntAct())
    with pytest.raises(TypeError, match="expected floating point"):
        fs.codes(model, torch.randn(4, 3), layers=["1"], progress=False)
    assert_clean(model)


# ---------------------------------------------------------------- RegionCodes views


@pytest.fixture(scope="module")
def cnn_codes():
    model = make_model("cnn")
    x = make_inputs("cnn", 100)  # 100 samples: two words per unit, the second partial
    return model, x, fs.codes(model, x, progress=False, batch_size=33)


def test_unit_major_shapes_and_content(cnn_codes, impl):
    model, x, rc = cnn_codes
    with torch.no_grad():
        model.eval()
        pre = model.preacts(x)
    for name, z in pre.items():
        n, c = z.shape[:2]
        positions = math.prod(z.shape[2:])
        bits = sign_bits(z)  # [N, C*P]
        per_unit = rc.unit_major(name, per_channel=False, backend=impl.backend)
        assert per_unit.shape == (c * positions, 2)
        assert torch.equal(per_unit, torch.from_numpy(np_pack(bits.T)))
        per_channel = rc.unit_major(name, backend=impl.backend)
        assert per_channel.shape == (c, positions * 2)
        by_channel = bits.reshape(n, c, positions)
        expected = np.stack(
            [np.concatenate([np_pack(by_channel[:, ch, p][None])[0] for p in range(positions)]) for ch in range(c)]
        )
        assert torch.equal(per_channel, torch.from_numpy(expected))


def test_unit_major_of_a_dense_layer():
    model, x = make_model("mlp"), make_inputs("mlp", 65)
    rc = fs.codes(model, x, progress=False)
    with torch.no_grad():
        z = model.preacts(x)["3"]
    assert rc.unit_major("3").shape == (65, 2)
    assert torch.equal(rc.unit_major("3"), rc.unit_major("3", per_channel=False))
    assert torch.equal(rc.unit_major("3"), torch.from_numpy(np_pack(sign_bits(z).T)))
    with pytest.raises(KeyError, match="no layer 'nope'"):
        rc.unit_major("nope")


def perturbed(model: nn.Module, scale: float, seed: int = 5) -> nn.Module:
    other = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)
    return other


@pytest.mark.parametrize("model_name", ["mlp", "resnet"])
def test_distance(model_name, impl):
    model = make_model(model_name)
    x = make_inputs(model_name, 90)
    other = perturbed(model, 0.05)
    a = fs.codes(model, x, progress=False)
    b = fs.codes(other, x, progress=False)
    assert a.distance(a, backend=impl.backend) == 0.0
    assert all(d == 0.0 for d in a.distance(a, reduce="none").values())
    with torch.no_grad():
        model.eval(), other.eval()
        pa, pb = model.preacts(x), other.preacts(x)
    expected = {}
    for name in pa:
        differ = sign_bits(pa[name]) != sign_bits(pb[name])
        expected[name] = int(differ.sum()) / differ.size
    per_layer = a.distance(b, reduce="none", backend=impl.backend)
    assert per_layer == expected  # the same count / bits: exact
    assert a.distance(b, backend=impl.backend) == pytest.approx(sum(expected.values()) / len(expected), rel=1e-15)
    assert 0 < a.distance(b) < 0.5
    assert b.distance(a) == a.distance(b)


def test_distance_errors():
    model, x = make_model("mlp"), make_inputs("mlp", 10)
    a = fs.codes(model, x, progress=False)
    with pytest.raises(ValueError, match="reduce must be 'mean' or 'none', got 'sum'"):
        a.distance(a, reduce="sum")
    with pytest.raises(TypeError, match="other must be RegionCodes"):
        a.distance(a["1"].words)
    with pytest.raises(ValueError, match="the layers differ"):
        a.distance(fs.codes(model, x, layers=["0"], progress=False))
    with pytest.raises(ValueError, match="layer '1' has codes"):
        a.distance(fs.codes(model, x[:5], progress=False))


def test_distances_equal_distance_to_each(impl):
    model, x = make_model("mlp"), make_inputs("mlp", 40)
    a = fs.codes(model, x, progress=False)
    others = [fs.codes(perturbed(model, scale, seed), x, progress=False) for scale, seed in ((0.05, 1), (0.2, 2), (0.0, 3))]
    for reduce in ("mean", "none"):
        expected = [a.distance(o, reduce, backend="reference") for o in others]
        assert a.distances(others, reduce, backend=impl.backend) == expected  # exact: the same integer counts
        assert a.distances(tuple(others), reduce, backend=impl.backend) == expected
    assert a.distances([]) == []
    assert a.distances(others)[2] == 0.0 and a.distances(others)[1] > a.distances(others)[0] > 0


def test_distances_errors():
    model, x = make_model("mlp"), make_inputs("mlp", 10)
    a = fs.codes(model, x, progress=False)
    with pytest.raises(TypeError, match="others must be a sequence of RegionCodes, got RegionCodes"):
        a.distances(a)
    with pytest.raises(TypeError, match="others must be a sequence of RegionCodes, got generator"):
        a.distances(c for c in [a])
    with pytest.raises(TypeError, match=r"others\[1\] must be RegionCodes, got Tensor"):
        a.distances([a, a["1"].words])
    with pytest.raises(ValueError, match="distances: reduce must be 'mean' or 'none', got 'sum'"):
        a.distances([a], reduce="sum")
    with pytest.raises(ValueError, match="distances: layer '1' has codes"):
        a.distances([a, fs.codes(model, x[:5], progress=False)])


def test_region_counts_against_numpy_unique(impl):
    # 2-D inputs and few units: many inputs share a region; duplicates guarantee it.
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 1))
    x = torch.randn(150, 2)
    x = torch.cat([x, x[:50]])
    rc = fs.codes(model, x, progress=False, batch_size=64)
    with torch.no_grad():
        z1 = model[0](x)
        z2 = model[2](torch.relu(z1))
    bits = np.concatenate([sign_bits(z1), sign_bits(z2)], axis=1)
    unique_rows, inverse = np.unique(bits, axis=0, return_inverse=True)
    assert 1 < len(unique_rows) < 150
    assert rc.count_regions(backend=impl.backend) == len(unique_rows)
    ids = rc.region_ids(backend=impl.backend).numpy()
    assert ids.shape == (200,) and ids.min() == 0 and ids.max() == len(unique_rows) - 1
    # the same partition of the inputs as numpy's (ids may be numbered differently)
    pairs = set(zip(ids.tolist(), inverse.ravel().tolist()))
    assert len(pairs) == len(unique_rows)
    assert torch.equal(rc.concatenated(), torch.from_numpy(np.concatenate([np_pack(sign_bits(z1)), np_pack(sign_bits(z2))], 1)))


def test_region_codes_container(cnn_codes, tmp_path):
    _, _, rc = cnn_codes
    assert len(rc) == 2 and list(rc) == rc.names and "2" in rc and "x" not in rc
    assert rc.nbytes == 100 * (8 + 4) * 8  # 512 units = 8 words, 256 units = 4 words
    assert rc.n_units == 512 + 256
    assert "n_samples=100" in repr(rc)
    moved = rc.to("cpu")
    assert moved.names == rc.names and all(torch.equal(moved[n].words, rc[n].words) for n in rc)
    with pytest.raises(ValueError, match="same number of samples"):
        RegionCodes({"a": LayerCodes(torch.zeros(2, 1, dtype=torch.int64), 3, (3,)),
                     "b": LayerCodes(torch.zeros(3, 1, dtype=torch.int64), 3, (3,))})
    with pytest.raises(ValueError, match="need 1 words"):
        LayerCodes(torch.zeros(2, 2, dtype=torch.int64), 3, (3,))
    with pytest.raises(ValueError, match="n_units=4"):
        LayerCodes(torch.zeros(2, 1, dtype=torch.int64), 4, (3,))
    assert RegionCodes({}).count_regions() == 0


# ---------------------------------------------------------------- files


def test_save_load_round_trip(cnn_codes, tmp_path):
    _, _, rc = cnn_codes
    path = tmp_path / "codes.pt"
    rc.save(path)
    assert os.listdir(tmp_path) == ["codes.pt"]  # no temporary file left behind
    if os.path.exists("/proc/self/status"):  # the mode open() would give, not mkstemp's 0600
        umask = os.umask(0o022)
        os.umask(umask)
        assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask
    loaded = RegionCodes.load(path)
    assert loaded.names == rc.names
    for name in rc:
        assert torch.equal(loaded[name].words, rc[name].words)
        assert loaded[name].unit_shape == rc[name].unit_shape and loaded[name].n_units == rc[name].n_units
    assert loaded.meta == rc.meta
    assert rc.meta["model"] == "CNN" and rc.meta["where"] == "pre" and rc.meta["n_samples"] == 100
    assert loaded.distance(rc) == 0.0
    rc.save(str(path))  # overwrite, str path
    assert RegionCodes.load(str(path)).names == rc.names


def test_load_rejects_a_flipped_byte_and_save_keeps_permissions(cnn_codes, tmp_path):
    """torch.load does not check the archive's CRCs: a byte flipped inside the words loaded
    as other codes. Overwriting a file reset its permissions to the umask's (0600 -> 0644)."""
    import os
    import zipfile

    _, _, rc = cnn_codes
    good = tmp_path / "good.pt"
    rc.save(good)
    os.chmod(good, 0o600)
    rc.save(good)
    assert os.stat(good).st_mode & 0o777 == 0o600
    data = bytearray(good.read_bytes())
    with zipfile.ZipFile(good) as archive:
        member = next(i for i in archive.infolist() if i.filename.endswith("data/0"))
    start = member.header_offset + 30 + len(member.filename.encode()) + len(member.extra)
    data[start + member.file_size // 2] ^= 0xFF
    (tmp_path / "flipped.pt").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"is truncated or corrupt \(ValueError: member '.*data/0' fails its CRC check\)"):
        RegionCodes.load(tmp_path / "flipped.pt")
    assert RegionCodes.load(good).names == rc.names


def test_load_rejects_truncated_and_foreign_files(cnn_codes, tmp_path):
    _, _, rc = cnn_codes
    good = tmp_path / "good.pt"
    rc.save(good)
    data = good.read_bytes()
    cases = {
        "half.pt": data[: len(data) // 2],
        "tiny.pt": data[:2],
        "empty.pt": b"",
        "text.txt": b"hello, these are not codes\n",
        "pickle.pkl": pickle.dumps({"format": "fastspline.RegionCodes"}),
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match="not a fastspline codes file|truncated or corrupt"):
            RegionCodes.load(tmp_path / name)
    torch.save({"state_dict": {"w": torch.zeros(3)}}, tmp_path / "model.pt")
    with pytest.raises(ValueError, match="not a fastspline RegionCodes file"):
        RegionCodes.load(tmp_path / "model.pt")
    torch.save({"format": "fastspline.RegionCodes", "version": 99, "meta": {}, "layers": []}, tmp_path / "future.pt")
    with pytest.raises(ValueError, match="format version 99"):
        RegionCodes.load(tmp_path / "future.pt")
    bad_layer = {"name": "a", "words": torch.zeros(2, 3, dtype=torch.int64), "n_units": 5, "unit_shape": [5]}
    torch.save({"format": "fastspline.RegionCodes", "version": 1, "meta": {}, "layers": [bad_layer]}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="layer 0 of .* is malformed"):
        RegionCodes.load(tmp_path / "bad.pt")
    with pytest.raises(FileNotFoundError):
        RegionCodes.load(tmp_path / "missing.pt")


def test_save_rejects_meta_that_load_could_not_read(cnn_codes, tmp_path):
    _, _, rc = cnn_codes
    odd = RegionCodes(dict(rc.items()), {**rc.meta, "model_object": nn.ReLU()})
    with pytest.raises(TypeError, match=r"meta\['model_object'\] is a ReLU"):
        odd.save(tmp_path / "odd.pt")
    assert os.listdir(tmp_path) == []


def test_functional_calls_on_parameters_are_ignored_when_the_batch_has_as_many_rows():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(5, 3))  # first dim 5 = the rows of each batch below
            self.alpha = nn.Parameter(torch.ones(1))  # first dim 1 = the rows of a last batch of one
            self.register_buffer("shift", torch.zeros(1, 5))

        def forward(self, x):
            return F.relu(x @ torch.relu(self.w).t()) * F.relu(self.alpha) + self.shift.relu()

    model, x = Net(), torch.randn(11, 3)
    with torch.no_grad():
        z = x @ torch.relu(model.w).t()
    expected = torch.from_numpy(np_pack(sign_bits(z)))
    for batch_size in (5, 11):  # 5, 5, 1 rows; then 11
        rc = fs.codes(model, x, progress=False, batch_size=batch_size)
        assert rc.names == [":relu[0]"]
        assert torch.equal(rc[":relu[0]"].words, expected)
    assert_clean(model)


def test_functional_calls_on_tensors_computed_from_parameters_are_ignored():
    """A relu of a tensor computed in forward from parameters and buffers only is no layer,
    even when its first dim equals a batch's rows: it was coded as one (and a last, shorter
    batch then failed with 'reached for 4 of 12 inputs')."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)
            self.p = nn.Parameter(torch.randn(4, 3))
            self.register_buffer("q", torch.randn(4, 3))

        def forward(self, x):
            gate = F.relu(torch.cat([self.p * 2.0, self.q]).chunk(2)[0] + 1)  # [4, 3], from constants
            h = F.relu(self.fc(x))
            shifted = self.q.clone()
            shifted.add_(x[:1])  # in place with data: no longer a constant (a layer when 4 rows)
            return h + gate.sum() + F.relu(shifted).sum()

    torch.manual_seed(0)
    model, x = Net(), torch.randn(12, 3)
    with torch.no_grad():
        expected = torch.from_numpy(np_pack(sign_bits(model.fc(x))))
    for batch_size in (4, 10, 14):  # 4, 4, 4 rows; 10, 2; 12
        rc = fs.codes(model, x, progress=False, batch_size=batch_size)
        names = [":relu[0]"] if batch_size != 4 else [":relu[0]", ":relu[1]"]  # calls counted: the coded ones
        assert rc.names == names, (batch_size, rc.names)
        assert torch.equal(rc[":relu[0]"].words, expected)
    assert_clean(model)


@pytest.mark.parametrize("fill", ["setitem", "through_a_view", "iadd_on_a_view", "out"])
def test_functional_call_on_a_constant_buffer_filled_with_data_in_forward_is_a_layer(fill):
    """torch.zeros(n, ...) filled with data in forward holds data: a relu of it is a layer. Item
    assignment (which returns None) and writes through a view (which return the view) left it
    marked as computed from constants, and the layer was silently left out."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.act, self.out = nn.Linear(4, 6), nn.ReLU(), nn.Linear(8, 3)

        def forward(self, x):
            z = self.act(self.fc(x))
            h = torch.zeros(x.shape[0], 8)  # no tensor argument: computed from constants only
            if fill == "setitem":
                h[:, :6] = z
            elif fill == "through_a_view":
                h.narrow(1, 0, 6).copy_(z)
            elif fill == "iadd_on_a_view":
                view = h[:, :6]
                view += z
            else:
                torch.add(z, 0.5, out=h[:, :6])
            h[:, 6:] = -1.0  # constants only: changes nothing
            return self.out(F.relu(h - 0.25))

    torch.manual_seed(0)
    model, x = Net(), torch.randn(7, 4)
    with torch.no_grad():
        z1 = model.fc(x)
        h = torch.zeros(7, 8)
        h[:, :6] = torch.relu(z1) + (0.5 if fill == "out" else 0.0)
        h[:, 6:] = -1.0
    rc = fs.codes(model, x, progress=False, batch_size=3)
    expected = {"act": z1, ":relu[0]": h - 0.25}
    assert_codes_equal(rc, {n: torch.from_numpy(np_pack(sign_bits(z))) for n, z in expected.items()}, 7)
    assert_clean(model)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_model_with_a_scripted_submodule():
    torch.manual_seed(0)
    model = nn.Sequential(torch.jit.script(nn.Linear(3, 4)), nn.ReLU(), nn.Linear(4, 2))
    model.train()
    x = torch.randn(6, 3)
    rc = fs.codes(model, x, progress=False)  # ScriptModules take no hooks: not tracked, not an error
    with torch.no_grad():
        assert torch.equal(rc["1"].words, torch.from_numpy(np_pack(sign_bits(model[0](x)))))
    assert all(m.training for m in model.modules())
    assert_clean(model)


def test_compiled_model_gives_the_codes_of_the_original():
    class Net(nn.Module):  # an nn.ReLU (whose forward calls F.relu) and a functional call
        def __init__(self):
            super().__init__()
            self.a, self.act, self.b = nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 5)

        def forward(self, x):
            return F.relu(self.b(self.act(self.a(x))))

    torch.manual_seed(0)
    model, x = Net(), torch.randn(9, 4)
    compiled = torch.compile(model, backend="eager")  # Dynamo alone, as under inductor for hooks and modes
    rc = fs.codes(compiled, x, progress=False, batch_size=4)  # was: ':relu[0]' changed shape between batches
    with torch.no_grad():
        z1 = model.a(x)
        z2 = model.b(torch.relu(z1))
    assert rc.names == ["_orig_mod.act", "_orig_mod:relu[0]"]
    assert torch.equal(rc["_orig_mod.act"].words, torch.from_numpy(np_pack(sign_bits(z1))))
    assert torch.equal(rc["_orig_mod:relu[0]"].words, torch.from_numpy(np_pack(sign_bits(z2))))
    assert_clean(model)


@pytest.mark.parametrize("how", ["compile_method", "compiled_child", "model_compile_method"])
def test_compiled_submodules_and_module_compile_run_uncompiled(how):
    # Dynamo traced codes()' hooks inside a child compiled with torch.compile(child) or
    # child.compile(), or a model compiled with model.compile(): from the second batch on it
    # failed with an internal AssertionError ("Guard failed on the same frame it was created").
    class Inner(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.act, self.b = nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 5)

        def forward(self, x):
            return F.relu(self.b(self.act(self.a(x))))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner, self.c = Inner(), nn.Linear(5, 3)

        def forward(self, x):
            return torch.relu(self.c(self.inner(x)))

    torch.manual_seed(0)
    model, x = Net(), torch.randn(9, 4)
    with torch.no_grad():
        z1 = model.inner.a(x)
        z2 = model.inner.b(torch.relu(z1))
        z3 = model.c(torch.relu(z2))
    graphs = []

    def backend(gm, example_inputs):  # Dynamo alone, counting the graphs it compiles
        graphs.append(gm)
        return gm.forward

    prefix = "inner"
    if how == "compile_method":
        model.inner.compile(backend=backend)
    elif how == "compiled_child":
        model.inner = torch.compile(model.inner, backend=backend)
        prefix = "inner._orig_mod"
    else:
        model.compile(backend=backend)
    rc = fs.codes(model, x, progress=False, batch_size=4)
    expected = {f"{prefix}.act": z1, f"{prefix}:relu[0]": z2, ":relu[0]": z3}
    assert_codes_equal(rc, {n: torch.from_numpy(np_pack(sign_bits(z))) for n, z in expected.items()}, 9)
    assert_clean(model)
    assert not graphs  # ran uncompiled
    with torch.no_grad():  # compiled again afterwards
        assert torch.allclose(model(x), model.c(torch.relu(z2)).relu())
    assert graphs


def test_unit_major_per_channel_of_a_layer_without_channels():
    # LayerCodes accepts 0 channels; the [C, P * ceil(N/64)] reshape must not guess -1 from 0 elements.
    for n in (0, 5):
        rc = RegionCodes({"a": LayerCodes(torch.zeros(n, 0, dtype=torch.int64), 0, (0, 4, 4))})
        assert rc.unit_major("a").shape == (0, 16 * ((n + 63) // 64))
        assert rc.unit_major("a", per_channel=False).shape == (0, (n + 63) // 64)


def test_load_rejects_malformed_layer_entries(tmp_path):
    good = {"name": "a", "words": torch.zeros(3, 2, dtype=torch.int64), "n_units": 70, "unit_shape": [70]}
    cases = {
        "duplicate name": [good, {**good, "words": torch.ones(3, 2, dtype=torch.int64)}],  # was: one layer dropped
        "name not a str": [{**good, "name": 5}],
        "negative dims": [{**good, "n_units": 6, "unit_shape": [-2, -3], "words": torch.zeros(3, 1, dtype=torch.int64)}],
        "entry a tensor": [torch.zeros(3)],  # was: IndexError
        "n_units a str": [{**good, "n_units": "70"}],  # was: coerced to 70
        "unit_shape of floats": [{**good, "unit_shape": [70.5]}],  # was: truncated to 70
    }
    for case, entries in cases.items():
        path = tmp_path / "bad.pt"
        torch.save({"format": "fastspline.RegionCodes", "version": 1, "meta": {}, "layers": entries}, path)
        with pytest.raises(ValueError, match="layer [01] of .* is malformed"):
            RegionCodes.load(path)
            pytest.fail(case)
    with pytest.raises(ValueError, match="non-negative"):
        LayerCodes(torch.zeros(3, 1, dtype=torch.int64), 6, (-2, -3))
    with pytest.raises(TypeError, match="must be integers"):
        LayerCodes(torch.zeros(3, 1, dtype=torch.int64), 3.0, (3,))
    layer = LayerCodes(torch.zeros(3, 1, dtype=torch.int64), np.int64(3), (torch.tensor(3),))
    assert type(layer.n_units) is int and type(layer.unit_shape[0]) is int
    # Pad bits set past the last unit would count as differing units and regions.
    for bad in (1 << 6, -(2**63)):  # bit 70 of a 70-unit code; bit 127, the sign bit
        words = torch.tensor([[0, 0], [5, bad]], dtype=torch.int64)
        RegionCodes({"a": LayerCodes(words, 70, (70,))}).save(tmp_path / "pad.pt")
        with pytest.raises(ValueError, match="pad bits past unit 70 are set"):
            RegionCodes.load(tmp_path / "pad.pt")
    words = torch.tensor([[0, 0], [5, (1 << 6) - 1]], dtype=torch.int64)  # units 64..69: not pad
    RegionCodes({"a": LayerCodes(words, 70, (70,))}).save(tmp_path / "ok.pt")
    assert torch.equal(RegionCodes.load(tmp_path / "ok.pt")["a"].words, words)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch.load reading the damaged bytes
def test_load_of_a_damaged_file_raises_value_error(tmp_path):
    """Single flipped bytes make torch.load raise TypeError, IndexError, AssertionError, ...:
    each must reach the caller as the documented ValueError naming the file (or load)."""
    words = torch.tensor([[1, 2], [3, 36]], dtype=torch.int64)
    good = tmp_path / "good.pt"
    RegionCodes({"a": LayerCodes(words, 70, (70,))}, {"note": "x"}).save(good)
    raw = good.read_bytes()
    bad = tmp_path / "bad.pt"
    others = []
    for i in range(4, len(raw)):  # past the zip magic, which load checks itself
        for flip in (0x01, 0x80):
            bad.write_bytes(raw[:i] + bytes([raw[i] ^ flip]) + raw[i + 1 :])
            try:
                RegionCodes.load(bad)
            except ValueError:
                pass
            except Exception as exc:  # noqa: BLE001 - what the test looks for
                others.append((i, flip, type(exc).__name__))
    assert not others, others[:10]


class _NaNWhereHuge(nn.Module):
    def forward(self, x):
        return torch.where(x > 1e6, math.nan, x)


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_nan_error_names_the_first_layer_with_nan_on_every_backend(backend):
    # cpu flags come from the packing read; the reference's are device tensors checked at once.
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), _NaNWhereHuge(), nn.ReLU(), nn.Linear(6, 2))
    x = torch.randn(9, 4, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"codes: layer '3' has NaN activations for inputs 4\.\.7"):
        fs.codes(model, [x[:4], x[4:8] * 1e9, x[8:]], progress=False, backend=backend)
    assert_clean(model)


_EDGE_VALUES = [-math.inf, -3.0, -1e-45, -0.0, 0.0, 1e-45, 2.5, 7.0, math.inf]


def _edge_inputs(shape: tuple[int, int], dtype: torch.dtype, seed: int) -> torch.Tensor:
    """Random picks of _EDGE_VALUES (in dtype: 1e-45 is 0 below float32)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.tensor(_EDGE_VALUES, dtype=torch.float64)[torch.randint(len(_EDGE_VALUES), shape, generator=gen)].to(dtype)


@pytest.mark.parametrize(
    "act, keeps",
    [
        (nn.ReLU(), True), (nn.ReLU(inplace=True), True), (nn.ReLU6(), True), (nn.ReLU6(inplace=True), True),
        (nn.LeakyReLU(0.1), True), (nn.LeakyReLU(2.0**-14, inplace=True), True), (nn.LeakyReLU(2.0**14), True),
        (nn.Hardtanh(), True), (nn.Hardtanh(0.0, 2.0), True), (nn.Hardtanh(-1.0, 2.0**-14), True),
        # packed from the input: 0 * -inf is NaN, a negative slope flips signs, min_val > 0 lifts them,
        # a slope or max_val that rounds to 0 (or a slope to inf) in a small dtype
        (nn.LeakyReLU(0.0), False), (nn.LeakyReLU(-0.5), False), (nn.Hardtanh(0.5, 2.0), False),
        (nn.Hardtanh(-2.0, -1.0), False), (nn.PReLU(), False), (nn.LeakyReLU(1e-50), False),
        (nn.LeakyReLU(1e-30, inplace=True), False), (nn.LeakyReLU(1e30), False), (nn.Hardtanh(-1.0, 1e-8), False),
        (nn.Hardtanh(-1.0, 1e-50), False),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_activation_packed_after_it_ran_has_the_code_of_its_input(act, keeps, dtype):
    # codes() packs a sign-keeping activation's output after it ran; the bits must be
    # those of its input, for every float (-0.0, subnormals, +-inf) and in-place forms.
    from fastspline.codes import _keeps_sign

    assert _keeps_sign(act) is keeps
    model = nn.Sequential(nn.Identity(), copy.deepcopy(act)).to(dtype)
    x = _edge_inputs((37, 70), dtype, seed=3)
    rc = fs.codes(model, x, progress=False, batch_size=16)
    assert rc.names == ["1"]
    assert torch.equal(rc["1"].words, torch.from_numpy(np_pack(sign_bits(x.float()))))
    assert_clean(model)
    if keeps:  # a NaN input is still found (the activations keep NaN)
        x[5, 3] = math.nan
        with pytest.raises(ValueError, match=r"layer '1' has NaN activations for inputs 0\.\.15"):
            fs.codes(model, x, progress=False, batch_size=16)


class _CallsOnEdgeValues(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x.clone())


@pytest.mark.parametrize(
    "fn",
    [
        torch.relu, torch.relu_, F.relu, F.relu_, lambda t: F.relu(t, inplace=True), lambda t: t.relu(),
        lambda t: t.relu_(), F.relu6, lambda t: F.relu6(t, inplace=True),
        # packed from the input: their arguments decide the sign
        lambda t: F.leaky_relu(t, 0.0), lambda t: F.hardtanh(t, 0.5, 2.0),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_functional_call_packed_after_it_ran_has_the_code_of_its_input(fn, dtype):
    model = _CallsOnEdgeValues(fn)
    x = _edge_inputs((21, 67), dtype, seed=4)
    rc = fs.codes(model, x, progress=False, batch_size=8)
    assert rc.names == [":relu[0]"]
    assert torch.equal(rc[":relu[0]"].words, torch.from_numpy(np_pack(sign_bits(x.float()))))
    assert_clean(model)


def _hooked_relu_model(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 70), nn.ReLU(), nn.Linear(70, 3))


def _input_code(model: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.from_numpy(np_pack(sign_bits(model[0](x))))


def test_forward_hooks_that_change_an_activation_output_do_not_change_its_code():
    # The code is the sign of the activation's input, whatever hooks do to its output.
    x = torch.randn(20, 8, generator=torch.Generator().manual_seed(1))
    model = _hooked_relu_model()
    mask = (torch.arange(70) % 2).float()
    handle = model[1].register_forward_hook(lambda m, args, out: out * mask)  # e.g. activation patching
    try:
        assert torch.equal(fs.codes(model, x, progress=False)["1"].words, _input_code(model, x))
    finally:
        handle.remove()
    handle = torch.nn.modules.module.register_module_forward_hook(lambda m, args, out: out * 0 if m is model[1] else None)
    try:
        assert torch.equal(fs.codes(model, x, progress=False)["1"].words, _input_code(model, x))
    finally:
        handle.remove()
    assert_clean(model)


def test_a_hook_on_an_activation_that_calls_another_coded_module_keeps_the_layer_order():
    model = _hooked_relu_model()
    aux = nn.PReLU()
    model.add_module("aux", aux)
    model[1].register_forward_hook(lambda m, args, out: (aux(out), None)[1])  # a monitoring hook
    x = torch.randn(6, 8)
    assert fs.codes(model, x, progress=False).names == ["1", "aux", "aux#1"]


class _ShiftsItsActivation(nn.Module):
    """Changes its LeakyReLU's slope to a negative one during forward."""

    def __init__(self) -> None:
        super().__init__()
        self.lin, self.act = nn.Linear(8, 70), nn.LeakyReLU(0.1)

    def forward(self, x):
        self.act.negative_slope = -0.5
        try:
            return self.act(self.lin(x))
        finally:
            self.act.negative_slope = 0.1


def test_activations_changed_on_the_instance_or_during_forward_are_coded_from_their_input():
    x = torch.randn(20, 8, generator=torch.Generator().manual_seed(2))
    model = _hooked_relu_model()
    model[1].forward = lambda t: F.relu(t - 0.3)  # forward replaced on the instance
    assert torch.equal(fs.codes(model, x, progress=False)["1"].words, _input_code(model, x))
    shifting = _ShiftsItsActivation()
    with torch.no_grad():
        expected = torch.from_numpy(np_pack(sign_bits(shifting.lin(x))))
    assert torch.equal(fs.codes(shifting, x, progress=False)["act"].words, expected)


class _ChangesItsReluMidPass(nn.Module):
    """Replaces its ReLU's forward, or registers a global forward hook, inside its own forward:
    after codes() hooked the ReLU's output alone (a plain ReLU keeps signs)."""

    def __init__(self, change: str) -> None:
        super().__init__()
        self.lin, self.act, self.change = nn.Linear(8, 70), nn.ReLU(inplace=True), change
        self.handle = None

    def forward(self, x):
        if self.change == "forward":
            self.act.forward = lambda t: torch.relu(t - 0.3)
        else:
            self.handle = torch.nn.modules.module.register_module_forward_hook(lambda m, args, out: None)
        try:
            return self.act(self.lin(x))
        finally:
            if self.change == "forward":
                del self.act.forward
            else:
                self.handle.remove()


@pytest.mark.parametrize("change", ["forward", "global hook"])
def test_a_relu_changed_during_the_pass_is_an_error_not_a_wrong_code(change):
    model = _ChangesItsReluMidPass(change)
    x = torch.randn(6, 8)
    with pytest.raises(RuntimeError, match="codes: layer 'act': its forward was replaced, or a global forward hook registered"):
        fs.codes(model, x, progress=False)
    assert_clean(model)
    assert model.training


class _ZeroesRelu(torch.overrides.TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        return out * 0 if func is torch.relu else out


def test_functional_relu_under_an_outer_function_mode_is_coded_from_its_input():
    model = _CallsOnEdgeValues(torch.relu)
    x = torch.randn(9, 70, generator=torch.Generator().manual_seed(3))
    with _ZeroesRelu():
        rc = fs.codes(model, x, progress=False)
    assert torch.equal(rc[":relu[0]"].words, torch.from_numpy(np_pack(sign_bits(x))))


def test_a_train_method_replaced_on_the_instance_is_honoured():
    # The "disabled train" idiom: model.eval() cannot switch this BatchNorm to eval mode.
    seer = _SeesModes()
    bn = nn.BatchNorm1d(6)
    bn.train = lambda mode=True: bn
    model = nn.Sequential(nn.Linear(4, 6), bn, nn.ReLU(), seer)
    seer.root.append(model)
    model.train()
    fs.codes(model, torch.randn(10, 4), progress=False, batch_size=5)
    assert seer.seen == [[False, False, True, False, False]] * 2  # as model.eval() leaves them
    assert all(m.training for m in model.modules())


class _UnsqueezesItsInput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.relu = nn.ReLU()

    def forward(self, x):
        x.unsqueeze_(1)  # in place on the batch tensor it was given
        return self.relu(self.fc(x.squeeze(1)))


@pytest.mark.parametrize("rows, batch_size", [(8, 256), (8, 8), (8, 3)])
def test_a_forward_reshaping_its_input_in_place_leaves_the_data_alone(rows, batch_size):
    """Batches of a data tensor are views, also when the tensor fits one batch: a forward that
    changes its input's shape in place changes the view, not the caller's tensor."""
    x = torch.randn(rows, 3, generator=torch.Generator().manual_seed(0))
    model = _UnsqueezesItsInput()
    first = fs.codes(model, x, progress=False, batch_size=batch_size)
    assert x.shape == (rows, 3)
    second = fs.codes(model, x, progress=False, batch_size=batch_size)
    assert x.shape == (rows, 3) and torch.equal(first["relu"].words, second["relu"].words)
