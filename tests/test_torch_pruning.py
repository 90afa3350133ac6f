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
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10),
    )  # fmt: skip
    x = _probe()
    pruning.recalibrate_bn(model, x)
    model.eval()
    with torch.no_grad():  # channel 5 = 0.5 x channel 2 after the BatchNorm
        conv, bn = model[0], model[1]
        conv.weight[5] = conv.weight[2]
        bn.running_mean[5], bn.running_var[5] = bn.running_mean[2], bn.running_var[2]
        bn.weight[5], bn.bias[5] = 0.5 * bn.weight[2], 0.5 * bn.bias[2]
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
