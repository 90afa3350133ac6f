"""fastspline.distributed: 2 and 3 CPU processes (gloo on localhost, spawned, bounded in
time) give bit for bit the single-process codes, partition distances, unit-major
distances, region counts and early-bird epochs, with uneven shards and a rank holding
no samples; a failure on one rank raises on every rank instead of hanging."""
from __future__ import annotations

import dataclasses
import importlib.util
import os
import socket
import sys
import time
import types
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import fastspline as fs
from fastspline import data, distributed, models
from fastspline.earlybird import SplineEarlyBird

SPAWN_TIMEOUT_S = 90.0  # a hung collective fails the test instead of blocking CI
COLLECTIVE_TIMEOUT = timedelta(seconds=30)
N_PROBE = 37  # odd: uneven shards over 2 ranks


# ---------------------------------------------------------------- shared by parent and workers


class Net(nn.Module):
    """Conv (BN + ReLU module), conv with a functional relu, then linear + ReLU:
    per-channel and per-unit node codes, module and functional layers."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(6, 5, 3, padding=1, stride=2)
        self.fc = nn.Linear(5 * 4 * 4, 20)
        self.relu3 = nn.ReLU()
        self.out = nn.Linear(20, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv1(x)))
        x = torch.relu(self.conv2(x))
        return self.out(self.relu3(self.fc(x.flatten(1))))


def make_net(seed: int) -> Net:
    torch.manual_seed(seed)
    net = Net()
    with torch.no_grad():
        net.bn1.running_mean.uniform_(-0.2, 0.2)
        net.bn1.running_var.uniform_(0.5, 1.5)
    return net.eval()


def small_vgg() -> nn.Module:
    torch.manual_seed(3)
    return models.vgg("vgg-small", 1, 10, 8, width=0.125).eval()


def make_probe() -> torch.Tensor:
    return torch.randn(N_PROBE, 1, 8, 8, generator=torch.Generator().manual_seed(5))


def summarise(
    rc: fs.RegionCodes, other: fs.RegionCodes, cdist: Callable[..., torch.Tensor], backend: str | None = None
) -> dict[str, Any]:
    """Everything compared between the distributed and the single-process runs (on the CPU).
    ``cdist(a, b=None)``: the (distributed or local) unit-major hamming_cdist."""
    result: dict[str, Any] = {
        "words": {name: layer.words.cpu() for name, layer in rc.items()},
        "distance": rc.distance(other, backend=backend),
        "layer_distance": rc.distance(other, reduce="none", backend=backend),
        "regions": rc.count_regions(backend=backend),
        "region_ids": rc.region_ids(backend=backend).cpu(),
        "cdist": {},
    }
    for name in rc.names:
        # Per channel (conv layers: samples x positions), per unit, and across the two codings.
        major = rc.unit_major(name, backend=backend)
        result["cdist"][name, "channel"] = cdist(major).cpu()
        result["cdist"][name, "unit"] = cdist(rc.unit_major(name, per_channel=False, backend=backend)).cpu()
        result["cdist"][name, "cross"] = cdist(major, other.unit_major(name, backend=backend)).cpu()
    return result


def single_process_reference() -> dict[str, Any]:
    probe = make_probe()
    rc = fs.codes(make_net(0), probe, progress=False, batch_size=8)
    other = fs.codes(make_net(1), probe, progress=False, batch_size=8)
    return summarise(rc, other, lambda a, b=None: fs.hamming_cdist(a, b))


# ---------------------------------------------------------------- spawning


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, world: int, port: int, out: str, scenario: Callable[..., Any], args: tuple, backend: str) -> None:
    torch.set_num_threads(1)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    if backend == "nccl":
        torch.cuda.set_device(rank)
    dist.init_process_group(
        backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world, timeout=COLLECTIVE_TIMEOUT
    )
    try:
        result = scenario(rank, world, *args)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    torch.save(result, os.path.join(out, f"rank{rank}.pt"))


def run_ranks(world: int, scenario: Callable[..., Any], tmp_path: Path, *args: Any, backend: str = "gloo") -> list[Any]:
    """Run ``scenario(rank, world, *args)`` in ``world`` spawned processes; their results.
    A free port can be taken by another process before rank 0 binds it: then it runs again.
    So does a run in which a worker died by a signal, after a pause: in one CI run (session
    11) every spawned gloo run of this file aborted in both ranks ("terminate called without
    an active exception", from torch's C++ side) and passed again in 13 reruns of the file
    and a full rerun of the suite. A crash that repeats three times still fails."""
    for attempt in range(3):
        try:
            return _run_ranks_once(world, scenario, tmp_path, args, backend)
        except mp.ProcessRaisedException as exc:
            if attempt == 2 or "EADDRINUSE" not in str(exc) and "ddress already in use" not in str(exc):
                raise
        except mp.ProcessExitedException as exc:
            if attempt == 2 or exc.exit_code >= 0:
                raise
            warnings.warn(f"{scenario.__name__}: rank {exc.error_index} died by {exc.signal_name}; running it again")
            time.sleep(5.0 * (attempt + 1))
    raise AssertionError("unreachable")


def _run_ranks_once(world: int, scenario: Callable[..., Any], tmp_path: Path, args: tuple, backend: str) -> list[Any]:
    context = mp.start_processes(
        _entry, args=(world, free_port(), str(tmp_path), scenario, args, backend), nprocs=world, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + SPAWN_TIMEOUT_S
    # join() raises (with the worker's traceback) as soon as a worker fails.
    while not context.join(timeout=max(0.1, deadline - time.monotonic())):
        if time.monotonic() > deadline:
            for process in context.processes:
                if process.is_alive():
                    process.kill()
            pytest.fail(f"{scenario.__name__} on {world} ranks did not finish in {SPAWN_TIMEOUT_S:.0f} s")
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world)]


# ---------------------------------------------------------------- scenarios (run in the workers)


def codes_scenario(rank: int, world: int, sizes: list[int]) -> dict[str, Any]:
    """Codes of this rank's block of the probe (``sizes`` rows per rank), summarised;
    the same through a DataLoader; error propagation."""
    probe = make_probe()
    start = sum(sizes[:rank])
    local = probe[start : start + sizes[rank]]
    rc = distributed.codes(make_net(0), local, batch_size=8)
    other = distributed.codes(make_net(1), local, batch_size=8)
    result = summarise(rc, other, lambda a, b=None: distributed.hamming_cdist(a, b))
    result["shard"] = dict(rc.meta["shard"])
    result["n_samples"] = rc.n_samples

    # A DataLoader over this rank's block (empty on an empty rank) gives the same codes.
    loader = DataLoader(TensorDataset(local, torch.zeros(len(local))), batch_size=5)
    via_loader = distributed.codes(make_net(0), loader)
    result["loader_equal"] = all(torch.equal(via_loader[n].words, rc[n].words) for n in rc.names)

    # Every layer with one reduction.
    result["unit_cdists"] = rc.unit_cdists()
    result["unit_cdists_units"] = rc.unit_cdists(rc.names[:2], per_channel=False)

    # Into a preallocated buffer.
    name = rc.names[0]
    buffer = torch.full((6, 6), -1, dtype=torch.int32)
    result["out_is_buffer"] = rc.unit_cdist(name, out=buffer) is buffer
    result["out"] = buffer

    # A bad argument on the last rank raises there, and a RuntimeError naming it elsewhere.
    bad = other if rank != world - 1 else fs.RegionCodes({n: other[n] for n in other.names[1:]})
    try:
        distributed.distance(rc, bad)
        result["error"] = None
    except (ValueError, RuntimeError) as exc:
        result["error"] = (type(exc).__name__, str(exc))
    # ...and the group still works afterwards.
    result["after_error"] = rc.distance(other)
    # An empty probe shard is an error on every rank at construction, not a hang in step().
    try:
        distributed.ShardedSplineEarlyBird(local)
        result["eb_error"] = None
    except (ValueError, RuntimeError) as exc:
        result["eb_error"] = (type(exc).__name__, str(exc))
    return result


def sampler_scenario(rank: int, world: int) -> dict[str, Any]:
    """DistributedSampler shards (interleaved, not contiguous): order-free results are
    exact when no input repeats; a padded sampler warns."""
    probe = make_probe()[: N_PROBE - N_PROBE % world]  # divisible: no padding
    dataset = TensorDataset(probe, torch.zeros(len(probe)))
    loader = DataLoader(dataset, batch_size=4, sampler=DistributedSampler(dataset, shuffle=False))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no padding, no warning
        rc = distributed.codes(make_net(0), loader)
    other = distributed.codes(make_net(1), loader)
    name = rc.names[1]
    result = {
        "distance": rc.distance(other),
        "regions": rc.count_regions(),
        "cdist": rc.unit_cdist(name),
        "n": len(probe),
    }
    padded = TensorDataset(make_probe(), torch.zeros(N_PROBE))
    padded_loader = DataLoader(padded, batch_size=4, sampler=DistributedSampler(padded, shuffle=False))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        distributed.codes(make_net(0), padded_loader)
    result["warnings"] = [str(w.message) for w in caught]
    return result


@dataclasses.dataclass
class FakePlan:
    ratio: float
    probe_sum: float
    computed_on: int


def plan_scenario(rank: int, world: int) -> dict[str, Any]:
    """broadcast_plan of a plan-like object; plan() computes once on src and broadcasts:
    its mechanics with a stand-in pruning.plan, then the real one where it exists."""
    result: dict[str, Any] = {}
    mine = FakePlan(0.5, 1.0, rank) if rank == 1 else None
    result["broadcast"] = distributed.broadcast_plan(mine, src=1)

    calls = []

    def fake_plan(model: nn.Module, probe: torch.Tensor, ratio: float, **kwargs: Any) -> FakePlan:
        calls.append(type(model).__name__)
        if not 0 < ratio < 1:
            raise ValueError(f"plan: ratio must be in (0, 1), got {ratio}")
        return FakePlan(ratio, float(probe.sum()), dist.get_rank())

    # The stand-in replaces the module and the package attribute ("from fastspline import pruning" reads either).
    saved = {"module": sys.modules.get("fastspline.pruning"), "attribute": getattr(fs, "pruning", None)}
    fake = types.SimpleNamespace(plan=fake_plan)
    sys.modules["fastspline.pruning"] = fake  # type: ignore[assignment]
    fs.pruning = fake  # type: ignore[attr-defined]
    try:
        model = nn.parallel.DistributedDataParallel(make_net(0))
        probe = make_probe() if rank == 0 else None  # only src needs the probe
        result["plan"] = distributed.plan(model, probe, 0.25)
        try:
            distributed.plan(model, probe, 2.0)
            result["plan_error"] = None
        except (ValueError, RuntimeError) as exc:
            result["plan_error"] = (type(exc).__name__, str(exc))
    finally:
        if saved["module"] is None:
            sys.modules.pop("fastspline.pruning", None)
        else:
            sys.modules["fastspline.pruning"] = saved["module"]
        if saved["attribute"] is None:
            vars(fs).pop("pruning", None)
        else:
            fs.pruning = saved["attribute"]  # type: ignore[attr-defined]

    # The real planner, where fastspline.pruning exists: one plan, every rank slims alike.
    if importlib.util.find_spec("fastspline.pruning") is not None:
        from fastspline import pruning

        net = small_vgg()
        shared = distributed.plan(nn.parallel.DistributedDataParallel(net), make_probe() if rank == 0 else None, 0.5, recalibrate=False)
        slim = pruning.apply(shared, net)
        result["real_plan"] = shared.to_dict()
        result["slim_state"] = slim.state_dict()
    result["calls"] = calls
    return result


def ddp_scenario(rank: int, world: int, epochs: int, threshold: float) -> dict[str, Any]:
    """A DDP training loop (gloo) stepping an unchanged SplineEarlyBird on every rank
    with the DDP model, and a ShardedSplineEarlyBird on this rank's block of the probe."""
    split = data.toy_x(400)
    probe = data.canvas(torch.tensor([-5.0, 5.0]), torch.tensor([5.0, 5.0]), 12)
    torch.manual_seed(0)
    model = nn.parallel.DistributedDataParallel(models.mlp([2, 16, 16, 2]))
    sampler = DistributedSampler(split.train, shuffle=True, seed=0)
    loader = DataLoader(split.train, batch_size=32, sampler=sampler)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    eb = SplineEarlyBird(probe, threshold=threshold)
    sharded = distributed.ShardedSplineEarlyBird(distributed.shard(probe), threshold=threshold)
    states = []
    for epoch in range(1, epochs + 1):
        sampler.set_epoch(epoch)
        model.train()
        for x, y in loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
        eb.step(model, epoch)
        sharded.step(model, epoch)
        states.append({k: v.clone() for k, v in model.module.state_dict().items()})
    return {
        "fired": dict(eb.fired),
        "distances": dict(eb.distances),
        "history": eb.history,
        "sharded_fired": dict(sharded.fired),
        "sharded_distances": dict(sharded.distances),
        "sharded_history": sharded.history,
        "states": states,
    }


# ---------------------------------------------------------------- tests


def check_against_reference(results: list[dict[str, Any]], sizes: list[int], reference: dict[str, Any]) -> None:
    world = len(sizes)
    for rank, got in enumerate(results):
        assert got["shard"] == {"rank": rank, "world_size": world, "offset": sum(sizes[:rank]), "total_samples": N_PROBE}
        assert got["n_samples"] == sizes[rank]
        assert got["distance"] == reference["distance"] and got["distance"] > 0
        assert got["layer_distance"] == reference["layer_distance"]
        assert got["regions"] == reference["regions"]
        assert got["loader_equal"]
        for key, expected in reference["cdist"].items():
            assert torch.equal(got["cdist"][key], expected), (rank, key)
        assert list(got["unit_cdists"]) == list(reference["words"])
        for name, matrix in got["unit_cdists"].items():
            assert torch.equal(matrix, reference["cdist"][name, "channel"]), (rank, name)
        for name, matrix in got["unit_cdists_units"].items():
            assert torch.equal(matrix, reference["cdist"][name, "unit"]), (rank, name)
        name = next(iter(reference["words"]))
        assert torch.equal(got["out"], reference["cdist"][name, "channel"]) and got["out_is_buffer"]
        assert got["after_error"] == reference["distance"]
        if rank == world - 1:
            assert got["error"][0] == "ValueError" and "layers differ" in got["error"][1]
        else:
            assert got["error"][0] == "RuntimeError" and f"rank {world - 1} failed: ValueError" in got["error"][1]
        if 0 not in sizes:
            assert got["eb_error"] is None
        elif sizes[rank] == 0:
            assert got["eb_error"][0] == "ValueError" and "non-empty" in got["eb_error"][1]
        else:
            assert got["eb_error"][0] == "RuntimeError" and f"rank {sizes.index(0)} failed" in got["eb_error"][1]
    for name, words in reference["words"].items():
        assert torch.equal(torch.cat([got["words"][name] for got in results]), words), name
    assert torch.equal(torch.cat([got["region_ids"] for got in results]), reference["region_ids"])
    # Not trivial: the codes differ between inputs and units.
    assert 1 < reference["regions"] <= N_PROBE


def nccl_scenario(rank: int, world: int) -> dict[str, Any]:
    """One process per GPU with NCCL: codes kept on the GPU, collectives on CUDA tensors.
    Compared with plain codes() on the same GPU (a GPU forward may round differently from
    the CPU's, so the CPU codes are no oracle here)."""
    torch.cuda.set_device(rank)
    cuda = torch.device("cuda", rank)
    probe, net, net_later = make_probe(), make_net(0).to(cuda), make_net(1).to(cuda)
    local = distributed.shard(probe).to(cuda)
    ref = "reference"  # the ops backend is not what is tested here
    rc = distributed.codes(net, local, batch_size=8, backend=ref, keep_on="device")
    other = distributed.codes(net_later, local, batch_size=8, backend=ref, keep_on="device")
    result = {"distributed": summarise(rc, other, lambda a, b=None: distributed.hamming_cdist(a, b, backend=ref), ref)}
    whole = fs.codes(net, probe.to(cuda), batch_size=8, backend=ref, keep_on="device", progress=False)
    whole_other = fs.codes(net_later, probe.to(cuda), batch_size=8, backend=ref, keep_on="device", progress=False)
    result["plain"] = summarise(whole, whole_other, lambda a, b=None: fs.hamming_cdist(a, b, backend=ref), ref)
    result["words_device"] = str(rc[rc.names[0]].words.device)
    result["cpu_distance"] = rc.to("cpu").distance(other.to("cpu"), backend=ref)  # counts go to the GPU to be reduced
    try:
        rc.to("cpu").unit_cdist(rc.names[0], backend=ref)
        result["cpu_cdist_error"] = None
    except ValueError as exc:
        result["cpu_cdist_error"] = str(exc)
    result["plan"] = distributed.broadcast_plan(FakePlan(0.5, 2.0, rank) if rank == 0 else None)
    return result


EPOCHS, THRESHOLD = 5, 0.16


def two_rank_scenario(rank: int, world: int) -> dict[str, Any]:
    """Every 2-rank check in one spawn (starting processes is most of the cost)."""
    return {
        "codes": codes_scenario(rank, world, [19, 18]),
        "sampler": sampler_scenario(rank, world),
        "plan": plan_scenario(rank, world),
        "ddp": ddp_scenario(rank, world, EPOCHS, THRESHOLD),
    }


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the workers: the same forward arithmetic
    try:
        return single_process_reference()
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return run_ranks(2, two_rank_scenario, tmp_path_factory.mktemp("two_ranks"))


def test_two_ranks_uneven_shards_equal_one_process(two_ranks: list[dict[str, Any]], reference: dict[str, Any]) -> None:
    check_against_reference([got["codes"] for got in two_ranks], [19, 18], reference)


def test_three_ranks_with_an_empty_rank_equal_one_process(tmp_path: Path, reference: dict[str, Any]) -> None:
    sizes = [25, 0, 12]
    results = run_ranks(3, codes_scenario, tmp_path, sizes)
    check_against_reference(results, sizes, reference)
    for name, words in results[1]["words"].items():
        assert words.shape == (0, reference["words"][name].shape[1])


def test_distributed_sampler_shards(two_ranks: list[dict[str, Any]]) -> None:
    results = [got["sampler"] for got in two_ranks]
    probe = make_probe()[: results[0]["n"]]
    rc, other = fs.codes(make_net(0), probe, progress=False), fs.codes(make_net(1), probe, progress=False)
    for got in results:
        assert got["distance"] == rc.distance(other)
        assert got["regions"] == rc.count_regions()
        assert torch.equal(got["cdist"], fs.hamming_cdist(rc.unit_major(rc.names[1])))
        assert len(got["warnings"]) == 1 and "repeats 1 input(s)" in got["warnings"][0]


def test_plans_are_computed_once_and_broadcast(two_ranks: list[dict[str, Any]]) -> None:
    expected = FakePlan(0.25, float(make_probe().sum()), 0)
    for rank, got in enumerate(got["plan"] for got in two_ranks):
        assert got["broadcast"] == FakePlan(0.5, 1.0, 1)
        assert got["plan"] == expected  # computed on rank 0, from its probe
        if rank == 0:
            assert got["calls"] == ["Net", "Net"]  # unwrapped from DDP
            assert got["plan_error"][0] == "ValueError" and "ratio" in got["plan_error"][1]
        else:
            assert got["calls"] == []
            assert got["plan_error"][0] == "RuntimeError" and "failed on rank 0: ValueError" in got["plan_error"][1]


def test_real_plan_is_broadcast_and_slims_every_rank_alike(two_ranks: list[dict[str, Any]]) -> None:
    pruning = pytest.importorskip("fastspline.pruning")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the workers: the same forward arithmetic
    try:
        net = small_vgg()
        expected = pruning.plan(net, make_probe(), 0.5, recalibrate=False)
        slim = pruning.apply(expected, net).state_dict()
    finally:
        torch.set_num_threads(threads)
    assert expected.units_after < expected.units_before
    for got in (got["plan"] for got in two_ranks):
        assert got["real_plan"] == expected.to_dict()
        assert got["slim_state"].keys() == slim.keys()
        assert all(torch.equal(got["slim_state"][k], slim[k]) for k in slim)


def test_early_bird_inside_ddp(two_ranks: list[dict[str, Any]]) -> None:
    first, second = (got["ddp"] for got in two_ranks)
    assert first["fired"][THRESHOLD] is not None  # it fires within the run...
    for got in (first, second):  # ...at the same epoch on every rank, with the same distances
        assert got["fired"] == first["fired"] and got["distances"] == first["distances"]
        assert torch.equal(torch.nan_to_num(got["history"], -1.0), torch.nan_to_num(first["history"], -1.0))
        assert got["sharded_fired"] == first["fired"] and got["sharded_distances"] == first["distances"]
    for a, b in zip(first["states"], second["states"]):  # DDP kept the replicas equal
        assert all(torch.equal(a[k], b[k]) for k in a)
    # A single process stepping the plain detector over the same weights agrees exactly.
    probe = data.canvas(torch.tensor([-5.0, 5.0]), torch.tensor([5.0, 5.0]), 12)
    model = models.mlp([2, 16, 16, 2])
    eb = SplineEarlyBird(probe, threshold=THRESHOLD)
    for epoch, state in enumerate(first["states"], start=1):
        model.load_state_dict(state)
        eb.step(model, epoch)
    assert eb.fired == first["fired"] and eb.distances == first["distances"]
    assert torch.equal(torch.nan_to_num(eb.history, -1.0), torch.nan_to_num(first["sharded_history"], -1.0))


@pytest.mark.skipif(not torch.cuda.is_available() or not dist.is_nccl_available(), reason="needs a CUDA GPU and NCCL")
def test_nccl_ranks_on_gpus(tmp_path: Path) -> None:
    world = torch.cuda.device_count()
    results = run_ranks(world, nccl_scenario, tmp_path, backend="nccl")
    for rank, got in enumerate(results):
        expected, mine = got["plain"], got["distributed"]
        assert got["words_device"] == f"cuda:{rank}"
        assert mine["distance"] == expected["distance"] == got["cpu_distance"]
        assert mine["layer_distance"] == expected["layer_distance"] and mine["regions"] == expected["regions"]
        for key, matrix in expected["cdist"].items():
            assert torch.equal(mine["cdist"][key], matrix), key
        assert "reduces tensors on cuda" in got["cpu_cdist_error"]
        assert got["plan"] == FakePlan(0.5, 2.0, 0)
    for name, words in results[0]["plain"]["words"].items():
        assert torch.equal(torch.cat([got["distributed"]["words"][name] for got in results]), words)


# ---------------------------------------------------------------- in-process


def test_needs_a_process_group() -> None:
    assert not dist.is_initialized()
    with pytest.raises(RuntimeError, match="process group is not initialised"):
        distributed.codes(make_net(0), make_probe())
    with pytest.raises(RuntimeError, match="process group is not initialised"):
        distributed.hamming_cdist(torch.zeros(3, 1, dtype=torch.int64))
    with pytest.raises(RuntimeError, match="process group is not initialised"):
        distributed.broadcast_plan(None)
    with pytest.raises(RuntimeError, match="process group is not initialised"):
        distributed.shard(make_probe())


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shard_range_covers_every_input_once(world: int) -> None:
    for n in range(0, 12):
        blocks = [distributed.shard_range(n, rank=r, world_size=world) for r in range(world)]
        assert [i for block in blocks for i in block] == list(range(n))
        assert max(map(len, blocks)) - min(map(len, blocks)) <= 1
    assert len(distributed.shard_range(2, rank=2, world_size=3)) == 0


def test_shard_kinds_and_errors() -> None:
    x = torch.arange(10)
    assert torch.equal(distributed.shard(x, rank=1, world_size=3), torch.tensor([4, 5, 6]))
    assert distributed.shard(list(range(10)), rank=2, world_size=3) == [7, 8, 9]
    subset = distributed.shard(TensorDataset(x), rank=0, world_size=3)
    assert [int(subset[i][0]) for i in range(len(subset))] == [0, 1, 2, 3]
    with pytest.raises(TypeError, match="shard: data must be"):
        distributed.shard({"x": x}, rank=0, world_size=2)
    with pytest.raises(ValueError, match=r"rank must be an int in \[0, 2\), got 2"):
        distributed.shard_range(5, rank=2, world_size=2)
    with pytest.raises(ValueError, match="n must be an int >= 0"):
        distributed.shard_range(-1, rank=0, world_size=2)


def test_sharded_codes_need_shard_meta() -> None:
    rc = fs.codes(make_net(0), make_probe(), progress=False)
    with pytest.raises(ValueError, match=r"meta\['shard'\] must hold"):
        distributed.ShardedRegionCodes(dict(rc.items()), rc.meta)


def failing_argument_scenario(rank: int, world: int) -> dict[str, Any]:
    """A bad argument on one rank only, to the collectives that read it before their exchange."""
    rc = distributed.codes(make_net(0), distributed.shard(make_probe()), batch_size=8)
    calls = {
        "unit_cdist": lambda: rc.unit_cdist("no such layer" if rank == 1 else rc.names[0]),
        "unit_cdists": lambda: rc.unit_cdists([] if rank == 1 else None),
        "distance": lambda: rc.distance(rc, reduce="max" if rank == 1 else "mean"),
    }
    result: dict[str, Any] = {}
    for key, call in calls.items():
        try:
            call()
            result[key] = None
        except (KeyError, ValueError, RuntimeError) as exc:
            result[key] = (type(exc).__name__, str(exc))
    result["after"] = rc.count_regions()  # the group still works
    return result


def test_a_bad_argument_on_one_rank_fails_every_rank(tmp_path: Path) -> None:
    # The layer name, the names= list and reduce= were read before the first exchange:
    # the failing rank raised alone and the other waited in the collective until the timeout.
    first, second = run_ranks(2, failing_argument_scenario, tmp_path)
    assert second["unit_cdist"][0] == "KeyError" and "no such layer" in second["unit_cdist"][1]
    assert second["unit_cdists"] == ("ValueError", "ShardedRegionCodes.unit_cdists: no layers")
    assert second["distance"][0] == "ValueError" and "reduce must be" in second["distance"][1]
    for key, op in [("unit_cdist", "distributed.hamming_cdist"), ("unit_cdists", "ShardedRegionCodes.unit_cdists"),
                    ("distance", "distributed.distance")]:  # fmt: skip
        assert first[key][0] == "RuntimeError" and first[key][1].startswith(f"{op}: rank 1 failed: "), first[key]
    assert first["after"] == second["after"] > 1


def mismatched_collective_scenario(rank: int, world: int) -> dict[str, Any]:
    """More arguments that differ between ranks or are bad on one rank only."""
    rc = distributed.codes(make_net(0), distributed.shard(make_probe()), batch_size=8)
    other = distributed.codes(make_net(1), distributed.shard(make_probe()), batch_size=8)
    eb = distributed.ShardedSplineEarlyBird(distributed.shard(make_probe()), batch_size=8)
    calls = {
        "names_lengths": lambda: rc.unit_cdists(rc.names[:2] if rank == 0 else rc.names[:1]),
        "names_type": lambda: rc.unit_cdists(5 if rank == 1 else None),  # type: ignore[arg-type]
        "others_type": lambda: rc.distances(other if rank == 1 else [other]),  # type: ignore[arg-type]
        "others_lengths": lambda: rc.distances([other] if rank == 0 else [other, other]),
        "epoch": lambda: eb.step(make_net(0), -1 if rank == 1 else 1),
    }
    result: dict[str, Any] = {}
    for key, call in calls.items():
        try:
            call()
            result[key] = None
        except (TypeError, ValueError, RuntimeError, IndexError) as exc:
            result[key] = (type(exc).__name__, str(exc))
    result["after"] = rc.distance(other)  # the group still works
    return result


def test_mismatched_arguments_fail_every_rank_clearly(tmp_path: Path) -> None:
    # Names of different lengths gave an IndexError (or aborted gloo in the all_reduce); a bad
    # names=, others= or epoch on one rank, or fewer others, left the other rank waiting.
    first, second = run_ranks(2, mismatched_collective_scenario, tmp_path)
    expected = ("ValueError",
                "ShardedRegionCodes.unit_cdists: ranks asked for different numbers of matrices: [2, 1] (one per rank)")
    assert first["names_lengths"] == second["names_lengths"] == expected
    expected = ("ValueError", "ShardedRegionCodes.distances: ranks passed different numbers of others: [1, 2] (one per rank)")
    assert first["others_lengths"] == second["others_lengths"] == expected
    assert second["names_type"][0] == "TypeError"
    assert second["others_type"][0] == "TypeError" and "others must be a sequence" in second["others_type"][1]
    assert second["epoch"][0] == "ValueError" and "epochs must increase and be >= 0" in second["epoch"][1]
    for key, op in [("names_type", "ShardedRegionCodes.unit_cdists"), ("others_type", "ShardedRegionCodes.distances"),
                    ("epoch", "ShardedSplineEarlyBird.step")]:  # fmt: skip
        assert first[key][0] == "RuntimeError" and first[key][1].startswith(f"{op}: rank 1 failed: "), first[key]
    assert first["after"] == second["after"] > 0


def ddp_layers_scenario(rank: int, world: int) -> dict[str, Any]:
    """ShardedSplineEarlyBird over a DDP model with layers= named as distributed.codes names them;
    a shard of a dataset passed straight to codes()."""
    torch.manual_seed(0)
    ddp = nn.parallel.DistributedDataParallel(models.mlp([2, 8, 8, 2]))
    probe = torch.randn(20, 2, generator=torch.Generator().manual_seed(1))
    names = distributed.codes(ddp, distributed.shard(probe)).names
    eb = distributed.ShardedSplineEarlyBird(distributed.shard(probe), layers=names)
    result: dict[str, Any] = {"names": names}
    try:
        eb.step(ddp, 1)
        result["step"] = eb.layer_names
    except (KeyError, ValueError, RuntimeError) as exc:
        result["step"] = (type(exc).__name__, str(exc))
    try:
        distributed.codes(ddp, distributed.shard(TensorDataset(probe, torch.zeros(20))))
        result["dataset"] = None
    except (TypeError, ValueError, IndexError, RuntimeError) as exc:
        result["dataset"] = (type(exc).__name__, str(exc))
    return result


def test_sharded_early_bird_takes_unprefixed_layer_names_of_a_ddp_model(tmp_path: Path) -> None:
    # Its first step coded two probe rows through the DDP wrapper, whose names have "module.".
    for got in run_ranks(2, ddp_layers_scenario, tmp_path):
        assert got["step"] == got["names"] and not got["names"][0].startswith("module.")
        # A Dataset is not iterated item by item (unbatched inputs): codes()' own TypeError.
        assert got["dataset"][0] == "TypeError" and "data must be a DataLoader" in got["dataset"][1]


def mismatched_src_scenario(rank: int, world: int) -> dict[str, Any]:
    """Ranks passing different src (or an invalid src on one rank) to the broadcasts."""
    calls = {
        "broadcast_plan": lambda: distributed.broadcast_plan(None, src=rank),
        "plan": lambda: distributed.plan(small_vgg(), make_probe(), 0.5, src=rank),
        "bad_src": lambda: distributed.plan(small_vgg(), make_probe(), 0.5, src=5 if rank == 1 else 0),
    }
    result: dict[str, Any] = {}
    for key, call in calls.items():
        try:
            call()
            result[key] = None
        except (ValueError, RuntimeError) as exc:
            result[key] = (type(exc).__name__, str(exc))
    result["after"] = distributed.broadcast_plan(f"from rank {rank}", src=1)  # the group still works
    only_first = dist.new_group([0])  # every rank creates it; only rank 0 calls into it
    if rank == 0:
        try:
            distributed.broadcast_plan(None, src=1, group=only_first)
        except ValueError as exc:
            result["outside_group"] = str(exc)
    return result


def test_ranks_passing_different_src_fail_alike_instead_of_hanging(tmp_path: Path) -> None:
    # Each rank broadcast from its own src: every rank waited in the collective until the timeout.
    first, second = run_ranks(2, mismatched_src_scenario, tmp_path)
    for op in ("broadcast_plan", "plan"):
        where = "broadcast_plan" if op == "broadcast_plan" else "distributed.plan"
        expected = ("ValueError", f"{where}: src must be the same on every rank, got [0, 1] (one per rank)")
        assert first[op] == second[op] == expected
    assert second["bad_src"] == ("ValueError", "distributed.plan: src must be a global rank in [0, 2), got 5")
    assert first["bad_src"] == ("RuntimeError", f"distributed.plan: rank 1 failed: {': '.join(second['bad_src'])}")
    assert first["after"] == second["after"] == "from rank 1"
    assert first["outside_group"] == "broadcast_plan: src must be a global rank of the group [0], got 1"


def test_shard_refuses_an_iterable_dataset() -> None:
    # An IterableDataset with len() became a Subset, which failed only when read (no __getitem__).
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self) -> Any:
            return iter(torch.zeros(6, 3))

        def __len__(self) -> int:
            return 6

    with pytest.raises(TypeError, match="shard: data must be a tensor, a list/tuple or a map-style Dataset"):
        distributed.shard(Stream(), rank=0, world_size=2)


def abort_scenario(rank: int, world: int, marker: str, always: bool) -> int:
    """Rank 1 dies by SIGABRT: on the first run only (a marker file), or on every run."""
    if rank == 1 and (always or not os.path.exists(marker)):
        Path(marker).touch()
        os.abort()
    return rank


def test_a_run_whose_rank_dies_by_a_signal_runs_again_up_to_three_times(tmp_path: Path, monkeypatch) -> None:
    """run_ranks' retry (see its docstring): a rank killed by a signal once is run again and
    the results come back; a crash on every run still fails, after three runs."""
    monkeypatch.setattr(time, "sleep", lambda seconds: None)  # the pauses between runs
    marker = str(tmp_path / "aborted")
    with pytest.warns(UserWarning, match="abort_scenario: rank 1 died by SIGABRT; running it again"):
        assert run_ranks(2, abort_scenario, tmp_path, marker, False) == [0, 1]
    runs = []
    monkeypatch.setattr(sys.modules[__name__], "_run_ranks_once",
                        lambda *a, real=_run_ranks_once: runs.append(1) or real(*a))
    with pytest.warns(UserWarning), pytest.raises(mp.ProcessExitedException, match="terminated with signal SIGABRT"):
        run_ranks(2, abort_scenario, tmp_path, marker, True)
    assert len(runs) == 3
