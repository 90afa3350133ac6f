"""fastspline.integrations.torch_pruning: the spline score inside Torch-Pruning's physical pruning."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

tp = pytest.importorskip("torch_pruning")

from fastspline import pruning  # noqa: E402
from fastspline.integrations.torch_pruning import SplineImportance  # noqa: E402


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock (functional ReLU, residual add, 1x1 downsample)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class TinyResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = nn.Sequential(BasicBlock(16, 16), BasicBlock(16, 16))
        self.layer2 = nn.Sequential(BasicBlock(16, 32, 2), BasicBlock(32, 32))
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def _probe(n: int = 32) -> torch.Tensor:
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("global_pruning", [False, True])
def test_resnet_prunes_physically_through_torch_pruning(global_pruning: bool) -> None:
    torch.manual_seed(0)
    model, x = TinyResNet(), _probe()
    pruning.recalibrate_bn(model, x)
    model.eval()
    params = sum(p.numel() for p in model.parameters())
    pruner = tp.pruner.MetaPruner(
        model, example_inputs=x[:1], importance=SplineImportance(model, x), pruning_ratio=0.5,
        global_pruning=global_pruning, ignored_layers=[model.fc],
    )  # fmt: skip
    pruner.step()
    assert sum(p.numel() for p in model.parameters()) < 0.6 * params
    assert model.layer1[0].conv1.out_channels < 16 and model.layer2[0].conv1.out_channels < 32
    # The residual stream (coupled through the adds) is pruned as one group.
    assert model.conv1.out_channels == model.layer1[1].conv2.out_channels
    pruning.recalibrate_bn(model, x)
    out = model(x)
    assert out.shape == (32, 10) and torch.isfinite(out).all()


def test_duplicate_channel_scores_lowest() -> None:
    model, x = _duplicate_model()
    _make_duplicate(model)
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=x[:1])
    group = graph.get_pruning_group(model[0], tp.prune_conv_out_channels, idxs=list(range(8)))
    scores = SplineImportance(model, x)(group)
    assert scores.shape == (8,)
    assert int(scores.argmin()) == 5 and float(scores[5]) < 1e-3 < float(scores.sort().values[1])
    # Physically: one channel of eight goes, and it is the duplicate.
    gammas = model[1].weight.detach().clone()
    pruner = tp.pruner.MetaPruner(
        model, example_inputs=x[:1], importance=SplineImportance(model, x),
        pruning_ratio_dict={model[0]: 1 / 8}, pruning_ratio=0.0, ignored_layers=[model[8]],
    )  # fmt: skip
    pruner.step()
    assert model[0].out_channels == 7
    kept = [c for c in range(8) if bool((model[1].weight.detach() == gammas[c]).any())]
    assert kept == [0, 1, 2, 3, 4, 6, 7]


def test_bad_arguments() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        SplineImportance("model", torch.zeros(2, 4))
    with pytest.raises(ValueError, match="probe is None"):
        SplineImportance(model, None)
    with pytest.raises(ValueError, match="neighbours must be an int >= 1"):
        SplineImportance(model, torch.zeros(2, 4), neighbours=0)


def test_batchnorm_without_affine() -> None:
    # An affine-free BatchNorm has no weight: its |gamma| (1 for every channel) was read as None.weight.
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8, affine=False), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 4),
    ).eval()  # fmt: skip
    x = _probe(16)
    pruner = tp.pruner.MetaPruner(
        model, example_inputs=x[:1], importance=SplineImportance(model, x), pruning_ratio=0.5, ignored_layers=[model[6]]
    )
    pruner.step()
    assert model[0].out_channels == model[1].num_features == 4 and model[3].out_channels == 4
    assert model(x).shape == (16, 4)


def _duplicate_model() -> tuple[nn.Sequential, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10),
    )  # fmt: skip
    x = _probe()
    pruning.recalibrate_bn(model, x)
    return model.eval(), x


def _make_duplicate(model: nn.Sequential) -> None:
    with torch.no_grad():  # channel 5 = 0.5 x channel 2 after the BatchNorm
        conv, bn = model[0], model[1]
        conv.weight[5] = conv.weight[2]
        bn.running_mean[5], bn.running_var[5] = bn.running_mean[2], bn.running_var[2]
        bn.weight[5], bn.bias[5] = 0.5 * bn.weight[2], 0.5 * bn.bias[2]


def test_an_x_y_pair_probe_is_its_inputs() -> None:
    # An (x, y) pair was iterated as two batches: y (labels) went through the model.
    model, x = _duplicate_model()
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=x[:1])
    group = graph.get_pruning_group(model[0], tp.prune_conv_out_channels, idxs=list(range(8)))
    expected = SplineImportance(model, x)(group)
    assert torch.equal(SplineImportance(model, (x, torch.zeros(len(x), dtype=torch.long)))(group), expected)


def test_scores_follow_weight_changes() -> None:
    # The codes were cached until a parameter's shape changed: after training (or any
    # in-place change of the weights or BatchNorm statistics) the scores were stale.
    model, x = _duplicate_model()
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=x[:1])
    group = graph.get_pruning_group(model[0], tp.prune_conv_out_channels, idxs=list(range(8)))
    importance = SplineImportance(model, x)
    before = importance(group)
    assert float(before.min()) > 1e-3  # no redundant channel yet
    _make_duplicate(model)
    after = importance(group)
    assert torch.equal(after, SplineImportance(model, x)(group))
    assert int(after.argmin()) == 5 and float(after[5]) < 1e-3


class TokenMLP(nn.Module):
    """Linear layers over tokens: x [N, T, features], the channels in the last dim."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


@pytest.mark.parametrize("tokens", [16, 5, 1])
def test_linear_channels_are_the_last_dim(tokens: int) -> None:
    # The first dim of a linear output [T, 8] was taken as its channels: wrong scores
    # with 8 or more tokens, an IndexError with fewer.
    torch.manual_seed(0)
    model = TokenMLP().eval()
    x = torch.randn(16, tokens, 4, generator=torch.Generator().manual_seed(1))
    flat = x.transpose(0, 1).reshape(-1, 4)  # every (token, input) as one input: the same bits per channel

    def scores(probe: torch.Tensor) -> torch.Tensor:
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=probe[:1])
        group = graph.get_pruning_group(model.fc1, tp.prune_linear_out_channels, idxs=list(range(8)))
        return SplineImportance(model, probe)(group)

    assert torch.equal(scores(x), scores(flat))
    pruner = tp.pruner.MetaPruner(
        model, example_inputs=x[:1], importance=SplineImportance(model, x), pruning_ratio=0.5, ignored_layers=[model.fc2]
    )
    pruner.step()
    assert model.fc1.out_features == 4 and model(x).shape == (16, tokens, 3)


@pytest.mark.parametrize("groups", [1, 2])
def test_transposed_conv_filter_norms(groups: int) -> None:
    # Without a BatchNorm the filters' norms rank a pair: a transposed conv's weight is
    # [in, out / groups, *k], and its dim 0 (input channels) was read as the output channels.
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.ConvTranspose2d(4, 12, 2, stride=2, groups=groups), nn.ReLU(),
        nn.Conv2d(12, 2, 3, padding=1),
    ).eval()  # fmt: skip
    up = model[2]
    with torch.no_grad():  # output channel 5 = 0.5 x channel 2 (the same group): the same codes, the smaller filter
        up.weight[:, 5] = 0.5 * up.weight[:, 2]
        up.bias[5] = 0.5 * up.bias[2]
    x = _probe(16)
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=x[:1])
    group = graph.get_pruning_group(up, tp.prune_conv_out_channels, idxs=list(range(12)))
    scores = SplineImportance(model, x)(group)
    assert int(scores.argmin()) == 5 and float(scores[5]) < 1e-3 < float(scores[2])
    if groups == 1:  # (Torch-Pruning 1.6 itself cannot slice a grouped transposed conv)
        pruner = tp.pruner.MetaPruner(
            model, example_inputs=x[:1], importance=SplineImportance(model, x), pruning_ratio=0.5, ignored_layers=[model[4]]
        )
        pruner.step()
        assert up.out_channels == 6 and model(x).shape == (16, 2, 16, 16)


def test_a_generator_probe_serves_every_step() -> None:
    # A generator was read once: the codes made again after the first pruning step found it empty.
    def pruned(probe: object) -> nn.Sequential:
        model, x = _duplicate_model()
        pruner = tp.pruner.MetaPruner(
            model, example_inputs=x[:1], importance=SplineImportance(model, probe), pruning_ratio=0.5,
            iterative_steps=2, ignored_layers=[model[8]],
        )  # fmt: skip
        pruner.step()
        pruner.step()
        return model

    x = _probe()
    got, want = pruned(x[i : i + 8] for i in range(0, len(x), 8)), pruned(x)
    assert got[0].out_channels == want[0].out_channels == 4
    assert all(torch.equal(p, q) for p, q in zip(got.parameters(), want.parameters()))


class ConstantBranch(nn.Module):
    """TokenMLP plus a linear layer over a parameter (no batch dim), done as a module or functionally."""

    def __init__(self, functional: bool) -> None:
        super().__init__()
        self.functional = functional
        self.pos = nn.Parameter(torch.randn(5, 4))
        self.proj = nn.Linear(4, 4)
        self.fc1 = nn.Linear(4, 8)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pos = F.linear(self.pos, self.proj.weight, self.proj.bias) if self.functional else self.proj(self.pos)
        return self.fc2(torch.relu(self.fc1(x + pos)))


def test_a_layer_without_batch_dim_outside_the_group() -> None:
    # Every layer was coded in one pass, which refused `proj` (its output has no batch dim):
    # no group could be scored, not even fc1's.
    x = torch.randn(16, 5, 4, generator=torch.Generator().manual_seed(1))

    def scores(functional: bool) -> torch.Tensor:
        torch.manual_seed(0)
        model = ConstantBranch(functional).eval()
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=x[:1])
        group = graph.get_pruning_group(model.fc1, tp.prune_linear_out_channels, idxs=list(range(8)))
        return SplineImportance(model, x)(group)

    assert torch.equal(scores(False), scores(True))


class SharedTrunk(nn.Module):
    """One conv + BatchNorm applied to the top and the bottom half of the input, in either order."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(16, 3)
        self.bottom_first = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        halves = [x[:, :, :4], x[:, :, 4:]]
        a, b = (F.relu(self.bn(self.conv(h))).mean((2, 3)) for h in (halves[::-1] if self.bottom_first else halves))
        return self.fc(torch.cat([a, b], 1))


def test_a_shared_module_is_coded_over_every_call() -> None:
    # Only the first call of a module was coded: with the top halves all zero, every
    # channel had the same code there and all but one scored as duplicates.
    torch.manual_seed(0)
    model = SharedTrunk().eval()
    x = _probe(16)
    x[:, :, :4] = 0
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=x[:1])
    group = graph.get_pruning_group(model.conv, tp.prune_conv_out_channels, idxs=list(range(8)))
    scores = SplineImportance(model, x)(group)
    assert float(scores.min()) > 0.05
    model.bottom_first = True  # the same bits, in another order: the same scores
    assert torch.equal(SplineImportance(model, x)(group), scores)
