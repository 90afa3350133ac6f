"""Region codes and their distances over ``torch.distributed`` ranks.

Every function here is a collective: call it on every rank of the process
group (gloo on CPU, NCCL on GPU; no transport of fastspline's own), after
``torch.distributed.init_process_group`` (``torchrun`` sets the environment).

Sharding over samples. Each rank codes its own shard of the probe inputs
(:func:`shard` of a tensor or dataset, a ``DistributedSampler``, or any split
of the user's) and the codes stay where they were made: a
:class:`ShardedRegionCodes` holds this rank's rows only. Whole-probe answers
are sums over shards, so ranks exchange numbers, not codes:

- the partition distance of two codings (:meth:`ShardedRegionCodes.distance`,
  :func:`distance`) is per-layer ``(differing bits, bits)`` summed with one
  ``all_reduce``;
- unit-major (node) codes concatenate over samples, so the all-pairs Hamming
  distance between units is the sum of the per-shard distances
  (:func:`hamming_cdist`, :meth:`ShardedRegionCodes.unit_cdist`: one int32
  ``all_reduce(SUM)``). This holds because every shard's unit-major words have
  zero pad bits (the layout of :mod:`fastspline.ops`), so a shard adds only its
  real samples' bits, whatever its padding;
- region counts gather each shard's distinct codes (:meth:`ShardedRegionCodes.count_regions`).

Results equal the single-process ones bit for bit when every probe input is
in exactly one shard. A ``DistributedSampler`` without ``drop_last`` repeats
inputs to even out the shards (a warning says so); :func:`shard` does not.

A rank may hold zero samples: it takes the layers from the others. When one
rank fails (bad argument, mismatched layers), every rank raises, so that none
is left waiting in a collective: the failing rank its own exception, the
others a ``RuntimeError`` naming it.

Pruning plans are computed once and broadcast (:func:`plan`,
:func:`broadcast_plan`), so every rank slims its model identically.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset, Subset

from fastspline import earlybird, ops
from fastspline.codes import LayerCodes, RegionCodes, _check_others, _inputs_of
from fastspline.codes import codes as _local_codes

__all__ = [
    "ShardedRegionCodes",
    "ShardedSplineEarlyBird",
    "broadcast_plan",
    "codes",
    "distance",
    "hamming_cdist",
    "plan",
    "shard",
    "shard_range",
]


# ---------------------------------------------------------------- process group helpers


def _ranks(where: str, group: Any) -> tuple[int, int]:
    """(this rank, world size) in ``group``; a clear error without a process group."""
    if not dist.is_available():
        raise RuntimeError(f"{where}: torch.distributed is not available in this torch build")
    if not dist.is_initialized():
        raise RuntimeError(
            f"{where}: the default process group is not initialised; call "
            "torch.distributed.init_process_group(...) first (torchrun sets the environment for it)"
        )
    rank = dist.get_rank(group)
    if rank < 0:
        raise RuntimeError(f"{where}: this process is not a member of the given process group")
    return rank, dist.get_world_size(group)


def _comm_device(group: Any, preferred: torch.device | None = None) -> torch.device:
    """Where the tensors of a collective live: NCCL needs the current CUDA device; a
    group with a backend per device (``"cpu:gloo,cuda:nccl"``) takes ``preferred``."""
    backend = str(dist.get_backend(group)).lower()
    if backend == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    if "cuda:" in backend and preferred is not None and preferred.type == "cuda":
        return preferred
    return torch.device("cpu")


def _exchange(where: str, group: Any, world: int, error: BaseException | None, info: Any) -> list[Any]:
    """Gather every rank's ``info`` and failure; raise on every rank when any failed.

    A rank that raised alone would leave the others waiting in the next collective,
    so each rank's outcome is shared first: the failing rank re-raises its own
    exception, the others a RuntimeError naming it.
    """
    reports: list[Any] = [None] * world
    message = None if error is None else f"{type(error).__name__}: {error}"
    dist.all_gather_object(reports, (message, info), group=group)
    if error is not None:
        raise error
    for rank, (failed, _) in enumerate(reports):
        if failed is not None:
            raise RuntimeError(f"{where}: rank {rank} failed: {failed}")
    return [report[1] for report in reports]


def _run_local(compute: Callable[[], Any]) -> tuple[Any, BaseException | None]:
    """``compute()`` and its exception, kept to be shared by :func:`_exchange` (then re-raised)."""
    try:
        return compute(), None
    except Exception as exc:  # not swallowed: _exchange re-raises it on this rank
        return None, exc


def _unwrap(model: nn.Module) -> nn.Module:
    # DDP's forward broadcasts buffers: ranks running different numbers of batches
    # (uneven shards, or one rank planning alone) would wait on each other forever.
    return model.module if isinstance(model, DistributedDataParallel) else model


# ---------------------------------------------------------------- sharding


def shard_range(n: int, *, group: Any = None, rank: int | None = None, world_size: int | None = None) -> range:
    """This rank's contiguous block of ``range(n)``: the first ``n % world_size``
    ranks get one index more; the blocks in rank order concatenate to ``range(n)``
    (ranks past ``n`` get an empty block). ``rank``/``world_size`` default to the group's."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"shard_range: n must be an int >= 0, got {n!r}")
    if rank is None or world_size is None:
        group_rank, group_size = _ranks("shard_range", group)
        rank = group_rank if rank is None else rank
        world_size = group_size if world_size is None else world_size
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"shard_range: world_size must be an int >= 1, got {world_size!r}")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ValueError(f"shard_range: rank must be an int in [0, {world_size}), got {rank!r}")
    size, extra = divmod(n, world_size)
    start = rank * size + min(rank, extra)
    return range(start, start + size + (rank < extra))


def shard(data: Any, *, group: Any = None, rank: int | None = None, world_size: int | None = None) -> Any:
    """This rank's contiguous block of ``data`` (see :func:`shard_range`): a view
    ``data[start:stop]`` of a tensor, a ``Subset`` of a map-style ``Dataset``, a slice
    of a list or tuple. Every input lands in exactly one shard, in order."""
    if isinstance(data, torch.Tensor):
        if data.dim() == 0:
            raise ValueError("shard: data must have a batch dimension, got a 0-d tensor")
        block = shard_range(data.shape[0], group=group, rank=rank, world_size=world_size)
        return data[block.start : block.stop]
    if isinstance(data, (list, tuple)):
        block = shard_range(len(data), group=group, rank=rank, world_size=world_size)
        return data[block.start : block.stop]
    if isinstance(data, Dataset) and not isinstance(data, IterableDataset) and hasattr(data, "__len__"):
        block = shard_range(len(data), group=group, rank=rank, world_size=world_size)
        return Subset(data, list(block))
    raise TypeError(f"shard: data must be a tensor, a list/tuple or a map-style Dataset with len(), got {type(data).__name__}")


# ---------------------------------------------------------------- sharded codes


class ShardedRegionCodes(RegionCodes):
    """This rank's shard of a probe's codes (a :class:`RegionCodes` over its own rows).

    Local views (``names``, ``[name]``, ``n_samples``, ``nbytes``, ``unit_major``,
    ``concatenated``, ``save``) see this shard only; :meth:`distance`, :meth:`unit_cdist`,
    :meth:`unit_cdists`, :meth:`count_regions` and :meth:`region_ids` are collectives
    over every rank's shard and return what one process holding all the codes would.

    ``meta["shard"]``: ``rank``, ``world_size``, ``offset`` (rows of the lower ranks:
    this shard's place in the rank-order concatenation), ``total_samples``.
    """

    def __init__(self, layers: dict[str, LayerCodes], meta: dict[str, Any] | None = None, *, group: Any = None) -> None:
        super().__init__(layers, meta)
        self.group = group
        info = self.meta.get("shard")
        if not isinstance(info, dict) or not {"rank", "world_size", "offset", "total_samples"} <= set(info):
            raise ValueError(
                "ShardedRegionCodes: meta['shard'] must hold rank, world_size, offset and total_samples "
                f"(made by fastspline.distributed.codes), got {info!r}"
            )

    @property
    def rank(self) -> int:
        return int(self.meta["shard"]["rank"])

    @property
    def world_size(self) -> int:
        return int(self.meta["shard"]["world_size"])

    @property
    def offset(self) -> int:
        """Rows held by the lower ranks: this shard is rows ``offset .. offset + n_samples`` of the whole."""
        return int(self.meta["shard"]["offset"])

    @property
    def total_samples(self) -> int:
        """Rows of all shards together."""
        return int(self.meta["shard"]["total_samples"])

    def __repr__(self) -> str:
        return (
            f"ShardedRegionCodes(rank={self.rank}/{self.world_size}, rows {self.offset}..{self.offset + self.n_samples} "
            f"of {self.total_samples}, layers={self.names}, nbytes={self.nbytes})"
        )

    def to(self, device: torch.device | str) -> ShardedRegionCodes:
        return ShardedRegionCodes(
            {n: LayerCodes(l.words.to(device), l.n_units, l.unit_shape) for n, l in self.items()}, self.meta, group=self.group
        )

    def unit_major(self, name: str, per_channel: bool = True, *, backend: str | None = None) -> torch.Tensor:
        """This shard's node codes of layer ``name`` (see :meth:`RegionCodes.unit_major`),
        int64 ``[units, ceil(n_samples/64)]`` or ``[C, P * ceil(n_samples/64)]``; pad bits zero."""
        layer = self[name]
        units = ops.bit_transpose(layer.words, layer.n_units, backend=backend)
        if not per_channel or len(layer.unit_shape) < 2:
            return units
        # Explicit width: a shard of zero samples has zero words, and reshape(C, -1) of 0 elements is ambiguous.
        channels = layer.unit_shape[0]
        return units.reshape(channels, (layer.n_units // channels) * units.shape[1])

    def unit_cdist(
        self, name: str, per_channel: bool = True, *, out: torch.Tensor | None = None, backend: str | None = None
    ) -> torch.Tensor:
        """All-pairs Hamming distances between the units (channels when ``per_channel``)
        of layer ``name`` over every rank's samples: int32 ``[U, U]`` on every rank,
        equal to ``hamming_cdist(whole.unit_major(name, per_channel))``. Collective."""

        def pairs() -> list[tuple[torch.Tensor, torch.Tensor | None]]:
            # In the collective's local step: a bad name fails every rank, not this one alone.
            return [(self.unit_major(name, per_channel, backend=backend), None)]

        return _reduced_cdists("distributed.hamming_cdist", pairs, out, self.group, backend)[0]

    def unit_cdists(
        self, names: Sequence[str] | None = None, per_channel: bool = True, *, backend: str | None = None
    ) -> dict[str, torch.Tensor]:
        """:meth:`unit_cdist` of several layers (default: all) with one ``all_reduce``
        for all of them: layer name -> int32 ``[U, U]``. Collective."""
        chosen: list[str] = []

        def pairs() -> list[tuple[torch.Tensor, torch.Tensor | None]]:
            # names is read here, in the local step: a bad one fails every rank.
            chosen.extend(self.names if names is None else list(names))
            if not chosen:
                raise ValueError("ShardedRegionCodes.unit_cdists: no layers")
            return [(self.unit_major(name, per_channel, backend=backend), None) for name in chosen]

        return dict(zip(chosen, _reduced_cdists("ShardedRegionCodes.unit_cdists", pairs, None, self.group, backend)))

    def distance(
        self, other: RegionCodes, reduce: str = "mean", *, backend: str | None = None
    ) -> float | dict[str, float]:
        """Partition distance to ``other`` (this rank's codes of the same inputs) over
        every rank's shard: as :meth:`RegionCodes.distance` of the whole. Collective."""
        return distance(self, other, reduce, group=self.group, backend=backend)

    def distances(
        self, others: Sequence[RegionCodes], reduce: str = "mean", *, backend: str | None = None
    ) -> list[float] | list[dict[str, float]]:
        """:meth:`distance` to each of ``others`` over every rank's shard (one collective each)."""
        op = "ShardedRegionCodes.distances"
        _, world = _ranks(op, self.group)
        # Checked on every rank first: a rank raising alone, or passing fewer others,
        # would leave the others waiting in a distance collective.
        checked, error = _run_local(lambda: list(_check_others(others)))
        counts = _exchange(op, self.group, world, error, None if checked is None else len(checked))
        if len(set(counts)) > 1:
            raise ValueError(f"{op}: ranks passed different numbers of others: {counts} (one per rank)")
        return [self.distance(other, reduce, backend=backend) for other in checked]

    def _regions(self, backend: str | None, op: str) -> tuple[int, torch.Tensor]:
        """(distinct regions over all shards, this shard's global region ids); ``op`` names the caller in errors."""
        rank, world = _ranks(op, self.group)
        local, error = _run_local(lambda: _local_regions(self, backend))
        gathered = _exchange(op, self.group, world, error, None if local is None else local[0])
        widths = {tuple(u.shape[1:]) for u in gathered}
        if len(widths) > 1:
            raise ValueError(f"{op}: ranks hold codes of different widths {sorted(widths)}")
        unique, inverse = local
        # count_regions sorts rows as torch.unique does, so global ids match one process's.
        _, merged_inverse, merged_counts = ops.count_regions(torch.cat(gathered), backend=backend)
        start = sum(u.shape[0] for u in gathered[:rank])
        to_global = merged_inverse[start : start + unique.shape[0]]
        # to_global is on the CPU; inverse where the codes are (a CPU tensor cannot take CUDA indices).
        return int(merged_counts.numel()), to_global.to(inverse.device)[inverse]

    def count_regions(self, *, backend: str | None = None) -> int:
        """Distinct regions of the whole network visited by all ranks' inputs. Collective."""
        return self._regions(backend, "ShardedRegionCodes.count_regions")[0]

    def region_ids(self, *, backend: str | None = None) -> torch.Tensor:
        """int64 ``[n_samples]``: this shard's region ids in the numbering of the whole
        (equal to rows ``offset ..`` of the single-process :meth:`RegionCodes.region_ids`). Collective."""
        return self._regions(backend, "ShardedRegionCodes.region_ids")[1]


def _local_regions(rc: RegionCodes, backend: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(this shard's distinct whole-network codes on the CPU, each row's index into them)."""
    if not len(rc):
        raise ValueError("ShardedRegionCodes.count_regions: no layers")
    words = rc.concatenated()
    unique, inverse, _ = ops.count_regions(words, backend=backend)
    return unique.cpu(), inverse


class _CountedBatches:
    """Iterates ``data`` unchanged, counting the input rows it yields."""

    def __init__(self, data: Any) -> None:
        self.data = data
        self.rows = 0
        self.exhausted = False

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self) -> Iterator[Any]:
        for batch in self.data:
            x = _inputs_of(batch)
            self.rows += x.shape[0] if x.dim() else 0
            yield batch
        self.exhausted = True


def _warn_padded_sampler(data: Any) -> None:
    sampler = getattr(data, "sampler", None) if isinstance(data, DataLoader) else None
    if isinstance(sampler, DistributedSampler) and not sampler.drop_last:
        padded = sampler.total_size - len(sampler.dataset)  # type: ignore[arg-type]
        if padded > 0:
            warnings.warn(
                f"fastspline.distributed.codes: the DistributedSampler repeats {padded} input(s) to even out the shards "
                f"({len(sampler.dataset)} inputs over {sampler.num_replicas} ranks), so they count twice; "  # type: ignore[arg-type]
                "use fastspline.distributed.shard(dataset) for every input exactly once",
                stacklevel=3,
            )


def codes(
    model: nn.Module,
    data: Any,
    layers: Sequence[str | nn.Module] | None = None,
    *,
    group: Any = None,
    device: torch.device | str | None = None,
    where: str = "pre",
    backend: str | None = None,
    progress: bool = False,
    batch_size: int = 256,
    keep_on: str = "cpu",
    functional: bool = True,
) -> ShardedRegionCodes:
    """Codes of this rank's shard of the inputs (:func:`fastspline.codes.codes` on ``data``),
    as a :class:`ShardedRegionCodes` that knows the other shards' sizes. Collective.

    Args:
        model: the same weights on every rank. A ``DistributedDataParallel`` wrapper is
            unwrapped (its forward would synchronise buffers batch by batch, and
            shards may differ in batches), so layer names have no ``module.`` prefix.
        data: this rank's inputs, in any form ``codes()`` takes (a tensor, e.g.
            :func:`shard` of the probe; a DataLoader over a ``DistributedSampler`` or over a
            :func:`shard` of a dataset, not the dataset itself); it may be empty on some ranks.
        group: the process group (default: the world).
        layers, device, where, backend, batch_size, keep_on, functional: as ``codes()``.
        progress: as ``codes()``, but off by default (one bar per rank would interleave).

    Raises on every rank when any rank fails, when no rank has inputs, or when ranks
    found different layers.
    """
    op = "distributed.codes"
    rank, world = _ranks(op, group)
    model = _unwrap(model)
    _warn_padded_sampler(data)

    def local() -> RegionCodes | None:
        if isinstance(data, torch.Tensor) and data.dim() >= 1 and data.shape[0] == 0:
            return None
        # What codes() refuses (a Dataset, a dict, ...) reaches it unwrapped, to fail with its TypeError.
        iterable = isinstance(data, Iterable) and not isinstance(data, (torch.Tensor, str, bytes, dict))
        counted = _CountedBatches(data) if iterable else data
        try:
            return _local_codes(
                model, counted, layers, device=device, where=where, backend=backend,
                progress=progress, batch_size=batch_size, keep_on=keep_on, functional=functional,
            )
        except ValueError:
            if isinstance(counted, _CountedBatches) and counted.exhausted and counted.rows == 0:
                return None  # an empty shard; its layers come from the other ranks
            raise

    mine, error = _run_local(local)
    layout = None if mine is None else [(n, l.n_units, l.unit_shape) for n, l in mine.items()]
    info = (0 if mine is None else mine.n_samples, layout, None if mine is None else mine.meta)
    reports = _exchange(op, group, world, error, info)

    counts = [n for n, _, _ in reports]
    total = sum(counts)
    if total == 0:
        raise ValueError(f"{op}: no rank has inputs (the shards of all {world} ranks are empty)")
    found = [(r, lay) for r, (n, lay, _) in enumerate(reports) if n]
    for r, lay in found[1:]:
        if lay != found[0][1]:
            raise ValueError(
                f"{op}: ranks found different layers: rank {found[0][0]} {found[0][1]} vs rank {r} {lay} "
                "(the same model and layers= on every rank?)"
            )
    if mine is None:
        first = found[0][0]
        if keep_on == "device":
            store = torch.device(device) if device is not None else _model_device(model)
        else:
            store = torch.device("cpu")
        layer_codes = {
            name: LayerCodes(torch.empty(0, (n_units + 63) // 64, dtype=torch.int64, device=store), n_units, shape)
            for name, n_units, shape in reports[first][1]
        }
        meta = dict(reports[first][2], n_samples=0)
    else:
        layer_codes = dict(mine.items())
        meta = dict(mine.meta)
    meta["shard"] = {"rank": rank, "world_size": world, "offset": sum(counts[:rank]), "total_samples": total}
    return ShardedRegionCodes(layer_codes, meta, group=group)


def _model_device(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    first = first if first is not None else next(model.buffers(), None)
    return first.device if first is not None else torch.device("cpu")


# ---------------------------------------------------------------- distances


def _partial_distance(a: RegionCodes, b: RegionCodes, backend: str | None) -> tuple[list[str], list[list[int]]]:
    """This rank's (differing bits, bits) per layer; the checks of RegionCodes.distance."""
    if not isinstance(a, RegionCodes) or not isinstance(b, RegionCodes):
        bad = b if isinstance(a, RegionCodes) else a
        raise TypeError(f"distributed.distance: a and b must be RegionCodes, got {type(bad).__name__}")
    counts = a._differing_bits(b, backend, "distributed.distance")
    return a.names, [list(pair) for pair in counts.values()]


def distance(
    a: RegionCodes, b: RegionCodes, reduce: str = "mean", *, group: Any = None, backend: str | None = None
) -> float | dict[str, float]:
    """Partition distance between two codings of the same inputs, each rank holding its
    shard of both (``a`` and ``b`` have equal rows on a rank). Per layer, the fraction of
    (input, unit) bits that differ over all shards: each rank counts its differing bits
    and bits, one ``all_reduce(SUM)`` adds them. ``reduce``: ``"mean"`` over layers or
    ``"none"`` (layer -> distance), as :meth:`RegionCodes.distance`, whose single-process
    value it equals exactly. Collective."""
    op = "distributed.distance"
    _, world = _ranks(op, group)

    def partial() -> tuple[list[str], list[list[int]]]:
        if reduce not in ("mean", "none"):
            raise ValueError(f"{op}: reduce must be 'mean' or 'none', got {reduce!r}")
        return _partial_distance(a, b, backend)

    local, error = _run_local(partial)
    names_of = _exchange(op, group, world, error, None if local is None else local[0])
    for r, names in enumerate(names_of[1:], start=1):
        if names != names_of[0]:
            raise ValueError(f"{op}: ranks hold different layers: rank 0 {names_of[0]} vs rank {r} {names}")
    names, counts = local
    totals = torch.tensor(counts, dtype=torch.int64, device=_comm_device(group)).reshape(-1, 2)
    dist.all_reduce(totals, op=dist.ReduceOp.SUM, group=group)
    # Integers summed, then divided once: the same floats as one process computes.
    per_layer = {name: (int(d) / int(bits) if int(bits) else 0.0) for name, (d, bits) in zip(names, totals.tolist())}
    if reduce == "none":
        return per_layer
    return sum(per_layer.values()) / len(per_layer) if per_layer else 0.0


def hamming_cdist(
    a: torch.Tensor,
    b: torch.Tensor | None = None,
    *,
    out: torch.Tensor | None = None,
    group: Any = None,
    backend: str | None = None,
) -> torch.Tensor:
    """All-pairs Hamming distances of unit-major codes sharded over samples.

    a int64 ``[N, W_r]``, b int64 ``[M, W_r]`` (``None``: ``a``): this rank's words of
    every unit's code over its samples, pad bits zero (as ``bit_transpose`` and
    ``unit_major`` make them; ``W_r`` may differ between ranks, 0 included). Returns
    int32 ``[N, M]`` on every rank: the distances over all ranks' samples, i.e. the
    per-rank ``ops.hamming_cdist`` matrices summed by ``all_reduce(SUM)`` (into
    ``out`` when given). Collective.
    """
    return _reduced_cdists("distributed.hamming_cdist", lambda: [(a, b)], out, group, backend)[0]


def _reduced_cdists(
    op: str,
    pairs_of: Callable[[], list[tuple[torch.Tensor, torch.Tensor | None]]],
    out: torch.Tensor | None,
    group: Any,
    backend: str | None,
) -> list[torch.Tensor]:
    """Per-rank ``ops.hamming_cdist`` of each pair ``pairs_of()`` gives (called in the local
    step, so that its failure fails every rank), summed over ranks with one ``all_reduce``
    (several matrices travel as one flat buffer: one collective, not one per matrix)."""
    _, world = _ranks(op, group)
    pairs: list[tuple[torch.Tensor, torch.Tensor | None]] = []

    def local() -> tuple[list[torch.Tensor], torch.Tensor]:
        pairs.extend(pairs_of())
        partials = [ops.hamming_cdist(a, b, out=out, backend=backend) for a, b in pairs]
        for partial in partials:
            comm = _comm_device(group, partial.device)
            if partial.device.type != comm.type:
                raise ValueError(
                    f"{op}: the {dist.get_backend(group)} process group reduces tensors on {comm.type}, "
                    f"got codes on {partial.device} (codes(..., keep_on='device') keeps them on the GPU)"
                )
        flat = partials[0].view(-1) if len(partials) == 1 else torch.cat([p.view(-1) for p in partials])
        return partials, flat

    result, error = _run_local(local)
    info = None if result is None else [(tuple(p.shape), a.shape[1]) for p, (a, _) in zip(result[0], pairs)]
    reports = _exchange(op, group, world, error, info)
    lengths = [len(report) for report in reports]
    if len(set(lengths)) > 1:
        # Different flat buffers would abort gloo (or hang) in the all_reduce.
        raise ValueError(f"{op}: ranks asked for different numbers of matrices: {lengths} (one per rank)")
    for i, (shape, _) in enumerate(reports[0]):
        shapes = [report[i][0] for report in reports]
        if any(other != shape for other in shapes):
            raise ValueError(f"{op}: ranks hold different numbers of units: {shapes}")
        bits = 64 * sum(report[i][1] for report in reports)
        if bits > ops.MAX_INT32_BITS:
            raise ValueError(
                f"{op}: codes of {bits} bits over all ranks may have distances beyond int32 (at most {ops.MAX_INT32_BITS})"
            )
    partials, flat = result
    dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
    if len(partials) == 1:
        return partials  # reduced in place
    return [part.view(p.shape) for part, p in zip(flat.split([p.numel() for p in partials]), partials)]


# ---------------------------------------------------------------- pruning plans


def _check_src(where: str, src: object, group: Any) -> None:
    """Raise on every rank unless every rank passed the same valid global rank ``src``
    (a broadcast from different sources would leave the ranks waiting for ever)."""
    _, world = _ranks(where, group)
    global_world = dist.get_world_size()

    def check() -> None:
        if isinstance(src, bool) or not isinstance(src, int) or not 0 <= src < global_world:
            raise ValueError(f"{where}: src must be a global rank in [0, {global_world}), got {src!r}")
        members = None if group is None else dist.get_process_group_ranks(group)
        if members is not None and src not in members:
            raise ValueError(f"{where}: src must be a global rank of the group {members}, got {src}")

    _, error = _run_local(check)
    sources = _exchange(where, group, world, error, src)
    if any(other != src for other in sources):
        raise ValueError(f"{where}: src must be the same on every rank, got {sources} (one per rank)")


def broadcast_plan(plan_or_none: Any, src: int = 0, *, group: Any = None) -> Any:
    """``plan_or_none`` of rank ``src`` (a global rank, the same on every rank) on every
    rank (other ranks pass anything, e.g. None), by ``broadcast_object_list``: any
    picklable object, e.g. a ``fastspline.pruning.PrunePlan``. Collective."""
    _check_src("broadcast_plan", src, group)
    return _broadcast(plan_or_none, src, group)


def _broadcast(value: Any, src: int, group: Any) -> Any:
    box = [value]
    dist.broadcast_object_list(box, src=src, group=group)
    return box[0]


def plan(model: nn.Module, probe: Any, ratio: float, *, src: int = 0, group: Any = None, **kwargs: Any) -> Any:
    """``fastspline.pruning.plan(model, probe, ratio, **kwargs)`` computed once, on rank
    ``src`` with its (whole) ``probe``, and broadcast: every rank gets the same plan and
    slims its model identically. ``probe`` is not used on the other ranks (None is
    fine). A DDP wrapper is unwrapped (its forward would wait for the idle ranks). When
    planning fails on ``src``, it raises there and every other rank raises a RuntimeError;
    when the ranks pass different ``src``, every rank raises the same ValueError.
    Collective."""
    _check_src("distributed.plan", src, group)
    error: BaseException | None = None
    payload: tuple[str, Any] | None = None
    if dist.get_rank() == src:

        def compute() -> Any:
            from fastspline import pruning

            return pruning.plan(_unwrap(model), probe, ratio, **kwargs)

        result, error = _run_local(compute)
        payload = ("ok", result) if error is None else ("error", f"{type(error).__name__}: {error}")
    status, value = _broadcast(payload, src, group)
    if error is not None:
        raise error
    if status != "ok":
        raise RuntimeError(f"distributed.plan: planning failed on rank {src}: {value}")
    return value


# ---------------------------------------------------------------- early bird


class ShardedSplineEarlyBird(earlybird.SplineEarlyBird):
    """:class:`fastspline.earlybird.SplineEarlyBird` over a probe sharded across ranks.

    ``probe`` is this rank's non-empty shard (e.g. :func:`shard` of the whole probe).
    Construction and :meth:`step` are collectives; ``step`` codes the shard with
    :func:`codes` and compares epochs with :func:`distance`, so every rank gets the
    distances (and firing epoch) of the single-process detector on the whole probe. Other arguments as ``SplineEarlyBird``
    plus ``group``. (The plain ``SplineEarlyBird`` also works inside DDP, each rank
    coding the whole probe.) ``probe_flops`` counts this rank's shard.
    """

    def __init__(self, probe: torch.Tensor, *args: Any, group: Any = None, **kwargs: Any) -> None:
        _, world = _ranks("ShardedSplineEarlyBird", group)
        # A collective: a bad (e.g. empty) shard on one rank fails every rank here, not in step().
        _, error = _run_local(lambda: super(ShardedSplineEarlyBird, self).__init__(probe, *args, **kwargs))
        _exchange("ShardedSplineEarlyBird", group, world, error, None)
        self.group = group

    def step(self, model: nn.Module, epoch: int) -> bool:
        """As :meth:`SplineEarlyBird.step`; a collective: a bad ``model`` or ``epoch`` on one rank fails every rank."""
        op = "ShardedSplineEarlyBird.step"
        _, world = _ranks(op, self.group)

        def check() -> None:
            if not isinstance(model, nn.Module):
                raise TypeError(f"{op}: model must be an nn.Module, got {type(model).__name__}")
            self._check_epoch(epoch)

        _, error = _run_local(check)
        _exchange(op, self.group, world, error, None)
        return super().step(model, epoch)

    def _pick_batch_size(self, model: nn.Module, functional: bool) -> None:
        # Unwrapped as codes() unwraps: layers= names have no "module." prefix.
        super()._pick_batch_size(_unwrap(model), functional)

    def _codes(self, model: nn.Module, functional: bool) -> RegionCodes:
        return codes(
            model, self.probe, self.layers, group=self.group, device=self.device, batch_size=self.batch_size,
            backend=self.backend, functional=functional,
        )
