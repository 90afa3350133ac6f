"""fastspline.models: every model builds at its input sizes, rebuilds from a
pruned width list, round-trips through its config, and initialises as the
paper's official code."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fastspline import models
from fastspline.codes import codes


pytestmark = pytest.mark.usefixtures("one_thread")

# (factory, input shape of one sample); widths kept small so the suite stays fast.
CASES = {
    "vgg11-cifar": (lambda: models.vgg("vgg11", 3, 10, 32, width=0.125), (3, 32, 32)),
    "vgg16-cifar100": (lambda: models.vgg("vgg16", 3, 100, 32, width=0.0625), (3, 32, 32)),
    "vgg11-mnist": (lambda: models.vgg("vgg11", 1, 10, 28, width=0.125), (1, 28, 28)),
    "vgg11-digits": (lambda: models.vgg("vgg11", 1, 10, 8, width=0.125), (1, 8, 8)),
    "vgg-small-digits": (lambda: models.vgg("vgg-small", 1, 10, 8, width=0.25), (1, 8, 8)),
    "preresnet20-cifar": (lambda: models.preresnet(20, 3, 10, 32, width=0.5), (3, 32, 32)),
    "preresnet56-mnist": (lambda: models.preresnet(56, 1, 10, 28, width=0.25), (1, 28, 28)),
    "preresnet101-digits": (lambda: models.preresnet(101, 1, 10, 8, width=0.25), (1, 8, 8)),
    "mlp-mnist1d": (lambda: models.mlp([40, 32, 16, 10]), (1, 40)),
    "mlp-toy": (lambda: models.mlp([2, 20, 2], batch_norm=False), (2,)),
    "cnn1d-mnist1d": (lambda: models.cnn1d(width=0.25), (1, 40)),
}


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("case", list(CASES))
def test_builds_runs_and_rebuilds_smaller(case: str) -> None:
    factory, shape = CASES[case]
    torch.manual_seed(0)
    model = factory()
    classes = model.config().get("num_classes", model.config().get("sizes", [0])[-1])
    x = torch.randn(3, *shape)
    assert model(x).shape == (3, classes)

    widths = model.widths()
    assert len(widths) == len(model.width_layers())
    pruned = [max(1, w // 2) for w in widths]
    small = model.rebuild(pruned)
    assert type(small) is type(model)
    assert small.widths() == pruned
    assert small(x).shape == (3, classes)
    assert _n_params(small) < _n_params(model)
    assert small.rebuild(widths).widths() == widths  # and back up

    # config() is JSON-able and rebuilds the same architecture.
    again = models.build(model.config())
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


@pytest.mark.parametrize("case", ["vgg11-digits", "preresnet20-cifar", "mlp-mnist1d", "cnn1d-mnist1d"])
def test_width_layers_are_the_coded_layers(case: str) -> None:
    factory, shape = CASES[case]
    model = factory()
    found = codes(model, torch.randn(4, *shape), progress=False)
    layers = model.width_layers()
    assert found.names == [layer.activation for layer in layers]
    named = dict(model.named_modules())
    for layer, width in zip(layers, model.widths()):
        assert found[layer.activation].unit_shape[0] == width  # one code unit per channel / neuron
        assert isinstance(named[layer.norm], nn.modules.batchnorm._BatchNorm)
        if layer.producer is not None:
            producer = named[layer.producer]
            assert (producer.out_channels if hasattr(producer, "out_channels") else producer.out_features) == width


def test_paper_initialisation() -> None:
    torch.manual_seed(0)
    model = models.vgg("vgg11", 3, 10, 32, width=0.5)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            assert torch.all(module.weight == 0.5) and torch.all(module.bias == 0)
    conv = model.features.conv2  # 128 outputs (256 x 0.5), 3x3
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (9 * 128)), rel=0.05)
    assert model.classifier.weight.std().item() == pytest.approx(0.01, rel=0.2)
    assert torch.all(model.classifier.bias == 0)


def test_vgg_leaves_out_pools_past_one_pixel() -> None:
    digits = models.vgg("vgg11", 1, 10, 8, width=0.125)
    cifar = models.vgg("vgg11", 3, 10, 32, width=0.125)
    pools = lambda m: sum(isinstance(x, nn.MaxPool2d) for x in m.modules())  # noqa: E731
    assert pools(cifar) == 4 and pools(digits) == 3
    assert digits.cfg.count("M") == 3
    assert models.vgg("vgg-small", 1, 10, 8).widths() == [64, 64, 128, 128]


def test_preresnet_selects_and_default_widths() -> None:
    assert models.default_preresnet_widths(20)[:6] == [16, 16, 16, 64, 16, 16]
    assert len(models.default_preresnet_widths(101)) == 9 * 11 + 1
    model = models.preresnet(20, 3, 10, 32)
    widths = model.widths()
    widths[3] = 40  # block 1 reads 40 of its 64 input channels
    small = model.rebuild(widths)
    block = small.layer1[1]
    assert block.select.indices.tolist() == list(range(40)) and block.conv1.in_channels == 40
    # A pruner writes the kept channels into the buffer: the block reads exactly those.
    block.select.indices = torch.arange(24, 64)
    x = torch.randn(2, 64, 4, 4)
    assert torch.equal(block.select(x), x[:, 24:])


def test_channel_select_keeping_every_channel_follows_the_indices() -> None:
    """All C channels kept skips the copy only while the indices are arange(C): a loaded or
    edited permutation was ignored."""
    select = models.ChannelSelect(4, 4)
    x = torch.arange(8.0).reshape(1, 4, 2)
    assert select(x) is x
    select.indices.copy_(torch.tensor([3, 2, 1, 0]))
    assert torch.equal(select(x), x[:, [3, 2, 1, 0]])
    select.load_state_dict({"indices": torch.arange(4)})
    assert select(x) is x
    select.load_state_dict({"indices": torch.tensor([1, 0, 2, 3])})
    assert torch.equal(select(x), x[:, [1, 0, 2, 3]])


def test_create_by_name() -> None:
    assert isinstance(models.create("vgg16", (3, 32, 32), 100, width=0.0625), models.VGG)
    assert models.create("preresnet56", (1, 8, 8), 10).depth == 56
    assert models.create("mlp", (1, 8, 8), 10, hidden=(32,)).widths() == [32]
    assert models.create("cnn1d", (40,), 10, width=0.25).config()["length"] == 40
    with pytest.raises(ValueError, match="unknown model"):
        models.create("resnet18", (3, 32, 32), 10)
    with pytest.raises(ValueError, match="image inputs"):
        models.create("vgg11", (1, 40), 10)


def test_invalid_arguments_name_the_argument() -> None:
    with pytest.raises(ValueError, match="cfg must be one of"):
        models.vgg("vgg12")
    with pytest.raises(ValueError, match="width"):
        models.vgg("vgg11", width=-1)
    with pytest.raises(ValueError, match=r"cfg\[1\]"):
        models.VGG([8, "X"], 1, 10, 8)
    with pytest.raises(ValueError, match="depth must be 9n"):
        models.preresnet(21)
    with pytest.raises(TypeError, match="depth"):
        models.preresnet("20")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sizes"):
        models.mlp([5])
    with pytest.raises(ValueError, match="input_size"):
        models.vgg("vgg11", input_size=(8, 8, 8))  # type: ignore[arg-type]
    model = models.mlp([4, 8, 3])
    with pytest.raises(ValueError, match="1 entries"):
        model.rebuild([4, 4])
    with pytest.raises(ValueError, match=r"widths\[0\] must be >= 1"):
        model.rebuild([0])
    with pytest.raises(TypeError, match=r"widths\[0\] must be an int"):
        model.rebuild([2.5])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="selects"):
        models.PreResNet(20, [65] + models.default_preresnet_widths(20)[1:])
    with pytest.raises(TypeError, match=r"preresnet: widths\[0\] must be an int, got float 3.7"):
        models.PreResNet(20, [3.7] + models.default_preresnet_widths(20)[1:])  # was truncated to 3
    with pytest.raises(ValueError, match=r"preresnet: widths\[1\] must be >= 1, got 0"):
        models.PreResNet(20, [16, 0] + models.default_preresnet_widths(20)[2:])
    with pytest.raises(ValueError, match="arch"):
        models.build({"arch": "alexnet"})


def test_create_checks_width_and_hidden_of_every_model() -> None:
    # An MLP's width and hidden sizes were not checked: 0 or negative became 1-unit layers.
    for width in (0, -1, math.nan):
        with pytest.raises(ValueError, match="create: width must be a positive number"):
            models.create("mlp", (2,), 2, width=width)
    for hidden in ((0,), (8, -3), (2.5,)):
        with pytest.raises(ValueError, match="create: hidden must be a sequence of ints >= 1"):
            models.create("mlp", (2,), 2, hidden=hidden)
    # An infinite width overflowed in round() with no name.
    for name, shape in (("mlp", (2,)), ("vgg-small", (1, 8, 8)), ("cnn1d", (40,)), ("preresnet20", (1, 8, 8))):
        with pytest.raises(ValueError, match="width must be finite, got inf"):
            models.create(name, shape, 2, width=math.inf)
    assert models.create("mlp", (2,), 2, hidden=(3, 5), width=2).widths() == [6, 10]
