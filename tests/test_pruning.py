"""fastspline.pruning: exactness of merges, slim == mask, plan properties on every model, bad inputs."""
from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from fastspline import models, pruning
from fastspline.train import count_flops


def _digits_like(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def _sequence(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 40, generator=torch.Generator().manual_seed(seed))


# Small instances of every model family, with probe inputs of their shape.
MODELS = {
    "vgg-small": (lambda: models.vgg("vgg-small", 1, 10, 8, width=0.125), _digits_like),
    "vgg11": (lambda: models.vgg("vgg11", 1, 10, 8, width=0.0625), _digits_like),
    "preresnet20": (lambda: models.preresnet(20, 1, 10, 8, width=0.25), _digits_like),
    "mlp": (lambda: models.mlp([40, 24, 16, 10]), _sequence),
    "mlp-nobn": (lambda: models.mlp([40, 24, 16, 10], batch_norm=False), _sequence),
    "cnn1d": (lambda: models.cnn1d(width=0.25), _sequence),
}


def _model(name: str, n: int = 32, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """A model whose BatchNorm statistics fit the probe (so no unit is dead), in eval mode."""
    build, inputs = MODELS[name]
    torch.manual_seed(seed)
    model = build()
    x = inputs(n, seed)
    pruning.recalibrate_bn(model, x)
    return model.eval(), x


def _outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    was = model.training
    model.eval()
    with torch.no_grad():
        out = model(x)
    model.train(was)
    return out


@torch.no_grad()
def _duplicate(model: nn.Module, layer: int, source: int, copy_to: int, scale: float) -> None:
    """Make unit ``copy_to`` of width layer ``layer`` compute ``scale`` x unit ``source``'s
    pre-activation (so its post-activation is ``scale`` x the source's for scale > 0)."""
    spec = model.width_layers()[layer]
    named = dict(model.named_modules())
    producer, norm = named[spec.producer], named[spec.norm] if spec.norm else None
    producer.weight[copy_to] = producer.weight[source]
    if norm is None:
        producer.weight[copy_to] *= scale
        producer.bias[copy_to] = scale * producer.bias[source]
        return
    norm.running_mean[copy_to] = norm.running_mean[source]
    norm.running_var[copy_to] = norm.running_var[source]
    norm.weight[copy_to] = scale * norm.weight[source]
    norm.bias[copy_to] = scale * norm.bias[source]


# ---------------------------------------------------------------- exactness


# Models where the duplicated layer is at least twice as wide as the others, so that a
# layerwise ratio of 0.6 / width removes one unit there and none elsewhere.
DUPLICATE_CASES = {
    "vgg-conv": (lambda: models.vgg([8, 16, "M", 8, "M"], 1, 10, 8), _digits_like, 1),
    "vgg-classifier": (lambda: models.vgg([8, "M", 8, 16, "M"], 1, 10, 8), _digits_like, 2),
    "mlp": (lambda: models.mlp([40, 24, 8, 10]), _sequence, 0),
    "mlp-nobn": (lambda: models.mlp([40, 8, 24, 10], batch_norm=False), _sequence, 1),
    "cnn1d-flatten": (lambda: models.cnn1d([8, 8, "M", 8, 16, "M"]), _sequence, 3),
}


@pytest.mark.parametrize("case", list(DUPLICATE_CASES))
@pytest.mark.parametrize("policy", ["spline-layerwise", "spline-global"])
def test_scaled_duplicate_is_removed_first_and_merge_is_exact(case: str, policy: str) -> None:
    build, inputs, layer = DUPLICATE_CASES[case]
    torch.manual_seed(0)
    model, x = build(), inputs(48)
    pruning.recalibrate_bn(model, x)
    model.eval()
    _duplicate(model, layer, source=2, copy_to=5, scale=0.5)
    before = _outputs(model, x)
    widths = model.widths()
    ratio = 0.6 / sum(widths) if policy == "spline-global" else 0.6 / widths[layer]
    p = pruning.plan(model, x, ratio, policy=policy, recalibrate=False, complement=False)
    removed = [(i, u) for i, l in enumerate(p.layers) for u in l.removed]
    assert [(i, u.index) for i, u in removed] == [(layer, 5)]
    unit = removed[0][1]
    assert unit.merged_into == 2 and unit.distance == 0.0
    assert unit.a == pytest.approx(0.5, abs=1e-6) and unit.b == pytest.approx(0.0, abs=1e-5)
    slim = pruning.apply(p, model)
    assert slim.widths() == [w - (i == layer) for i, w in enumerate(widths)]
    torch.testing.assert_close(_outputs(slim, x), before, rtol=1e-5, atol=1e-5)
    # Without the merge the duplicate's share is lost: the test can tell.
    dropped = pruning.apply(pruning.plan(model, x, ratio, policy=policy, merge="none", recalibrate=False, complement=False), model)
    assert not torch.allclose(_outputs(dropped, x), before, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("policy", ["spline-layerwise", "l1", "random"])
def test_affine_merge_with_offsets_is_exact(policy: str) -> None:
    # Every unit of layer 0 is c_u * z + e_u of one pre-activation z and always on, so each
    # removed unit is exactly affine in whichever kept unit it merges into, with b != 0.
    model, x = _model("mlp-nobn")
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        fc = model.layers.fc0
        scales = torch.rand(fc.out_features, generator=gen) + 0.5
        offsets = torch.randn(fc.out_features, generator=gen)
        fc.weight.copy_(scales[:, None] * fc.weight[0])
        fc.bias.copy_(scales * 50.0 + offsets)
    before = _outputs(model, x)
    p = pruning.plan(model, x, 0.5, policy=policy, recalibrate=False, complement=False)
    removed = p.layers[0].removed
    assert removed and any(abs(u.b) > 1e-3 for u in removed)
    for u in removed:
        i, j = u.merged_into, u.index
        assert u.a == pytest.approx(float(scales[j] / scales[i]), rel=1e-5)
    torch.testing.assert_close(_outputs(pruning.apply(p, model), x), before, rtol=1e-4, atol=1e-4)
    scale_only = pruning.plan(model, x, 0.5, policy=policy, merge="scale", recalibrate=False, complement=False)
    assert all(u.b == 0.0 for u in scale_only.layers[0].removed)


def test_complement_finds_a_mirrored_unit() -> None:
    model, x = _model("vgg-small")
    _duplicate(model, 2, source=1, copy_to=3, scale=-1.0)  # pre-activation of 3 = -(that of 1)
    p = pruning.plan(model, x, 1 / 16, policy="spline-layerwise", recalibrate=False)
    removed = p.layers[2].removed
    assert [u.index for u in removed] == [3] and "mirror" in removed[0].reason
    assert removed[0].merged_into == 1 and removed[0].distance == 0.0
    plain = pruning.plan(model, x, 1 / 16, policy="spline-layerwise", recalibrate=False, complement=False)
    assert all("mirror" not in u.reason for l in plain.layers for u in l.removed)
    assert [u.index for u in plain.layers[2].removed] != [3] or plain.layers[2].removed[0].distance > 0.5


# ---------------------------------------------------------------- slim == mask


SLIM_CASES = [(name, "spline-layerwise", "affine") for name in MODELS] + [
    ("preresnet20", "l1", "scale"),
    ("vgg-small", "spline-global", "scale"),
    ("cnn1d", "random", "none"),
    ("mlp", "slimming", "affine"),
]


@pytest.mark.parametrize("name,policy,merge", SLIM_CASES)
def test_slim_equals_mask(name: str, policy: str, merge: str) -> None:
    model, x = _model(name)
    p = pruning.plan(model, x, 0.4, policy=policy, merge=merge)
    slim = pruning.apply(p, model, data=x)
    masked = pruning.recalibrate_bn(pruning.mask(p, model), x)
    assert slim.widths() == p.widths_after()
    assert [m.shape for m in masked.parameters()] == [m.shape for m in model.parameters()]
    torch.testing.assert_close(_outputs(slim, x), _outputs(masked, x), rtol=1e-4, atol=1e-5)
    # Without data the slim model keeps the copied statistics and still equals the mask.
    no_recal = copy.deepcopy(p)
    no_recal.recalibrate = False
    torch.testing.assert_close(
        _outputs(pruning.apply(no_recal, model), x), _outputs(pruning.mask(no_recal, model), x), rtol=1e-4, atol=1e-5
    )


def test_recalibration_changes_statistics_and_apply_warns_without_data() -> None:
    model, x = _model("vgg-small")
    p = pruning.plan(model, x, 0.5, policy="random")
    with pytest.warns(UserWarning, match="data is None"):
        plain = pruning.apply(p, model)
    recal = pruning.apply(p, model, data=(x, torch.zeros(x.shape[0], dtype=torch.int64)))
    assert not torch.equal(plain.features.bn1.running_mean, recal.features.bn1.running_mean)


# ---------------------------------------------------------------- plan properties


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", list(MODELS))
def test_plan_properties_on_every_model(name: str) -> None:
    model, x = _model(name)
    model.train()
    for param in list(model.parameters())[:2]:
        param.requires_grad_(False)
    state = _state(model)
    grads = [p.requires_grad for p in model.parameters()]
    policies = [p for p in pruning.POLICIES if not (name == "mlp-nobn" and p in ("slimming", "bn-layerwise"))]
    if name == "preresnet20":  # the slowest model: the policies whose code paths differ
        policies = ["spline-layerwise", "spline-global", "slimming", "l1"]
    widths = model.widths()
    for policy in policies:
        p = pruning.plan(model, x, 0.5, policy=policy, min_keep=2)
        after = p.widths_after()
        assert all(a >= min(2, w) for a, w in zip(after, widths)), (policy, after)
        if policy in ("spline-global", "slimming"):
            assert p.units_before - p.units_after == math.floor(0.5 * p.units_before + 0.5)
        else:
            assert after == [w - min(math.floor(0.5 * w + 0.5), w - min(2, w)) for w in widths]
        for layer in p.layers:
            assert sorted(layer.kept + layer.removed_indices) == list(range(layer.width_before))
            assert len(layer.scores) == layer.width_before
            assert all(u.merged_into in layer.kept for u in layer.removed)
        slim = pruning.apply(p, model, data=x)
        assert slim.widths() == after
        if policy in ("spline-layerwise", "slimming"):  # FLOPs counting is slow; two policies suffice
            assert count_flops(slim, x[:1]) == p.flops_after
        assert slim.training and [q.requires_grad for q in slim.parameters()][:2] == [False, False]
    # The input model is untouched: weights, statistics, modes, grad flags, hooks.
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert model.training and all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == grads
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("name", ["vgg-small", "mlp", "cnn1d"])
@pytest.mark.parametrize("policy", ["spline-layerwise", "spline-global", "slimming", "l1"])
def test_flops_budget_reaches_the_target_within_one_unit(name: str, policy: str) -> None:
    model, x = _model(name)
    p = pruning.plan(model, x, 0.6, policy=policy, budget="flops", merge="none", recalibrate=False)
    slim = pruning.apply(p, model)
    flops = count_flops(slim, x[:1])
    assert flops == p.flops_after <= p.flops_target
    assert p.flops_target == math.ceil(0.4 * count_flops(model, x[:1]))
    # Putting back any one removed unit would exceed the target... for the cheapest unit at least:
    # the target is missed by less than one unit's FLOPs.
    after = p.widths_after()
    one_unit = max(
        count_flops(model.rebuild([a + (i == j) for i, a in enumerate(after)]), x[:1]) - flops
        for j in range(len(after))
        if after[j] < model.widths()[j]
    )
    assert p.flops_target - flops < one_unit


@pytest.mark.parametrize("policy", ["spline-global", "slimming"])
def test_global_policies_never_empty_a_layer(policy: str) -> None:
    model, x = _model("vgg11")  # untrained: every |gamma| is 0.5, so slimming ties everywhere
    p = pruning.plan(model, x, 0.95, policy=policy, merge="none")
    assert min(p.widths_after()) >= 1
    p = pruning.plan(model, x, 0.95, policy=policy, merge="none", min_keep=3)
    assert min(p.widths_after()) == 3


def test_random_policy_is_deterministic_with_a_seed() -> None:
    model, x = _model("mlp")
    a = pruning.plan(model, x, 0.5, policy="random", seed=3)
    b = pruning.plan(model, x, 0.5, policy="random", seed=3)
    c = pruning.plan(model, x, 0.5, policy="random", seed=4)
    assert a.to_dict() == b.to_dict()
    assert [l.kept for l in a.layers] != [l.kept for l in c.layers]
    s1 = pruning.plan(model, x, 0.5, policy="spline-global")
    s2 = pruning.plan(model, x, 0.5, policy="spline-global")
    assert s1.to_dict() == s2.to_dict()


def test_plan_is_json_and_round_trips() -> None:
    model, x = _model("preresnet20")
    p = pruning.plan(model, x, 0.3, policy="spline-layerwise")
    text = json.dumps(p.to_dict())
    again = pruning.PrunePlan.from_dict(json.loads(text))
    assert again == p
    summary = json.loads(json.dumps(p.summary()))
    assert summary["widths_after"] == p.widths_after() and summary["policy"] == "spline-layerwise"
    reasons = [u.reason for l in p.layers for u in l.removed]
    assert reasons and all("code distance" in r for r in reasons)
    # PreResNet's selects and conv3 (no bias, no BatchNorm after it) are described.
    assert any(l.select is not None for l in p.layers)
    assert any(l.shift is None for l in p.layers)
    assert all(u.b == 0.0 for l in p.layers if l.shift is None for u in l.removed)


def test_plain_models_are_found_and_masked_but_not_rebuilt() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.randn(64, 10)
    pruning.recalibrate_bn(model, x)
    p = pruning.plan(model, x, 0.5, policy="spline-layerwise", recalibrate=False)
    assert [(l.name, l.norm, l.producer, l.consumer, l.shift) for l in p.layers] == [
        ("2", "1", "0", "3", "3"),
        ("4", None, "3", "5", "5"),
    ]
    masked = pruning.mask(p, model)
    assert int((masked[3].weight.abs().sum(0) == 0).sum()) == 6
    with pytest.raises(TypeError, match="rebuild"):
        pruning.apply(p, model)


# ---------------------------------------------------------------- the greedy against an oracle


def _oracle_distances(bits: np.ndarray, complement: bool) -> np.ndarray:
    """All-pairs Hamming distances of 0/1 rows; with ``complement``, to a row or its complement."""
    d = (bits[:, None, :] != bits[None, :, :]).sum(2)
    return np.minimum(d, bits.shape[1] - d) if complement else d


def _greedy_oracle(bits: np.ndarray, importance: np.ndarray, floor: int, complement: bool) -> list[tuple[int, int, int]]:
    """Closest pair on the full distance matrix, recomputed every step."""
    n, length = bits.shape
    d = _oracle_distances(bits, complement)
    alive = list(range(n))
    out = []
    while len(alive) > floor:
        best = min((d[u, v], u, v) for u in alive for v in alive if u != v)
        dist, u, v = best
        victim, partner = (u, v) if (importance[u], -u) < (importance[v], -v) else (v, u)
        alive.remove(victim)
        out.append((victim, partner, int(dist)))
    return out


@pytest.mark.parametrize("complement", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spline_order_matches_the_full_matrix_greedy(complement: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, length = 40, 70
    bits = rng.random((n, length)) < 0.5
    bits[7] = bits[3]  # a duplicate and a mirror
    bits[11] = ~bits[5]
    importance = rng.permutation(n).astype(float)
    words = torch.from_numpy(np.packbits(bits, axis=1, bitorder="little").copy()).view(torch.uint8)
    padded = torch.zeros(n, 16, dtype=torch.uint8)
    padded[:, : words.shape[1]] = words
    codes = padded.view(torch.int64)
    expected = _greedy_oracle(bits, importance, 3, complement)
    for neighbours in (2, 16, 64):  # short lists run out and are refilled; the result is the same
        got = pruning.spline_order(codes, length, importance, floor=3, complement=complement, neighbours=neighbours)
        assert [(v, p, d) for v, p, d, _ in got] == expected


# ---------------------------------------------------------------- recalibrate_bn


def test_recalibrate_bn_estimates_the_data_statistics_and_restores_modes() -> None:
    model, x = _model("mlp")
    model.train()
    model.layers.bn0.momentum = 0.3
    pruning.recalibrate_bn(model, x * 2 + 1, max_batches=1, batch_size=len(x))
    with torch.no_grad():
        z = model.layers.fc0(x * 2 + 1)
    torch.testing.assert_close(model.layers.bn0.running_mean, z.mean(0))
    torch.testing.assert_close(model.layers.bn0.running_var, z.var(0))
    assert model.training and model.layers.bn0.momentum == 0.3
    before = _state(model)
    with pytest.raises(ValueError, match="no batch"):
        pruning.recalibrate_bn(model, x[:1])
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


# ---------------------------------------------------------------- bad inputs


def test_bad_inputs_are_named() -> None:
    model, x = _model("mlp")
    for ratio in (1.0, -0.1, "0.5", True):
        with pytest.raises(ValueError, match="ratio must be a number in \\[0, 1\\)"):
            pruning.plan(model, x, ratio)
    with pytest.raises(ValueError, match="unknown policy 'spline'; known: spline-layerwise, spline-global, slimming"):
        pruning.plan(model, x, 0.5, policy="spline")
    with pytest.raises(ValueError, match="unknown merge"):
        pruning.plan(model, x, 0.5, merge="mean")
    with pytest.raises(ValueError, match="unknown budget"):
        pruning.plan(model, x, 0.5, budget="params")
    with pytest.raises(ValueError, match="min_keep must be >= 1"):
        pruning.plan(model, x, 0.5, min_keep=0)
    with pytest.raises(TypeError, match="complement must be a bool"):
        pruning.plan(model, x, 0.5, complement=1)
    with pytest.raises(ValueError, match="probe is None"):
        pruning.plan(model, None, 0.5)
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        pruning.plan("mlp", x, 0.5)
    nobn, x2 = _model("mlp-nobn")
    with pytest.raises(ValueError, match="policy 'slimming' ranks units by BatchNorm"):
        pruning.plan(nobn, x2, 0.5, policy="slimming")
    p = pruning.plan(model, x, 0.5, recalibrate=False)
    other = models.mlp([40, 20, 16, 10])
    with pytest.raises(ValueError, match="has 20 units but the plan was made for 24"):
        pruning.apply(p, other)
    with pytest.raises(TypeError, match="plan must be a PrunePlan"):
        pruning.mask({"policy": "random"}, model)
    with pytest.raises(ValueError, match="max_batches must be >= 1"):
        pruning.recalibrate_bn(model, x, max_batches=0)
    with pytest.raises(ValueError, match="data is None"):
        pruning.recalibrate_bn(model, None)


# ---------------------------------------------------------------- pair_rule="merge-error"


def test_pair_rule_is_validated_and_recorded() -> None:
    model, x = _model("mlp")
    with pytest.raises(ValueError, match="unknown pair_rule 'gamma'; known: importance, merge-error"):
        pruning.plan(model, x, 0.5, pair_rule="gamma")
    with pytest.raises(ValueError, match="pair_rule 'merge-error' applies to the spline policies only, not 'l1'"):
        pruning.plan(model, x, 0.5, policy="l1", pair_rule="merge-error")
    for policy in ("spline-layerwise", "spline-global"):
        p = pruning.plan(model, x, 0.5, policy=policy, pair_rule="merge-error", recalibrate=False)
        assert p.pair_rule == "merge-error" and p.summary()["pair_rule"] == "merge-error"
        assert pruning.PrunePlan.from_dict(json.loads(json.dumps(p.to_dict()))) == p
        assert all(u.reason.startswith("merge error ") for l in p.layers for u in l.removed)
        assert all(s is not None and s >= 0 for l in p.layers for s in l.scores)
    assert pruning.plan(model, x, 0.5, recalibrate=False).pair_rule == "importance"


@torch.no_grad()
def test_merge_error_removes_the_twin_the_next_layer_barely_reads() -> None:
    # Unit 5 of layer 0 is unit 2 with 4x its BatchNorm scale (same code, h_5 = 4 h_2), but the
    # next layer reads it with 1% of unit 2's weights: "importance" removes unit 2 (smaller
    # |gamma|), "merge-error" unit 5 (4 x 0.01 < 1 of unit 2's output error).
    model, x = _model("mlp")
    bn, fc0, fc1 = model.layers.bn0, model.layers.fc0, model.layers.fc1
    fc0.weight[5] = fc0.weight[2]
    bn.running_mean[5], bn.running_var[5] = bn.running_mean[2], bn.running_var[2]
    bn.bias[2] = bn.bias[5] = 0.0
    bn.weight[5] = 4 * bn.weight[2].abs()
    bn.weight[2] = bn.weight[2].abs()
    fc1.weight[:, 5] = 0.01 * fc1.weight[:, 2]
    before = _outputs(model, x)
    ratio = 0.6 / 24  # one unit of layer 0, none of layer 1
    by_gamma = pruning.plan(model, x, ratio, recalibrate=False, complement=False)
    by_error = pruning.plan(model, x, ratio, pair_rule="merge-error", recalibrate=False, complement=False)
    assert [u.index for u in by_gamma.layers[0].removed] == [2]
    assert [u.index for u in by_error.layers[0].removed] == [5]
    unit = by_error.layers[0].removed[0]
    assert unit.merged_into == 2 and unit.a == pytest.approx(4.0, rel=1e-5) and "to unit 2" in unit.reason
    torch.testing.assert_close(_outputs(pruning.apply(by_error, model), x), before, rtol=1e-5, atol=1e-5)
    # Without a merge the rule's choice is the one that loses less.
    lost = {
        rule: (_outputs(pruning.apply(pruning.plan(model, x, ratio, merge="none", pair_rule=rule, recalibrate=False,
                                                   complement=False), model), x) - before).norm().item()
        for rule in pruning.PAIR_RULES
    }  # fmt: skip
    assert lost["merge-error"] < 0.1 * lost["importance"]


@torch.no_grad()
def test_merge_error_removes_a_constant_unit_first() -> None:
    # A unit that is 0 on every probe input has zero spread: it goes first, whatever its code
    # distance to the others, and the merge leaves the outputs unchanged.
    model, x = _model("mlp")
    model.layers.bn0.bias[7] = -1e3
    before = _outputs(model, x)
    p = pruning.plan(model, x, 0.6 / 24, pair_rule="merge-error", recalibrate=False)
    assert [u.index for u in p.layers[0].removed] == [7] and p.layers[0].scores[7] == 0.0
    torch.testing.assert_close(_outputs(pruning.apply(p, model), x), before, rtol=1e-5, atol=1e-5)


def _merge_error_oracle(bits: np.ndarray, spread: np.ndarray, floor: int, complement: bool) -> list[tuple[int, int, int]]:
    """Smallest spread x distance to the nearest alive unit, recomputed every step."""
    n, length = bits.shape
    d = _oracle_distances(bits, complement)
    alive = list(range(n))
    out = []
    while len(alive) > floor:
        near = {u: min((d[u, v], v) for v in alive if v != u) for u in alive}
        u = min(alive, key=lambda u: (spread[u] * near[u][0] / length, spread[u], u))
        alive.remove(u)
        out.append((u, near[u][1], int(near[u][0])))
    return out


@pytest.mark.parametrize("complement", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_merge_error_order_matches_the_full_matrix_greedy(complement: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, length = 40, 70
    bits = rng.random((n, length)) < 0.5
    bits[7] = bits[3]
    bits[11] = ~bits[5]
    spread = rng.random(n) + 0.1
    spread[13] = 0.0
    words = torch.from_numpy(np.packbits(bits, axis=1, bitorder="little").copy()).view(torch.uint8)
    padded = torch.zeros(n, 16, dtype=torch.uint8)
    padded[:, : words.shape[1]] = words
    codes = padded.view(torch.int64)
    expected = _merge_error_oracle(bits, spread, 3, complement)
    for neighbours in (2, 16, 64):
        got = pruning._merge_error_order(codes, length, spread, floor=3, complement=complement, neighbours=neighbours)
        assert [(v, p, d) for v, p, d, _, _ in got] == expected


# ---------------------------------------------------------------- graphs the channel model does not fit


def test_grouped_conv_consumer_is_rejected_by_plan() -> None:
    # A grouped conv reads in_channels / groups inputs per filter: weight[:, c] is not unit c.
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=4),
        nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3),
    )  # fmt: skip
    x = torch.randn(32, 3, 6, 6)
    pruning.recalibrate_bn(model, x)
    with pytest.raises(ValueError, match="grouped conv '3'"):
        pruning.plan(model.eval(), x, 0.5)


def test_linear_over_a_non_channel_dim_is_not_a_consumer_or_producer() -> None:
    # Linear layers on [N, C, L] act on L, not on the units (channels, dim 1).
    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.relu, self.fc = nn.Conv1d(2, 6, 3, padding=1), nn.ReLU(), nn.Linear(10, 6)
            self.relu2, self.out = nn.ReLU(), nn.Linear(36, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(self.relu2(self.fc(self.relu(self.conv(x)))).flatten(1))

    class Producer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.relu, self.out = nn.Linear(4, 6), nn.ReLU(), nn.Linear(36, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(self.relu(self.fc(x)).flatten(1))  # units would be fc's outputs, in dim 2

    torch.manual_seed(0)
    with pytest.raises(ValueError, match="output of layer 'relu' is read by .*linear on a 3-d input"):
        pruning.plan(Model().eval(), torch.randn(32, 2, 10), 0.5)
    with pytest.raises(ValueError, match="found no prunable layer in Producer"):
        pruning.plan(Producer().eval(), torch.randn(32, 6, 4), 0.5)


def test_pre_activation_read_after_the_activation_is_not_a_layer() -> None:
    # fc1's output also feeds skip after the ReLU ran: zeroing fc1 rows would change skip(h).
    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.relu, self.fc2, self.skip = nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3), nn.Linear(6, 3)
            self.fc3, self.relu3, self.fc4 = nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.fc1(x)
            return self.fc4(self.relu3(self.fc3(self.fc2(self.relu(h)) + self.skip(h))))

    torch.manual_seed(0)
    model = Model().eval()
    p = pruning.plan(model, torch.randn(64, 4), 0.4, recalibrate=False)
    assert [l.name for l in p.layers] == ["relu3"]


def test_plan_accepts_an_x_y_pair_probe() -> None:
    model, x = _model("mlp")
    y = torch.arange(x.shape[0]) % 10
    expected = pruning.plan(model, x, 0.5, pair_rule="merge-error").to_dict()
    assert pruning.plan(model, (x, y), 0.5, pair_rule="merge-error").to_dict() == expected
    assert pruning.plan(model, torch.utils.data.TensorDataset(x, y), 0.5, pair_rule="merge-error").to_dict() == expected


def test_ratio_accepts_numpy_scalars() -> None:
    model, x = _model("mlp")
    expected = pruning.plan(model, x, 0.5, policy="l1").widths_after()
    assert pruning.plan(model, x, np.float32(0.5), policy="l1").widths_after() == expected
    assert pruning.plan(model, x, np.int64(0), policy="l1").ratio == 0.0
    for ratio in (np.float32(1.0), np.bool_(False), torch.tensor(0.5)):
        with pytest.raises(ValueError, match="ratio must be a number in \\[0, 1\\)"):
            pruning.plan(model, x, ratio)


def test_apply_keeps_each_module_mode() -> None:
    model, x = _model("mlp")
    model.train()
    model.layers.bn0.eval()  # a frozen BatchNorm while the rest trains
    p = pruning.plan(model, x, 0.5, recalibrate=False)
    slim = pruning.apply(p, model)
    assert {n: m.training for n, m in slim.named_modules()} == {n: m.training for n, m in model.named_modules()}


def test_plan_reads_a_one_shot_iterator_probe_whole() -> None:
    model, x = _model("mlp")
    expected = pruning.plan(model, list(x.split(16)), 0.5, pair_rule="merge-error").to_dict()
    assert pruning.plan(model, iter(x.split(16)), 0.5, pair_rule="merge-error").to_dict() == expected
    assert pruning.plan(model, (b for b in x.split(16)), 0.5, pair_rule="merge-error").to_dict() == expected


# ---------------------------------------------------------------- BatchNorm without running statistics


def _without_running_stats(model: nn.Module) -> nn.Module:
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.track_running_stats = False  # as built with track_running_stats=False
            module.running_mean = module.running_var = module.num_batches_tracked = None
    return model


def test_batchnorm_without_running_stats_absorbs_merge_offsets_and_is_kept_by_apply() -> None:
    # Such a BatchNorm normalises by the batch's statistics in eval mode too. Every unit of layer 0 is
    # c_u * z + e_u of one pre-activation z and always on, so merges are exact with b != 0, and the
    # offset needs no compensation: bn1 (after fc1, which has no bias) subtracts the batch mean.
    model, x = _without_running_stats(models.mlp([40, 24, 16, 10])).eval(), _sequence(32)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        fc, bn = model.layers.fc0, model.layers.bn0
        fc.weight.copy_((torch.rand(fc.out_features, generator=gen) + 0.5)[:, None] * fc.weight[0])
        bn.weight.copy_(torch.rand(fc.out_features, generator=gen) + 0.5)
        bn.bias.copy_(50.0 + torch.randn(fc.out_features, generator=gen))
    before = _outputs(model, x)
    p = pruning.plan(model, x, 0.5, policy="spline-layerwise", complement=False)
    assert [(l.norm, l.shift) for l in p.layers] == [("layers.bn0", "layers.bn1"), ("layers.bn1", "classifier")]
    assert any(abs(u.b) > 1e-3 for u in p.layers[0].removed)
    slim = pruning.apply(p, model, data=x)
    assert all(m.running_mean is None and not m.track_running_stats for m in (slim.layers.bn0, slim.layers.bn1))
    torch.testing.assert_close(_outputs(pruning.mask(p, model), x), before, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(_outputs(slim, x), before, rtol=1e-4, atol=1e-4)


def test_batchnorm_without_running_stats_is_found_in_plain_models() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8, track_running_stats=False), nn.ReLU(),
        nn.Conv2d(8, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6, track_running_stats=False), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3),
    )  # fmt: skip
    p = pruning.plan(model.eval(), _digits_like(32), 0.5, policy="bn-layerwise", recalibrate=False)
    assert [(l.name, l.norm, l.producer, l.consumer, l.shift) for l in p.layers] == [
        ("2", "1", "0", "3", "4"),
        ("5", "4", "3", "8", "8"),
    ]
    masked = pruning.mask(p, model)
    assert int((masked[3].weight.abs().sum((0, 2, 3)) == 0).sum()) == 4



class _FunctionalNorms(nn.Module):
    """BatchNorms called as F.batch_norm with their modules' buffers, then a BatchNorm whose forward raises (caught)
    before a stat-less F.batch_norm of no module."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.bn1, self.a1 = nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU()
        self.c2, self.bn2, self.a2 = nn.Conv2d(8, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU()
        self.c3, self.a3 = nn.Conv2d(6, 5, 3, padding=1, bias=False), nn.ReLU()
        self.bad = nn.BatchNorm1d(3)
        self.fc = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = nn.functional.batch_norm
        b = self.bn1
        x = self.a1(norm(self.c1(x), b.running_mean, b.running_var, b.weight, b.bias, False, 0.1, b.eps))
        b = self.bn2
        x = self.a2(norm(self.c2(x), b.running_mean, b.running_var, b.weight, b.bias, False, 0.1, b.eps))
        x = self.c3(x)
        try:
            self.bad(torch.zeros(2, 5))  # raises: the tracer must not take the next batch_norm for 'bad'
        except RuntimeError:
            pass
        x = self.a3(norm(x, None, None, training=True))
        return self.fc(x.mean((2, 3)))


def test_batchnorm_called_functionally_with_module_buffers_is_found() -> None:
    p = pruning.plan(_FunctionalNorms().eval(), _digits_like(32), 0.5, policy="l1", recalibrate=False)
    assert [(l.name, l.norm, l.producer, l.consumer, l.shift) for l in p.layers] == [
        ("a1", "bn1", "c1", "c2", "bn2"),
        ("a2", "bn2", "c2", "c3", None),
    ]


def test_plan_names_a_probe_dtype_the_model_cannot_take():
    model = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))
    for probe in (torch.randint(0, 3, (6, 3)), torch.randn(6, 3, dtype=torch.float64)):
        with pytest.raises(TypeError, match=rf"plan: the model failed on {probe.dtype} inputs; its parameters are torch.float32"):
            pruning.plan(model, probe, ratio=0.5)
    assert pruning.plan(model, torch.randn(6, 3), ratio=0.5) is not None
